// The one clock the host, the sandbox and the tests stamp audio-path times with.
#pragma once

#include <time.h>

#include <cstdint>

namespace sandpipe::shm {

/// [any] CLOCK_MONOTONIC in nanoseconds. RT safe: a vDSO read, not a system call, with the
/// TSC clocksource. Both processes read the same clock, so stamps cross the shared memory.
[[nodiscard]] inline std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U + static_cast<std::uint64_t>(ts.tv_nsec);
}

}  // namespace sandpipe::shm
