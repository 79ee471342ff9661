// A chain slot whose plugin runs in a sandbox process: the real-time side of a Python plugin
// (its lanes, ramps and deadline share), reached through a SandboxLink (shm/). The process
// behind the link is a SandboxInstance (sandbox-instance.h), owned by the Supervisor.
//
// Threads: everything here is [main] but process_rt() and the [any] getters; the Supervisor's
// thread counts as [main] for the link operations (replace_link and what goes with it).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "host/config/config.h"
#include "host/python/sandbox-client.h"
#include "host/python/sandbox-link.h"
#include "host/slot/processor.h"
#include "host/slot/recent-times.h"
#include "host/slot/scheduler.h"
#include "shm/block-channel.h"

namespace sandpipe::host {

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
///
/// It knows nothing of processes: the sandbox behind each link is a SandboxInstance, which the
/// Supervisor owns (start_sandboxes() hands both out).
class PythonSlot final : public Processor {
 public:
  /// [main] A slot reading and writing through `link` (the first sandbox's), for blocks of up
  /// to `max_frames`. Its plugin's latency is 0 until set_plugin().
  PythonSlot(std::string name, std::unique_ptr<SandboxLink> link, std::uint32_t max_frames);
  /// [main] Frees its links; the sandboxes behind them are their SandboxInstances' to stop.
  ~PythonSlot() override;
  PythonSlot(const PythonSlot&) = delete;
  PythonSlot& operator=(const PythonSlot&) = delete;
  PythonSlot(PythonSlot&&) = delete;
  PythonSlot& operator=(PythonSlot&&) = delete;

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
  /// [main] What the plugin reported at its load: its latency sizes the rings, a sink passes on
  /// what it received (in every on-failure policy). Before the RT side runs.
  void set_plugin(const PythonPluginInfo& info);
  /// [any] False once the newest link is known dead (mark_link_dead()) or broke the block
  /// protocol: blocks go dry until a new link arrives.
  [[nodiscard]] bool usable() const noexcept {
    const SandboxLink* link = links_.latest.load(std::memory_order_acquire);
    return link != nullptr && !link->dead.load(std::memory_order_relaxed) &&
           !link_failed_.load(std::memory_order_relaxed);
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
  /// [any] How many jobs the RT side has submitted on the newest link (free-running), for a
  /// relay's hang watchdog: what its first sandbox has been offered.
  [[nodiscard]] std::uint32_t submitted_hint() const noexcept {
    const SandboxLink* link = links_.latest.load(std::memory_order_acquire);
    return link != nullptr ? link->endpoint.submitted_count() : 0;
  }
  /// [main] A relay's sandbox died (down) or a new one serves in its place (up). While any is
  /// down the RT side neither submits nor waits (a wait in progress is woken): its blocks go
  /// dry or mute at once instead of running out their deadlines. The relay's link stays: the
  /// blocks the dead sandbox held come back as lost, the ones queued before it are served by
  /// the new one. Calls pair up (the Supervisor's thread only).
  void relay_stage_down() noexcept;
  void relay_stage_up() noexcept;
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

 private:
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

  /// The links of this slot. Build on the main thread, swap on the RT thread, free on the main
  /// thread: `owned` holds every link not freed yet and is the main thread's alone; every other
  /// pointer here borrows from it. `rt` (and `incoming`, during a reload hand-over) is what the
  /// RT side uses; `offered` goes main → RT; `retired` RT → main; a retired link waits in
  /// `graveyard` one collect_retired_links() before it is freed (see mark_link_dead());
  /// `latest` is the newest handed over, for the main thread and mark_link_dead().
  struct LinkSlots {
    std::vector<std::unique_ptr<SandboxLink>> owned;  ///< [main]
    SandboxLink* rt = nullptr;
    SandboxLink* incoming = nullptr;
    std::atomic<SandboxLink*> offered{nullptr};
    std::atomic<SandboxLink*> retired{nullptr};
    std::atomic<SandboxLink*> latest{nullptr};
    SandboxLink* before_offer = nullptr;  ///< [main] `latest` before the last offer (withdraw_link)
    SandboxLink* graveyard = nullptr;     ///< [main]

    /// [main] Takes `link` into `owned`; returns the borrowed pointer.
    SandboxLink* own(std::unique_ptr<SandboxLink> link);
    /// [main] Takes `link` out of `owned` (null: it was not there).
    std::unique_ptr<SandboxLink> disown(const SandboxLink* link) noexcept;
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

  std::atomic<bool> link_failed_{false};
  std::uint32_t relay_down_ = 0;  ///< [main] a relay's sandboxes down now
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
