// What every node shape counts of its cycles (host/node/filter-node.h, host/node/stream-node.h): how many
// ran the chain, how long the longest took, which overran their period and when. Written by the
// data thread, read by the main thread for the status file and the exit line.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "host/slot/recent-times.h"

namespace sandpipe::host {

class Chain;

/// One writer (the data thread: note_cycle_rt), any number of readers; relaxed atomics.
struct CycleTiming {
  std::atomic<std::uint64_t> cycles{0};  ///< cycles that ran the chain
  /// Cycles whose output was ready only after the cycle's period had passed since it started
  /// (the graph cannot have made it), and when the last ones ended (CLOCK_MONOTONIC ns; overrun
  /// n, from 0, at [n % recent_overruns]): a test or soak lines them up with the machine's stalls.
  std::atomic<std::uint64_t> overruns{0};
  static constexpr std::size_t recent_overruns = 256;
  RecentTimes<recent_overruns> recent_overrun_ns;
  std::atomic<std::uint64_t> longest_cycle_ns{0};  ///< cycle start → output ready, the longest

  /// [rt] Counts a cycle that ran the chain: it started at `start_ns` (the driver's clock.nsec,
  /// read at the callback's start; 0: unknown, then only counted), lasts `frames` at `rate` Hz
  /// and had its output ready at `ready_ns`.
  void note_cycle_rt(std::uint64_t start_ns, std::uint64_t frames, std::uint32_t rate,
                     std::uint64_t ready_ns) noexcept {
    cycles.store(cycles.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (start_ns == 0 || rate == 0 || ready_ns < start_ns) return;
    const std::uint64_t took = ready_ns - start_ns;
    if (took > longest_cycle_ns.load(std::memory_order_relaxed))
      longest_cycle_ns.store(took, std::memory_order_relaxed);
    // frames ≤ 8192: no overflow.
    if (took <= frames * 1'000'000'000ULL / rate) return;
    const std::uint64_t n = overruns.load(std::memory_order_relaxed);
    recent_overrun_ns.note_rt(n, ready_ns);
    overruns.store(n + 1, std::memory_order_relaxed);
  }

  /// [any] The status file's "timing" members: `"cycles":N,"overruns":N,"longest_cycle_us":N,
  /// "recent_overruns_ns":[…]`.
  [[nodiscard]] std::string status_json() const;
  /// [any] The start of the exit line: `cycles=N overruns=N longest-cycle-us=N`.
  [[nodiscard]] std::string exit_fields() const;
};

/// [main] Shows `timing` in `chain`'s status file (its supervisor's "timing"); again after a
/// chain swap. `timing` must outlive the chain's supervisor or the next call.
void publish_cycle_timing(Chain& chain, const CycleTiming& timing);

}  // namespace sandpipe::host
