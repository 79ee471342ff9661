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

#include "host/config/config.h"
#include "host/slot/processor.h"
#include "host/python/sandbox-link.h"
#include "host/slot/scheduler.h"
#include "shm/block-channel.h"
#include "shm/segment.h"

namespace sandpipe::host {

class Zygote;  // host/python/zygote.h

/// [main] Spawns one sandbox per spec (all started before any is waited for, so several plugins
/// load in parallel), performs the hello/version/layout handshake, loads each plugin with its
/// params, and returns one Processor per spec in the same order. Throws PluginError naming the
/// plugin and the reason (with the Python traceback) if any fails to load.
[[nodiscard]] std::vector<std::unique_ptr<Processor>> start_sandboxes(std::span<const PluginSpec> specs,
                                                                      double sample_rate,
                                                                      std::uint32_t channels,
                                                                      std::uint32_t max_frames);

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
  /// its module's top level runs until SandboxProcessor::load_preloaded() (a calibration
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

class SandboxInstance;  // one sandbox process and its conversation (host/python/sandbox-instance.h)
class SandboxProcessor;
class Supervisor;

/// [main] start_sandboxes with options, keeping the concrete type (tests, tools, the CLI).
[[nodiscard]] std::vector<std::unique_ptr<SandboxProcessor>> start_sandbox_processors(
    std::span<const PluginSpec> specs, double sample_rate, std::uint32_t channels, std::uint32_t max_frames,
    const SandboxOptions& options = {});

/// A chain slot whose plugin runs in a sandbox process, reached through a SandboxLink.
///
/// The RT core is position-based (see docs/architecture.md, "Scheduler"): the slot numbers
/// frames with a 64-bit stream position; each call submits its input as one job covering
/// [pos, pos + frames) and outputs positions [pos − L, pos − L + frames), where L =
/// latency_frames() = the plugin's own latency + the pipeline latency (0 in sync mode, k × the
/// prepared block in pipelined mode). Completions are copied into an output reorder ring tagged
/// with their positions; a position whose tag is missing when it is read (late, failed, NaN/Inf,
/// sandbox down, corrupt endpoint) gets the dry input of the same position from the input
/// history (silence with on-failure = "mute"), so a bypass never shifts time. The call waits
/// (at most until ctx.deadline_ns) only for jobs covering the positions it must output now. A
/// run of processed frames after dry ones fades in over crossfade_frames; a switch to dry
/// because the wet signal is missing cannot fade from wet (there is none): the step is removed
/// by an offset that decays over crossfade_frames instead (no added latency).
/// Slots the sandbox may still write are never reused until their completion came back.
class SandboxProcessor final : public Processor {
 public:
  /// [main] Terminates the sandbox: `shutdown`, a bounded wait, then SIGKILL; reaps it.
  ~SandboxProcessor() override;

  [[nodiscard]] std::string_view name() const noexcept override { return name_; }
  /// [any] The plugin's own latency plus the pipeline latency (pipeline_frames()).
  [[nodiscard]] std::uint32_t latency_frames() const noexcept override {
    return latency_ + pipeline_frames();
  }
  /// [any] The plugin's own latency (as it reported at load).
  [[nodiscard]] std::uint32_t plugin_latency_frames() const noexcept { return latency_; }
  /// [rt] See the class comment.
  BlockStatus process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                         const ProcessContext& ctx) noexcept override;
  [[nodiscard]] SlotCounters counters() const noexcept override;

  /// [any] What the plugin reported when it loaded (empty while only preloaded).
  [[nodiscard]] const PythonPluginInfo& info() const noexcept { return info_; }
  /// [main] Loads the plugin of a sandbox started with SandboxOptions::preload_only (its params,
  /// no state), waiting at most `timeout`. Returns an empty string once loaded, else why not
  /// (the sandbox is then of no use). Before the RT side runs.
  [[nodiscard]] std::string load_preloaded(std::chrono::milliseconds timeout);
  /// [any] The sandbox's process id (as the host sees it).
  [[nodiscard]] pid_t pid() const noexcept;
  /// [any] False once the sandbox broke the protocol or was seen to exit: blocks go dry.
  [[nodiscard]] bool usable() const noexcept {
    return usable_.load(std::memory_order_relaxed) && !link_failed_.load(std::memory_order_relaxed);
  }

