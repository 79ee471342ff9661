// A chain of processors built from a config, run block by block by the node or by render.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <string_view>
#include <cstdint>
#include <memory>
#include <vector>

#include "host/config/config.h"
#include "host/slot/processor.h"
#include "host/slot/scheduler.h"
#include "host/python/supervisor.h"

namespace sandpipe::host {

class PythonSlot;
class Zygote;

/// Below PipeWire's data threads (module-rt's default 88): a sandbox must not preempt the
/// thread that waits for it, but ordinary processes must not preempt the sandbox.
inline constexpr int live_sandbox_rt_priority = 70;

/// How a chain schedules its Python slots (see docs/architecture.md, "Scheduler").
struct ChainOptions {
  /// The block size the slots are prepared for (the quantum; 0: max_frames). Pipelined slots
  /// add k × this (clamped to max_frames) of latency. Change it with set_block_frames().
  std::uint32_t block_frames = 0;
  /// Blocks of silence timed at start-up through a stand-in of each `auto` sandbox (the same
  /// plugin and params in a second sandbox, stopped afterwards, so the slot's own plugin state
  /// is untouched). Only SDK processors get one: an earlier-API plugin's lifecycle runs once.
  /// 0: no calibration, the slot starts sync and decides from what it measures while running.
  std::uint32_t calibration_blocks = 128;
  /// Share of a period the whole chain may use (the node's budget: 75 %).
  double budget_fraction = 0.75;
  /// Where scheduling decisions are reported ([main]); empty: stderr, "sandpipe: [SLOT] ...".
  std::function<void(std::string_view slot, std::string_view line)> log;
  /// Fault handling (host/python/supervisor.h, docs/reliability.md). Live (`run`): a Python plugin
  /// that cannot load leaves its slot bypassed, the status file is
  /// $XDG_RUNTIME_DIR/sandpipe/NODE.status. Offline (`render`): such a plugin throws
  /// PluginError unless `allow_bypass`; no status file; the hang watchdog defaults to
  /// `supervision.default_hang_timeout` (set it from --timeout-ms).
  bool offline = false;
  bool allow_bypass = false;
  /// SCHED_FIFO priority of the sandboxes (0: normal scheduling; offline needs none). The
  /// nodes use `live_sandbox_rt_priority`.
  int sandbox_rt_priority = 0;
  /// Wet↔dry ramp of every Python slot (frames; 0 switches hard: tests assert exact samples).
  std::uint32_t crossfade_frames = 64;
  /// Everything else of the supervisor; restart limits come from the config.
  SupervisorOptions supervision;
};

/// What the scheduler decided for one Python slot, for status output and tests.
struct SlotSchedule {
  std::string name;
  SlotMode mode = SlotMode::auto_select;  ///< as configured
  std::uint32_t blocks = 0;               ///< current pipeline depth (0: sync)
  std::uint32_t latency_frames = 0;       ///< the pipeline's latency now
  ModeDecision decision;                  ///< the last auto decision (auto only)
  HistogramCounts calibration;            ///< the start-up burst (auto only)
};

/// Owns the slots of one chain and the scratch buffers between them.
/// Built on the main thread; `process_rt` runs on the data thread only.
class Chain {
 public:
  static constexpr std::uint32_t max_channels = 8;

  /// [main] Loads every plugin of `config` (native in-process, Python in sandboxes started in
  /// parallel). `max_frames` is the largest sub-block a slot sees; longer blocks are split.
  /// Throws PluginError.
  Chain(const ChainConfig& config, double sample_rate, std::uint32_t max_frames);
  /// [main] As above, with scheduling options (the block size, calibration).
  Chain(const ChainConfig& config, double sample_rate, std::uint32_t max_frames, ChainOptions options);
  /// [main] The same chain at a new rate (the graph's changed): `previous`'s Python slots, their
  /// sandboxes, supervisor and zygote are kept, not copied: each sandbox prepares its plugin for
  /// `sample_rate` between two blocks (same process, params and state; the supervisor restarts
  /// one that cannot). Native plugins are made anew for the rate from `config`, whose plugin
  /// list must be `previous`'s. No calibration burst: auto slots decide from what they measured
  /// while running. `previous` may keep running until this chain is swapped in; it may then be
  /// freed. Throws PluginError.
  Chain(const ChainConfig& config, double sample_rate, const Chain& previous);
  ~Chain();
  Chain(const Chain&) = delete;
  Chain& operator=(const Chain&) = delete;
  Chain(Chain&&) = delete;
  Chain& operator=(Chain&&) = delete;

  /// [rt] Runs `frames` frames (any count) through every slot. `in` and `out` hold channels()
  /// pointers each and may alias. `deadline_ns` is when the output must be ready (absolute
  /// CLOCK_MONOTONIC); sandboxed slots share what is left of it. Never allocates or throws.
  void process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                  std::uint64_t deadline_ns) noexcept;

