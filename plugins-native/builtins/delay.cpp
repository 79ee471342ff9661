// builtin:delay — a whole-frame delay line, through the public plugin ABI only.
//
// Parameters: `ms` (0..2000, default 0) and `frames` (whole frames, 0..96000, default 0). The delay
// is their sum, `frames + round(ms × rate / 1000)`, so either can be used alone. The line is
// allocated in instantiate for the largest sum (2 s at the stream's rate plus 96000 frames), so a
// change while running never allocates; it jumps without crossfade.
//
// NOTE: latency() reports 0. The delayed signal is the effect the user asked for, not processing
// delay: reporting it would make the host compensate it away (and align dry signals to it).
#include <sandpipe/plugin.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <vector>

namespace sandpipe::builtins {
namespace {

enum ParamIndex : std::uint32_t { param_ms = 0, param_frames, param_count };

constexpr float max_ms = 2000.0f;
constexpr float max_frames_param = 96000.0f;

constexpr sandpipe_param_info params[param_count] = {
    {"ms", "Delay time", "ms", 0.0f, max_ms, 0.0f, 0u, nullptr, 0u},
    {"frames", "Delay in frames", "frames", 0.0f, max_frames_param, 0.0f, SANDPIPE_PARAM_INTEGER, nullptr,
     0u},
};

struct Delay {
  Delay(double rate, std::uint32_t channel_count) : sample_rate(rate), channels(channel_count) {}

  double sample_rate;
  std::uint32_t channels;
  double ms = 0.0;
  std::uint32_t extra_frames = 0;
  std::uint32_t delay = 0;     ///< total, in frames, at most `capacity`
  std::uint32_t capacity = 0;  ///< the longest delay the line holds
  std::uint32_t mask = 0;      ///< ring size - 1 (size is a power of two above capacity)
  std::uint32_t write = 0;     ///< free-running write index, wrapped by `mask`
  std::vector<float> ring;     ///< channels × ring size
};

Delay* as_delay(sandpipe_instance* instance) noexcept { return reinterpret_cast<Delay*>(instance); }

void update(Delay& d) noexcept {
  const double total = static_cast<double>(d.extra_frames) + std::round(d.ms * d.sample_rate / 1000.0);
  d.delay = total >= d.capacity ? d.capacity : static_cast<std::uint32_t>(total);
}

sandpipe_instance* instantiate(const sandpipe_plugin_descriptor* /*desc*/, double sample_rate,
                               std::uint32_t channels, std::uint32_t /*max_frames*/) noexcept {
  // The bound keeps the ring's size within 32 bits (2 s at 1 MHz would still fit).
  if (!(sample_rate > 0.0 && sample_rate <= 1.0e6) || channels == 0) return nullptr;
  try {
    auto d = std::make_unique<Delay>(sample_rate, channels);
    d->capacity = static_cast<std::uint32_t>(max_frames_param) +
                  static_cast<std::uint32_t>(std::ceil(max_ms / 1000.0 * sample_rate));
    std::uint32_t size = 1;
    while (size <= d->capacity) size <<= 1u;
    d->mask = size - 1;
    d->ring.assign(static_cast<std::size_t>(size) * channels, 0.0f);
    update(*d);
    return reinterpret_cast<sandpipe_instance*>(d.release());
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

void destroy(sandpipe_instance* instance) noexcept { delete as_delay(instance); }

void set_param(sandpipe_instance* instance, std::uint32_t index, float value) noexcept {
  Delay& d = *as_delay(instance);
  if (index == param_ms) {
    d.ms = value;
  } else if (index == param_frames) {
    d.extra_frames = static_cast<std::uint32_t>(value);
  } else {
    return;
  }
  update(d);
}

void process(sandpipe_instance* instance, const float* const* in, float* const* out,
             std::uint32_t frames) noexcept {
  Delay& d = *as_delay(instance);
  const std::uint32_t size = d.mask + 1;
  for (std::uint32_t c = 0; c < d.channels; ++c) {
    float* line = d.ring.data() + static_cast<std::size_t>(c) * size;
    const float* x = in[c];
    float* y = out[c];
    std::uint32_t w = d.write;
    // Write before read, sample by sample: correct for a delay of 0 and for in == out.
    for (std::uint32_t n = 0; n < frames; ++n, ++w) {
      line[w & d.mask] = x[n];
      y[n] = line[(w - d.delay) & d.mask];
    }
  }
  d.write += frames;
}

std::uint32_t latency(const sandpipe_instance* /*instance*/) noexcept { return 0; }

void reset(sandpipe_instance* instance) noexcept {
  Delay& d = *as_delay(instance);
  for (float& s : d.ring) s = 0.0f;
  d.write = 0;
}

constexpr sandpipe_plugin_descriptor descriptor = {
    SANDPIPE_PLUGIN_ABI_VERSION,
    sizeof(sandpipe_plugin_descriptor),
    "delay",
    "Delay",
    "1.0.0",
    param_count,
    params,
    instantiate,
    destroy,
    set_param,
    process,
    latency,
    reset,
};

}  // namespace
}  // namespace sandpipe::builtins

extern "C" SANDPIPE_PLUGIN_EXPORT const sandpipe_plugin_descriptor* sandpipe_plugin_entry(
    std::uint32_t /*host_abi_version*/, std::uint32_t index) {
  return index == 0 ? &sandpipe::builtins::descriptor : nullptr;
}
