// Live parameter changes for native slots, main thread → data thread: a fixed-size, lock-free,
// single-producer single-consumer queue inside the host process (no shared memory, no pointers
// into the chain: slot and parameter are indices the data thread checks again).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

namespace sandpipe::host {

/// One "SLOT:PARAM = value" for a native slot, already validated and clamped.
struct ParamChange {
  std::uint32_t slot = 0;   ///< index in Chain::slots()
  std::uint32_t index = 0;  ///< parameter index of that slot (Processor::describe_params())
  float value = 0.0F;
};

/// Two free-running indices, the modulo at the caller (as spa_ringbuffer). The producer is the
/// main thread (NodeProps), the consumer the data thread (drain_param_changes_rt()).
class ParamQueue {
 public:
  static constexpr std::uint32_t capacity = 256;  // power of two
  static_assert((capacity & (capacity - 1)) == 0);
  static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
  static_assert(std::is_trivially_copyable_v<ParamChange>);

  /// [main] Queues a change; false if the queue is full (the data thread is not running).
  bool push(const ParamChange& change) noexcept {
    const std::uint32_t w = write_.load(std::memory_order_relaxed);
    if (w - read_.load(std::memory_order_acquire) >= capacity) return false;
    items_[w & (capacity - 1)] = change;
    write_.store(w + 1, std::memory_order_release);
    return true;
  }

  /// [rt] Takes the oldest change; false if there is none.
  bool pop(ParamChange& out) noexcept {
    const std::uint32_t r = read_.load(std::memory_order_relaxed);
    if (r == write_.load(std::memory_order_acquire)) return false;
    out = items_[r & (capacity - 1)];
    read_.store(r + 1, std::memory_order_release);
    return true;
  }

 private:
  std::array<ParamChange, capacity> items_{};
  alignas(64) std::atomic<std::uint32_t> write_{0};
  alignas(64) std::atomic<std::uint32_t> read_{0};
};

}  // namespace sandpipe::host
