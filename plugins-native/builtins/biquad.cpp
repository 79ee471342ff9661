// builtin:biquad — one second-order section after the RBJ Audio EQ Cookbook, through the public
// plugin ABI only.
//
// Parameters: `type` (lowpass, highpass, bandpass, notch, peaking, lowshelf, highshelf, allpass),
// `freq` (Hz), `q`, `gain` (dB; peaking and shelves only). Shelves take Q, not the shelf slope S.
// The bandpass is the cookbook's constant 0 dB peak gain variant.
//
// Coefficients are computed in double whenever a parameter is set (set_param runs on the audio
// thread: a handful of libm calls, no allocation). The filter runs in Direct Form II transposed
// with double state per channel; state that decays below 1e-30 (about -600 dB) is flushed to
// zero so a filter ringing out into silence never computes with subnormal numbers.
#include <sandpipe/plugin.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <new>
#include <numbers>
#include <vector>

namespace sandpipe::builtins {
namespace {

enum ParamIndex : std::uint32_t { param_type = 0, param_freq, param_q, param_gain, param_count };

enum class FilterType : std::uint32_t {
  lowpass,
  highpass,
  bandpass,
  notch,
  peaking,
  lowshelf,
  highshelf,
  allpass,
};

constexpr const char* type_names[] = {"lowpass", "highpass", "bandpass",  "notch",
                                      "peaking", "lowshelf", "highshelf", "allpass"};
constexpr std::uint32_t type_count = sizeof(type_names) / sizeof(type_names[0]);

constexpr sandpipe_param_info params[param_count] = {
    {"type", "Filter type", "", 0.0f, static_cast<float>(type_count - 1), 0.0f, SANDPIPE_PARAM_ENUM,
     type_names, type_count},
    {"freq", "Frequency", "Hz", 10.0f, 48000.0f, 1000.0f, 0u, nullptr, 0u},
    {"q", "Q", "", 0.025f, 40.0f, 0.70710677f, 0u, nullptr, 0u},
    {"gain", "Gain", "dB", -48.0f, 48.0f, 0.0f, 0u, nullptr, 0u},
};

/// Highest usable centre frequency as a fraction of the sample rate: at Nyquist the cookbook's
/// alpha is 0 and most types degenerate.
constexpr double max_freq_ratio = 0.49;

/// State magnitudes below this are flushed to zero (far below float's smallest normal too).
constexpr double flush_below = 1e-30;

struct Coefficients {
  // Normalised by a0.
  double b0 = 1.0, b1 = 0.0, b2 = 0.0, a1 = 0.0, a2 = 0.0;
};

struct Biquad {
  Biquad(double rate, std::uint32_t channel_count) : sample_rate(rate), channels(channel_count) {}

