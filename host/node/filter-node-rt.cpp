// The node's process callback: everything here runs on PipeWire's data thread.
#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include <pipewire/filter.h>
#include <pipewire/loop.h>
#include <spa/node/io.h>

#include "host/node/filter-node.h"
#include "host/node/node-props.h"
#include "shm/clock.h"

namespace sandpipe::host::detail {
namespace {

constexpr std::uint64_t nsec_per_sec = 1'000'000'000;

/// The buffers of one cycle, dequeued from every port and queued back on destruction, so no
/// early return can leave a port without its buffer.
class CycleBuffers {
 public:
  /// [rt]
  explicit CycleBuffers(RtState& st) noexcept : channels_(st.channels), st_(st) {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      in_[ch] = take(st.in_ports[ch]);
      out_[ch] = take(st.out_ports[ch]);
    }
  }

  /// [rt] Sets the output chunks to `frames_out_` frames and hands every buffer back.
  ~CycleBuffers() {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      if (out_[ch] != nullptr) {
        spa_chunk* chunk = out_[ch]->buffer->datas[0].chunk;
        chunk->offset = 0;
        chunk->size = frames_out_ * static_cast<std::uint32_t>(sizeof(float));
        chunk->stride = sizeof(float);
        chunk->flags = 0;
        pw_filter_queue_buffer(st_.out_ports[ch], out_[ch]);
      }
      if (in_[ch] != nullptr) {
        pw_filter_queue_buffer(st_.in_ports[ch], in_[ch]);
      }
    }
  }
  CycleBuffers(const CycleBuffers&) = delete;
  CycleBuffers& operator=(const CycleBuffers&) = delete;
  CycleBuffers(CycleBuffers&&) = delete;
  CycleBuffers& operator=(CycleBuffers&&) = delete;

  /// [rt] True if every port gave a buffer with memory behind it.
  [[nodiscard]] bool complete() const noexcept {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      const bool in_missing = st_.in_ports[ch] != nullptr && in_[ch] == nullptr;
      const bool out_missing = st_.out_ports[ch] != nullptr && out_[ch] == nullptr;
      if (in_missing || out_missing) {
        return false;
      }
    }
    return true;
  }

  /// [rt] True if there is someone to produce for: an output port gave a buffer, or, for a node
  /// without outputs (the chain ends with a sink), an input port did.
  [[nodiscard]] bool any_output() const noexcept {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      if (st_.out_ports[ch] != nullptr ? out_[ch] != nullptr : in_[ch] != nullptr) {
        return true;
      }
    }
    return false;
  }

  /// [rt] Frames every buffer we hold and every stand-in can take.
  [[nodiscard]] std::uint32_t capacity_frames() const noexcept {
    std::uint32_t frames = max_quantum;
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      for (const pw_buffer* b : {in_[ch], out_[ch]}) {
        if (b != nullptr) {
          frames = std::min(frames, b->buffer->datas[0].maxsize / static_cast<std::uint32_t>(sizeof(float)));
        }
      }
    }
    return frames;
  }

  /// [rt] Input of `ch`, or silence if its port has no buffer (not linked).
  [[nodiscard]] const float* in(std::uint32_t ch) const noexcept {
    return in_[ch] != nullptr ? data(in_[ch]) : st_.silence.data();
  }
  /// [rt] Output of `ch`, or this channel's discard area if its port has no buffer.
  [[nodiscard]] float* out(std::uint32_t ch) const noexcept {
    return out_[ch] != nullptr ? data(out_[ch]) : st_.discard.data() + std::size_t{ch} * max_quantum;
  }

  /// [rt] Writes `frames` frames of silence to every output we hold and publishes that size.
  void silence(std::uint32_t frames) noexcept {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      float* dst = data(out_[ch]);
      if (dst != nullptr) {
        const std::uint32_t n =
            std::min(frames, out_[ch]->buffer->datas[0].maxsize / static_cast<std::uint32_t>(sizeof(float)));
        std::memset(dst, 0, n * sizeof(float));
      }
    }
    frames_out_ = frames;
  }

  void set_frames_out(std::uint32_t frames) noexcept { frames_out_ = frames; }

 private:
  /// [rt] Dequeues one buffer; a buffer without mapped memory counts as missing.
  static pw_buffer* take(void* port) noexcept {
    if (port == nullptr) {
      return nullptr;
    }
    pw_buffer* b = pw_filter_dequeue_buffer(port);
    if (b == nullptr) {
      return nullptr;
    }
    if (b->buffer->n_datas < 1 || b->buffer->datas[0].data == nullptr) {
      pw_filter_queue_buffer(port, b);
      return nullptr;
    }
    return b;
  }

  static float* data(const pw_buffer* b) noexcept {
    return b == nullptr ? nullptr : static_cast<float*>(b->buffer->datas[0].data);
  }

  std::uint32_t channels_;
  RtState& st_;
  std::array<pw_buffer*, Chain::max_channels> in_{};
  std::array<pw_buffer*, Chain::max_channels> out_{};
  std::uint32_t frames_out_ = 0;
};

