// sandpipe-bench: what one block costs on each path a chain can take, side by side in one run,
// and how fast a mixed chain renders offline. See --help and docs/performance.md.
//
// Per configuration (channels × frames) every path gets its own instance, and the paths take
// turns in chunks of --chunk blocks until each has --iterations samples, so background noise on
// this shared machine lands on all of them alike and the ratios stay meaningful.
#include <sndfile.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/chain/chain.h"
#include "host/config/config.h"
#include "host/chain/render.h"
#include "tests/bench/bench-chain.h"
#include "tests/bench/hop-timing.h"
#include "tests/bench/scale.h"

namespace sandpipe::bench {
namespace {

constexpr std::string_view help_text = R"(sandpipe-bench [options]
Per-block cost (p50/p99/p99.9/max) of: raw futex ping-pong between two processes (the floor),
native gain and biquad through the Chain, Python gain through its sandbox (sync; pipelined when
the config accepts mode = "pipelined"), the same Python gain in-process (embedded CPython on the
calling thread, the earlier design, baseline only); block sizes 64..1024 at 2 ch and 1, 2, 8 ch
at 512. Then offline render throughput (x real time) of a mixed native + Python chain.

  --quick              CI-sized: 5000 blocks per row, 10 s of audio for the render
  --iterations N       blocks per row (default 100000)
  --warmup N           untimed blocks per row first (default 2000)
  --chunk N            blocks per turn when interleaving the paths (default 500)
  --pipelined-gap-us G pause before each pipelined block, as the rest of a graph cycle would
                       leave (default 100); a sync row paced the same way runs beside it
  --cycle-gap-us G     at 2 ch x 512 only: two more sync rows, each block after a pause of G us
                       (default 1000), as a graph cycle leaves a sandbox idle: one with the
                       sandbox's anticipation of the next block (wake-lead-us = 100), one
                       where it sleeps until woken (wake-lead-us = 0, the default)
  --render-seconds S   audio length for the render rows (default 60)
  --scale              instead of the rows above: N = 1, 2, 4, … gain plugins (native, Python each
                       in its own sandbox, Python all in one sandbox group, in-process CPython) at
                       64, 256, 512 and 1024 frames, cost per
                       block and per added plugin, and start-up to the first processed block with
                       the sandboxes' memory (docs/performance.md, "Scale")
  --scale-max N        largest N for --scale (default 128; 8 with --quick)
  --json FILE          also write the JSON report there
  --samples DIR        dump every row's raw per-block times (little-endian uint64 ns, in
                       measurement order) as DIR/PATH-CHch-FRAMES.u64, for tests/bench/plot.py
Prints a table, then the JSON report on stdout.
)";

/// The seed's measured cost of one Python gain call (its design, per call), for the headline ratio.
constexpr double seed_ms_low = 5.0;
constexpr double seed_ms_high = 40.0;

struct Options {
  bool quick = false;
  std::size_t iterations = 100'000;
  std::size_t warmup = 2'000;
  std::size_t chunk = 500;
  double pipelined_gap_us = 100.0;
  double cycle_gap_us = 1000.0;
  double render_seconds = 60.0;
  std::string json_path;
  std::string samples_dir;
  bool scale = false;
  std::uint32_t scale_max = 0;  ///< 0: 128, or 8 with --quick
};