  // --- Link swap (restarts) -----------------------------------------------------------------

  /// [main] Hands the RT side a new link (a restarted sandbox, loaded and ready). The RT side
  /// adopts it at the start of its next call (an atomic pointer exchange). With
  /// LinkSwap::restart it discards whatever the old link still owed (those positions come out
  /// dry) and fades from dry to wet when the new sandbox's output arrives. With
  /// LinkSwap::reload (the old sandbox still runs) it hands over instead: every block goes to
  /// both sandboxes until the new one's output covers the positions being read, then the output
  /// crossfades from the old one's wet signal to the new one's over crossfade_frames, and only
  /// then is the old link let go of (handing_over() is true meanwhile; keep the old sandbox
  /// running until it is false). A hand-over whose new link dies, whose old link dies, or that
  /// is not done after 8 × max_frames read positions falls back to the restart behaviour.
  /// Returns false while a previous offer is still pending; `link` is then left to the caller
  /// (moved from only on true), to offer again later. Throws std::invalid_argument if the
  /// link's geometry differs from the slot's.
  bool replace_link(std::unique_ptr<SandboxLink>&& link, LinkSwap swap = LinkSwap::restart);
  /// [main] Takes back the link the last replace_link() offered if the RT side has not adopted
  /// it yet (a paused graph); nullptr if it has. The link handed over before it is the newest
  /// again (mark_link_dead()).
  [[nodiscard]] std::unique_ptr<SandboxLink> withdraw_link() noexcept;
  /// [any] True while a LinkSwap::reload hand-over runs (both links in use by the RT side).
  [[nodiscard]] bool handing_over() const noexcept { return handing_over_.load(std::memory_order_acquire); }
  /// [main] The generation number for the next link of this slot (1 was the first).
  [[nodiscard]] std::uint64_t next_link_generation() noexcept;
  /// [main] Destroys the links the RT side let go of (the RT thread never frees). Cheap; call it
  /// after replace_link() and periodically.
  void collect_retired_links();
  /// [any] The current sandbox is known dead: the RT side stops waiting on it at once (a wait in
  /// progress is woken) and stays dry until a new link arrives. Marks the newest link handed over
  /// (the one replace_link() gave last, or the first). NOTE: from a thread other than the main
  /// thread, do not race a replace_link() + two collect_retired_links() cycles.
  void mark_link_dead() noexcept;
  /// [any] Age of the oldest submitted-but-not-completed job (0 if none), for a hang watchdog.
  [[nodiscard]] std::uint64_t oldest_outstanding_age_ns(std::uint64_t now_ns) const noexcept;
  /// [any] True once the current link broke the protocol (a corrupt completion, a bad index):
  /// the slot is dry until replace_link(). Cleared when a new link is adopted.
  [[nodiscard]] bool link_failed() const noexcept { return link_failed_.load(std::memory_order_relaxed); }
  /// [any] Generation of the link the RT side uses now (0 before the first call).
  [[nodiscard]] std::uint64_t active_generation() const noexcept {
    return active_generation_.load(std::memory_order_relaxed);
  }

  // --- Scheduling ---------------------------------------------------------------------------