/// [rt] Asks the main thread, once per rate, for a chain built at `rate`.
void request_rebuild_rt(RtState& st, std::uint32_t rate) noexcept {
  if (rate == st.rejected_rate.load(std::memory_order_relaxed) || st.main_loop == nullptr ||
      st.on_rebuild_request == nullptr) {
    return;
  }
  if (st.rebuild_requested.exchange(true, std::memory_order_acq_rel)) {
    return;  // one request in flight; the main thread reads the latest graph_rate
  }
  // NOTE: the one system call on this path: a non-blocking eventfd write waking the main
  // loop, at most once per rate change (the flag above merges repeats).
  pw_loop_invoke(st.main_loop, st.on_rebuild_request, 0, nullptr, 0, false, st.rebuild_request_data);
}

}  // namespace

std::uint64_t cycle_deadline_ns(std::uint64_t cycle_start_ns, std::uint64_t frames, std::uint32_t rate,
                                std::uint64_t now_ns) noexcept {
  const std::uint64_t floor_ns = now_ns + min_budget_ns;
  if (cycle_start_ns == 0 || rate == 0) {
    return floor_ns;
  }
  // frames ≤ max_quantum and nsec_per_sec * budget_percent < 2^37: no overflow.
  const std::uint64_t budget_ns = frames * nsec_per_sec / rate * budget_percent / 100;
  return std::max(cycle_start_ns + budget_ns, floor_ns);
}

void on_process_rt(void* data, spa_io_position* position) noexcept {
  auto& st = *static_cast<RtState*>(data);
  if (position == nullptr || position->clock.duration == 0) {
    return;
  }
  const std::uint64_t quantum = position->clock.duration;
  const std::uint32_t rate = position->clock.rate.denom;
  // Read now: a driver that starts the next cycle while this one overran rewrites it.
  const std::uint64_t cycle_start_ns = position->clock.nsec;

  CycleBuffers buffers(st);
  if (!buffers.any_output()) {
    // Nothing linked downstream (or no buffers yet): nobody to produce for.
    st.counters.missing_buffers.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!buffers.complete()) {
    // Some ports are not linked: their inputs read silence, their outputs go to a discard area,
    // so a source on FL alone still comes out on FL.
    st.counters.partial_cycles.fetch_add(1, std::memory_order_relaxed);
  }
  const std::uint32_t capacity = buffers.capacity_frames();
  if (quantum > capacity) {
    st.counters.oversized_cycles.fetch_add(1, std::memory_order_relaxed);
    buffers.silence(capacity);
    return;
  }
  const auto frames = static_cast<std::uint32_t>(quantum);

  Chain* chain = st.chain;
  if (chain == nullptr) {
    st.counters.no_chain_cycles.fetch_add(1, std::memory_order_relaxed);
    buffers.silence(frames);
    return;
  }

  drain_param_changes_rt(st.param_changes, *chain);

  if (rate != 0) {
    st.graph_rate.store(rate, std::memory_order_relaxed);
    if (rate != static_cast<std::uint32_t>(std::lround(chain->sample_rate()))) {
      // Keep running the old chain (gains are right, filters are off) until the main thread
      // swaps in one built for this rate.
      st.counters.rate_mismatch_cycles.fetch_add(1, std::memory_order_relaxed);
      request_rebuild_rt(st, rate);
    }
  }
  if (quantum != st.schedule.chain_quantum.load(std::memory_order_relaxed)) {
    // Pipelined slots add k × the quantum: the main thread re-schedules and re-reports.
    request_schedule_rt(st.schedule, st.main_loop, static_cast<std::uint32_t>(quantum));
  }

  std::array<const float*, Chain::max_channels> in{};
  std::array<float*, Chain::max_channels> out{};
  for (std::uint32_t ch = 0; ch < st.channels; ++ch) {
    in[ch] = buffers.in(ch);
    out[ch] = buffers.out(ch);
  }
  const std::uint64_t deadline = cycle_deadline_ns(cycle_start_ns, quantum, rate, shm::now_ns());
  chain->process_rt(in.data(), out.data(), frames, deadline);
  buffers.set_frames_out(frames);
  st.counters.timing.note_cycle_rt(cycle_start_ns, quantum, rate, shm::now_ns());
}

}  // namespace sandpipe::host::detail
