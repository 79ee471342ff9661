// The real-time hop of a Python slot: one block through the shared segment and back.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "host/sandbox-client.h"

namespace sandpipe::host {

SlotCounters SandboxProcessor::counters() const noexcept {
  SlotCounters c;
  c.blocks = blocks_.load(std::memory_order_relaxed);
  c.deadline_misses = deadline_misses_.load(std::memory_order_relaxed);
  c.bypassed_blocks = bypassed_blocks_.load(std::memory_order_relaxed);
  c.sanitized_blocks = sanitized_blocks_.load(std::memory_order_relaxed);
  return c;
}

namespace {

/// Counters have one writer (the RT thread): a relaxed load + store is enough and is no
/// locked read-modify-write.
void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

}  // namespace

void SandboxProcessor::write_dry_rt(float* const* out, std::uint32_t frames) noexcept {
  const std::size_t bytes = std::size_t{frames} * sizeof(float);
  if (latency_ == 0) {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) std::memcpy(out[ch], dry_in_[ch], bytes);
  } else {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) std::memcpy(out[ch], dry_.data() + std::size_t{ch} * max_frames_, bytes);
  }
}

BlockStatus SandboxProcessor::go_dry_rt(float* const* out, std::uint32_t frames, bool miss) noexcept {
  write_dry_rt(out, frames);
  if (miss) bump(deadline_misses_);
  bump(bypassed_blocks_);
  return BlockStatus::bypassed;
}

bool SandboxProcessor::discard_late_rt(const shm::Completion& c) noexcept {
  if (c.slot >= shm::max_slots || !slot_busy_[c.slot] || slot_seq_[c.slot] != c.seq) return false;
  slot_busy_[c.slot] = false;
  return true;
}

void SandboxProcessor::reclaim_late_rt() noexcept {
  // Only late blocks can be in flight here: this call has not submitted its own yet.
  shm::Completion c;
  for (std::uint32_t i = 0; i < shm::max_slots; ++i) {
    const shm::WaitResult r = endpoint_.try_complete_rt(c);
    if (r == shm::WaitResult::timeout) return;
    if (r == shm::WaitResult::corrupt || !discard_late_rt(c)) {
      usable_.store(false, std::memory_order_relaxed);
      return;
    }
  }
}

BlockStatus SandboxProcessor::process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                                         const ProcessContext& ctx) noexcept {
  bump(blocks_);
  if (frames == 0) return BlockStatus::processed;
  frames = std::min(frames, max_frames_);  // the chain never exceeds it; never index past it
  const std::size_t bytes = std::size_t{frames} * sizeof(float);

  // The dry signal, delayed by the plugin's latency so a bypassed block lines up.
  dry_in_ = in;
  if (latency_ > 0) {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      float* line = delay_.data() + std::size_t{ch} * latency_;
      float* dry = dry_.data() + std::size_t{ch} * max_frames_;
      std::uint32_t pos = delay_pos_;
      for (std::uint32_t i = 0; i < frames; ++i) {
        dry[i] = line[pos];
        line[pos] = in[ch][i];
        if (++pos == latency_) pos = 0;
      }
    }
    delay_pos_ = static_cast<std::uint32_t>((delay_pos_ + std::uint64_t{frames}) % latency_);
  }

  if (!usable() || endpoint_.failed()) return go_dry_rt(out, frames, false);
  reclaim_late_rt();
  if (!usable()) return go_dry_rt(out, frames, false);

  // A slot the sandbox may still write (a late block) is never reused until it came back.
  const std::uint32_t slot_count = endpoint_.geometry().slot_count;
  std::uint32_t slot = slot_count;
  for (std::uint32_t s = 0; s < slot_count; ++s) {
    if (!slot_busy_[s]) {
      slot = s;
      break;
    }
  }
  if (slot == slot_count) return go_dry_rt(out, frames, true);  // still busy with late blocks

  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    float* dst = endpoint_.channel_rt(slot, ch);
    if (dst == nullptr) return go_dry_rt(out, frames, false);
    std::memcpy(dst, in[ch], bytes);
  }
  const std::uint32_t seq = next_seq_++;
  if (!endpoint_.submit_rt(shm::Job{seq, slot, frames, 0})) return go_dry_rt(out, frames, true);
  slot_busy_[slot] = true;
  slot_seq_[slot] = seq;

  shm::Completion done;
  for (;;) {
    const shm::WaitResult r = endpoint_.wait_complete_rt(done, ctx.deadline_ns);
    if (r == shm::WaitResult::timeout) return go_dry_rt(out, frames, true);  // slot stays busy
    if (r == shm::WaitResult::corrupt) {
      usable_.store(false, std::memory_order_relaxed);
      return go_dry_rt(out, frames, false);
    }
    if (done.seq == seq) break;
    if (!discard_late_rt(done)) {  // neither ours nor a known late block
      usable_.store(false, std::memory_order_relaxed);
      return go_dry_rt(out, frames, false);
    }
  }
  slot_busy_[slot] = false;
  if (done.slot != slot || done.frames != frames) {
    usable_.store(false, std::memory_order_relaxed);
    return go_dry_rt(out, frames, false);
  }
  switch (static_cast<shm::CompletionStatus>(done.status)) {
    case shm::CompletionStatus::processed:
      break;
    case shm::CompletionStatus::passthrough:
      write_dry_rt(out, frames);  // the plugin's own choice: not a bypass
      return BlockStatus::processed;
    case shm::CompletionStatus::failed:
      return go_dry_rt(out, frames, false);
    default:
      usable_.store(false, std::memory_order_relaxed);
      return go_dry_rt(out, frames, false);
  }

  // Copy out, refusing NaN/Inf: `!(|x| <= max)` is also true for NaN, and the loop vectorises.
  bool bad = false;
  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    const float* src = endpoint_.channel_rt(slot, ch);
    if (src == nullptr) return go_dry_rt(out, frames, false);
    float* dst = out[ch];
    for (std::uint32_t i = 0; i < frames; ++i) {
      const float v = src[i];
      dst[i] = v;
      bad |= !(std::fabs(v) <= std::numeric_limits<float>::max());
    }
  }
  if (bad) {
    bump(sanitized_blocks_);
    return go_dry_rt(out, frames, false);
  }
  return BlockStatus::processed;
}

}  // namespace sandpipe::host