std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  bool iterations_given = false;
  bool warmup_given = false;
  bool render_given = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "sandpipe-bench: %s needs a value\n", argv[i]);
        std::exit(2);  // NOLINT(concurrency-mt-unsafe): before any thread exists
      }
      return argv[++i];
    };
    if (arg == "--quick") {
      o.quick = true;
    } else if (arg == "--iterations") {
      o.iterations = std::strtoul(value(), nullptr, 10);
      iterations_given = true;
    } else if (arg == "--warmup") {
      o.warmup = std::strtoul(value(), nullptr, 10);
      warmup_given = true;
    } else if (arg == "--chunk") {
      o.chunk = std::strtoul(value(), nullptr, 10);
    } else if (arg == "--pipelined-gap-us") {
      o.pipelined_gap_us = std::strtod(value(), nullptr);
    } else if (arg == "--cycle-gap-us") {
      o.cycle_gap_us = std::strtod(value(), nullptr);
    } else if (arg == "--render-seconds") {
      o.render_seconds = std::strtod(value(), nullptr);
      render_given = true;
    } else if (arg == "--scale") {
      o.scale = true;
    } else if (arg == "--scale-max") {
      o.scale_max = static_cast<std::uint32_t>(std::strtoul(value(), nullptr, 10));
    } else if (arg == "--json") {
      o.json_path = value();
    } else if (arg == "--samples") {
      o.samples_dir = value();
    } else if (arg == "-h" || arg == "--help") {
      std::fputs(help_text.data(), stdout);
      std::exit(0);  // NOLINT(concurrency-mt-unsafe): before any thread exists
    } else {
      std::fprintf(stderr, "sandpipe-bench: unknown option %s\n%s", argv[i], help_text.data());
      return std::nullopt;
    }
  }
  if (o.quick) {
    if (!iterations_given) o.iterations = 5'000;
    if (!warmup_given) o.warmup = 200;
    if (!render_given) o.render_seconds = 10.0;
  }
  if (o.scale) {
    // A row of 128 sandboxes costs ~128 hops a block: fewer blocks than the per-path rows.
    if (!iterations_given) o.iterations = o.quick ? 50 : 2'000;
    if (!warmup_given) o.warmup = o.quick ? 5 : 100;
    o.chunk = std::min<std::size_t>(o.chunk, 100);
    if (o.scale_max == 0) o.scale_max = o.quick ? 8 : 128;
  }
  o.iterations = std::max<std::size_t>(o.iterations, 1);
  o.chunk = std::max<std::size_t>(o.chunk, 1);
  o.render_seconds = std::max(o.render_seconds, 0.1);
  return o;
}

void dump_samples(const Row& r, const std::string& dir) {
  if (dir.empty()) return;
  std::filesystem::create_directories(dir);
  const auto file = std::filesystem::path(dir) /
                    (r.path + "-" + std::to_string(r.channels) + "ch-" + std::to_string(r.frames) + ".u64");
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(r.ns.data()),
            static_cast<std::streamsize>(r.ns.size() * sizeof(std::uint64_t)));
}

struct PipelineSupport {
  bool available = false;
  std::string why;  ///< when not available
};

/// Whether this build runs a Python slot pipelined: the config must accept the keys and the
/// slot must then report the pipeline's latency (k blocks).
PipelineSupport probe_pipelined() {
  try {
    const auto config = chain_config(1, "{ name = \"py\" path = \"" + python_example("gain.py") +
                                            "\" mode = \"pipelined\" blocks = 1 }\n");
    host::Chain chain(config, sample_rate, 256);
    if (chain.latency_frames() >= 256) return {true, {}};
    return {false, "the config accepts mode = \"pipelined\" but the slot reports no pipeline latency"};
  } catch (const std::exception& e) {
    return {false, std::string("not in this build (") + e.what() + ")"};
  }
}

struct Config {
  std::uint32_t channels;
  std::uint32_t frames;
};

/// Full block-size sweep at 2 channels, channel sweep at 512 frames.
std::vector<Config> matrix() {
  return {{2, 64}, {2, 128}, {2, 256}, {2, 512}, {2, 1024}, {1, 512}, {8, 512}};
}

