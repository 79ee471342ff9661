// builtin:gain — a linear gain with a mute switch, through the public plugin ABI only.
//
// Parameters: `gain` (linear, 0..16, default 1) and `mute` (boolean, default false).
// A steady gain is one multiplication per sample, so 0.5 halves every sample bit-exactly; a gain of
// exactly 1 copies, keeping every bit pattern (NaN payloads, denormals). A change
// made while running is ramped linearly across the next block so that it does not click.
#include <sandpipe/plugin.h>

#include <cstdint>
#include <cstring>
#include <new>

namespace sandpipe::builtins {
namespace {

enum ParamIndex : std::uint32_t { param_gain = 0, param_mute = 1, param_count = 2 };

constexpr sandpipe_param_info params[param_count] = {
    {"gain", "Gain", "", 0.0f, 16.0f, 1.0f, 0u, nullptr, 0u},
    {"mute", "Mute", "", 0.0f, 1.0f, 0.0f, SANDPIPE_PARAM_BOOLEAN, nullptr, 0u},
};

struct Gain {
  std::uint32_t channels;
  float gain = 1.0f;
  bool mute = false;
  float current = 1.0f;  ///< the factor applied at the end of the last block
  bool started = false;  ///< until the first block, parameter changes apply without a ramp

  [[nodiscard]] float target() const noexcept { return mute ? 0.0f : gain; }
};

Gain* as_gain(sandpipe_instance* instance) noexcept { return reinterpret_cast<Gain*>(instance); }

sandpipe_instance* instantiate(const sandpipe_plugin_descriptor* /*desc*/, double /*sample_rate*/,
                               std::uint32_t channels, std::uint32_t /*max_frames*/) noexcept {
  auto* gain = new (std::nothrow) Gain{channels};
  return reinterpret_cast<sandpipe_instance*>(gain);
}

void destroy(sandpipe_instance* instance) noexcept { delete as_gain(instance); }

void set_param(sandpipe_instance* instance, std::uint32_t index, float value) noexcept {
  Gain& g = *as_gain(instance);
  if (index == param_gain) {
    g.gain = value;
  } else if (index == param_mute) {
    g.mute = value >= 0.5f;
  }
  if (!g.started) g.current = g.target();
}

void process(sandpipe_instance* instance, const float* const* in, float* const* out,
             std::uint32_t frames) noexcept {
  Gain& g = *as_gain(instance);
  g.started = true;
  const float target = g.target();
  if (g.current == target && target == 1.0f) {
    // Unity: a copy, so every bit pattern passes (x * 1 would quiet a signalling NaN, and flush
    // a denormal on a thread with flush-to-zero): a bit-exact slot's output survives it.
    for (std::uint32_t c = 0; c < g.channels; ++c)
      if (out[c] != in[c]) std::memcpy(out[c], in[c], sizeof(float) * frames);
    return;
  }
  if (g.current == target) {
    for (std::uint32_t c = 0; c < g.channels; ++c) {
      const float* x = in[c];
      float* y = out[c];
      for (std::uint32_t n = 0; n < frames; ++n) y[n] = x[n] * target;
    }
    return;
  }
  // NOTE: the ramp reaches `target` on the block's last sample; in double so long blocks stay exact.
  const double start = g.current;
  const double step = (static_cast<double>(target) - start) / frames;
  for (std::uint32_t c = 0; c < g.channels; ++c) {
    const float* x = in[c];
    float* y = out[c];
    for (std::uint32_t n = 0; n < frames; ++n) {
      const auto factor = static_cast<float>(start + step * (n + 1));
      y[n] = x[n] * factor;
    }
  }
  g.current = target;
}

std::uint32_t latency(const sandpipe_instance* /*instance*/) noexcept { return 0; }

void reset(sandpipe_instance* instance) noexcept {
  Gain& g = *as_gain(instance);
  g.current = g.target();
  g.started = false;
}

constexpr sandpipe_plugin_descriptor descriptor = {
    SANDPIPE_PLUGIN_ABI_VERSION,
    sizeof(sandpipe_plugin_descriptor),
    "gain",
    "Gain",
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
