// The host's log topics: what a running node says goes through PipeWire's log, so
// PIPEWIRE_DEBUG, PIPEWIRE_LOG and the journal apply to it as to any PipeWire client.
//
// Topics (one per part of the node; each is "sandpipe.<part>"):
//   sandpipe.node     the node's life: ready, errors of the filter/streams, rate rebuilds, latency
//   sandpipe.props    Props changes (pw-cli set-param, `sandpipe set`): what was set or refused
//   sandpipe.chain    the scheduler's decisions and warnings for the Python slots
//   sandpipe.sandbox  the Python side: the supervisor, its sandboxes (start, crash, restart,
//                     reload, rate change) and what their plugins print, as "[SLOT] line"
//
// Levels. PIPEWIRE_DEBUG unset (or empty): every sandpipe.* topic logs errors, warnings and info
// (a node says what it said before it logged through PipeWire), while PipeWire's own topics stay
// at their default (warnings). PIPEWIRE_DEBUG set: PipeWire's rules alone, e.g.
//   PIPEWIRE_DEBUG=sandpipe.*:2   sandpipe's warnings and errors only (PipeWire's at default)
//   PIPEWIRE_DEBUG=2              warnings and errors of everything (no "ready", no "set ...")
//   PIPEWIRE_DEBUG=3,sandpipe.props:1   info of everything but the Props lines
//   PIPEWIRE_DEBUG=0              nothing
// A line goes to stderr ("[W][time] sandpipe.props | [file:line func()] message"), or to the
// file PIPEWIRE_LOG names, and to the journal when /run/systemd/journal/socket exists
// (PIPEWIRE_LOG_SYSTEMD=false turns that off); under systemd (sandpipe@.service) stderr is the
// journal, so each line is written once, with the topic as its prefix and its level as priority.
//
// What is not logging stays plain stdout/stderr: a command's answer to its user (render, check,
// inspect, set, status, reload), usage and config errors, why `run` could not start, and the
// exit summary of `run` (the counters, "sandpipe: cycles=...", "sandpipe: slot NAME: ...").
//
// Thread: pw_log is [any] but not [rt] (it formats and writes): real-time code never logs.
//
// host/python itself does not log: its lines go to the SandboxLogFn it is given
// (SupervisorOptions::log). A live node gives it log_sandbox_line (host/node/pipewire-session.cpp),
// which writes them on sandpipe.sandbox at the level they came with (a plugin's own print()s at
// info, its warnings and exceptions as such; a crash or a give-up is an error); `render` and
// the tools keep the plain "sandpipe: [SLOT] line" on stderr (log_to_stderr): their answer.
#pragma once

#include <cstdlib>
#include <initializer_list>

#include <pipewire/log.h>

namespace sandpipe::host {

namespace detail {
// The topics' storage (PW_LOG_TOPIC in C): one definition per program as inline variables.
inline spa_log_topic node_log_topic{SPA_VERSION_LOG_TOPIC, "sandpipe.node", SPA_LOG_LEVEL_NONE, false};
inline spa_log_topic props_log_topic{SPA_VERSION_LOG_TOPIC, "sandpipe.props", SPA_LOG_LEVEL_NONE, false};
inline spa_log_topic chain_log_topic{SPA_VERSION_LOG_TOPIC, "sandpipe.chain", SPA_LOG_LEVEL_NONE, false};
inline spa_log_topic sandbox_log_topic{SPA_VERSION_LOG_TOPIC, "sandpipe.sandbox", SPA_LOG_LEVEL_NONE, false};
}  // namespace detail

/// The topics, as PipeWire's PW_LOG_TOPIC_EXTERN declares them (a pointer per topic), for
/// `#define PW_LOG_TOPIC_DEFAULT` or pw_logt().
inline spa_log_topic* const node_log = &detail::node_log_topic;
inline spa_log_topic* const props_log = &detail::props_log_topic;
inline spa_log_topic* const chain_log = &detail::chain_log_topic;
inline spa_log_topic* const sandbox_log = &detail::sandbox_log_topic;

/// The level sandpipe's topics log at when PIPEWIRE_DEBUG leaves it to us.
inline constexpr spa_log_level default_log_level = SPA_LOG_LEVEL_INFO;

/// [main] Registers the topics with PipeWire's log (PW_LOG_TOPIC_INIT: PIPEWIRE_DEBUG's
/// patterns apply) and, when PIPEWIRE_DEBUG is unset, gives them `default_log_level`. Call once
/// after pw_init(), before the first line; uninitialised topics follow the global level.
inline void init_log_topics() {
  const char* debug = std::getenv("PIPEWIRE_DEBUG");  // NOLINT(concurrency-mt-unsafe): before threads
  const bool pipewire_decides = debug != nullptr && debug[0] != '\0';
  for (spa_log_topic* topic : {node_log, props_log, chain_log, sandbox_log}) {
    PW_LOG_TOPIC_INIT(topic)
    if (!pipewire_decides) {
      // What spa_log_topic_init does for a matching PIPEWIRE_DEBUG pattern: a level of its own.
      topic->level = default_log_level;
      topic->has_custom_level = true;
    }
  }
}

}  // namespace sandpipe::host
