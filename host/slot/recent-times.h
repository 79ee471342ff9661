// When the last events of a counter happened (deadline misses, overruns), kept by the one thread
// that counts them and read by anyone: a test or a soak lines them up with other clocks.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace sandpipe::host {

/// CLOCK_MONOTONIC ns of the last N events (0: not yet): event n (from 0) at [n % N].
template <std::size_t N>
using EventTimes = std::array<std::uint64_t, N>;

/// EventTimes written by one thread (relaxed stores, no lock), read by any.
template <std::size_t N>
class RecentTimes {
 public:
  /// [rt] Event number `n` (from 0) happened at `t_ns`.
  void note_rt(std::uint64_t n, std::uint64_t t_ns) noexcept {
    at_[n % N].store(t_ns, std::memory_order_relaxed);
  }

  /// [any] A copy.
  [[nodiscard]] EventTimes<N> snapshot() const noexcept {
    EventTimes<N> out{};
    for (std::size_t i = 0; i < N; ++i) out[i] = at_[i].load(std::memory_order_relaxed);
    return out;
  }

 private:
  std::array<std::atomic<std::uint64_t>, N> at_{};
};

/// [any] The times that are set, in ring order, as a JSON array.
template <std::size_t N>
nlohmann::json times_array(const EventTimes<N>& times) {
  nlohmann::json a = nlohmann::json::array();
  for (const std::uint64_t t : times)
    if (t != 0) a.push_back(t);
  return a;
}

/// [any] times_array() as compact JSON text (`[t,t,...]`).
template <std::size_t N>
std::string times_json(const EventTimes<N>& times) {
  return times_array(times).dump();
}

}  // namespace sandpipe::host
