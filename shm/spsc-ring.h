// A single-producer single-consumer ring whose control block and entries live in shared memory.
//
// The shared part is only data: two free-running 32-bit indices and a futex word, each on its own
// cache line, then `capacity` entries. The modulo is taken by whoever indexes (index & mask), so
// the counters wrap at 2^32 on their own and full/empty need no spare slot. Each side keeps its
// own index in private memory and only *publishes* it, so a peer scribbling over the shared copy
// cannot move it; the peer's index is read once per call, validated, and never used unmasked.
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shm/futex.h"

namespace sandpipe::shm {

inline constexpr std::size_t cache_line_size = 64;

/// Control block of one ring as it lies in shared memory. No pointers: the entries follow at an
/// offset both sides compute from the geometry.
struct RingControl {
  /// Count of entries ever pushed (mod 2^32). Written by the producer only.
  alignas(cache_line_size) std::atomic<std::uint32_t> write;
  /// Count of entries ever popped (mod 2^32). Written by the consumer only.
  alignas(cache_line_size) std::atomic<std::uint32_t> read;
  /// Futex word: the consumer sets it to 1 before it sleeps; a producer that finds 1 swaps in 0
  /// and wakes it. While the consumer spins it stays 0, so the producer makes no syscall.
  alignas(cache_line_size) std::atomic<std::uint32_t> sleeping;
};
static_assert(std::is_standard_layout_v<RingControl>);
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(sizeof(RingControl) == 3 * cache_line_size);
static_assert(offsetof(RingControl, read) == cache_line_size);
static_assert(offsetof(RingControl, sleeping) == 2 * cache_line_size);

enum class PushResult : std::uint8_t { ok, full, corrupt };
enum class PopResult : std::uint8_t { ok, empty, corrupt };

namespace detail {

/// [any] Copies an entry out of memory a peer may be writing at the same time. Each word is read
/// exactly once (volatile), so validating the copy cannot be undone by a second fetch.
template <typename Entry>
[[nodiscard]] inline Entry load_untrusted(const Entry* src) noexcept {
  static_assert(std::is_trivially_copyable_v<Entry> && sizeof(Entry) % sizeof(std::uint32_t) == 0);
  constexpr std::size_t word_count = sizeof(Entry) / sizeof(std::uint32_t);
  std::array<std::uint32_t, word_count> words{};
  const auto* src_words = reinterpret_cast<const volatile std::uint32_t*>(src);
  for (std::size_t i = 0; i < word_count; ++i) {
    words[i] = src_words[i];
  }
  return std::bit_cast<Entry>(words);
}

}  // namespace detail

/// The producer's view of a ring. Not thread-safe: one producer thread (wake_consumer() excepted).
template <typename Entry>
class SpscProducer {
  static_assert(std::is_trivially_copyable_v<Entry> && std::is_standard_layout_v<Entry>);

 public:
  SpscProducer() noexcept = default;

  /// [main] `control` and `entries` point into the mapping; `capacity` is a power of two the
  /// caller trusts (it comes from its own geometry, never from the segment). The starting index
  /// is taken from the shared copy once, here.
  SpscProducer(RingControl* control, Entry* entries, std::uint32_t capacity) noexcept
      : control_(control),
        entries_(entries),
        capacity_(capacity),
        mask_(capacity - 1),
        write_(control->write.load(std::memory_order_relaxed)) {}

  /// [rt] Appends `entry`. `full` when `capacity` entries wait; `corrupt` when the consumer's
  /// published index is impossible (more than `capacity` behind us, or ahead of us).
  PushResult try_push(const Entry& entry) noexcept {
    const std::uint32_t read = control_->read.load(std::memory_order_acquire);
    const std::uint32_t used = write_ - read;
    if (used > capacity_) {
      return PushResult::corrupt;
    }
    if (used == capacity_) {
      return PushResult::full;
    }
    entries_[write_ & mask_] = entry;
    ++write_;
    control_->write.store(write_, std::memory_order_release);
    return PushResult::ok;
  }

  /// [any] Wakes the consumer if it announced that it sleeps; otherwise no syscall. Call after
  /// publishing anything the consumer waits for (an entry, or another counter it checks).
  void wake_consumer() noexcept {
    // Pairs with the fence in SpscConsumer::announce_sleep(): either the consumer's re-check sees
    // what we published, or we see its `sleeping = 1` here (store-buffering, both fences seq_cst).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (control_->sleeping.load(std::memory_order_relaxed) != 0 &&
        control_->sleeping.exchange(0, std::memory_order_acq_rel) != 0) {
      detail::futex_wake(control_->sleeping, 1);
    }
  }

