// The chain's real-time walk: sub-blocks of at most max_frames, slot by slot, ping-pong buffers.
#include <algorithm>
#include <cstring>

#include "host/chain/chain.h"
#include "shm/clock.h"

namespace sandpipe::host {

void Chain::process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                       std::uint64_t deadline_ns) noexcept {
  std::array<const float*, max_channels> sub_in{};
  std::array<float*, max_channels> sub_out{};
  for (std::uint32_t offset = 0; offset < frames;) {
    const std::uint32_t n = std::min(max_frames_, frames - offset);
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      sub_in[ch] = in[ch] + offset;
      sub_out[ch] = out[ch] + offset;
    }
    process_block_rt(sub_in.data(), sub_out.data(), n, deadline_ns);
    offset += n;
  }
}

void Chain::process_block_rt(const float* const* in, float* const* out, std::uint32_t frames,
                             std::uint64_t deadline_ns) noexcept {
  const std::size_t bytes = std::size_t{frames} * sizeof(float);
  if (slots_.empty()) {
    for (std::uint32_t ch = 0; ch < channels_; ++ch)
      if (out[ch] != in[ch]) std::memmove(out[ch], in[ch], bytes);
    return;
  }
  std::size_t remote_left = remote_count_;
  const float* const* src = in;
  float* const* dst = ping_.data();
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    ProcessContext ctx{deadline_ns};
    if (remote_[i]) {
      // Each sandboxed slot gets an equal share of what is left, so one slow plugin cannot
      // starve the ones after it.
      const std::uint64_t now = shm::now_ns();
      ctx.deadline_ns = deadline_ns > now ? now + (deadline_ns - now) / remote_left : now;
      --remote_left;
    }
    slots_[i]->process_rt(src, dst, frames, ctx);
    src = dst;
    dst = (dst == ping_.data()) ? pong_.data() : ping_.data();
  }
  for (std::uint32_t ch = 0; ch < channels_; ++ch) std::memcpy(out[ch], src[ch], bytes);
}

}  // namespace sandpipe::host
