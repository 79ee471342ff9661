// Live parameter changes for native slots, main thread → data thread: a fixed-size, lock-free,
// single-producer single-consumer queue inside the host process (no shared memory, no pointers
// into the chain: slot and parameter are indices the data thread checks again).
#pragma once

// SPA's C idioms (statement expressions, unused parameters) warn under C++20 -Wpedantic: silenced
// for this header only, as host/config/spa-json.h does.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpedantic"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <spa/utils/ringbuffer.h>
#pragma GCC diagnostic pop

#include <array>
#include <cstdint>
#include <type_traits>

namespace sandpipe::host {

/// One "SLOT:PARAM = value" for a native slot, already validated and clamped.
struct ParamChange {
  std::uint32_t slot = 0;   ///< index in Chain::slots()
  std::uint32_t index = 0;  ///< parameter index of that slot (Processor::describe_params())
  float value = 0.0F;
};

/// spa_ringbuffer's two free-running indices over a fixed array of changes, the modulo at the
/// caller. The producer is the main thread (NodeProps), the consumer the data thread
/// (drain_param_changes_rt()).
class ParamQueue {
 public:
  static constexpr std::uint32_t capacity = 256;  // power of two
  static_assert((capacity & (capacity - 1)) == 0);
  static_assert(std::is_trivially_copyable_v<ParamChange>);

  ParamQueue() noexcept { spa_ringbuffer_init(&ring_); }
  ParamQueue(const ParamQueue&) = delete;
  ParamQueue& operator=(const ParamQueue&) = delete;
  ParamQueue(ParamQueue&&) = delete;
  ParamQueue& operator=(ParamQueue&&) = delete;
  ~ParamQueue() = default;

  /// [main] Queues a change; false if the queue is full (the data thread is not running).
  bool push(const ParamChange& change) noexcept {
    std::uint32_t w = 0;
    if (spa_ringbuffer_get_write_index(&ring_, &w) >= static_cast<std::int32_t>(capacity)) return false;
    items_[w & (capacity - 1)] = change;
    spa_ringbuffer_write_update(&ring_, static_cast<std::int32_t>(w + 1));
    return true;
  }

  /// [rt] Takes the oldest change; false if there is none. No lock, no allocation, no syscall.
  bool pop(ParamChange& out) noexcept {
    std::uint32_t r = 0;
    if (spa_ringbuffer_get_read_index(&ring_, &r) <= 0) return false;
    out = items_[r & (capacity - 1)];
    spa_ringbuffer_read_update(&ring_, static_cast<std::int32_t>(r + 1));
    return true;
  }

 private:
  std::array<ParamChange, capacity> items_{};
  spa_ringbuffer ring_{};
};

}  // namespace sandpipe::host