  /// [main] Sets the slot's mode before it runs or while it runs: `blocks` = 0 is sync, k ≥ 1 is
  /// pipelined with L_pipe = k × `block_frames` (the block size the slot is prepared for: the
  /// quantum, clamped to the chain's max_frames). k is clamped to max_pipeline_blocks(). A
  /// running slot adopts it at its next call, crossfading from the old timeline to the new one;
  /// re-report latency_frames() afterwards.
  void set_pipeline(std::uint32_t blocks, std::uint32_t block_frames) noexcept;
  /// [any] Pipeline depth in blocks (0: sync) and its latency in frames, as last set.
  [[nodiscard]] std::uint32_t pipeline_blocks() const noexcept {
    return pipeline_blocks_.load(std::memory_order_relaxed);
  }
  [[nodiscard]] std::uint32_t pipeline_frames() const noexcept {
    return pipeline_frames_.load(std::memory_order_relaxed);
  }
  /// [any] Largest k set_pipeline() accepts: slot_count − 2 (k jobs ahead, the one being
  /// submitted, and one spare).
  [[nodiscard]] std::uint32_t max_pipeline_blocks() const noexcept { return max_pipeline_blocks_; }
  /// [any] Completion times (submit → seen complete on the host), written by the RT thread.
  [[nodiscard]] const LatencyHistogram& histogram() const noexcept { return histogram_; }
  /// [main] Before the RT side runs (or after it stopped): `calibration_warmup_blocks` untimed,
  /// then `blocks` timed synchronous round trips of silence of `frames` frames, timed on this
  /// thread, into `out` (not the RT histogram). The warm-up keeps a plugin's first calls (lazy
  /// imports, first-touch pages, numpy's caches) out of a p99.9 that 128 samples make the max.
  /// The plugin sees these blocks and its state advances (Chain times a stand-in sandbox, not the
  /// slot that plays). Returns false if the sandbox did not answer within `timeout_ns` per block.
  static constexpr std::uint32_t calibration_warmup_blocks = 8;
  bool calibrate(std::uint32_t blocks, std::uint32_t frames, std::uint64_t timeout_ns, HistogramCounts& out);
  /// [main] Frames of a wet↔dry ramp (default 64; 0 switches hard). Before running.
  void set_crossfade_frames(std::uint32_t frames) noexcept { crossfade_frames_ = frames; }
  /// [main] What to output for positions without processed audio (effective_on_failure()).
  /// `mute` is fail-closed: such positions are exact zeros, the plugin's own passthrough
  /// (`False` from an earlier-API process_audio) too, and no ramp blends the dry signal in: the
  /// switches between processed output and zeros are hard. Before running.
  void set_on_failure(OnFailure policy) noexcept { on_failure_ = policy; }
  [[nodiscard]] OnFailure on_failure() const noexcept { return on_failure_; }
  /// [main] PluginSpec::bit_exact: processed output passes with its bit patterns unchanged (no
  /// NaN/level guard, no ramp of any kind: a reload switches at one frame, a depth change jumps).
  /// Before running; the sandbox's flush-to-zero is SandboxLaunch::keep_denormals.
  void set_bit_exact(bool bit_exact) noexcept { bit_exact_ = bit_exact; }
  [[nodiscard]] bool bit_exact() const noexcept { return bit_exact_; }
  /// [main] The guard's ceiling (max_level_linear(PluginSpec::max_level_db)): a block with a
  /// sample beyond ± it, or NaN, is not processed output. Before running.
  void set_max_level(float ceiling) noexcept { max_level_ = ceiling; }

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
  friend class Supervisor;  // takes instance_ over (host/python/supervisor.h)
  friend std::vector<std::unique_ptr<SandboxProcessor>> start_sandbox_processors(std::span<const PluginSpec>,
                                                                                 double, std::uint32_t,
                                                                                 std::uint32_t,
                                                                                 const SandboxOptions&);

  SandboxProcessor(std::string name, std::unique_ptr<SandboxLink> link, std::uint32_t max_frames);

  /// [main] The sandbox while no Supervisor took it over; throws PluginError after.
  [[nodiscard]] SandboxInstance& own_instance() const;
  /// [main] Takes the first link and sizes the RT core (from the constructor).
  void init_rt(std::unique_ptr<SandboxLink> link);
  /// [main] Sizes the rings once the plugin's latency is known.
  void set_latency(std::uint32_t latency);
  /// [main] The newest link handed over (for notify_control and the control conversation).
  [[nodiscard]] SandboxLink& link_for_main() const noexcept {
    return *links_.latest.load(std::memory_order_acquire);
  }

