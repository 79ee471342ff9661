// Python plugins: each `*.py` slot runs in its own sandbox process (sandbox/), reached through
// a shared-memory block channel (shm/) and a Cap'n Proto control channel (schemas/control.capnp).
// This is how a chain starts them: start_sandboxes() gives each slot its real-time side
// (PythonSlot, python-slot.h) and its process (SandboxInstance, sandbox-instance.h).
//
// Threads: everything here is [main].
// NOTE: sandboxes die with the *thread* that spawned them (PR_SET_PDEATHSIG follows the
// thread): start them from the main thread, or one that outlives them.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "host/config/config.h"
#include "host/slot/processor.h"  // PluginError

namespace sandpipe::host {

class Zygote;  // host/python/zygote.h

/// [main] Runs a sandbox that constructs the plugin of `file` without starting it
/// (SandboxOptions::inspect) and returns a human-readable multi-line description: detected API
/// (the SDK, or the earlier pipeline's with processor/source/sink), name, version, params with
/// ranges/defaults, latency. Throws PluginError. (`sandpipe inspect FILE`.)
[[nodiscard]] std::string describe_python_plugin(const std::filesystem::path& file);

enum class SandboxLogLevel : std::uint8_t { debug, info, warning, error };

/// Receives each line a sandbox sends (the plugin's print()s, warnings, exceptions in
/// process()). `plugin` is the slot's name from the config. [main], from the calls below.
using SandboxLogFn =
    std::function<void(std::string_view plugin, SandboxLogLevel level, std::string_view line)>;

/// [main] The default sink: "sandpipe: [NAME] line" on stderr.
void log_to_stderr(std::string_view plugin, SandboxLogLevel level, std::string_view line);

struct SandboxOptions {
  SandboxLogFn log = log_to_stderr;
  /// From spawning until every plugin answered its load (Python, numpy and scipy imports on a
  /// busy machine take a while).
  std::chrono::milliseconds start_timeout{60'000};
  /// How long a synchronous request (set_param, get_state, stats) waits for its answer.
  std::chrono::milliseconds request_timeout{10'000};
  /// How long the destructor lets a sandbox exit after `shutdown` before SIGKILL.
  std::chrono::milliseconds shutdown_timeout{2'000};
  /// Empty, or one entry per spec: a previous instance's get_state() to restore at load.
  std::vector<std::vector<std::byte>> states;
  /// Empty: the build tree's sandpipe-sandbox when this binary runs from the build tree,
  /// the installed one otherwise.
  std::filesystem::path sandbox_executable;
  /// How long process_rt spins for the completion before it sleeps on the futex (nullopt: the
  /// shm default, a few µs). A longer spin trades a busy core for skipping the wake-up of a
  /// sleeping audio thread.
  std::optional<std::uint64_t> host_spin_ns;
  /// Audio slots in each segment (power of two, 2..16): blocks that may be outstanding at once.
  std::uint32_t slot_count = 4;
  /// SCHED_FIFO priority for the sandbox processes (0: normal scheduling). Live nodes use one
  /// below PipeWire's data threads (88), so a sandbox is not preempted by ordinary processes.
  int rt_priority = 0;
  /// A plugin that fails to load does not throw: its processor is returned with a dead link
  /// (dry or mute for good) and the error kept for the supervisor's status (`sandpipe run`).
  bool keep_failed = false;
  /// Load only to describe the plugin (`sandpipe inspect`): the sandbox constructs it and asks
  /// what it is, but runs none of its lifecycle (no prepare, initialize or start). Such a
  /// processor must not be run.
  bool inspect = false;
  /// Empty, or one entry per spec: true starts that sandbox and has it import the plugin's
  /// module (`preload`, as a spare does) without loading the plugin: nothing of the plugin but
  /// its module's top level runs until StartedSandbox::load_preloaded() (a calibration
  /// stand-in, loaded only once the chain knows it may run a second instance).
  std::vector<bool> preload_only;
  /// Forks every sandbox (and its restarts and spares) from this zygote (host/python/zygote.h); null:
  /// each one is spawned and imports everything itself. Must outlive the processors.
  Zygote* zygote = nullptr;
};

/// A parameter as the plugin declared it (validated on receipt).
struct PythonParamInfo {
  std::string key;
  std::string label;
  std::string unit;
  std::string kind;  ///< number | integer | boolean | choice | text
  double min = 0.0;
  double max = 0.0;
  ParamValue default_value;
  std::vector<std::string> choices;
};

/// What a sandbox reported about its plugin after loading it.
struct PythonPluginInfo {
  std::string api;   ///< "sdk" (sandpipe.Plugin) or "legacy" (create_plugin())
  std::string role;  ///< processor | source | sink
  std::string name;
  std::string version;
  std::string description;
  std::uint32_t latency = 0;
  std::vector<PythonParamInfo> params;
  std::string python_version;
  std::string numpy_version;
  bool preloaded = false;  ///< the sandbox had imported the module ahead (a spare's preload)
  /// A sandbox group (api "group"): each member's, in order; `latency` above is their sum and
  /// `params` above is empty. Empty for one plugin.
  std::vector<PythonPluginInfo> members;
};

/// The sandbox's own counters (the block loop's view; see counters() for the host's).
struct SandboxStats {
  std::uint64_t blocks = 0;
  std::uint64_t exceptions = 0;
  std::uint64_t process_ns_last = 0;
  std::uint64_t process_ns_max = 0;
  std::uint64_t process_ns_total = 0;
  std::uint64_t logs_dropped = 0;
  std::uint64_t gc_collections = 0;
  /// A sandbox group: each member's exceptions and time in process() (ns), in order.
  std::vector<std::uint64_t> member_exceptions{};
  std::vector<std::uint64_t> member_process_ns{};
};

class SandboxInstance;  // one sandbox process and its conversation (host/python/sandbox-instance.h)
class PythonSlot;       // the real-time side of a Python slot (host/python/python-slot.h)

/// One Python plugin, started: the slot the chain runs and the process behind it, until the
/// Supervisor takes `instance` over. Movable, not copyable.
struct StartedSandbox {
  StartedSandbox();
  StartedSandbox(StartedSandbox&&) noexcept;
  /// The instance it held goes before the slot it held (as in the destructor).
  StartedSandbox& operator=(StartedSandbox&&) noexcept;
  StartedSandbox(const StartedSandbox&) = delete;
  StartedSandbox& operator=(const StartedSandbox&) = delete;
  ~StartedSandbox();

  /// [main] Loads the plugin of a sandbox started with SandboxOptions::preload_only (its params,
  /// no state), waiting at most `timeout`. Returns an empty string once loaded (the slot then
  /// has its info), else why not (the sandbox is then of no use). Before the slot runs.
  [[nodiscard]] std::string load_preloaded(std::chrono::milliseconds timeout);
  /// [main] Its sandboxes: `instance`, or a relay's `stages`.
  [[nodiscard]] std::vector<SandboxInstance*> instances() const;

  /// NOTE: declared in this order so that `instance` (which points into the slot's first link
  /// and shuts its sandbox down) and a relay's `stages` (which borrow its link's edges) are
  /// destroyed first.
  std::unique_ptr<PythonSlot> slot;
  std::unique_ptr<SandboxInstance> instance;  ///< null for a relay
  std::vector<std::unique_ptr<SandboxInstance>> stages;  ///< a relay's sandboxes, in order
};

/// [main] What a Python slot outputs for blocks its plugin did not process, once loaded (`info`):
/// effective_on_failure(), and for a sandbox group's slot mute if any member's is mute.
[[nodiscard]] OnFailure slot_on_failure(const PluginSpec& spec, const PythonPluginInfo& info);

/// [main] Spawns one sandbox per spec (all started before any is waited for, so several plugins
/// load in parallel), performs the hello/version/layout handshake, loads each plugin with its
/// params, and returns one StartedSandbox per spec in the same order. Throws PluginError naming
/// the plugin and the reason (with the Python traceback) if any fails to load (unless
/// SandboxOptions::keep_failed).
[[nodiscard]] std::vector<StartedSandbox> start_sandboxes(std::span<const PluginSpec> specs, double sample_rate,
                                                          std::uint32_t channels, std::uint32_t max_frames,
                                                          const SandboxOptions& options = {});

}  // namespace sandpipe::host
