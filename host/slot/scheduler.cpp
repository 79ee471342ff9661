// Histogram arithmetic and the sync/pipelined decision.
#include "host/slot/scheduler.h"

#include <bit>
#include <cmath>
#include <cstdio>

namespace sandpipe::host {

namespace {

constexpr unsigned base_shift = 10;  // bucket 0 starts at 2^10 ns
constexpr unsigned sub_bits = 3;     // eighth-octaves

}  // namespace

std::string format_ms(std::uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f ms", static_cast<double>(ns) / 1e6);
  return buf;
}

std::size_t histogram_bucket(std::uint64_t ns) noexcept {
  if (ns < (std::uint64_t{1} << base_shift)) return 0;
  const auto msb = static_cast<unsigned>(std::bit_width(ns) - 1);
  const std::size_t sub = (ns >> (msb - sub_bits)) & ((1U << sub_bits) - 1);
  const std::size_t i = (std::size_t{msb - base_shift} << sub_bits) + sub;
  return i < histogram_buckets ? i : histogram_buckets - 1;
}

std::uint64_t histogram_bucket_upper_ns(std::size_t i) noexcept {
  if (i >= histogram_buckets) i = histogram_buckets - 1;
  const std::size_t octave = i >> sub_bits;
  const std::uint64_t sub = i & ((1U << sub_bits) - 1);
  // lower edge = 2^(base+octave) × (8 + sub) / 8; upper = the next one.
  return (std::uint64_t{1} << (base_shift + octave)) * (9 + sub) / 8;
}

std::uint64_t HistogramCounts::total() const noexcept {
  std::uint64_t n = 0;
  for (auto c : counts) n += c;
  return n;
}

void HistogramCounts::merge(const HistogramCounts& other) noexcept {
  for (std::size_t i = 0; i < histogram_buckets; ++i) counts[i] += other.counts[i];
  if (other.max_ns > max_ns) max_ns = other.max_ns;
}

std::uint64_t HistogramCounts::quantile_ns(double q) const noexcept {
  const std::uint64_t n = total();
  if (n == 0) return 0;
  auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(n)));
  if (rank < 1) rank = 1;
  std::uint64_t seen = 0;
  std::size_t i = 0;
  for (; i + 1 < histogram_buckets; ++i) {
    seen += counts[i];
    if (seen >= rank) break;
  }
  // In the bucket of the longest duration, that duration is the bound: exact, not an edge.
  return max_ns != 0 && histogram_bucket(max_ns) == i ? max_ns : histogram_bucket_upper_ns(i);
}

HistogramCounts HistogramCounts::since(const HistogramCounts& earlier) const noexcept {
  HistogramCounts d;
  for (std::size_t i = 0; i < histogram_buckets; ++i)
    d.counts[i] = counts[i] >= earlier.counts[i] ? counts[i] - earlier.counts[i] : 0;
  d.max_ns = d.total() == 0 ? 0 : max_ns;
  return d;
}

HistogramCounts LatencyHistogram::snapshot() const noexcept {
  HistogramCounts s;
  for (std::size_t i = 0; i < histogram_buckets; ++i)
    s.counts[i] = counts_[i].load(std::memory_order_relaxed);
  s.max_ns = max_ns_.load(std::memory_order_relaxed);
  return s;
}

ModeDecision choose_mode(const HistogramCounts& histogram, const SlotBudget& budget) {
  ModeDecision d;
  if (histogram.total() == 0 || budget.period_ns == 0) {
    d.why = "no measurements: sync";
    return d;
  }
  d.p999_ns = histogram.quantile_ns(0.999);
  // Sync only with headroom: the calibration burst runs back to back on a warm CPU, a live
  // cycle adds a wake-up and cold caches (8 slots at 64 frames whose p99.9 was just under their
  // share missed in bursts until the review pipelined them).
  if (d.p999_ns + d.p999_ns / sync_headroom_divisor <= budget.share_ns) {
    d.why = "p99.9 " + format_ms(d.p999_ns) + " fits the slot's share " + format_ms(budget.share_ns) +
            " with headroom: sync";
    return d;
  }
  const std::uint32_t max_blocks = budget.max_blocks < 1 ? 1 : budget.max_blocks;
  for (std::uint32_t k = 1; k <= max_blocks; ++k) {
    if (k * budget.period_ns > budget.max_latency_ns) break;
    if (d.p999_ns <= k * budget.period_ns + budget.share_ns) {
      d.blocks = k;
      d.why = "p99.9 " + format_ms(d.p999_ns) + " exceeds the share " + format_ms(budget.share_ns) +
              ": pipelined over " + std::to_string(k) + " block" + (k == 1 ? "" : "s") + " (" +
              format_ms(k * budget.period_ns) + ")";
      return d;
    }
  }
  // The deepest pipeline the budget allows, which may be none: latency.max-ms is never exceeded.
  std::uint64_t k = budget.max_latency_ns / budget.period_ns;
  if (k > max_blocks) k = max_blocks;
  d.blocks = static_cast<std::uint32_t>(k);
  d.fits = false;
  d.why = "p99.9 " + format_ms(d.p999_ns) + " fits no pipeline within latency.max-ms " +
          format_ms(budget.max_latency_ns) + " (period " + format_ms(budget.period_ns) + "): running " +
          (k == 0 ? std::string("sync") : "over " + std::to_string(k) + " blocks") +
          ", deadline misses expected and counted";
  return d;
}

bool should_deepen(std::uint64_t window_blocks, std::uint64_t window_misses,
                   std::uint64_t min_blocks) noexcept {
  return window_blocks >= min_blocks && window_misses * 100 > window_blocks;
}

}  // namespace sandpipe::host
