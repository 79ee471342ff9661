// stall-watch: records the spans in which a CPU ran no real-time thread in time (StallWatch),
// for soaks and by-hand runs: how much of a graph's lost cycles the machine accounts for.
//
// Usage: stall-watch [--seconds S] [--threshold-us N] [--period-us N] [--json FILE]
// Runs S seconds (default: until SIGINT/SIGTERM), then writes
//   {"realtime": true, "seconds": S, "threshold_us": N, "stalls": [[begin_ns, end_ns, cpu], ...]}
// (CLOCK_MONOTONIC) to FILE or stdout.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "stall-watch.h"

namespace {
volatile std::sig_atomic_t stop_requested = 0;
void on_signal(int) { stop_requested = 1; }
}  // namespace

int main(int argc, char** argv) {
  double seconds = 0;
  long threshold_us = 1000;
  long period_us = 500;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (i + 1 < argc && arg == "--seconds") {
      seconds = std::strtod(argv[++i], nullptr);
    } else if (i + 1 < argc && arg == "--threshold-us") {
      threshold_us = std::strtol(argv[++i], nullptr, 10);
    } else if (i + 1 < argc && arg == "--period-us") {
      period_us = std::strtol(argv[++i], nullptr, 10);
    } else if (i + 1 < argc && arg == "--json") {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr,
                   "usage: stall-watch [--seconds S] [--threshold-us N] [--period-us N] [--json FILE]\n");
      return 2;
    }
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  using sandpipe::integration::StallWatch;
  const std::uint64_t start = sandpipe::shm::now_ns();
  std::string out;
  {
    StallWatch watch{std::chrono::microseconds(threshold_us), std::chrono::microseconds(period_us)};
    while (stop_requested == 0 && (seconds <= 0 || sandpipe::shm::now_ns() - start < seconds * 1e9)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    nlohmann::ordered_json report = {{"realtime", watch.realtime()},
                                     {"seconds", static_cast<double>(sandpipe::shm::now_ns() - start) / 1e9},
                                     {"threshold_us", threshold_us},
                                     {"stalls", nlohmann::ordered_json::array()}};
    for (const auto& s : watch.stalls()) report["stalls"].push_back({s.begin_ns, s.end_ns, s.cpu});
    out = report.dump() + "\n";
  }
  if (json_path.empty()) {
    std::fputs(out.c_str(), stdout);
  } else {
    std::ofstream(json_path, std::ios::trunc) << out;
  }
  return 0;
}