  /// [any] Sum of the slots' latencies, in frames: native declared latencies, Python plugins'
  /// own latencies and the pipelined slots' k × block. What the node reports as ProcessLatency
  /// and what `sandpipe render` compensates.
  [[nodiscard]] std::uint32_t latency_frames() const noexcept;

  /// [main] The block size (quantum) changed: pipelined slots keep their k and take
  /// L = k × `block_frames`, auto slots decide again for the new period. Running slots adopt the
  /// change at their next call, with a crossfade. Returns true if latency_frames() changed
  /// (re-report it).
  bool set_block_frames(std::uint32_t block_frames);
  [[nodiscard]] std::uint32_t block_frames() const noexcept { return block_frames_; }
  /// [main] Periodic review while running (e.g. once a second): an auto slot with sustained
  /// deadline misses gets one block deeper (never shallower) while latency.max-ms allows.
  /// Returns true if latency_frames() changed (re-report it).
  bool review_schedule();
  /// [main] The Python slots' schedules, in chain order.
  [[nodiscard]] const std::vector<SlotSchedule>& schedules() const noexcept { return schedules_; }

  [[nodiscard]] std::uint32_t channels() const noexcept { return channels_; }
  /// [any] The chain starts with a source plugin (it ignores its input: the node has no input
  /// ports) / ends with a sink plugin (its output is what the sink received: the node has no
  /// output ports). Fixed at construction; only Python plugins can be sources or sinks.
  [[nodiscard]] bool has_source() const noexcept { return has_source_; }
  [[nodiscard]] bool has_sink() const noexcept { return has_sink_; }
  [[nodiscard]] std::uint32_t max_frames() const noexcept { return max_frames_; }
  [[nodiscard]] double sample_rate() const noexcept { return sample_rate_; }
  /// Python slots are shared with the chain this one replaced at a rate change (or replaces).
  [[nodiscard]] const std::vector<std::shared_ptr<Processor>>& slots() const noexcept { return slots_; }
  /// [any] The supervisor of the Python slots (status, restarts; render waits on it).
  [[nodiscard]] Supervisor& supervisor() const noexcept { return *supervisor_; }

 private:
  void process_block_rt(const float* const* in, float* const* out, std::uint32_t frames,
                        std::uint64_t deadline_ns) noexcept;

  /// [main] Sets has_source_/has_sink_ from the loaded plugins' roles; throws PluginError naming
  /// a source that is not first or a sink that is not last.
  void check_roles(const ChainConfig& config);
  /// [main] The scratch buffers between slots (ping_, pong_).
  void allocate_scratch();
  /// [main] Sets every Python slot's pipeline for block_frames_ (auto: choose_mode).
  void apply_schedule(bool initial);
  /// [main] At start-up: times the burst of auto slot `i` on its stand-in into
  /// `sched.calibration`, if it has one and its plugin may run twice (an SDK processor: the
  /// stand-in makes it only now); else leaves it empty (measured while running) and says why.
  void calibrate_on_stand_in(std::size_t i, SlotSchedule& sched);
  void report(std::string_view slot, std::string_view line) const;
  /// [main] Hands every Python slot's schedule to the supervisor (the status shows it).
  void publish_schedules() const;

  /// Forks this chain's sandboxes, restarts and spares (null with `sandbox.zygote = false`, or
  /// no Python slot). Shared with the chains before and after a rate change. First: it outlives
  /// every slot holding it.
  std::shared_ptr<Zygote> zygote_;
  ChainOptions options_;
  double latency_max_ms_ = 20.0;
  std::uint32_t block_frames_ = 0;
  std::vector<PythonSlot*> sandboxes_;  ///< the Python slots (owned by slots_), chain order
  std::vector<SlotSchedule> schedules_;       ///< one per sandboxes_ entry
  /// Per sandboxes_ entry, the stand-in the start-up burst is timed on (null: none). Only
  /// during construction.
  std::vector<StartedSandbox> stand_ins_;
  std::vector<SlotCounters> reviewed_;        ///< counters at the last review
  std::vector<HistogramCounts> reviewed_histogram_;

  std::uint32_t channels_;
  bool has_source_ = false;
  bool has_sink_ = false;
  std::uint32_t max_frames_;
  double sample_rate_;
  std::vector<std::shared_ptr<Processor>> slots_;
  std::vector<bool> remote_;    ///< slot i runs in a sandbox (waits on its deadline share)
  std::size_t remote_count_ = 0;
  std::vector<float> scratch_;  ///< 2 × channels × max_frames, ping-pong between slots
  std::array<float*, max_channels> ping_{};
  std::array<float*, max_channels> pong_{};
  /// Shared with the chains before and after a rate change: the node's for its life. Last:
  /// stopped before the slots go.
  std::shared_ptr<Supervisor> supervisor_;
};

}  // namespace sandpipe::host