  /// [any] Our own count of pushed entries (the private copy, not the shared one).
  [[nodiscard]] std::uint32_t write_index() const noexcept { return write_; }
  /// [any] The count of pushed entries as published in the segment, readable from any thread.
  [[nodiscard]] std::uint32_t published_write_index() const noexcept {
    return control_->write.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::uint32_t capacity() const noexcept { return capacity_; }

 private:
  RingControl* control_ = nullptr;
  Entry* entries_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint32_t mask_ = 0;
  std::uint32_t write_ = 0;
};

/// The consumer's view of a ring. Not thread-safe: one consumer thread.
template <typename Entry>
class SpscConsumer {
  static_assert(std::is_trivially_copyable_v<Entry> && std::is_standard_layout_v<Entry>);

 public:
  SpscConsumer() noexcept = default;

  /// [main] As SpscProducer's constructor.
  SpscConsumer(RingControl* control, Entry* entries, std::uint32_t capacity) noexcept
      : control_(control),
        entries_(entries),
        capacity_(capacity),
        mask_(capacity - 1),
        read_(control->read.load(std::memory_order_relaxed)),
        seen_write_(read_) {}

  /// [rt] Pops the oldest entry into `out`. `corrupt` when the producer's published index moved
  /// backwards, jumped more than `capacity` since last seen, or claims more than `max_available`
  /// entries (callers that know a tighter bound, e.g. jobs in flight, pass it).
  PopResult try_pop(Entry& out, std::uint32_t max_available) noexcept {
    const std::uint32_t write = control_->write.load(std::memory_order_acquire);
    const std::uint32_t available = write - read_;
    if (write - seen_write_ > capacity_ || available > capacity_ || available > max_available) {
      return PopResult::corrupt;
    }
    seen_write_ = write;
    if (available == 0) {
      return PopResult::empty;
    }
    out = detail::load_untrusted(&entries_[read_ & mask_]);
    ++read_;
    control_->read.store(read_, std::memory_order_release);
    return PopResult::ok;
  }
  PopResult try_pop(Entry& out) noexcept { return try_pop(out, capacity_); }

  /// [rt] True if an entry seems to wait (a hint for spinning; try_pop() decides).
  [[nodiscard]] bool looks_non_empty() const noexcept {
    return control_->write.load(std::memory_order_relaxed) != read_;
  }

  /// [rt] First half of going to sleep: publish `sleeping = 1`. The caller must then re-check
  /// the ring (and anything else producers signal through this word) before sleep().
  void announce_sleep() noexcept {
    control_->sleeping.store(1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
  /// [rt] Sleeps until woken or `timeout_ns` passed, unless a producer already cleared the word.
  void sleep(std::uint64_t timeout_ns) noexcept { detail::futex_wait(control_->sleeping, 1, timeout_ns); }
  /// [rt] We are awake again: spare producers the wake syscall.
  void cancel_sleep() noexcept { control_->sleeping.store(0, std::memory_order_relaxed); }
  /// [any] Wakes this consumer from another thread of the consumer's process (not the
  /// producer): for a host-private condition the sleeper re-checks after announce_sleep() (an
  /// abort flag). Publish the condition first; same store-buffering pairing as wake_consumer().
  void wake_self() noexcept {
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (control_->sleeping.load(std::memory_order_relaxed) != 0 &&
        control_->sleeping.exchange(0, std::memory_order_acq_rel) != 0) {
      detail::futex_wake(control_->sleeping, 1);
    }
  }

  /// [any] Drops whatever the producer claims to have pushed and starts again from its current
  /// index. Only for a consumer that outlives a broken producer (the sandbox side).
  void resync() noexcept {
    read_ = control_->write.load(std::memory_order_acquire);
    seen_write_ = read_;
    control_->read.store(read_, std::memory_order_release);
  }

  [[nodiscard]] std::uint32_t read_index() const noexcept { return read_; }
  /// [any] What the producer claims to have pushed so far. Untrusted: a hint, never an index.
  [[nodiscard]] std::uint32_t producer_write_hint() const noexcept {
    return control_->write.load(std::memory_order_acquire);
  }
  [[nodiscard]] std::uint32_t capacity() const noexcept { return capacity_; }

 private:
  RingControl* control_ = nullptr;
  Entry* entries_ = nullptr;
  std::uint32_t capacity_ = 0;
  std::uint32_t mask_ = 0;
  std::uint32_t read_ = 0;
  std::uint32_t seen_write_ = 0;
};

}  // namespace sandpipe::shm
