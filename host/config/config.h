// The chain config: PipeWire SPA-JSON, parsed with spa_json.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sandpipe::host {

/// What a plugin entry's `path` turned out to be.
enum class PluginKind : std::uint8_t {
  native_builtin,  ///< `builtin:NAME`, one of the .so built-ins shipped with Sandpipe
  native_library,  ///< a third-party `*.so` implementing plugins-native/include/sandpipe/plugin.h
  python,          ///< a `*.py` file, run in its own sandbox process
};

[[nodiscard]] std::string_view to_string(PluginKind kind) noexcept;

/// A parameter value as written in the config: a number, a boolean or a string.
using ParamValue = std::variant<double, bool, std::string>;

struct ParamSetting {
  std::string key;
  ParamValue value;
  int line = 0;  ///< 1-based line in the config file, for error messages
  /// A group's or relay's slot: the plugin the parameter is for, as its index in the slot's
  /// slot_plugins() (a group's member, a relay's plugin, or a member of a group in a relay);
  /// 0 for every other slot.
  std::uint32_t member = 0;
};

/// What to do with a slot's blocks while its plugin is down or late.
enum class OnFailure : std::uint8_t { bypass, mute };

[[nodiscard]] std::string_view to_string(OnFailure policy) noexcept;

/// How a Python slot is scheduled (`mode`): see docs/architecture.md, "Scheduler".
enum class SlotMode : std::uint8_t {
  auto_select,  ///< measured at start-up (and while running): sync if it fits, else pipelined
  sync,         ///< each block is waited for in its own cycle (no added latency)
  pipelined,    ///< `blocks` blocks of added latency; the sandbox works while the host goes on
};

[[nodiscard]] std::string_view to_string(SlotMode mode) noexcept;

/// Deepest pipeline a slot supports (`blocks`): 16 shared-memory slots minus 2.
inline constexpr std::uint32_t max_pipeline_blocks = 14;
/// The largest config accepted, in bytes (docs/config.md). A chain's config is a few KiB; the
/// limit keeps a runaway generated file from taking the node's memory and start-up time.
inline constexpr std::size_t max_config_bytes = std::size_t{4} << 20;

/// The default `max-level` (dBFS): ≈ 63.1 full scale.
inline constexpr double default_max_level_db = 36.0;

/// The linear ceiling of `max_level_db`: the largest |sample| a guard lets through (FLT_MAX and
/// above: only NaN and Inf are caught).
[[nodiscard]] float max_level_linear(double max_level_db) noexcept;

