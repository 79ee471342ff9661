// A chain of processors built from a config, run block by block by the node or by render.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <vector>

#include "host/config.h"
#include "host/processor.h"

namespace sandpipe::host {

/// Owns the slots of one chain and the scratch buffers between them.
/// Built on the main thread; `process_rt` runs on the data thread only.
class Chain {
 public:
  static constexpr std::uint32_t max_channels = 8;

  /// [main] Loads every plugin of `config` (native in-process, Python in sandboxes started in
  /// parallel). `max_frames` is the largest sub-block a slot sees; longer blocks are split.
  /// Throws PluginError.
  Chain(const ChainConfig& config, double sample_rate, std::uint32_t max_frames);
  ~Chain();
  Chain(const Chain&) = delete;
  Chain& operator=(const Chain&) = delete;
  Chain(Chain&&) = delete;
  Chain& operator=(Chain&&) = delete;

  /// [rt] Runs `frames` frames (any count) through every slot. `in` and `out` hold channels()
  /// pointers each and may alias. `deadline_ns` is when the output must be ready (absolute
  /// CLOCK_MONOTONIC); sandboxed slots share what is left of it. Never allocates or throws.
  void process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                  std::uint64_t deadline_ns) noexcept;

  /// [any] Sum of the slots' latencies, in frames.
  [[nodiscard]] std::uint32_t latency_frames() const noexcept;

  [[nodiscard]] std::uint32_t channels() const noexcept { return channels_; }
  [[nodiscard]] std::uint32_t max_frames() const noexcept { return max_frames_; }
  [[nodiscard]] double sample_rate() const noexcept { return sample_rate_; }
  [[nodiscard]] const std::vector<std::unique_ptr<Processor>>& slots() const noexcept { return slots_; }

 private:
  void process_block_rt(const float* const* in, float* const* out, std::uint32_t frames,
                        std::uint64_t deadline_ns) noexcept;

  std::uint32_t channels_;
  std::uint32_t max_frames_;
  double sample_rate_;
  std::vector<std::unique_ptr<Processor>> slots_;
  std::vector<bool> remote_;    ///< slot i runs in a sandbox (waits on its deadline share)
  std::size_t remote_count_ = 0;
  std::vector<float> scratch_;  ///< 2 × channels × max_frames, ping-pong between slots
  std::array<float*, max_channels> ping_{};
  std::array<float*, max_channels> pong_{};
};

}  // namespace sandpipe::host
