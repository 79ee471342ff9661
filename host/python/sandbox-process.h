// How a sandbox process is made: its launch parameters and the one function that spawns it
// (a zygote will be a second way). [main] unless tagged otherwise.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "host/python/sandbox-client.h"
#include "host/python/zygote.h"
#include "shm/segment.h"

namespace sandpipe::host {

/// One plugin of a sandbox group's sandbox (PluginSpec::members).
struct GroupMemberLaunch {
  std::string name;
  std::filesystem::path file;  ///< absolute
  /// Its `on-failure` as written (nullopt: the sandbox decides, as effective_on_failure() does).
  std::optional<OnFailure> on_failure;
  /// Its `reload`: the supervisor follows this file and reloads the whole group when it changes.
  bool reload = false;
};

/// Everything needed to start (and restart) the sandbox of one slot.
struct SandboxLaunch {
  std::string name;
  std::filesystem::path file;
  std::filesystem::path executable;
  shm::Geometry geometry;
  double sample_rate = 48000.0;
  std::uint32_t memory_mb = 0;
  std::optional<std::uint64_t> host_spin_ns;
  SandboxLogFn log = log_to_stderr;
  std::chrono::milliseconds request_timeout{10'000};
  std::chrono::milliseconds shutdown_timeout{2'000};
  std::filesystem::path allow_writes{};  ///< PluginSpec::allow_writes: --allow-writes DIR for the sandbox
  int rt_priority = 0;                   ///< SandboxOptions::rt_priority
  std::uint32_t wake_lead_us = 0;        ///< PluginSpec::wake_lead_us: --wake-lead-us for the sandbox
  bool keep_denormals = false;           ///< PluginSpec::bit_exact: --keep-denormals (no FTZ/DAZ)
  Zygote* zygote = nullptr;              ///< forks the sandbox when set (SandboxOptions::zygote)
  /// A sandbox group's plugins, in order (empty: one plugin, `file`, which is then the first
  /// member's: its folder and the others' are what the sandbox may read).
  std::vector<GroupMemberLaunch> members{};
  /// A relay's sandbox (direct hand-off, host/python/relay.h): the edge its jobs come from and
  /// the one its blocks go on to, borrowed from the relay's link, which outlives every sandbox
  /// of its slot (null: the sandbox's own rings); `output_to_host`: the output edge is the
  /// relay's tail, where the host collects.
  shm::Segment* input_edge = nullptr;
  shm::Segment* output_edge = nullptr;
  bool output_to_host = false;
};

/// [any] The sandbox executable this binary uses: the build tree's when it runs from the build
/// tree, the installed one otherwise.
[[nodiscard]] std::filesystem::path default_sandbox_executable();

/// [any] The sandbox's whole environment (spawned, or the zygote's): nothing of the host's but
/// SANDPIPE_* and the sanitizers' options; one BLAS thread.
[[nodiscard]] std::vector<std::string> sandbox_environment();

/// "exited with status 1", "killed by signal SIGSEGV", ...
[[nodiscard]] std::string describe_exit(int wait_status);

/// [main] A sandbox's scheduling: SCHED_FIFO at `priority` (> 0), or normal (0); never passed to
/// anything it spawns. Not permitted (no root, no rtkit): stays as it was.
void set_sandbox_priority(pid_t pid, int priority);

/// Starts the sandbox executable with `fds` inherited, everything else of ours being CLOEXEC
/// (forked by `launch.zygote` when it has one); in its own process group (a Ctrl-C in the
/// terminal reaches the host, which shuts sandboxes down), with an environment of its own.
/// Returns its pid; throws PluginError if it cannot start.
[[nodiscard]] pid_t spawn_sandbox_process(const SandboxLaunch& launch, const SandboxFds& fds);

}  // namespace sandpipe::host
