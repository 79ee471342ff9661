// sandpipe-bench --scale: what a chain of N Python plugins costs per block and to start, beside
// the same N native plugins and N in-process CPython calls (the earlier design, baseline only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "tests/bench/hop-timing.h"

namespace sandpipe::bench {

struct ScaleSettings {
  std::uint32_t max_plugins = 128;  ///< N = 1, 2, 4, … up to this
  std::size_t iterations = 2'000;   ///< timed blocks per row
  std::size_t warmup = 100;
  std::size_t chunk = 100;
  std::string json_path;
};

/// Runs the scale rows, prints the tables and the JSON report (also to json_path when set).
/// `python` is the process's one in-process interpreter. Returns the exit code.
int run_scale(const ScaleSettings& settings, InProcessPython& python);

}  // namespace sandpipe::bench
