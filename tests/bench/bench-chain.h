// Pieces the benchmark modes share (tests/bench/sandpipe-bench.cpp, tests/bench/scale.cpp): chain
// configs around example plugins, a test signal, a Chain runner that times process_rt alone, and
// rows of per-block times that take turns.
#pragma once

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "host/chain/chain.h"
#include "host/config/config.h"
#include "tests/bench/hop-timing.h"

namespace sandpipe::bench {

inline constexpr double sample_rate = 48000.0;

inline std::filesystem::path source_root() { return SANDPIPE_SOURCE_ROOT; }

/// A one-line chain config around one plugin entry.
inline host::ChainConfig chain_config(std::uint32_t channels, const std::string& plugins) {
  const std::string text = "channels = " + std::to_string(channels) + "\nplugins = [\n" + plugins + "]\n";
  return host::parse_config(text, "sandpipe-bench", source_root());
}

inline std::string python_example(const std::string& name) {
  return (source_root() / "plugins-py/examples" / name).string();
}

/// For every Python slot: the paths take turns, so a chain sits idle for up to ~100 ms between
/// its chunks with a pipelined job still unclaimed; the host's hang watchdog (200 ms by default)
/// must not take that for a hung sandbox. A real node calls every cycle.
inline constexpr std::string_view python_timeout = " timeout-ms = 5000";

/// Planar test signal: channels × frames contiguous, a different tone per channel plus a little noise.
inline std::vector<float> test_block(std::uint32_t channels, std::uint32_t frames) {
  std::vector<float> data(std::size_t{channels} * frames);
  std::uint32_t state = 12345;
  for (std::uint32_t c = 0; c < channels; ++c)
    for (std::uint32_t i = 0; i < frames; ++i) {
      state = state * 1664525U + 1013904223U;
      const double phase = 2.0 * M_PI * 220.0 * (c + 1) * i / sample_rate;
      data[std::size_t{c} * frames + i] = 0.4F * static_cast<float>(std::sin(phase)) +
                                          0.05F * (static_cast<float>(state >> 8) / 16777216.0F - 0.5F);
    }
  return data;
}

/// One path at one configuration: a step that runs and times one block, and its samples.
struct Row {
  std::string path;   ///< stable key (JSON, sample files)
  std::string label;  ///< for the table
  std::uint32_t channels = 0;
  std::uint32_t frames = 0;
  std::function<std::uint64_t()> step;         ///< runs one block, returns its time in ns
  std::function<host::SlotCounters()> counts;  ///< the slot's counters (empty: none)
  std::vector<std::uint64_t> ns;
  Stats stats;
  host::SlotCounters counters;
};

/// A chain that runs `in` → `out` and times Chain::process_rt alone. Prepared for `max_frames`
/// (default: `frames`); `block(n)` runs any n <= max_frames.
struct ChainRunner {
  std::unique_ptr<host::Chain> chain;
  std::vector<float> in, out;
  std::vector<const float*> in_ptrs;
  std::vector<float*> out_ptrs;
  std::uint32_t frames = 0;

  ChainRunner(const host::ChainConfig& config, std::uint32_t frames_, std::uint32_t max_frames = 0)
      : chain(std::make_unique<host::Chain>(config, sample_rate, std::max(frames_, max_frames))),
        in(test_block(config.channels, std::max(frames_, max_frames))),
        out(in.size()),
        frames(frames_) {
    const std::size_t stride = std::max(frames_, max_frames);
    for (std::uint32_t c = 0; c < config.channels; ++c) {
      in_ptrs.push_back(in.data() + c * stride);
      out_ptrs.push_back(out.data() + c * stride);
    }
  }
  std::uint64_t block() noexcept { return block(frames); }
  std::uint64_t block(std::uint32_t n) noexcept {
    const std::uint64_t t0 = now_ns();
    chain->process_rt(in_ptrs.data(), out_ptrs.data(), n, t0 + 1'000'000'000ULL);
    return now_ns() - t0;
  }
  [[nodiscard]] host::SlotCounters counters() const { return chain->slots().front()->counters(); }
};

inline void sleep_us(double us) {
  if (us <= 0) return;
  timespec ts{0, static_cast<long>(us * 1000.0)};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR) {
  }
}

/// Runs the rows in turns of `chunk` blocks (after `warmup` untimed blocks each) until each has
/// `iterations` samples, so background noise lands on all of them alike.
inline void run_interleaved(std::vector<Row*>& rows, std::size_t warmup, std::size_t iterations,
                            std::size_t chunk) {
  for (Row* r : rows) {
    for (std::size_t i = 0; i < warmup; ++i) (void)r->step();
    r->ns.clear();
    r->ns.reserve(iterations);
  }
  for (std::size_t done = 0; done < iterations;) {
    const std::size_t n = std::min(chunk, iterations - done);
    for (Row* r : rows)
      for (std::size_t i = 0; i < n; ++i) r->ns.push_back(r->step());
    done += n;
  }
}

/// Prints a JSON report on stdout and, when `path` is not empty, writes it there. Returns the
/// benchmark's exit code (1: the file could not be written).
inline int publish_json(const std::string& json, const std::string& path) {
  std::fputs(json.c_str(), stdout);
  if (path.empty()) return 0;
  std::ofstream out(path);
  out << json;
  if (out) return 0;
  std::fprintf(stderr, "sandpipe-bench: cannot write %s\n", path.c_str());
  return 1;
}

}  // namespace sandpipe::bench
