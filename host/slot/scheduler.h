// The latency-compensating scheduler: completion-time histograms (filled on the RT thread, read
// on the main thread) and the pure decision sync vs pipelined-with-k-blocks.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

namespace sandpipe::host {

/// Completion-time buckets: eighth-octaves from 1024 ns (12.5 % wide) up to 2^42 ns (73 min),
/// far past the longest block anything waits for (timeout-ms ≤ 10 s, the calibration's 2 s).
/// Bucket 0 also takes everything below 1024 ns, the last one everything above its lower edge.
inline constexpr std::size_t histogram_buckets = 256;

/// [any] "12.34 ms": how the scheduler writes a duration in its log lines and status.
[[nodiscard]] std::string format_ms(std::uint64_t ns);

/// [any] The bucket a duration falls into.
[[nodiscard]] std::size_t histogram_bucket(std::uint64_t ns) noexcept;
/// [any] The upper edge of bucket `i` in ns (never more than 2^42 ns: no sentinel).
[[nodiscard]] std::uint64_t histogram_bucket_upper_ns(std::size_t i) noexcept;

/// Plain counts per bucket (a snapshot, or a window: the difference of two snapshots), and the
/// longest duration counted.
struct HistogramCounts {
  std::array<std::uint64_t, histogram_buckets> counts{};
  /// The longest duration added (a window: the longest of the later snapshot, which may lie
  /// before the window; still an upper bound of everything in it).
  std::uint64_t max_ns = 0;

  /// [any] Adds one duration.
  void add(std::uint64_t ns) noexcept {
    ++counts[histogram_bucket(ns)];
    if (ns > max_ns) max_ns = ns;
  }
  /// [any] Adds every count of `other` (and its longest duration).
  void merge(const HistogramCounts& other) noexcept;
  [[nodiscard]] std::uint64_t total() const noexcept;
  /// [any] Upper edge of the bucket holding quantile `q` (0 < q ≤ 1), but never more than the
  /// longest duration counted: a conservative value (at most 12.5 % above the true one), exact
  /// when the quantile is the longest (p99.9 of fewer than 1000 samples). 0 when empty.
  [[nodiscard]] std::uint64_t quantile_ns(double q) const noexcept;
  /// [any] Counts of `this` minus `earlier` (a window between two snapshots).
  [[nodiscard]] HistogramCounts since(const HistogramCounts& earlier) const noexcept;
};

/// A histogram with one writer (the RT thread: record_rt) and any number of readers
/// (snapshot). Counters are relaxed atomics: a snapshot may be a few counts behind.
class LatencyHistogram {
 public:
  /// [rt] Counts one duration: relaxed loads and stores, no read-modify-write.
  void record_rt(std::uint64_t ns) noexcept {
    auto& c = counts_[histogram_bucket(ns)];
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (ns > max_ns_.load(std::memory_order_relaxed)) max_ns_.store(ns, std::memory_order_relaxed);
  }
  /// [any]
  [[nodiscard]] HistogramCounts snapshot() const noexcept;

 private:
  std::array<std::atomic<std::uint64_t>, histogram_buckets> counts_{};
  std::atomic<std::uint64_t> max_ns_{0};
};

/// What choose_mode() decided for one sandboxed slot.
struct ModeDecision {
  std::uint32_t blocks = 0;   ///< 0: sync; k ≥ 1: pipelined over k blocks
  bool fits = true;           ///< false: nothing fits the budget; running at `blocks`, misses expected
  std::uint64_t p999_ns = 0;  ///< the measured p99.9 completion time it was based on (0: no data)
  std::string why;            ///< one line for logs and status text
};

/// Budget of one slot for choose_mode().
struct SlotBudget {
  std::uint64_t period_ns = 0;       ///< one block (quantum) at the graph rate
  std::uint64_t share_ns = 0;        ///< the slot's share of a cycle's budget (sync waits this long)
  std::uint64_t max_latency_ns = 0;  ///< what is left of `latency.max-ms` (the chain's) for this slot
  std::uint32_t max_blocks = 1;      ///< the deepest pipeline the slot supports
};

/// Sync needs p99.9 + p99.9 / sync_headroom_divisor within the share: a third more than measured.
inline constexpr std::uint64_t sync_headroom_divisor = 3;

/// [any] Pure: sync if the p99.9 completion time, plus a third, fits `share_ns`; else the smallest k ≥ 1 with
/// p99.9 ≤ k × period + share and k × period ≤ max_latency; else (nothing fits) the deepest k
/// the latency budget allows (0 = sync when not even one block fits, at most max_blocks) with `fits = false`.
/// An empty histogram gives sync (nothing measured, nothing to fix).
[[nodiscard]] ModeDecision choose_mode(const HistogramCounts& histogram, const SlotBudget& budget);

/// [any] The rule for increasing k while running: true when at least `min_blocks` blocks ran in
/// the window and more than 1 % of them missed their deadline (sustained, not a one-off).
[[nodiscard]] bool should_deepen(std::uint64_t window_blocks, std::uint64_t window_misses,
                                 std::uint64_t min_blocks = 200) noexcept;

}  // namespace sandpipe::host