  struct JobRecord {
    std::uint64_t pos = 0;  ///< first input position of the job
    std::uint64_t submit_ns = 0;
    std::uint32_t frames = 0;
    std::uint32_t seq = 0;
    bool busy = false;
  };

  /// What the RT side keeps of one link: its jobs in flight and the processed audio it
  /// returned, by position. `lane_` belongs to links_.rt; `incoming_` to links_.incoming while
  /// a reload hands over (their contents are swapped when it is done, never their addresses).
  struct Lane {
    std::vector<float> wet;          ///< channels × ring: processed audio by position
    std::vector<std::uint64_t> tag;  ///< ring: the position a wet frame holds (0: none)
    std::array<JobRecord, shm::max_slots> jobs{};
    std::array<std::uint32_t, shm::max_slots> fifo{};  ///< busy slots, oldest first
    std::uint32_t fifo_head = 0;
    std::uint32_t fifo_tail = 0;
    /// Input positions below this were needed by a cycle whose wait for them ran out.
    std::uint64_t missed_end = 0;
    /// A cycle also waited in vain for a job an earlier cycle had missed: the sandbox is hung or
    /// far behind, and no cycle waits on it until it has caught up (every job it still owes
    /// starts at or past `missed_end`).
    bool stalled = false;
    bool usable = false;  ///< RT view: the link may be used
  };

  /// [rt] Adopts an offered link and a new pipeline depth, if any.
  void adopt_rt() noexcept;
  /// [rt] `next` replaces links_.rt at once (LinkSwap::restart, or a reload that cannot fade).
  void switch_link_rt(SandboxLink* next) noexcept;
  /// [rt] Ends a reload hand-over: the incoming link becomes the slot's link.
  void finish_handover_rt() noexcept;
  /// [rt] True if `lane` (of `link`) may be submitted to and waited on.
  [[nodiscard]] bool live_rt(const Lane& lane, const SandboxLink* link) const noexcept;
  /// [rt] The link is unusable from now on (protocol breach): stop using it.
  void fail_link_rt(Lane& lane) noexcept;
  /// [rt] Applies one completion (validated) to the lane's output ring. False: protocol breach.
  bool apply_completion_rt(Lane& lane, SandboxLink& link, const shm::Completion& done,
                           std::uint64_t now) noexcept;
  /// [rt] Pops completions: without waiting, or until the oldest job covering a position
  /// < `needed_end` is back (or `deadline_ns`). Returns true if such a job is still out.
  bool collect_rt(Lane& lane, SandboxLink& link, std::uint64_t needed_end,
                  std::uint64_t deadline_ns) noexcept;
  /// [rt] Submits [in_pos_, in_pos_ + frames) from `in`, waiting for a free slot until the deadline.
  void submit_rt(Lane& lane, SandboxLink& link, const float* const* in, std::uint32_t frames,
                 std::uint64_t deadline_ns) noexcept;
  /// [rt] Writes positions [first, first + frames) to `out` (wet, dry or silence, ramps).
  /// Returns the number of frames that were not processed audio.
  std::uint32_t render_rt(float* const* out, std::uint64_t first, std::uint32_t frames) noexcept;
  /// [rt] True if [first, first + frames) is all processed audio with no ramp running, so
  /// render_rt() only copies it.
  [[nodiscard]] bool plain_wet_rt(std::uint64_t first, std::uint32_t frames) const noexcept;
  /// [rt] Processed audio at position p in channel ch if tagged; else the fallback.
  [[nodiscard]] float fallback_rt(std::uint32_t ch, std::uint64_t p) const noexcept;
  void publish_oldest_rt() noexcept;

  std::string name_;
  PythonPluginInfo info_;
  std::uint32_t latency_ = 0;  ///< the plugin's own latency (frames)
  std::uint32_t channels_;
  std::uint32_t max_frames_;
  std::unique_ptr<SandboxInstance> instance_;  ///< null once a Supervisor took it over
  Supervisor* supervisor_ = nullptr;           ///< set by that Supervisor ([main]); set_param goes through it

