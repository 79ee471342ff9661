// The one interface every slot of a chain implements, native or sandboxed.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "host/config/config.h"
#include "host/slot/recent-times.h"

namespace sandpipe::host {

/// Status of one block through one slot, returned by the real-time path.
enum class BlockStatus : std::uint8_t {
  processed,  ///< the plugin's output is in `out`
  bypassed,   ///< `out` holds the dry (latency-aligned) input: plugin late, down or failed
  muted,      ///< `out` holds silence (on-failure = "mute")
};

/// Per-slot counters. Written by the RT thread only, read by anyone (relaxed, monotonic).
struct SlotCounters {
  std::uint64_t blocks = 0;
  std::uint64_t deadline_misses = 0;
  std::uint64_t bypassed_blocks = 0;
  std::uint64_t sanitized_blocks = 0;  ///< NaN/Inf replaced by the dry signal
  std::uint64_t passthrough_blocks = 0;  ///< a processor returned False: passed on unprocessed
  /// When the last deadline misses happened (CLOCK_MONOTONIC ns; 0: not yet): miss number n
  /// (from 0) at [n % recent_misses]. Lines misses up with other clocks (a soak's stall watch).
  static constexpr std::size_t recent_misses = 32;
  EventTimes<recent_misses> recent_miss_ns{};
};

/// What the chain tells a slot about the cycle it runs in.
struct ProcessContext {
  /// Absolute CLOCK_MONOTONIC time (ns) by which this slot must have its output in `out`.
  /// A native slot ignores it; a sandboxed slot never waits past it (offline render gives a
  /// generous deadline so results are deterministic).
  std::uint64_t deadline_ns = 0;
};

/// A parameter as a slot declares it: what the node publishes as PropInfo and validates
/// "SLOT:PARAM" changes against, on the main thread.
struct ParamDescription {
  std::string key;
  std::string kind;  ///< number | integer | boolean | choice | text
  double min = 0.0;
  double max = 0.0;
  ParamValue default_value;
  std::vector<std::string> choices;  ///< kind choice: value i is choices[i]
};

/// A processing slot in the chain.
///
/// Lifecycle: constructed and prepared on the main thread, `process_rt` called on the data
/// thread only, destroyed on the main thread after it was swapped out of the data thread.
class Processor {
 public:
  Processor() = default;
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;
  Processor(Processor&&) = delete;
  Processor& operator=(Processor&&) = delete;
  virtual ~Processor() = default;

  /// [any] Name given in the config (`name = "..."`).
  [[nodiscard]] virtual std::string_view name() const noexcept = 0;

  /// [any] Latency this slot adds, in frames.
  [[nodiscard]] virtual std::uint32_t latency_frames() const noexcept = 0;

  /// [rt] Processes `frames` frames (1 ≤ frames ≤ the max_frames given at preparation).
  /// `in` and `out` hold one pointer per channel and never alias each other.
  /// Allocates nothing, locks nothing, never throws.
  virtual BlockStatus process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                                 const ProcessContext& ctx) noexcept = 0;

  /// [any] Counters of this slot.
  [[nodiscard]] virtual SlotCounters counters() const noexcept = 0;

  /// [main] The parameters this slot can change live through set_param_rt(), in index order.
  /// Empty for slots that change parameters another way (a sandboxed slot: its control channel).
  [[nodiscard]] virtual std::vector<ParamDescription> describe_params() const { return {}; }

  /// [rt] Sets parameter `index` (of describe_params()) to `value`, already validated and clamped
  /// on the main thread (a choice or boolean as its whole-number index). Between two
  /// process_rt() calls of the same thread. Returns false if the slot has no such parameter.
  virtual bool set_param_rt(std::uint32_t /*index*/, float /*value*/) noexcept { return false; }
};

/// A plugin that cannot be loaded or started. `what()` names the plugin and the reason.
class PluginError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace sandpipe::host
