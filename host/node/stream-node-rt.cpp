// The streams' data-thread part: both process callbacks and the cycle they share.
#include <algorithm>
#include <array>
#include <cstring>

#include <pipewire/loop.h>
#include <pipewire/stream.h>
#include <spa/node/io.h>

#include "host/node/filter-node.h"
#include "host/node/node-props.h"
#include "host/node/stream-node.h"
#include "shm/clock.h"

namespace sandpipe::host::detail {
namespace {

/// [rt] Frames a planar buffer holds in every one of its first `channels` datas (chunk size),
/// or 0 if a data is missing.
std::uint32_t captured_frames(const pw_buffer* b, std::uint32_t channels) noexcept {
  if (b->buffer->n_datas < channels) return 0;
  std::uint32_t frames = max_quantum;
  for (std::uint32_t ch = 0; ch < channels; ++ch) {
    const spa_data& d = b->buffer->datas[ch];
    if (d.data == nullptr || d.chunk == nullptr) return 0;
    const std::uint32_t offset = std::min(d.chunk->offset, d.maxsize);
    const std::uint32_t size = std::min(d.chunk->size, d.maxsize - offset);
    frames = std::min(frames, size / static_cast<std::uint32_t>(sizeof(float)));
  }
  return frames;
}

/// [rt] One cycle: the captured buffer (or silence, for a source chain) → chain → the playback
/// buffer (or the discard area, for a sink chain).
void run_cycle_rt(StreamRtState& st) noexcept {
  // Read now: a driver that starts the next cycle while this one overran rewrites it.
  const spa_io_position* position = st.position;
  const std::uint64_t cycle_start_ns = position != nullptr ? position->clock.nsec : 0;
  pw_buffer* in = st.capture != nullptr ? pw_stream_dequeue_buffer(st.capture) : nullptr;
  pw_buffer* out = st.playback != nullptr ? pw_stream_dequeue_buffer(st.playback) : nullptr;
  const auto requeue = [&] {
    if (out != nullptr) pw_stream_queue_buffer(st.playback, out);
    if (in != nullptr) pw_stream_queue_buffer(st.capture, in);
  };
  if (st.playback != nullptr && (out == nullptr || out->buffer->n_datas < st.channels)) {
    st.counters.no_output_buffer.fetch_add(1, std::memory_order_relaxed);
    requeue();
    return;
  }

  // How much to produce: what was captured; with nothing to capture from, what playback asks for.
  std::uint32_t capacity = max_quantum;
  for (std::uint32_t ch = 0; out != nullptr && ch < st.channels; ++ch) {
    const spa_data& d = out->buffer->datas[ch];
    capacity =
        d.data == nullptr ? 0 : std::min(capacity, d.maxsize / static_cast<std::uint32_t>(sizeof(float)));
  }
  const std::uint32_t captured = in != nullptr ? captured_frames(in, st.channels) : 0;
  std::uint64_t wanted = captured;
  if (captured == 0) {
    if (st.capture != nullptr) st.counters.no_input_buffer.fetch_add(1, std::memory_order_relaxed);
    if (out == nullptr) {  // a sink chain with nothing captured: nothing to run
      requeue();
      return;
    }
    wanted = out->requested != 0 ? out->requested : capacity;
  }

  std::array<const float*, Chain::max_channels> src{};
  std::array<float*, Chain::max_channels> dst{};
  std::uint32_t frames = 0;
  if (wanted > capacity || capacity == 0) {
    st.counters.oversized.fetch_add(1, std::memory_order_relaxed);
    frames = capacity;
    for (std::uint32_t ch = 0; out != nullptr && ch < st.channels; ++ch)
      if (out->buffer->datas[ch].data != nullptr)
        std::memset(out->buffer->datas[ch].data, 0, frames * sizeof(float));
  } else {
    frames = static_cast<std::uint32_t>(wanted);
    for (std::uint32_t ch = 0; ch < st.channels; ++ch) {
      src[ch] = captured != 0 ? static_cast<const float*>(SPA_PTROFF(
                                    in->buffer->datas[ch].data, in->buffer->datas[ch].chunk->offset, void))
                              : st.silence.data();
      dst[ch] = out != nullptr ? static_cast<float*>(out->buffer->datas[ch].data)
                               : st.discard.data() + std::size_t{ch} * max_quantum;
    }
    const std::uint64_t quantum = position != nullptr ? position->clock.duration : 0;
    if (quantum != 0 && quantum <= max_quantum &&
        quantum != st.schedule.chain_quantum.load(std::memory_order_relaxed))
      request_schedule_rt(st.schedule, st.main_loop, static_cast<std::uint32_t>(quantum));
    drain_param_changes_rt(st.param_changes, *st.chain);
    const std::uint64_t now = shm::now_ns();
    const std::uint64_t start = cycle_start_ns != 0 ? cycle_start_ns : now;
    st.chain->process_rt(src.data(), dst.data(), frames, cycle_deadline_ns(start, frames, st.rate, now));
    st.counters.timing.note_cycle_rt(cycle_start_ns, frames, st.rate, shm::now_ns());
  }

  for (std::uint32_t ch = 0; out != nullptr && ch < st.channels; ++ch) {
    spa_chunk* chunk = out->buffer->datas[ch].chunk;
    chunk->offset = 0;
    chunk->size = frames * static_cast<std::uint32_t>(sizeof(float));
    chunk->stride = sizeof(float);
    chunk->flags = 0;
  }
  requeue();
}

}  // namespace

void on_capture_process_rt(void* data) noexcept {
  auto& st = *static_cast<StreamRtState*>(data);
  if (st.playback != nullptr) {
    pw_stream_trigger_process(st.playback);
  } else {
    run_cycle_rt(st);
  }
}

void on_playback_process_rt(void* data) noexcept { run_cycle_rt(*static_cast<StreamRtState*>(data)); }

}  // namespace sandpipe::host::detail