  double sample_rate;
  std::uint32_t channels;
  FilterType type = FilterType::lowpass;
  double freq = params[param_freq].default_value;
  double q = params[param_q].default_value;
  double gain_db = params[param_gain].default_value;
  Coefficients k;
  std::vector<double> state;  ///< s1, s2 per channel
};

Coefficients design(FilterType type, double sample_rate, double freq, double q, double gain_db) noexcept {
  const double f0 = std::fmin(freq, max_freq_ratio * sample_rate);
  const double w0 = 2.0 * std::numbers::pi * f0 / sample_rate;
  const double cos_w0 = std::cos(w0);
  const double alpha = std::sin(w0) / (2.0 * q);
  const double a = std::pow(10.0, gain_db / 40.0);  // the cookbook's A, amplitude square root
  const double two_sqrt_a_alpha = 2.0 * std::sqrt(a) * alpha;

  double b0 = 1.0, b1 = 0.0, b2 = 0.0, a0 = 1.0, a1 = 0.0, a2 = 0.0;
  switch (type) {
    case FilterType::lowpass:
      b1 = 1.0 - cos_w0;
      b0 = b2 = b1 / 2.0;
      a0 = 1.0 + alpha, a1 = -2.0 * cos_w0, a2 = 1.0 - alpha;
      break;
    case FilterType::highpass:
      b1 = -(1.0 + cos_w0);
      b0 = b2 = (1.0 + cos_w0) / 2.0;
      a0 = 1.0 + alpha, a1 = -2.0 * cos_w0, a2 = 1.0 - alpha;
      break;
    case FilterType::bandpass:
      b0 = alpha, b1 = 0.0, b2 = -alpha;
      a0 = 1.0 + alpha, a1 = -2.0 * cos_w0, a2 = 1.0 - alpha;
      break;
    case FilterType::notch:
      b0 = 1.0, b1 = -2.0 * cos_w0, b2 = 1.0;
      a0 = 1.0 + alpha, a1 = -2.0 * cos_w0, a2 = 1.0 - alpha;
      break;
    case FilterType::peaking:
      b0 = 1.0 + alpha * a, b1 = -2.0 * cos_w0, b2 = 1.0 - alpha * a;
      a0 = 1.0 + alpha / a, a1 = -2.0 * cos_w0, a2 = 1.0 - alpha / a;
      break;
    case FilterType::lowshelf:
      b0 = a * ((a + 1.0) - (a - 1.0) * cos_w0 + two_sqrt_a_alpha);
      b1 = 2.0 * a * ((a - 1.0) - (a + 1.0) * cos_w0);
      b2 = a * ((a + 1.0) - (a - 1.0) * cos_w0 - two_sqrt_a_alpha);
      a0 = (a + 1.0) + (a - 1.0) * cos_w0 + two_sqrt_a_alpha;
      a1 = -2.0 * ((a - 1.0) + (a + 1.0) * cos_w0);
      a2 = (a + 1.0) + (a - 1.0) * cos_w0 - two_sqrt_a_alpha;
      break;
    case FilterType::highshelf:
      b0 = a * ((a + 1.0) + (a - 1.0) * cos_w0 + two_sqrt_a_alpha);
      b1 = -2.0 * a * ((a - 1.0) + (a + 1.0) * cos_w0);
      b2 = a * ((a + 1.0) + (a - 1.0) * cos_w0 - two_sqrt_a_alpha);
      a0 = (a + 1.0) - (a - 1.0) * cos_w0 + two_sqrt_a_alpha;
      a1 = 2.0 * ((a - 1.0) - (a + 1.0) * cos_w0);
      a2 = (a + 1.0) - (a - 1.0) * cos_w0 - two_sqrt_a_alpha;
      break;
    case FilterType::allpass:
      b0 = 1.0 - alpha, b1 = -2.0 * cos_w0, b2 = 1.0 + alpha;
      a0 = 1.0 + alpha, a1 = -2.0 * cos_w0, a2 = 1.0 - alpha;
      break;
  }
  return {b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0};
}

Biquad* as_biquad(sandpipe_instance* instance) noexcept { return reinterpret_cast<Biquad*>(instance); }

void update(Biquad& f) noexcept { f.k = design(f.type, f.sample_rate, f.freq, f.q, f.gain_db); }

sandpipe_instance* instantiate(const sandpipe_plugin_descriptor* /*desc*/, double sample_rate,
                               std::uint32_t channels, std::uint32_t /*max_frames*/) noexcept {
  if (!(sample_rate > 0.0) || channels == 0) return nullptr;
  try {
    auto f = std::make_unique<Biquad>(sample_rate, channels);
    f->state.assign(2 * static_cast<std::size_t>(channels), 0.0);
    update(*f);
    return reinterpret_cast<sandpipe_instance*>(f.release());
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}

void destroy(sandpipe_instance* instance) noexcept { delete as_biquad(instance); }

void set_param(sandpipe_instance* instance, std::uint32_t index, float value) noexcept {
  Biquad& f = *as_biquad(instance);
  switch (index) {
    case param_type: {
      const auto t = static_cast<std::uint32_t>(value);
      if (t < type_count) f.type = static_cast<FilterType>(t);
      break;
    }
    case param_freq:
      f.freq = value;
      break;
    case param_q:
      f.q = value;
      break;
    case param_gain:
      f.gain_db = value;
      break;
    default:
      return;
  }
  update(f);
}

void process(sandpipe_instance* instance, const float* const* in, float* const* out,
             std::uint32_t frames) noexcept {
  Biquad& f = *as_biquad(instance);
  const Coefficients k = f.k;
  for (std::size_t c = 0; c < f.channels; ++c) {
    const float* x = in[c];
    float* y = out[c];
    double s1 = f.state[2 * c];
    double s2 = f.state[2 * c + 1];
    for (std::uint32_t n = 0; n < frames; ++n) {
      const double xn = x[n];  // read before writing: in and out may be the same buffer
      const double yn = k.b0 * xn + s1;
      s1 = k.b1 * xn - k.a1 * yn + s2;
      s2 = k.b2 * xn - k.a2 * yn;
      s1 = std::fabs(s1) < flush_below ? 0.0 : s1;
      s2 = std::fabs(s2) < flush_below ? 0.0 : s2;
      y[n] = static_cast<float>(yn);
    }
    f.state[2 * c] = s1;
    f.state[2 * c + 1] = s2;
  }
}

std::uint32_t latency(const sandpipe_instance* /*instance*/) noexcept { return 0; }

void reset(sandpipe_instance* instance) noexcept {
  Biquad& f = *as_biquad(instance);
  for (double& s : f.state) s = 0.0;
}

constexpr sandpipe_plugin_descriptor descriptor = {
    SANDPIPE_PLUGIN_ABI_VERSION,
    sizeof(sandpipe_plugin_descriptor),
    "biquad",
    "Biquad filter (RBJ cookbook)",
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
