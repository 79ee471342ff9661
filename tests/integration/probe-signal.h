// The probe's test signal and the analysis of what came back. No PipeWire here: the signal is
// a pure function of the graph position, so the analysis can rebuild what was sent for any
// captured frame from the position of the cycle it was captured in.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <map>
#include <numbers>
#include <string>
#include <vector>

namespace sandpipe::integration {

enum class SignalKind : std::uint8_t {
  noise,  ///< white noise, a hash of (position, channel): every frame differs, delay is unambiguous
  tone,   ///< a sine at `freq` Hz: for gain at one frequency; delay is only known modulo a period
};

struct SignalSpec {
  SignalKind kind = SignalKind::noise;
  double amplitude = 0.5;
  double freq = 1000.0;
};

/// [any] The sample sent on `channel` at graph position `position` (frames since the driver
/// started) at `rate` Hz. Deterministic across runs, processes and machines.
inline float signal_sample(const SignalSpec& spec, std::uint64_t position, std::uint32_t channel,
                           std::uint32_t rate) noexcept {
  if (spec.kind == SignalKind::tone) {
    const double cycles =
        std::fmod(static_cast<double>(position) * spec.freq / static_cast<double>(rate), 1.0);
    return static_cast<float>(spec.amplitude * std::sin(2.0 * std::numbers::pi * cycles));
  }
  // splitmix64 of (position, channel), top 24 bits to [-1, 1): exact in float.
  std::uint64_t z = position * 8 + channel + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  const auto bits = static_cast<std::int32_t>(z >> 40) - (1 << 23);  // [-2^23, 2^23)
  return static_cast<float>(spec.amplitude * static_cast<double>(bits) / static_cast<double>(1 << 23));
}

/// One cycle the capture node recorded.
struct CapturedCycle {
  std::uint64_t position = 0;  ///< clock.position of the cycle
  std::uint32_t frames = 0;    ///< clock.duration (the quantum)
  std::uint32_t rate = 0;      ///< clock.rate.denom
  std::uint64_t offset = 0;    ///< index of its first frame in the capture buffers
  bool missing = false;        ///< an input port had no buffer: zeros were recorded
  std::uint64_t nsec = 0;      ///< clock.nsec: CLOCK_MONOTONIC when the driver started the cycle
};

struct ChannelReport {
  std::string position;
  double input_rms = 0, input_peak = 0, output_rms = 0, output_peak = 0;
  double gain = 0;  ///< least-squares gain of output against the delayed input
  double max_abs_error = 0, rms_error = 0;
};

/// A captured cycle that did not match, for diagnosis.
struct BadCycle {
  std::uint64_t index = 0;  ///< cycle number in the capture
  std::uint64_t position = 0;
  std::uint32_t frames = 0;
  double max_abs_error = 0;
  std::uint64_t previous_end = 0;  ///< where the previous cycle's positions ended
  std::int64_t matched_shift = 0;  ///< the output is the reference shifted by this (0: no match found)
  bool dry = false;                ///< the output is the unprocessed input
  std::uint64_t off_frames = 0;    ///< frames of the cycle that were off
};

/// What a cycle's output turned out to be.
enum class CycleVerdict : std::uint8_t {
  good,    ///< reference gain × the input delayed by the chain's delay, within tolerance
  stale,   ///< exactly the signal of another position: a whole buffer from another cycle
           ///< (a graph xrun: the consumer ran on an old buffer). Counted, not scored.
  silent,  ///< the frames that are off are zeros: a node got no buffer (a graph xrun)
  dry,     ///< the input itself, unprocessed: a slot bypassed (late or failed sandbox)
  wrong,   ///< none of these: the node computed something else
  /// Wrong, but within two cycles of a position gap or a stale or silent cycle: the graph's
  /// xrun (seen as often through a native gain node, which has no memory, as through a
  /// sandbox: buffers of the cycles around an xrun get mixed up). Counted, not scored.
  xrun_adjacent,
};

struct QuantumReport {
  std::uint32_t quantum = 0;
  std::uint64_t cycles = 0, frames = 0;
  std::uint64_t stale_cycles = 0, silent_cycles = 0, dry_cycles = 0, wrong_cycles = 0;
  double max_abs_error = 0;  ///< over the good and wrong cycles
};

struct Report {
  std::uint32_t rate = 0;
  std::uint64_t cycles = 0, frames = 0;
  std::uint64_t missing_cycles = 0;       ///< cycles where an input port had no buffer
  std::uint64_t silent_cycles = 0;        ///< CycleVerdict::silent; counted, not scored
  std::uint64_t position_gaps = 0;        ///< consecutive cycles whose positions do not follow
  std::vector<std::uint64_t> gap_cycles;  ///< the cycles whose position did not follow the previous one
  std::vector<std::uint64_t> cycle_nsec;  ///< each cycle's clock.nsec (CLOCK_MONOTONIC), in order
  std::uint64_t good_cycles = 0, stale_cycles = 0, dry_cycles = 0, wrong_cycles = 0;
  std::uint64_t xrun_adjacent_cycles = 0;  ///< CycleVerdict::xrun_adjacent
  /// Of the wrong cycles, those whose every frame is processed, dry, or on a crossfade ramp
  /// between the two at its own position (a slot going into or out of bypass), not a shift.
  std::uint64_t crossfade_cycles = 0;
  /// One letter per cycle, in capture order: g good, d dry, x crossfade (a wrong cycle that is
  /// one), w other wrong, s stale, z silent, n wrong next to an xrun.
  std::string verdicts;
  /// Frames of any cycle that are the unprocessed input (a bypass inside an otherwise
  /// processed cycle counts here too).
  std::uint64_t dry_frames = 0;
  std::int64_t delay_frames = -1;  ///< -1: not found
  bool delay_reliable = false;     ///< false for a tone (periodic) or too little data
  double correlation = 0;          ///< normalised cross-correlation at the delay
  // The rest is over the good and wrong cycles (lost, bypassed and crossfading ones are only
  // counted).
  double gain = 0, gain_db = -999;  ///< least squares and RMS ratio, all channels
  double reference_gain = 0;        ///< what errors are measured against (expected or fitted)
  double max_abs_error = 0, rms_error = 0;
  double input_rms = 0, input_peak = 0, output_rms = 0, output_peak = 0;
  std::vector<ChannelReport> channels;
  std::vector<QuantumReport> quanta;  ///< in order of first appearance
  std::vector<BadCycle> first_bad;    ///< the first few stale or wrong cycles
};

/// [any] Compares what came back with what was sent. `captured[ch]` holds the frames of all
/// `cycles`; `expected_gain` (if > 0) is what errors are measured against, else the fitted
/// gain; delays 0..`max_delay` are searched. `second_gain` (if > 0): the node may switch to
/// that gain (a plugin reloaded with another one): frames at it count as good too. `dry_gain`:
/// what a bypassed slot leaves (1: the input itself; 0.5 when another slot of the chain halves
/// it): frames at it are dry, and crossfades run between it and the reference gain.
inline Report analyze(const SignalSpec& spec, const std::vector<std::string>& positions,
                      const std::vector<std::vector<float>>& captured,
                      const std::vector<CapturedCycle>& cycles, double expected_gain, std::uint32_t max_delay,
                      double tolerance = 1e-6, double second_gain = 0, double dry_gain = 1.0) {
  Report rep;
  rep.cycles = cycles.size();
  const std::size_t n_ch = captured.size();
  rep.channels.resize(n_ch);
  for (std::size_t ch = 0; ch < n_ch && ch < positions.size(); ++ch) {
    rep.channels[ch].position = positions[ch];
  }
  if (cycles.empty() || n_ch == 0) {
    return rep;
  }
  rep.rate = cycles.front().rate;
  const std::uint32_t rate = rep.rate == 0 ? 48000 : rep.rate;

  // Frame index → position, and the bookkeeping per cycle.
  std::vector<std::uint64_t> pos_of;
  for (std::size_t c = 0; c < cycles.size(); ++c) {
    const CapturedCycle& cy = cycles[c];
    if (c > 0 && cycles[c - 1].position + cycles[c - 1].frames != cy.position) {
      ++rep.position_gaps;
      rep.gap_cycles.push_back(c);
    }
    rep.missing_cycles += cy.missing ? 1 : 0;
    rep.cycle_nsec.push_back(cy.nsec);
    for (std::uint32_t i = 0; i < cy.frames; ++i) {
      pos_of.push_back(cy.position + i);
    }
  }
  rep.frames = pos_of.size();
  const std::size_t n = std::min<std::size_t>(pos_of.size(), captured[0].size());

  // Delay: maximise the normalised cross-correlation over a window, against a reference
  // precomputed over the window's position range.
  const std::size_t window = std::min<std::size_t>(n, 8192);
  if (window > 0) {
    std::uint64_t lo = pos_of[0], hi = pos_of[0];
    for (std::size_t j = 0; j < window; ++j) {
      lo = std::min(lo, pos_of[j]);
      hi = std::max(hi, pos_of[j]);
    }
    const std::uint64_t base = lo >= max_delay ? lo - max_delay : 0;
    const std::uint32_t search = static_cast<std::uint32_t>(std::min<std::uint64_t>(max_delay, lo));
    std::vector<float> ref(static_cast<std::size_t>(hi - base + 1));
    double best = -2.0;
    std::int64_t best_lag = -1;
    std::vector<double> out_energy(n_ch, 0.0);
    for (std::size_t ch = 0; ch < n_ch; ++ch) {
      for (std::size_t j = 0; j < window; ++j) {
        out_energy[ch] += static_cast<double>(captured[ch][j]) * captured[ch][j];
      }
    }
    std::vector<std::vector<float>> refs(n_ch, std::vector<float>(ref.size()));
    for (std::size_t ch = 0; ch < n_ch; ++ch) {
      for (std::size_t k = 0; k < ref.size(); ++k) {
        refs[ch][k] = signal_sample(spec, base + k, static_cast<std::uint32_t>(ch), rate);
      }
    }
    for (std::uint32_t lag = 0; lag <= search; ++lag) {
      double num = 0, den_ref = 0, den_out = 0;
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        const float* r = refs[ch].data();
        const float* y = captured[ch].data();
        double acc = 0, e = 0;
        for (std::size_t j = 0; j < window; ++j) {
          const float x = r[pos_of[j] - lag - base];
          acc += static_cast<double>(x) * y[j];
          e += static_cast<double>(x) * x;
        }
        num += acc;
        den_ref += e;
        den_out += out_energy[ch];
      }
      const double corr = (den_ref > 0 && den_out > 0) ? num / std::sqrt(den_ref * den_out) : 0.0;
      if (corr > best + 1e-9) {
        best = corr;
        best_lag = lag;
      }
    }
    rep.delay_frames = best_lag;
    rep.correlation = best;
    rep.delay_reliable = spec.kind == SignalKind::noise && window >= 1024 && best > 0.5;
  }
  const std::uint64_t lag = rep.delay_frames < 0 ? 0 : static_cast<std::uint64_t>(rep.delay_frames);