std::vector<Row> bench_config(const Config& cfg, const Options& o, FutexPingPong& futex,
                              InProcessPython& python, const PipelineSupport& pipelined) {
  const auto ch = cfg.channels;
  const auto fr = cfg.frames;
  const std::string gain_py = python_example("gain.py");
  auto native_gain = std::make_shared<ChainRunner>(
      chain_config(ch, "{ name = \"g\" path = \"builtin:gain\" params = { gain = 0.5 } }\n"), fr);
  auto native_biquad =
      std::make_shared<ChainRunner>(chain_config(ch,
                                                 "{ name = \"bq\" path = \"builtin:biquad\" params = { type "
                                                 "= \"lowpass\" freq = 8000 q = 0.707 } }\n"),
                                    fr);
  // With the scheduler in the build, `auto` (the default) may pipeline: ask for sync explicitly.
  const std::string sync_key = pipelined.available ? " mode = \"sync\"" : "";
  auto py_sync = std::make_shared<ChainRunner>(
      chain_config(ch, "{ name = \"pyg\" path = \"" + gain_py + "\" params = { gain = 0.5 }" + sync_key +
                           std::string(python_timeout) + " }\n"),
      fr);
  std::shared_ptr<ChainRunner> py_pipe;
  if (pipelined.available)
    py_pipe = std::make_shared<ChainRunner>(
        chain_config(ch, "{ name = \"pyg\" path = \"" + gain_py +
                             "\" params = { gain = 0.5 } mode = \"pipelined\" blocks = 1" +
                             std::string(python_timeout) + " }\n"),
        fr);
  // Cycle-paced rows (2 x 512): the same sync slot with and without anticipation.
  std::shared_ptr<ChainRunner> py_cycle;
  std::shared_ptr<ChainRunner> py_cycle_sleeping;
  if (ch == 2 && fr == 512 && o.cycle_gap_us > 0) {
    const auto cycle_slot = [&](const std::string& lead) {
      return std::make_shared<ChainRunner>(
          chain_config(ch, "{ name = \"pyg\" path = \"" + gain_py + "\" params = { gain = 0.5 }" + sync_key +
                               lead + std::string(python_timeout) + " }\n"),
          fr);
    };
    py_cycle = cycle_slot(" wake-lead-us = 100");
    py_cycle_sleeping = cycle_slot(" wake-lead-us = 0");
  }
  python.load(gain_py, {{"gain", 0.5}}, ch, fr);
  auto in = std::make_shared<std::vector<float>>(test_block(ch, fr));
  auto out = std::make_shared<std::vector<float>>(in->size());

  std::vector<Row> rows;
  auto add = [&](std::string path, std::string label, std::function<std::uint64_t()> step,
                 std::function<host::SlotCounters()> counts = {}) {
    Row r;
    r.path = std::move(path);
    r.label = std::move(label);
    r.channels = ch;
    r.frames = fr;
    r.step = std::move(step);
    r.counts = std::move(counts);
    rows.push_back(std::move(r));
  };
  // A row whose every block comes after a pause of `gap` µs (untimed), as a graph cycle leaves.
  auto add_paced = [&](std::string path, std::string label, const std::shared_ptr<ChainRunner>& runner,
                       double gap) {
    add(
        std::move(path), std::move(label),
        [runner, gap] {
          sleep_us(gap);
          return runner->block();
        },
        [runner] { return runner->counters(); });
  };
  add("futex", "raw futex ping-pong, 2 processes (floor)", [&futex] { return futex.round_trip_ns(); });
  add("futex-spin", "futex ping-pong, host spins <= 5 us first",
      [&futex] { return futex.round_trip_ns(5'000); });
  add(
      "native-gain", "native gain (Chain)", [native_gain] { return native_gain->block(); },
      [native_gain] { return native_gain->counters(); });
  add(
      "native-biquad", "native biquad (Chain)", [native_biquad] { return native_biquad->block(); },
      [native_biquad] { return native_biquad->counters(); });
  add(
      "python-gain-sandbox", "Python gain, sandbox, sync (Chain)", [py_sync] { return py_sync->block(); },
      [py_sync] { return py_sync->counters(); });
  if (py_pipe) {
    const double gap = o.pipelined_gap_us;
    // The same pause before each sync block, so the pipelined row is compared like for like
    // (a pause lets caches cool and the vCPU idle, which the back-to-back rows never see).
    add_paced("python-gain-sandbox-paced", "Python gain, sandbox, sync, paced (Chain)", py_sync, gap);
    add_paced("python-gain-sandbox-pipelined", "Python gain, sandbox, pipelined k=1 (Chain)", py_pipe, gap);
  }
  if (py_cycle) {
    const double gap = o.cycle_gap_us;
    add_paced("python-gain-sandbox-cycle", "Python gain, sync, cycle-paced, wake-lead 100", py_cycle, gap);
    add_paced("python-gain-sandbox-cycle-sleeping", "Python gain, sync, cycle-paced, wake-lead 0",
              py_cycle_sleeping, gap);
  }
  add("python-gain-inprocess", "Python gain, in-process CPython (baseline)", [&python, in, out] {
    const std::uint64_t t0 = now_ns();
    (void)python.process(in->data(), out->data());
    return now_ns() - t0;
  });

  std::vector<Row*> ptrs;
  ptrs.reserve(rows.size());
  for (auto& r : rows) ptrs.push_back(&r);
  run_interleaved(ptrs, o.warmup, o.iterations, o.chunk);
  for (auto& r : rows) {
    dump_samples(r, o.samples_dir);
    if (r.counts) r.counters = r.counts();
    r.stats = summarize(r.ns);
    r.ns = {};
    r.step = {};
    r.counts = {};
  }
  return rows;
}

// --- Offline render --------------------------------------------------------------------------

struct RenderRow {
  std::string path;
  std::string label;
  std::uint32_t block = 0;
  double audio_s = 0;
  double wall_s = 0;
  double x_realtime = 0;
  std::uint64_t misses = 0;
};

std::string mixed_chain_plugins() {
  return "{ name = \"trim\" path = \"builtin:gain\" params = { gain = 0.5 } }\n"
         "{ name = \"pygain\" path = \"" +
         python_example("gain.py") + "\" params = { gain = 1.5 }" + std::string(python_timeout) +
         " }\n"
         "{ name = \"lp\" path = \"builtin:biquad\" params = { type = \"lowpass\" freq = 8000 q = 0.707 } }\n"
         "{ name = \"pyeq\" path = \"" +
         python_example("biquad.py") + "\" params = { shape = \"peak\" freq = 1000 gain_db = 3 }" +
         std::string(python_timeout) + " }\n";
}

/// The chain's own loop over `seconds` of audio in memory (no file I/O, no start-up).
RenderRow render_in_memory(std::uint32_t block, double seconds) {
  constexpr std::uint32_t channels = 2;
  ChainRunner runner(chain_config(channels, mixed_chain_plugins()), block);
  const auto total = static_cast<std::uint64_t>(seconds * sample_rate);
  std::uint64_t misses = 0;
  const std::uint64_t t0 = now_ns();
  for (std::uint64_t done = 0; done < total; done += block) {
    runner.chain->process_rt(runner.in_ptrs.data(), runner.out_ptrs.data(), block,
                             now_ns() + 5'000'000'000ULL);
  }
  const double wall = static_cast<double>(now_ns() - t0) / 1e9;
  for (const auto& slot : runner.chain->slots()) misses += slot->counters().deadline_misses;
  return {"render-memory",
          "mixed chain, in memory (Chain loop, no start-up, no file I/O)",
          block,
          static_cast<double>(total) / sample_rate,
          wall,
          static_cast<double>(total) / sample_rate / wall,
          misses};
}

/// `sandpipe render` end to end (render_file): WAV in, sandboxes started, WAV out.
RenderRow render_file_row(std::uint32_t block, double seconds) {
  constexpr int channels = 2;
  const auto dir = std::filesystem::temp_directory_path() / ("sandpipe-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto in_path = dir / "in.wav";
  const auto out_path = dir / "out.wav";
  const auto frames = static_cast<std::uint64_t>(seconds * sample_rate);
  {
    SF_INFO info{};
    info.samplerate = static_cast<int>(sample_rate);
    info.channels = channels;
    info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
    SNDFILE* file = sf_open(in_path.c_str(), SFM_WRITE, &info);
    if (file == nullptr) throw std::runtime_error("cannot write " + in_path.string());
    const auto one = test_block(channels, 4800);  // planar; written interleaved, repeated
    std::vector<float> interleaved(std::size_t{channels} * 4800);
    for (std::uint32_t i = 0; i < 4800; ++i)
      for (int c = 0; c < channels; ++c)
        interleaved[std::size_t{i} * channels + c] = one[std::size_t(c) * 4800 + i];
    for (std::uint64_t done = 0; done < frames;) {
      const auto n = static_cast<sf_count_t>(std::min<std::uint64_t>(4800, frames - done));
      sf_writef_float(file, interleaved.data(), n);
      done += static_cast<std::uint64_t>(n);
    }
    sf_close(file);
  }
  host::RenderOptions options;
  options.block_frames = block;
  std::ostringstream summary;
  const std::uint64_t t0 = now_ns();
  (void)host::render_file(chain_config(channels, mixed_chain_plugins()), in_path, out_path, options, summary);
  const double wall = static_cast<double>(now_ns() - t0) / 1e9;
  std::filesystem::remove_all(dir);
  return {"render-file",
          "mixed chain, sandpipe render (WAV to WAV, incl. sandbox start-up)",
          block,
          static_cast<double>(frames) / sample_rate,
          wall,
          static_cast<double>(frames) / sample_rate / wall,
          0};
}

// --- Report ----------------------------------------------------------------------------------

std::string read_first_line(const char* path, std::string_view prefix = {}) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (prefix.empty() || line.starts_with(prefix)) return line;
  return {};
}

struct Ratio {
  std::uint32_t channels, frames;
  double p50, p999;            ///< python-gain-sandbox / futex
  double spin_p50, spin_p999;  ///< python-gain-sandbox / futex-spin
};

struct Report {
  Options options;
  std::string machine_cpu, kernel, load_start, load_end;
  long cores = 0;
  PipelineSupport pipelined;
  std::vector<Row> rows;
  std::vector<RenderRow> renders;
};

const Row* find_row(const Report& rep, std::string_view path, std::uint32_t ch, std::uint32_t fr) {
  for (const auto& r : rep.rows)
    if (r.path == path && r.channels == ch && r.frames == fr) return &r;
  return nullptr;
}

std::vector<Ratio> ratios(const Report& rep) {
  std::vector<Ratio> out;
  for (const auto& cfg : matrix()) {
    const Row* f = find_row(rep, "futex", cfg.channels, cfg.frames);
    const Row* fs = find_row(rep, "futex-spin", cfg.channels, cfg.frames);
    const Row* s = find_row(rep, "python-gain-sandbox", cfg.channels, cfg.frames);
    if (f == nullptr || fs == nullptr || s == nullptr) continue;
    out.push_back({cfg.channels, cfg.frames, s->stats.p50 / f->stats.p50, s->stats.p999 / f->stats.p999,
                   s->stats.p50 / fs->stats.p50, s->stats.p999 / fs->stats.p999});
  }
  return out;
}

std::string to_json(const Report& rep) {
  using nlohmann::ordered_json;
  ordered_json j;
  j["benchmark"] = "sandpipe-bench";
  j["schema"] = 1;
  j["machine"] = {{"cores", rep.cores},
                  {"cpu", rep.machine_cpu},
                  {"kernel", rep.kernel},
                  {"loadavg_start", rep.load_start},
                  {"loadavg_end", rep.load_end}};
  j["settings"] = {{"quick", rep.options.quick},
                   {"iterations", rep.options.iterations},
                   {"warmup", rep.options.warmup},
                   {"chunk", rep.options.chunk},
                   {"pipelined_gap_us", rep.options.pipelined_gap_us},
                   {"cycle_gap_us", rep.options.cycle_gap_us},
                   {"sample_rate", sample_rate}};
  j["pipelined"] = {{"available", rep.pipelined.available}, {"why", rep.pipelined.why}};
  j["hop"] = ordered_json::array();
  for (const auto& r : rep.rows) {
    ordered_json row = {{"path", r.path}, {"channels", r.channels}, {"frames", r.frames}};
    put_stats(row, r.stats);
    row["mean_us"] = r.stats.mean;
    row["deadline_misses"] = r.counters.deadline_misses;
    row["bypassed"] = r.counters.bypassed_blocks;
    j["hop"].push_back(std::move(row));
  }
  j["ratios"] = ordered_json::array();
  for (const auto& r : ratios(rep))
    j["ratios"].push_back({{"channels", r.channels},
                           {"frames", r.frames},
                           {"sandbox_over_futex_p50", r.p50},
                           {"sandbox_over_futex_p999", r.p999},
                           {"sandbox_over_futex_spin_p50", r.spin_p50},
                           {"sandbox_over_futex_spin_p999", r.spin_p999}});
  if (const Row* s = find_row(rep, "python-gain-sandbox", 2, 512)) {
    j["seed_comparison"] = {{"seed_ms_low", seed_ms_low},
                            {"seed_ms_high", seed_ms_high},
                            {"channels", 2},
                            {"frames", 512},
                            {"sandbox_p50_us", s->stats.p50},
                            {"sandbox_p999_us", s->stats.p999},
                            {"cheaper_p50_low_x", seed_ms_low * 1000 / s->stats.p50},
                            {"cheaper_p50_high_x", seed_ms_high * 1000 / s->stats.p50},
                            {"cheaper_p999_low_x", seed_ms_low * 1000 / s->stats.p999}};
  }
  j["render"] = ordered_json::array();
  for (const auto& r : rep.renders)
    j["render"].push_back({{"path", r.path},
                           {"channels", 2},
                           {"block", r.block},
                           {"audio_s", r.audio_s},
                           {"wall_s", r.wall_s},
                           {"x_realtime", r.x_realtime},
                           {"deadline_misses", r.misses}});
  // /proc text (cpu model, kernel) is not always UTF-8: replace what is not.
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void print_table(const Report& rep) {
  std::printf(
      "\nPer-block cost, times in microseconds; %zu blocks per row after %zu warm-up, paths interleaved in "
      "chunks of %zu\n",
      rep.options.iterations, rep.options.warmup, rep.options.chunk);
  if (!rep.pipelined.available) std::printf("pipelined mode: %s; sync only\n", rep.pipelined.why.c_str());
  std::printf("\n| %-46s | %2s | %5s | %8s | %8s | %8s | %9s | %8s | %6s |\n", "path", "ch", "frames", "p50",
              "p99", "p99.9", "max", "mean", "misses");
  std::printf("|%s|----|-------|----------|----------|----------|-----------|----------|--------|\n",
              std::string(48, '-').c_str());
  for (const auto& r : rep.rows)
    std::printf("| %-46s | %2u | %5u | %8.2f | %8.2f | %8.1f | %9.1f | %8.2f | %6llu |\n", r.label.c_str(),
                r.channels, r.frames, r.stats.p50, r.stats.p99, r.stats.p999, r.stats.max, r.stats.mean,
                static_cast<unsigned long long>(r.counters.deadline_misses));

  std::printf(
      "\nSandbox hop / futex floor (Python gain sync vs futex ping-pong, plain and with the host's 5 us "
      "spin; same run, same chunks):\n\n");
  std::printf(
      "| ch | frames | p50 / futex | p99.9 / futex | p50 / futex-spin | p99.9 / futex-spin |\n"
      "|----|--------|-------------|---------------|------------------|--------------------|\n");
  for (const auto& r : ratios(rep))
    std::printf("| %2u | %6u | %11.2f | %13.2f | %16.2f | %18.2f |\n", r.channels, r.frames, r.p50, r.p999,
                r.spin_p50, r.spin_p999);

  if (const Row* s = find_row(rep, "python-gain-sandbox", 2, 512)) {
    std::printf(
        "\nPython gain through the sandbox vs the seed's %.0f-%.0f ms per call (2 ch x 512): p50 %.1f us is "
        "%.0f-%.0f x cheaper; p99.9 %.1f us is %.0f-%.0f x cheaper\n",
        seed_ms_low, seed_ms_high, s->stats.p50, seed_ms_low * 1000 / s->stats.p50,
        seed_ms_high * 1000 / s->stats.p50, s->stats.p999, seed_ms_low * 1000 / s->stats.p999,
        seed_ms_high * 1000 / s->stats.p999);
  }
  std::printf(
      "\nOffline render, 2 ch @ 48 kHz, chain builtin:gain -> gain.py -> builtin:biquad -> biquad.py:\n\n");
  std::printf(
      "| %-66s | block | audio s | wall s | x real time |\n|%s|-------|---------|--------|-------------|\n",
      "what", std::string(68, '-').c_str());
  for (const auto& r : rep.renders)
    std::printf("| %-66s | %5u | %7.1f | %6.2f | %11.1f |\n", r.label.c_str(), r.block, r.audio_s, r.wall_s,
                r.x_realtime);
  std::printf("\n");
}

int run(const Options& o) {
  Report rep;
  rep.options = o;
  rep.cores = ::sysconf(_SC_NPROCESSORS_ONLN);
  rep.machine_cpu = read_first_line("/proc/cpuinfo", "model name");
  if (auto pos = rep.machine_cpu.find(':'); pos != std::string::npos)
    rep.machine_cpu = rep.machine_cpu.substr(pos + 2);
  rep.kernel = read_first_line("/proc/sys/kernel/osrelease");
  rep.load_start = read_first_line("/proc/loadavg");

  // The futex child is forked first, before any sandbox or interpreter exists (it inherits no
  // sockets and no Python state).
  if (o.scale) {
    InProcessPython python;
    return run_scale({o.scale_max, o.iterations, o.warmup, o.chunk, o.json_path}, python);
  }
  FutexPingPong futex;
  InProcessPython python;
  rep.pipelined = probe_pipelined();
  if (!rep.pipelined.available)
    std::fprintf(stderr, "sandpipe-bench: pipelined mode %s\n", rep.pipelined.why.c_str());

  for (const auto& cfg : matrix()) {
    std::fprintf(stderr, "sandpipe-bench: %u ch x %u frames...\n", cfg.channels, cfg.frames);
    auto rows = bench_config(cfg, o, futex, python, rep.pipelined);
    for (auto& r : rows) rep.rows.push_back(std::move(r));
  }
  std::fprintf(stderr, "sandpipe-bench: render...\n");
  rep.renders.push_back(render_in_memory(512, o.render_seconds));
  rep.renders.push_back(render_in_memory(64, o.render_seconds / 4));
  rep.renders.push_back(render_file_row(512, o.render_seconds));
  rep.load_end = read_first_line("/proc/loadavg");

  print_table(rep);
  return publish_json(to_json(rep), o.json_path);
}

}  // namespace
}  // namespace sandpipe::bench

int main(int argc, char** argv) {
  const auto options = sandpipe::bench::parse_args(argc, argv);
  if (!options) return 2;
  try {
    return sandpipe::bench::run(*options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandpipe-bench: %s\n", e.what());
    return 1;
  }
}