struct PluginSpec {
  std::string name;  ///< unique within the chain, used as "NAME:PARAM"
  std::string path;  ///< as written
  PluginKind kind = PluginKind::native_builtin;
  std::filesystem::path resolved;  ///< absolute file path (empty for builtins until loaded)
  std::vector<ParamSetting> params;
  OnFailure on_failure = OnFailure::bypass;
  /// `on-failure` was written in the entry. When it was not, a Python plugin of the earlier API
  /// (`create_plugin()`, which refused to pass unprocessed audio) gets `mute`
  /// (effective_on_failure), every other plugin `bypass`.
  bool on_failure_given = false;
  /// `bit-exact = true`: the plugin's output passes with every float bit pattern unchanged (no
  /// NaN or level guard, no ramp, no flush-to-zero in its sandbox). docs/encrypted-voice.md.
  bool bit_exact = false;
  /// `max-level` in dBFS: a sample beyond ±10^(max_level_db / 20) counts as a failed block, as
  /// NaN and Inf do (never in a bit-exact slot).
  double max_level_db = default_max_level_db;
  double timeout_ms = 0.0;                ///< 0: derived from the cycle's budget
  SlotMode mode = SlotMode::auto_select;  ///< Python plugins only
  /// pipelined: blocks of added latency (1..max_pipeline_blocks; 0 only in a relay after its
  /// first plugin: it runs in the blocks of those before it); else 0
  std::uint32_t blocks = 0;
  /// Python plugins: the sandbox's address-space limit (RLIMIT_AS) in MiB; 0 = none.
  std::uint32_t memory_mb = 2048;
  /// Python plugins (`allow-writes = "DIR"`): the one directory (absolute, existing) the sandbox
  /// may write in, e.g. a sink's recordings; empty: no writing anywhere.
  std::filesystem::path allow_writes{};
  /// Python only: how long before a job is due its sandbox stops sleeping and spins
  /// (SandboxEndpoint anticipation); 0 (the default) = sleep until woken.
  std::uint32_t wake_lead_us = 0;
  /// Python plugins (`reload`): in `sandpipe run`, a change of the file loads the new code in a
  /// new sandbox with the old one's state and hands over to it (a wet → wet crossfade); a
  /// version that fails to load leaves the old one running.
  bool reload = false;
  /// Python plugins (`sandbox = "NAME"`): the sandbox group it runs in; empty: a process of its
  /// own (or the node's `sandbox.default`).
  std::string sandbox;
  /// A sandbox group's slot (group_sandboxes()): its plugins, in chain order, each as written;
  /// the slot's `params` are theirs with ParamSetting::member set. Empty for every other slot.
  std::vector<PluginSpec> members;
  /// A relay's slot (relay_pipelines()): its stages, in chain order, each a plugin as written
  /// or a sandbox group's slot, each in a sandbox of its own; the slot's `params` are theirs
  /// with ParamSetting::member set (counted over slot_plugins()), its `blocks` their sum. Empty
  /// for every other slot.
  std::vector<PluginSpec> stages;
  int line = 0;
};

/// [any] True for a sandbox group's slot: several Python plugins in one sandbox process.
[[nodiscard]] inline bool is_group(const PluginSpec& spec) noexcept { return !spec.members.empty(); }
/// [any] True for a relay's slot: several Python plugins, each in its own sandbox, handing each
/// block straight to the next (host/python/relay.h).
[[nodiscard]] inline bool is_relay(const PluginSpec& spec) noexcept { return !spec.stages.empty(); }
/// [any] A slot's plugins as written: a group's members, a relay's stages (a group among them
/// by its members), or the slot itself.
[[nodiscard]] inline std::vector<const PluginSpec*> slot_plugins(const PluginSpec& spec) {
  std::vector<const PluginSpec*> out;
  for (const PluginSpec& member : spec.members) out.push_back(&member);
  for (const PluginSpec& stage : spec.stages)
    for (const PluginSpec* plugin : slot_plugins(stage)) out.push_back(plugin);
  if (out.empty()) out.push_back(&spec);
  return out;
}

/// Where Python plugins without `sandbox` run (`sandbox.default`).
enum class SandboxDefault : std::uint8_t {
  isolated,  ///< each in a process of its own
  shared,    ///< each run of consecutive ones in one process (the group "shared")
};

/// What the node looks like in the graph (`mode`).
enum class NodeMode : std::uint8_t {
  filter,  ///< an `Audio/Filter` with input and output ports, patched by hand (qpwgraph, pw-link)
  sink,    ///< a virtual output device (`Audio/Sink`) whose processed audio the session manager
           ///< plays on the default device, like module-filter-chain's capture/playback pair
  source,  ///< a virtual microphone (`Audio/Source`): captures the default input device (or
           ///< `target`), runs the chain, and is recorded by applications
};

[[nodiscard]] std::string_view to_string(NodeMode mode) noexcept;