  // The reference for every frame, and a first gain fit over everything.
  std::vector<std::vector<float>> ref_of(n_ch, std::vector<float>(n, 0.0F));
  double num0 = 0, den0 = 0;
  for (std::size_t ch = 0; ch < n_ch; ++ch) {
    for (std::size_t j = 0; j < n; ++j) {
      if (pos_of[j] >= lag) {
        ref_of[ch][j] = signal_sample(spec, pos_of[j] - lag, static_cast<std::uint32_t>(ch), rate);
        num0 += static_cast<double>(ref_of[ch][j]) * captured[ch][j];
        den0 += static_cast<double>(ref_of[ch][j]) * ref_of[ch][j];
      }
    }
  }
  rep.reference_gain = expected_gain > 0 ? expected_gain : (den0 > 0 ? num0 / den0 : 0.0);
  const double g = rep.reference_gain;

  // Judge every cycle.
  std::vector<CycleVerdict> verdict(cycles.size(), CycleVerdict::good);
  std::vector<bool> crossfade(cycles.size(), false);
  // Frames [from, to) are each processed, dry, or part of a crossfade ramp between the two at
  // their own position: a run of frames that are neither is a fade-in (every frame between the
  // dry and the processed sample) or a fade-out that removes the step (frame minus dry input
  // is a straight line, per channel). A shifted or garbled frame is neither.
  const auto crossfade_only = [&](std::uint64_t from, std::uint64_t to) {
    const auto plain = [&](std::uint64_t j) {
      bool is_dry = true, is_wet = true;
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        const double x = dry_gain * ref_of[ch][j];
        is_dry = is_dry && std::fabs(captured[ch][j] - x) <= tolerance;
        is_wet = is_wet && std::fabs(captured[ch][j] - g * ref_of[ch][j]) <= tolerance;
      }
      return is_dry || is_wet;
    };
    const auto between = [&](std::uint64_t j) {
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        const double x = dry_gain * ref_of[ch][j];
        const double y = captured[ch][j];
        const double w = g * ref_of[ch][j];
        if (!std::isfinite(y) || y < std::min(x, w) - tolerance || y > std::max(x, w) + tolerance) {
          return false;
        }
      }
      return true;
    };
    const auto straight = [&](std::uint64_t a, std::uint64_t b) {  // residual against dry is linear
      if (b - a < 3) return true;                                  // too short to tell
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        const double r0 = captured[ch][a] - dry_gain * ref_of[ch][a];
        const double step = (captured[ch][a + 1] - dry_gain * ref_of[ch][a + 1]) - r0;
        for (std::uint64_t j = a; j < b; ++j) {
          const double r = captured[ch][j] - dry_gain * ref_of[ch][j];
          if (!std::isfinite(r) || std::fabs(r - (r0 + step * static_cast<double>(j - a))) > 1e-5)
            return false;
        }
      }
      return true;
    };
    for (std::uint64_t j = from; j < to;) {
      if (plain(j)) {
        ++j;
        continue;
      }
      std::uint64_t end = j;
      bool all_between = true;
      for (; end < to && !plain(end); ++end) all_between = between(end) && all_between;
      if (!all_between && !straight(j, end)) return false;
      j = end;
    }
    return true;
  };
  for (std::size_t c = 0; c < cycles.size(); ++c) {
    const CapturedCycle& cy = cycles[c];
    double cycle_err = 0;
    for (std::size_t ch = 0; ch < n_ch; ++ch) {
      for (std::uint64_t j = cy.offset; j < cy.offset + cy.frames && j < n; ++j) {
        if (pos_of[j] >= lag) {
          cycle_err =
              std::max(cycle_err, std::fabs(static_cast<double>(captured[ch][j]) - g * ref_of[ch][j]));
        }
      }
    }
    if (cycle_err <= tolerance) {
      continue;
    }
    // Which frames are off? A graph xrun corrupts whole buffers, but a chain with memory (a
    // delay) carries a corrupted buffer on into parts of later cycles: judge the frames that
    // are off, not the whole cycle.
    const auto frame_matches = [&](std::uint64_t j, std::int64_t shift, double gain) {
      const std::int64_t p = static_cast<std::int64_t>(pos_of[j]) + shift - static_cast<std::int64_t>(lag);
      if (p < 0) {
        return false;
      }
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        const double x =
            signal_sample(spec, static_cast<std::uint64_t>(p), static_cast<std::uint32_t>(ch), rate);
        if (std::fabs(static_cast<double>(captured[ch][j]) - gain * x) > tolerance) {
          return false;
        }
      }
      return true;
    };
    std::vector<std::uint64_t> off;
    for (std::uint64_t j = cy.offset; j < cy.offset + cy.frames && j < n; ++j) {
      if (!frame_matches(j, 0, g) && !(second_gain > 0 && frame_matches(j, 0, second_gain))) {
        off.push_back(j);
      }
    }
    if (off.empty()) {
      continue;  // at the second gain, or partly at each
    }
    if (g != dry_gain && second_gain != dry_gain) {
      rep.dry_frames += static_cast<std::uint64_t>(
          std::count_if(off.begin(), off.end(), [&](std::uint64_t j) { return frame_matches(j, 0, dry_gain); }));
    }
    const auto all_off = [&](const auto& pred) { return std::all_of(off.begin(), off.end(), pred); };
    const bool silent = all_off([&](std::uint64_t j) {
      bool out_zero = true, in_zero = true;
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        out_zero = out_zero && captured[ch][j] == 0.0F;
        in_zero = in_zero && ref_of[ch][j] == 0.0F;
      }
      return out_zero && !in_zero;
    });
    const bool dry =
        !silent && g != dry_gain && all_off([&](std::uint64_t j) { return frame_matches(j, 0, dry_gain); });
    std::int64_t shift = 0;
    if (!silent && !dry && !off.empty()) {
      // A buffer of another cycle at either gain (a graph xrun after a reload's switch).
      const auto shifted = [&](std::uint64_t j, std::int64_t s) {
        return frame_matches(j, s, g) || (second_gain > 0 && frame_matches(j, s, second_gain));
      };
      for (std::int64_t s = -16384; s <= 16384 && shift == 0; ++s) {
        if (s != 0 && shifted(off.front(), s) && all_off([&](std::uint64_t j) { return shifted(j, s); })) {
          shift = s;
        }
      }
    }
    verdict[c] = silent  ? CycleVerdict::silent
                 : dry   ? CycleVerdict::dry
                 : shift ? CycleVerdict::stale
                         : CycleVerdict::wrong;
    if (verdict[c] == CycleVerdict::wrong) {
      crossfade[c] = crossfade_only(cy.offset, std::min<std::uint64_t>(cy.offset + cy.frames, n));
    }
    if (rep.first_bad.size() < 8) {
      BadCycle b;
      b.index = c;
      b.position = cy.position;
      b.frames = cy.frames;
      b.max_abs_error = cycle_err;
      b.previous_end = c > 0 ? cycles[c - 1].position + cycles[c - 1].frames : 0;
      b.matched_shift = shift;
      b.dry = dry;
      b.off_frames = off.size();
      rep.first_bad.push_back(b);
    }
  }

  // Wrong cycles next to an xrun are the graph's.
  std::vector<bool> xrun(cycles.size(), false);
  for (const std::uint64_t g : rep.gap_cycles) xrun[g] = true;
  for (std::size_t c = 0; c < cycles.size(); ++c)
    if (verdict[c] == CycleVerdict::stale || verdict[c] == CycleVerdict::silent) xrun[c] = true;
  for (std::size_t c = 0; c < cycles.size(); ++c) {
    if (verdict[c] != CycleVerdict::wrong || crossfade[c]) continue;
    const std::size_t lo = c >= 2 ? c - 2 : 0, hi = std::min(cycles.size(), c + 3);
    if (std::find(xrun.begin() + static_cast<std::ptrdiff_t>(lo),
                  xrun.begin() + static_cast<std::ptrdiff_t>(hi),
                  true) != xrun.begin() + static_cast<std::ptrdiff_t>(hi))
      verdict[c] = CycleVerdict::xrun_adjacent;
  }

  // Levels, gain and errors over the good and wrong cycles.
  std::map<std::uint32_t, std::size_t> quantum_index;
  std::vector<double> num(n_ch, 0.0), den(n_ch, 0.0), osq(n_ch, 0.0), esq(n_ch, 0.0);
  std::size_t used = 0;
  // A ramp into or out of bypass is counted, not measured, like the bypassed cycles around it;
  // unless there is nothing else to measure (a capture that only ever saw the slot fail).
  bool measure_ramps = true;
  for (std::size_t c = 0; c < cycles.size(); ++c)
    if (verdict[c] == CycleVerdict::good || (verdict[c] == CycleVerdict::wrong && !crossfade[c]))
      measure_ramps = false;
  rep.verdicts.reserve(cycles.size());
  for (std::size_t c = 0; c < cycles.size(); ++c) {
    const CapturedCycle& cy = cycles[c];
    static constexpr std::array<char, 6> letters{'g', 's', 'z', 'd', 'w', 'n'};  // CycleVerdict order
    rep.verdicts += crossfade[c] ? 'x' : letters[static_cast<std::size_t>(verdict[c])];
    rep.crossfade_cycles += crossfade[c] ? 1 : 0;
    if (!quantum_index.contains(cy.frames)) {
      quantum_index[cy.frames] = rep.quanta.size();
      rep.quanta.push_back(QuantumReport{cy.frames});
    }
    QuantumReport& qr = rep.quanta[quantum_index[cy.frames]];
    ++qr.cycles;
    qr.frames += cy.frames;
    switch (verdict[c]) {
      case CycleVerdict::good:
        ++rep.good_cycles;
        break;
      case CycleVerdict::stale:
        ++rep.stale_cycles;
        ++qr.stale_cycles;
        continue;
      case CycleVerdict::dry:
        ++rep.dry_cycles;
        ++qr.dry_cycles;
        continue;
      case CycleVerdict::silent:
        ++rep.silent_cycles;
        ++qr.silent_cycles;
        continue;
      case CycleVerdict::wrong:
        ++rep.wrong_cycles;
        ++qr.wrong_cycles;
        if (crossfade[c] && !measure_ramps) continue;  // counted, not measured
        break;
      case CycleVerdict::xrun_adjacent:
        ++rep.xrun_adjacent_cycles;
        continue;
    }
    for (std::uint64_t j = cy.offset; j < cy.offset + cy.frames && j < n; ++j) {
      if (pos_of[j] < lag) {
        continue;
      }
      for (std::size_t ch = 0; ch < n_ch; ++ch) {
        ChannelReport& cr = rep.channels[ch];
        const double x = ref_of[ch][j];
        const double y = captured[ch][j];
        const double e = std::fabs(y - g * x);
        num[ch] += x * y;
        den[ch] += x * x;
        osq[ch] += y * y;
        esq[ch] += e * e;
        cr.input_peak = std::max(cr.input_peak, std::fabs(x));
        cr.output_peak = std::max(cr.output_peak, std::fabs(y));
        cr.max_abs_error = std::max(cr.max_abs_error, e);
        qr.max_abs_error = std::max(qr.max_abs_error, e);
      }
      ++used;
    }
  }
  double num_all = 0, den_all = 0, out_all = 0, err_all = 0;
  for (std::size_t ch = 0; ch < n_ch; ++ch) {
    ChannelReport& cr = rep.channels[ch];
    const double u = used > 0 ? static_cast<double>(used) : 1.0;
    cr.gain = den[ch] > 0 ? num[ch] / den[ch] : 0.0;
    cr.input_rms = std::sqrt(den[ch] / u);
    cr.output_rms = std::sqrt(osq[ch] / u);
    cr.rms_error = std::sqrt(esq[ch] / u);
    num_all += num[ch];
    den_all += den[ch];
    out_all += osq[ch];
    err_all += esq[ch];
    rep.input_peak = std::max(rep.input_peak, cr.input_peak);
    rep.output_peak = std::max(rep.output_peak, cr.output_peak);
    rep.max_abs_error = std::max(rep.max_abs_error, cr.max_abs_error);
  }
  const double samples = used > 0 ? static_cast<double>(used * n_ch) : 1.0;
  rep.gain = den_all > 0 ? num_all / den_all : 0.0;
  rep.input_rms = std::sqrt(den_all / samples);
  rep.output_rms = std::sqrt(out_all / samples);
  rep.rms_error = std::sqrt(err_all / samples);
  rep.gain_db =
      (rep.input_rms > 0 && rep.output_rms > 0) ? 20.0 * std::log10(rep.output_rms / rep.input_rms) : -999.0;
  return rep;
}

}  // namespace sandpipe::integration
