// What a relay of sandboxes (direct hand-off, host/python/relay.h) saves against the host's hops:
// N `gain.py` sandboxes in series, 2 ch x 512 frames float32, synchronous (every hop on the
// audio thread's critical path, the worst case), per block:
//   * isolated: N Python slots, the host hands the block to each sandbox and takes it back (2N
//     wake-ups, N host round trips);
//   * relay: one Python slot, the host hands the block to the first sandbox, each sandbox wakes
//     the next, the last wakes the host (N + 1 wake-ups).
// Prints a table and one JSON object. `--max N` (default 16; N = 1, 2, 4, … up to it),
// `--iterations N` (default 2000), `--warmup N` (default 200).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/python/python-slot.h"
#include "host/python/relay.h"
#include "host/python/sandbox-client.h"
#include "host/python/sandbox-instance.h"
#include "host/python/sandbox-process.h"
#include "tests/bench/hop-timing.h"

namespace {

using sandpipe::host::PythonSlot;

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t frames = 512;

std::filesystem::path gain_file() { return std::filesystem::path(SANDPIPE_SOURCE_ROOT) / "plugins-py/examples/gain.py"; }

/// Runs `slots` in series on one block `iterations` times; per-block times.
sandpipe::bench::Stats time_series(const std::vector<PythonSlot*>& slots, std::size_t iterations, std::size_t warmup,
                                   std::uint64_t& misses) {
  std::vector<float> a(std::size_t{channels} * frames), b(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 97) / 97.0F - 0.5F;
  std::vector<std::uint64_t> ns;
  ns.reserve(iterations);
  for (std::size_t i = 0; i < warmup + iterations; ++i) {
    const std::uint64_t t0 = sandpipe::bench::now_ns();
    float* from = a.data();
    float* to = b.data();
    for (PythonSlot* slot : slots) {
      const float* ins[channels] = {from, from + frames};
      float* outs[channels] = {to, to + frames};
      slot->process_rt(ins, outs, frames, sandpipe::host::ProcessContext{t0 + 1'000'000'000});
      std::swap(from, to);
    }
    const std::uint64_t t1 = sandpipe::bench::now_ns();
    if (i >= warmup) ns.push_back(t1 - t0);
  }
  misses = 0;
  for (PythonSlot* slot : slots) misses += slot->counters().deadline_misses;
  return sandpipe::bench::summarize(ns);
}

sandpipe::bench::Stats bench_isolated(std::uint32_t n, std::size_t iterations, std::size_t warmup,
                                      std::uint64_t& misses) {
  std::vector<sandpipe::host::PluginSpec> specs(n);
  for (std::uint32_t i = 0; i < n; ++i) {
    specs[i].name = "g" + std::to_string(i);
    specs[i].path = gain_file().string();
    specs[i].resolved = gain_file();
    specs[i].kind = sandpipe::host::PluginKind::python;
    specs[i].params = {{"gain", 1.0, 0}};
  }
  auto started = sandpipe::host::start_sandboxes(specs, 48000.0, channels, frames);
  std::vector<PythonSlot*> slots;
  for (auto& s : started) slots.push_back(s.slot.get());
  return time_series(slots, iterations, warmup, misses);
}

sandpipe::bench::Stats bench_relay(std::uint32_t n, std::size_t iterations, std::size_t warmup,
                                   std::uint64_t& misses) {
  const sandpipe::shm::Geometry geometry{channels, frames, sandpipe::shm::max_slots};
  auto link = sandpipe::host::make_relay_link(n, geometry, 1);
  sandpipe::host::SandboxLink& relay = *link;
  auto slot = std::make_unique<PythonSlot>("relay", std::move(link), frames);
  std::vector<std::unique_ptr<sandpipe::host::SandboxInstance>> sandboxes;
  for (std::uint32_t i = 0; i < n; ++i) {
    sandpipe::host::SandboxLaunch launch;
    launch.name = "g" + std::to_string(i);
    launch.file = gain_file();
    launch.executable = sandpipe::host::default_sandbox_executable();
    launch.geometry = geometry;
    sandpipe::host::join_relay(launch, relay, i, n);
    sandboxes.push_back(sandpipe::host::SandboxInstance::spawn(launch, 1));
    sandboxes.back()->set_params({{"gain", 1.0, 0}});
    sandboxes.back()->send_load({});
  }
  for (auto& sandbox : sandboxes) {
    const std::string error =
        sandbox->wait_loaded(sandpipe::host::SandboxInstance::Clock::now() + std::chrono::seconds(60));
    if (!error.empty()) throw std::runtime_error("relay sandbox did not load: " + error);
  }
  sandpipe::host::PythonPluginInfo info;
  info.api = "sdk";
  info.role = "processor";
  slot->set_plugin(info);
  const auto stats = time_series({slot.get()}, iterations, warmup, misses);
  sandboxes.clear();  // before the slot, whose link's edges they borrow
  return stats;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint32_t max_n = 16;
  std::size_t iterations = 2'000;
  std::size_t warmup = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--max") == 0) max_n = static_cast<std::uint32_t>(std::strtoul(argv[i + 1], nullptr, 10));
    if (std::strcmp(argv[i], "--iterations") == 0) iterations = std::strtoul(argv[i + 1], nullptr, 10);
    if (std::strcmp(argv[i], "--warmup") == 0) warmup = std::strtoul(argv[i + 1], nullptr, 10);
  }
  if (iterations == 0) iterations = 1;
  struct Row {
    std::uint32_t n;
    sandpipe::bench::Stats isolated, relay;
    std::uint64_t isolated_misses, relay_misses;
  };
  std::vector<Row> rows;
  for (std::uint32_t n = 1; n <= max_n; n *= 2) {
    Row row{n, {}, {}, 0, 0};
    row.isolated = bench_isolated(n, iterations, warmup, row.isolated_misses);
    row.relay = bench_relay(n, iterations, warmup, row.relay_misses);
    rows.push_back(row);
    std::fprintf(stderr, "relay-bench: N = %u done\n", n);
  }

  std::printf("\nN gain.py sandboxes in series, sync, %u ch x %u frames float32, %zu blocks each (after %zu"
              " warm-up), cost per block in microseconds\n\n",
              channels, frames, iterations, warmup);
  std::printf("| %4s | %14s | %14s | %11s | %11s | %12s |\n", "N", "isolated p50", "relay p50", "isolated p99",
              "relay p99", "relay/isolated");
  std::printf("|------|----------------|----------------|-------------|-------------|----------------|\n");
  nlohmann::ordered_json results = nlohmann::ordered_json::array();
  for (const Row& r : rows) {
    const double ratio = r.isolated.p50 > 0 ? r.relay.p50 / r.isolated.p50 : 0.0;
    std::printf("| %4u | %14.1f | %14.1f | %11.1f | %11.1f | %14.2f |\n", r.n, r.isolated.p50, r.relay.p50,
                r.isolated.p99, r.relay.p99, ratio);
    nlohmann::ordered_json isolated;
    nlohmann::ordered_json relay;
    sandpipe::bench::put_stats(isolated, r.isolated);
    sandpipe::bench::put_stats(relay, r.relay);
    isolated["deadline_misses"] = r.isolated_misses;
    relay["deadline_misses"] = r.relay_misses;
    results.push_back({{"plugins", r.n}, {"isolated", isolated}, {"relay", relay}, {"relay_over_isolated_p50", ratio}});
  }
  const nlohmann::ordered_json document = {{"benchmark", "relay"},
                                           {"channels", channels},
                                           {"frames", frames},
                                           {"mode", "sync"},
                                           {"iterations", iterations},
                                           {"results", std::move(results)}};
  std::printf("\n%s\n", document.dump().c_str());
  return 0;
}