struct ChainConfig {
  std::filesystem::path file;  ///< where it was read from (empty for text)
  std::string node_name = "sandpipe";
  std::string node_description;      ///< defaults to node_name
  std::uint32_t channels = 2;        ///< 1..8, ports named after audio.position
  NodeMode mode = NodeMode::filter;  ///< `mode = "filter" | "sink" | "source"`
  /// sink / source mode: the device the node's device-side stream links to (`target.object`:
  /// a node.name or serial); empty = the default device, followed when it changes.
  std::string target;
  double latency_max_ms = 20.0;      ///< the scheduler's latency budget (`latency.max-ms`)
  /// A Python slot that crashes (or hangs) this many times within `restart_window_s` seconds
  /// is given up on: it stays bypassed (`restart.max`, `restart.window-s`).
  std::uint32_t restart_max = 5;
  double restart_window_s = 60.0;
  /// Python sandboxes are forked from one pre-initialised zygote per node (host/python/zygote.h)
  /// instead of each starting its own interpreter (`sandbox.zygote`). On by default: each forked
  /// sandbox gets its own PID namespace as a spawned one does (a user's zygote makes them from a
  /// user namespace of its own); a zygote that cannot refuses and every sandbox is spawned.
  bool sandbox_zygote = true;
  SandboxDefault sandbox_default = SandboxDefault::isolated;
  /// Consecutive `mode = "pipelined"` Python plugins hand each block straight from sandbox to
  /// sandbox (a relay, relay_pipelines()); false: each block goes back through the host
  /// between them (`pipeline.handoff = "direct" | "host"`).
  bool direct_handoff = true;
  /// The chain's slots in order. A run of consecutive Python plugins of one sandbox group is
  /// one slot (is_group()) holding them as its members; every other plugin is a slot of its own.
  std::vector<PluginSpec> plugins;
};

/// A config that cannot be used. `what()` reads "FILE:LINE: problem".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// [main] Parses SPA-JSON config text. Relative plugin paths resolve against `base_dir`.
/// Throws ConfigError naming the file and line of the first problem.
[[nodiscard]] ChainConfig parse_config(std::string_view text, const std::filesystem::path& file_for_messages,
                                       const std::filesystem::path& base_dir);

/// [main] Folds each run of consecutive Python plugins of one sandbox group (`sandbox = "NAME"`,
/// or `sandbox.default = "shared"`) into one slot whose members they are (a run of one stays a
/// plain slot). The options that shape the process or the slot (mode, blocks, timeout-ms,
/// memory-mb, allow-writes, wake-lead-us, bit-exact, max-level) must agree within a run;
/// `reload` is refused in a group. parse_config() calls it; `where` prefixes errors. Throws
/// ConfigError.
void group_sandboxes(ChainConfig& config, const std::string& where);

/// [main] Folds each run of two or more consecutive `mode = "pipelined"` Python slots (plugins
/// or sandbox groups) into one slot, a relay (is_relay()): one pipeline for the run, `blocks`
/// deep in all (the sum of its stages'), each stage in its own sandbox handing each block
/// straight to the next. Refuses `blocks = 0` outside a relay's later plugins, a relay deeper than
/// max_pipeline_blocks, `reload` in a relay, and plugins of one relay that disagree on
/// bit-exact or max-level (the slot's). Does nothing with `pipeline.handoff = "host"` (then
/// `blocks = 0` is refused). parse_config() calls it after group_sandboxes(). Throws ConfigError.
void relay_pipelines(ChainConfig& config, const std::string& where);

/// [main] Every plugin of the chain as written: a group's members or a relay's stages in place
/// of its slot.
[[nodiscard]] std::vector<const PluginSpec*> plugins_as_written(const ChainConfig& config);

/// [main] Reads and parses a config file. Throws ConfigError.
[[nodiscard]] ChainConfig load_config(const std::filesystem::path& file);

/// [main] What a slot outputs for blocks its plugin did not process: `on-failure` if the entry
/// gives it, else `mute` for a processor of the earlier Python API (`api` "legacy" and `role`
/// "processor", as its load reply says; `api` empty when it never loaded: then the file is read
/// for a `create_plugin`), else `bypass`.
[[nodiscard]] OnFailure effective_on_failure(const PluginSpec& spec, std::string_view api,
                                             std::string_view role);

/// [main] Channel position names for a channel count: FL FR for 2, MONO for 1, FL FR FC LFE … up to 8.
[[nodiscard]] std::vector<std::string> channel_positions(std::uint32_t channels);

}  // namespace sandpipe::host
