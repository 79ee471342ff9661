// Python plugins: each `*.py` slot runs in its own sandbox process (sandbox/), reached through
// a shared-memory block channel (shm/) and a Cap'n Proto control channel (schemas/control.capnp).
//
// Threads: everything here is [main] but `SandboxProcessor::process_rt` and the [any] getters.
// NOTE: sandboxes die with the *thread* that spawned them (PR_SET_PDEATHSIG follows the
// thread): start them from the main thread, or one that outlives them.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
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

#include "host/config.h"
#include "host/processor.h"
#include "shm/block-channel.h"
#include "shm/segment.h"

namespace sandpipe::host {

/// [main] Spawns one sandbox per spec (all started before any is waited for, so several plugins
/// load in parallel), performs the hello/version/layout handshake, loads each plugin with its
/// params, and returns one Processor per spec in the same order. Throws PluginError naming the
/// plugin and the reason (with the Python traceback) if any fails to load.
[[nodiscard]] std::vector<std::unique_ptr<Processor>> start_sandboxes(std::span<const PluginSpec> specs,
                                                                      double sample_rate,
                                                                      std::uint32_t channels,
                                                                      std::uint32_t max_frames);

/// [main] Runs a sandbox, loads `file` at 48000 Hz, 2 channels, 512 frames and returns a
/// human-readable multi-line description: detected API (sdk/legacy), name, version, params
/// with ranges/defaults, latency. Throws PluginError. (`sandpipe inspect FILE`.)
[[nodiscard]] std::string describe_python_plugin(const std::filesystem::path& file);

enum class SandboxLogLevel : std::uint8_t { debug, info, warning, error };

/// Receives each line a sandbox sends (the plugin's print()s, warnings, exceptions in
/// process()). `plugin` is the slot's name from the config. [main], from the calls below.
using SandboxLogFn = std::function<void(std::string_view plugin, SandboxLogLevel level, std::string_view line)>;

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
  std::string api;  ///< "sdk" (sandpipe.Plugin) or "legacy" (create_plugin())
  std::string role;  ///< processor | source | sink
  std::string name;
  std::string version;
  std::string description;
  std::uint32_t latency = 0;
  std::vector<PythonParamInfo> params;
  std::string python_version;
  std::string numpy_version;
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
};

class SandboxProcessor;

/// [main] start_sandboxes with options, keeping the concrete type (tests, tools, the CLI).
[[nodiscard]] std::vector<std::unique_ptr<SandboxProcessor>> start_sandbox_processors(
    std::span<const PluginSpec> specs, double sample_rate, std::uint32_t channels, std::uint32_t max_frames,
    const SandboxOptions& options = {});

/// A chain slot whose plugin runs in a sandbox process (synchronous mode: each block is sent
/// and waited for within the slot's deadline).
///
/// The RT side never blocks on the socket: `process_rt` copies the input into a free slot of
/// the shared segment, submits it, waits for the completion until `ctx.deadline_ns`, validates
/// it and copies the result out. A block not back in time leaves the dry input in `out`
/// (latency-aligned, same positions) and is counted in `deadline_misses`; its late completion is
/// recognised by its seq and discarded on a later call, and its slot is not reused until then.
/// `passthrough` and `failed` completions, and output with NaN/Inf, give the dry input too.
/// A sandbox that breaks the protocol (or exits) leaves the slot dry for good.
class SandboxProcessor final : public Processor {
 public:
  struct Control;  // main-thread state (sockets, child process), defined in sandbox-client.cpp

  /// [main] Terminates the sandbox: `shutdown`, a bounded wait, then SIGKILL; reaps it.
  ~SandboxProcessor() override;

  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  [[nodiscard]] std::uint32_t latency_frames() const noexcept override { return latency_; }
  /// [rt] See the class comment.
  BlockStatus process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                         const ProcessContext& ctx) noexcept override;
  [[nodiscard]] SlotCounters counters() const noexcept override;

  /// [any] What the plugin reported when it loaded.
  [[nodiscard]] const PythonPluginInfo& info() const noexcept { return info_; }
  /// [any] The sandbox's process id (as the host sees it).
  [[nodiscard]] pid_t pid() const noexcept;
  /// [any] False once the sandbox broke the protocol or was seen to exit: blocks go dry.
  [[nodiscard]] bool usable() const noexcept { return usable_.load(std::memory_order_relaxed); }

  /// [main] The control socket: poll it for input on the main loop and call service_control().
  [[nodiscard]] int control_fd() const noexcept;
  /// [main] Handles what the sandbox sent (log lines, errors from process()) without blocking.
  /// Returns false once the sandbox has gone (then the slot stays dry).
  bool service_control();

  /// [main] Changes a parameter live (between blocks). Returns an error message if the plugin
  /// refused it, nothing on success. Throws PluginError if the sandbox does not answer.
  [[nodiscard]] std::optional<std::string> set_param(const ParamSetting& setting);
  /// [main] The plugin's get_state() (to restore after a restart). Throws PluginError.
  [[nodiscard]] std::vector<std::byte> get_state();
  /// [main] The sandbox's counters. Throws PluginError.
  [[nodiscard]] SandboxStats stats();

 private:
  friend std::vector<std::unique_ptr<SandboxProcessor>> start_sandbox_processors(
      std::span<const PluginSpec>, double, std::uint32_t, std::uint32_t, const SandboxOptions&);

  SandboxProcessor(std::string name, shm::Segment segment, std::uint32_t max_frames);

  /// [main] Sizes the dry delay line once the plugin's latency is known.
  void set_latency(std::uint32_t latency);
  /// [rt] Fills out with the dry signal.
  void write_dry_rt(float* const* out, std::uint32_t frames) noexcept;
  /// [rt] Pops completions of blocks that came back after their deadline.
  void reclaim_late_rt() noexcept;
  /// [rt] Frees the slot a late completion names; false if it names nothing in flight.
  bool discard_late_rt(const shm::Completion& c) noexcept;
  BlockStatus go_dry_rt(float* const* out, std::uint32_t frames, bool miss) noexcept;

  std::string name_;
  PythonPluginInfo info_;
  std::uint32_t latency_ = 0;
  std::uint32_t channels_;
  std::uint32_t max_frames_;
  shm::Segment segment_;
  shm::HostEndpoint endpoint_;
  std::unique_ptr<Control> control_;

  // RT state (the data thread only).
  std::array<bool, shm::max_slots> slot_busy_{};
  std::array<std::uint32_t, shm::max_slots> slot_seq_{};
  std::uint32_t next_seq_ = 1;
  const float* const* dry_in_ = nullptr;  // this block's input, when latency is 0
  std::vector<float> delay_;               // latency_ frames per channel (ring)
  std::vector<float> dry_;                 // max_frames per channel, the delayed input
  std::uint32_t delay_pos_ = 0;

  std::atomic<bool> usable_{true};
  std::atomic<std::uint64_t> blocks_{0};
  std::atomic<std::uint64_t> deadline_misses_{0};
  std::atomic<std::uint64_t> bypassed_blocks_{0};
  std::atomic<std::uint64_t> sanitized_blocks_{0};
};

}  // namespace sandpipe::host
