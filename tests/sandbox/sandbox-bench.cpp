// Round trip of one 2x512 float32 block through a Python plugin:
//   * sandbox: host RT path -> shm -> sandbox process -> numpy view -> plugin -> back (this design)
//   * in-process: the same plugin called through embedded CPython on the calling thread (the
//     earlier design; a baseline only: no isolation, GIL and GC on the audio thread)
//   * futex ping-pong between two processes: the floor any cross-process hop pays.
// Prints a table and one JSON object. `--iterations N` (default 100000), `--warmup N`.
// The timing pieces live in tests/bench/hop-timing.h; tests/bench/sandpipe-bench runs the same
// paths over block sizes and channel counts, with native plugins and offline render.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/python/python-slot.h"
#include "host/python/sandbox-client.h"
#include "tests/bench/hop-timing.h"

namespace {

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t frames = 512;

struct Summary {
  std::string name;
  sandpipe::bench::Stats stats;  // microseconds
  std::uint64_t misses = 0;
};

Summary summarize(const std::string& name, std::vector<std::uint64_t>& ns, std::uint64_t misses = 0) {
  return {name, sandpipe::bench::summarize(ns), misses};
}

Summary bench_sandbox(const std::string& name, const std::filesystem::path& file,
                      std::vector<sandpipe::host::ParamSetting> params, std::size_t iterations,
                      std::size_t warmup, std::optional<std::uint64_t> spin_ns = std::nullopt) {
  sandpipe::host::PluginSpec spec;
  spec.name = name;
  spec.path = file.string();
  spec.kind = sandpipe::host::PluginKind::python;
  spec.resolved = file;
  spec.params = std::move(params);
  sandpipe::host::SandboxOptions options;
  options.host_spin_ns = spin_ns;
  auto started = sandpipe::host::start_sandboxes(std::span(&spec, 1), 48000.0, channels, frames, options);
  auto& proc = *started.front().slot;
  std::vector<float> in(std::size_t{channels} * frames), out(std::size_t{channels} * frames);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 97) / 97.0F - 0.5F;
  const float* ins[channels] = {in.data(), in.data() + frames};
  float* outs[channels] = {out.data(), out.data() + frames};
  std::vector<std::uint64_t> ns;
  ns.reserve(iterations);
  for (std::size_t i = 0; i < warmup + iterations; ++i) {
    const std::uint64_t t0 = sandpipe::bench::now_ns();
    proc.process_rt(ins, outs, frames, sandpipe::host::ProcessContext{t0 + 1'000'000'000});
    const std::uint64_t t1 = sandpipe::bench::now_ns();
    if (i >= warmup) ns.push_back(t1 - t0);
  }
  return summarize(name, ns, proc.counters().deadline_misses);
}

Summary bench_in_process(const std::filesystem::path& file, std::size_t iterations, std::size_t warmup) {
  sandpipe::bench::InProcessPython python;
  python.load(file, {{"gain", 0.5}}, channels, frames);
  std::vector<float> in(std::size_t{channels} * frames), out(std::size_t{channels} * frames);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<float>(i % 97) / 97.0F - 0.5F;
  std::vector<std::uint64_t> ns;
  ns.reserve(iterations);
  for (std::size_t i = 0; i < warmup + iterations; ++i) {
    const std::uint64_t t0 = sandpipe::bench::now_ns();
    (void)python.process(in.data(), out.data());  // copies in and out, as the sandbox path does
    const std::uint64_t t1 = sandpipe::bench::now_ns();
    if (i >= warmup) ns.push_back(t1 - t0);
  }
  return summarize("python gain, in-process (embedded, calling thread)", ns);
}

/// Wakes the other side and sleeps until it answered: two context switches, as in a block hop.
Summary bench_futex(std::size_t iterations, std::size_t warmup) {
  sandpipe::bench::FutexPingPong pingpong;
  std::vector<std::uint64_t> ns;
  ns.reserve(iterations);
  for (std::size_t i = 0; i < warmup + iterations; ++i) {
    const std::uint64_t t = pingpong.round_trip_ns();
    if (i >= warmup) ns.push_back(t);
  }
  return summarize("futex ping-pong, two processes (floor)", ns);
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t iterations = 100'000;
  std::size_t warmup = 2'000;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::strtoul(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--warmup") == 0) warmup = std::strtoul(argv[i + 1], nullptr, 10);
  }
  if (iterations == 0) iterations = 1;
  const std::filesystem::path root = SANDPIPE_SOURCE_ROOT;
  std::vector<Summary> rows;
  rows.push_back(bench_futex(iterations, warmup));
  rows.push_back(bench_sandbox("python passthrough, sandbox",
                               root / "tests/sandbox/fixtures/misc/passthrough.py", {}, iterations, warmup));
  rows.push_back(bench_sandbox("python gain, sandbox", root / "plugins-py/examples/gain.py",
                               {{"gain", 0.5, 0}}, iterations, warmup));
  rows.push_back(bench_sandbox("python gain, sandbox, host spins up to 200 us",
                               root / "plugins-py/examples/gain.py", {{"gain", 0.5, 0}}, iterations, warmup,
                               200'000));
  rows.push_back(bench_in_process(root / "plugins-py/examples/gain.py", iterations, warmup));

  std::printf("\n%u ch x %u frames float32, %zu blocks each (after %zu warm-up), times in microseconds\n\n",
              channels, frames, iterations, warmup);
  std::printf("| %-52s | %8s | %8s | %8s | %8s | %8s | %6s |\n", "path", "p50", "p99", "p99.9", "max", "mean",
              "misses");
  std::printf("|%s|%s|%s|%s|%s|%s|%s|\n", std::string(54, '-').c_str(), std::string(10, '-').c_str(),
              std::string(10, '-').c_str(), std::string(10, '-').c_str(), std::string(10, '-').c_str(),
              std::string(10, '-').c_str(), std::string(8, '-').c_str());
  for (const auto& r : rows) {
    std::printf("| %-52s | %8.1f | %8.1f | %8.1f | %8.1f | %8.1f | %6llu |\n", r.name.c_str(), r.stats.p50,
                r.stats.p99, r.stats.p999, r.stats.max, r.stats.mean,
                static_cast<unsigned long long>(r.misses));
  }
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const auto& r : rows) {
    results.push_back({{"path", r.name},
                       {"p50_us", r.stats.p50},
                       {"p99_us", r.stats.p99},
                       {"p999_us", r.stats.p999},
                       {"max_us", r.stats.max},
                       {"mean_us", r.stats.mean},
                       {"deadline_misses", r.misses}});
  }
  const nlohmann::ordered_json document = {{"benchmark", "sandbox-hop"},
                                           {"channels", channels},
                                           {"frames", frames},
                                           {"iterations", iterations},
                                           {"results", std::move(results)}};
  std::printf("\n%s\n", document.dump().c_str());
  return 0;
}
