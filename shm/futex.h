// Raw futex calls on a 32-bit atomic that lives in a shared mapping.
//
// NOTE: these are the only syscalls the host's real-time side makes. The operations are the
// non-private ones (no FUTEX_PRIVATE_FLAG) because the word is shared between processes: the
// kernel keys the wait queue by the backing file and offset, not by the address.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <cstdint>

namespace sandpipe::shm::detail {

static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);

/// [any] Sleeps while `word` holds `expected`, for at most `timeout_ns` (relative, CLOCK_MONOTONIC).
/// Returns on a wake, on the timeout, at once if the word already differs (EAGAIN), or on a
/// signal (EINTR). Callers re-check their condition and their deadline in every case.
inline void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::uint64_t timeout_ns) noexcept {
  timespec relative{};
  relative.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000U);
  relative.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000U);
  // NOTE: the kernel reads the word itself; a lock-free std::atomic<uint32_t> is a plain
  // 32-bit word with the same address (asserted above).
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT, expected, &relative,
                  nullptr, 0);
}

/// [any] Wakes up to `count` sleepers on `word`.
inline void futex_wake(std::atomic<std::uint32_t>& word, int count = INT_MAX) noexcept {
  (void)::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE, count, nullptr, nullptr,
                  0);
}

/// [any] One iteration of a busy-wait: tells the core we spin (frees the sibling hyperthread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#else
  std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

}  // namespace sandpipe::shm::detail