  /// The links of this slot, owned here (the destructor frees them). `rt` is the RT side's;
  /// `offered` goes main → RT; `retired` RT → main; `graveyard` waits one collect before it is
  /// freed (see mark_link_dead()); `latest` is the newest handed over, for the main thread.
  struct LinkSlots {
    LinkSlots() = default;
    LinkSlots(const LinkSlots&) = delete;
    LinkSlots& operator=(const LinkSlots&) = delete;
    LinkSlots(LinkSlots&&) = delete;
    LinkSlots& operator=(LinkSlots&&) = delete;
    ~LinkSlots();
    SandboxLink* rt = nullptr;
    std::atomic<SandboxLink*> offered{nullptr};
    std::atomic<SandboxLink*> retired{nullptr};
    std::atomic<SandboxLink*> latest{nullptr};
    SandboxLink* incoming = nullptr;      ///< the RT side's second link during a reload hand-over
    SandboxLink* before_offer = nullptr;  ///< [main] `latest` before the last offer (withdraw_link)
    std::unique_ptr<SandboxLink> graveyard;
  };
  LinkSlots links_;
  std::uint64_t next_generation_ = 2;
  std::atomic<std::uint64_t> active_generation_{0};

  // Scheduling, set on the main thread.
  std::uint32_t max_pipeline_blocks_ = 0;
  std::uint32_t max_pipeline_frames_ = 0;  ///< ring sizing: max_pipeline_blocks_ × max_frames_
  std::atomic<std::uint32_t> pipeline_blocks_{0};
  std::atomic<std::uint32_t> pipeline_frames_{0};
  std::uint32_t crossfade_frames_ = 64;
  OnFailure on_failure_ = OnFailure::bypass;
  bool sink_ = false;  ///< the plugin is a sink: its passthrough is its output, in every policy
  bool bit_exact_ = false;
  float max_level_ = 63.0957F;  ///< max_level_linear(default_max_level_db)
  LatencyHistogram histogram_;

  // RT state (the data thread only).
  static constexpr std::uint64_t position_base = std::uint64_t{1} << 40;  ///< first input position
  std::uint64_t in_pos_ = position_base;
  std::uint32_t active_pipeline_frames_ = 0;
  std::uint32_t ring_mask_ = 0;
  std::vector<float> history_;  ///< channels × ring: the dry input by position
  Lane lane_;
  Lane incoming_;
  std::uint32_t next_seq_ = 1;
  // Reload hand-over: incoming_ runs beside lane_ until the wet → wet crossfade is done.
  bool handover_ = false;
  std::uint64_t handover_from_ = 0;  ///< first output position the incoming link processes
  std::uint32_t handover_left_ = 0;  ///< frames of the crossfade still to go
  // Ramps.
  bool prev_wet_ = true;  ///< pre-roll counts as wet: no fade-in at the start
  std::uint32_t fade_in_left_ = 0;
  std::uint32_t offset_left_ = 0;
  std::array<float, shm::max_channels> offset_{};
  std::array<float, shm::max_channels> last_out_{};
  std::uint32_t retime_left_ = 0;        ///< frames left of an old-timeline → new-timeline crossfade
  std::uint32_t retime_old_frames_ = 0;  ///< the old pipeline latency during that crossfade

  std::atomic<bool> usable_{true};
  std::atomic<bool> link_failed_{false};
  std::atomic<bool> handing_over_{false};
  std::atomic<std::uint64_t> oldest_submit_ns_{0};
  std::atomic<std::uint64_t> blocks_{0};
  std::atomic<std::uint64_t> deadline_misses_{0};
  RecentTimes<SlotCounters::recent_misses> recent_miss_ns_;
  std::atomic<std::uint64_t> bypassed_blocks_{0};
  std::atomic<std::uint64_t> sanitized_blocks_{0};
  /// Blocks a processor returned False for (passed on unprocessed). A sink's blocks always
  /// pass on that way, so they do not count (sink_).
  std::atomic<std::uint64_t> passthrough_blocks_{0};
};

}  // namespace sandpipe::host
