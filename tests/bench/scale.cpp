// sandpipe-bench --scale (see scale.h and docs/performance.md, "Scale").
//
// For N = 1, 2, 4, … plugins: the chain's start-up to its first processed block and the memory
// of its sandboxes, then per-block cost at 64, 256, 512 and 1024 frames of N native gains, N
// Python gains each in its own sandbox (sync), the same N in one sandbox group (one process, one
// hop per block), and N in-process CPython calls of the same gain.py.
// Rows of one N take turns in chunks, so noise on this shared machine lands on all of them.
#include "tests/bench/scale.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <vector>

#include "tests/bench/bench-chain.h"

namespace sandpipe::bench {
namespace {

constexpr std::uint32_t scale_channels = 2;
constexpr std::uint32_t scale_frames[] = {64, 256, 512, 1024};
constexpr std::uint32_t scale_max_frames = 1024;

std::string repeated_entries(std::uint32_t n, const std::string& path, const std::string& extra) {
  std::string text;
  for (std::uint32_t i = 0; i < n; ++i)
    text += "{ name = \"g" + std::to_string(i) + "\" path = \"" + path + "\" params = { gain = 1.0 }" +
            extra + " }\n";
  return text;
}

/// Memory of the sandboxes below this process: summed Rss and Private_Dirty (kB).
struct SandboxMemory {
  std::size_t sandboxes = 0;
  std::uint64_t rss_kb = 0;
  std::uint64_t private_dirty_kb = 0;
};

pid_t parent_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  // pid (comm) state ppid …: comm may hold spaces, so read after the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream rest(line.substr(close + 1));
  char state = 0;
  pid_t ppid = -1;
  rest >> state >> ppid;
  return ppid;
}

bool descends_from_us(pid_t pid) {
  const pid_t self = ::getpid();
  for (int depth = 0; depth < 4 && pid > 1; ++depth) {
    pid = parent_of(pid);
    if (pid == self) return true;
  }
  return false;
}

std::uint64_t rollup_kb(const std::string& text, std::string_view key) {
  const auto at = text.find(std::string(key) + ":");
  return at == std::string::npos ? 0 : std::strtoull(text.c_str() + at + key.size() + 1, nullptr, 10);
}

SandboxMemory sandbox_memory() {
  SandboxMemory m;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return m;
  while (const dirent* e = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::strtol(e->d_name, nullptr, 10));
    if (pid <= 0) continue;
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    std::getline(comm, name);
    if (name.rfind("sandpipe-sandbo", 0) != 0 || !descends_from_us(pid)) continue;
    std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
    const std::string text((std::istreambuf_iterator<char>(rollup)), std::istreambuf_iterator<char>());
    ++m.sandboxes;
    m.rss_kb += rollup_kb(text, "Rss");
    m.private_dirty_kb += rollup_kb(text, "Private_Dirty");
  }
  ::closedir(proc);
  return m;
}

/// One start-up: Chain construction (the zygote if any, every sandbox started and loaded) and
/// its first block.
struct Startup {
  double first_block_s = 0;
  bool processed = false;  ///< every slot processed that first block (none fell back)
  SandboxMemory memory;    ///< the sandboxes right after it (not the zygote)
};

struct StartupRow {
  std::uint32_t plugins = 0;
  Startup zygote;  ///< forked from the chain's zygote (`sandbox.zygote = true`, the default)
  Startup spawn;   ///< each sandbox spawned, importing everything itself (`sandbox.zygote = false`)
};

struct CostRow {
  std::string path;
  std::uint32_t plugins = 0;
  std::uint32_t frames = 0;
  Stats stats;
  std::uint64_t misses = 0;
};

std::uint64_t total_misses(const host::Chain& chain) {
  std::uint64_t n = 0;
  for (const auto& slot : chain.slots())
    n += slot->counters().deadline_misses + slot->counters().bypassed_blocks;
  return n;
}

/// Start-up, then the per-block rows of one N.
void measure(std::uint32_t n, const ScaleSettings& s, InProcessPython& python,
             std::vector<StartupRow>& startups, std::vector<CostRow>& costs) {
  const std::string gain_py = python_example("gain.py");
  StartupRow start;
  start.plugins = n;
  auto start_chain = [&](bool zygote, Startup& out) {
    host::ChainConfig config = chain_config(
        scale_channels, repeated_entries(n, gain_py, " mode = \"sync\"" + std::string(python_timeout)));
    config.sandbox_zygote = zygote;
    const std::uint64_t t0 = now_ns();
    auto runner = std::make_shared<ChainRunner>(config, scale_frames[0], scale_max_frames);
    (void)runner->block(scale_frames[0]);
    out.first_block_s = static_cast<double>(now_ns() - t0) / 1e9;
    out.processed = total_misses(*runner->chain) == 0;
    out.memory = sandbox_memory();
    return runner;
  };
  start_chain(false, start.spawn).reset();  // gone before the zygote's chain starts
  auto isolated = start_chain(true, start.zygote);
  startups.push_back(start);
  // The same N gains in one sandbox group: one process, one hop per block.
  auto grouped = std::make_shared<ChainRunner>(
      chain_config(
          scale_channels,
          repeated_entries(n, gain_py, " mode = \"sync\" sandbox = \"all\"" + std::string(python_timeout))),
      scale_frames[0], scale_max_frames);

  auto native =
      std::make_shared<ChainRunner>(chain_config(scale_channels, repeated_entries(n, "builtin:gain", "")),
                                    scale_frames[0], scale_max_frames);

  for (const std::uint32_t frames : scale_frames) {
    python.load(gain_py, {{"gain", 1.0}}, scale_channels, frames);
    auto in = std::make_shared<std::vector<float>>(test_block(scale_channels, frames));
    auto out = std::make_shared<std::vector<float>>(in->size());
    std::vector<Row> rows(4);
    rows[0].path = "native";
    rows[0].step = [native, frames] { return native->block(frames); };
    rows[1].path = "python-isolated";
    rows[1].step = [isolated, frames] { return isolated->block(frames); };
    rows[2].path = "python-inprocess";
    rows[2].step = [&python, in, out, n] {
      const std::uint64_t t = now_ns();
      for (std::uint32_t i = 0; i < n; ++i) (void)python.process(in->data(), out->data());
      return now_ns() - t;
    };
    rows[3].path = "python-grouped";
    rows[3].step = [grouped, frames] { return grouped->block(frames); };
    std::vector<Row*> ptrs{&rows[0], &rows[1], &rows[2], &rows[3]};
    const std::uint64_t misses_before = total_misses(*isolated->chain);
    const std::uint64_t grouped_misses_before = total_misses(*grouped->chain);
    run_interleaved(ptrs, s.warmup, s.iterations, s.chunk);
    for (auto& r : rows) {
      CostRow c{r.path, n, frames, summarize(r.ns), 0};
      if (r.path == "python-isolated") c.misses = total_misses(*isolated->chain) - misses_before;
      if (r.path == "python-grouped") c.misses = total_misses(*grouped->chain) - grouped_misses_before;
      costs.push_back(c);
    }
  }
}

const CostRow* find(const std::vector<CostRow>& rows, std::string_view path, std::uint32_t n,
                    std::uint32_t frames) {
  for (const auto& r : rows)
    if (r.path == path && r.plugins == n && r.frames == frames) return &r;
  return nullptr;
}

/// Cost of one more plugin: the slope of p50 from N = 1 to this N (µs per plugin).
double marginal_us(const std::vector<CostRow>& rows, const CostRow& r) {
  const CostRow* one = find(rows, r.path, 1, r.frames);
  if (one == nullptr || r.plugins <= 1) return 0.0;
  return (r.stats.p50 - one->stats.p50) / static_cast<double>(r.plugins - 1);
}

nlohmann::json report_json(const ScaleSettings& s, const std::vector<StartupRow>& startups,
                           const std::vector<CostRow>& costs) {
  nlohmann::json j;
  j["benchmark"] = "sandpipe-bench --scale";
  j["schema"] = 1;
  j["settings"] = {{"iterations", s.iterations}, {"warmup", s.warmup},
                   {"chunk", s.chunk},           {"max_plugins", s.max_plugins},
                   {"channels", scale_channels}, {"sample_rate", sample_rate}};
  j["grouped"] = {{"available", true}, {"group", "all N gains in one sandbox group"}};
  j["zygote"] = {{"available", true}};
  j["startup"] = nlohmann::json::array();
  // The top-level keys are the default path (the zygote); "spawn" the same without it.
  auto fields = [](const Startup& st) {
    const double per = st.memory.sandboxes != 0 ? 1.0 / static_cast<double>(st.memory.sandboxes) : 0.0;
    return nlohmann::json{
        {"first_block_s", st.first_block_s},
        {"first_block_processed", st.processed},
        {"sandboxes", st.memory.sandboxes},
        {"rss_kb_per_sandbox", static_cast<double>(st.memory.rss_kb) * per},
        {"private_dirty_kb_per_sandbox", static_cast<double>(st.memory.private_dirty_kb) * per}};
  };
  for (const auto& r : startups) {
    nlohmann::json row = fields(r.zygote);
    row["plugins"] = r.plugins;
    row["spawn"] = fields(r.spawn);
    j["startup"].push_back(row);
  }
  j["cost"] = nlohmann::json::array();
  for (const auto& r : costs) {
    nlohmann::json row = {{"path", r.path}, {"plugins", r.plugins}, {"frames", r.frames}};
    put_stats(row, r.stats);
    row["marginal_p50_us"] = marginal_us(costs, r);
    row["fallbacks"] = r.misses;
    j["cost"].push_back(std::move(row));
  }
  return j;
}

void print_tables(const std::vector<StartupRow>& startups, const std::vector<CostRow>& costs) {
  std::printf(
      "\nStart-up of N Python plugins (each its own sandbox) to the first processed block, "
      "spawned vs forked from the zygote\n\n");
  std::printf(
      "| %4s | %9s | %9s | %9s | %13s | %13s | %13s | %13s |\n"
      "|------|-----------|-----------|-----------|---------------|---------------|---------------|------"
      "---------|\n",
      "N", "spawn s", "zygote s", "processed", "RSS spawn MiB", "RSS zygote", "dirty spawn", "dirty zygote");
  auto per_mib = [](const SandboxMemory& m, std::uint64_t kb) {
    return m.sandboxes != 0 ? static_cast<double>(kb) / static_cast<double>(m.sandboxes) / 1024.0 : 0.0;
  };
  for (const auto& r : startups) {
    std::printf(
        "| %4u | %9.3f | %9.3f | %9s | %13.1f | %13.1f | %13.1f | %13.1f |\n", r.plugins,
        r.spawn.first_block_s, r.zygote.first_block_s, r.spawn.processed && r.zygote.processed ? "yes" : "NO",
        per_mib(r.spawn.memory, r.spawn.memory.rss_kb), per_mib(r.zygote.memory, r.zygote.memory.rss_kb),
        per_mib(r.spawn.memory, r.spawn.memory.private_dirty_kb),
        per_mib(r.zygote.memory, r.zygote.memory.private_dirty_kb));
  }
  std::printf(
      "(per sandbox; dirty = Private_Dirty: pages the zygote's children share copy-on-write are not "
      "private)\n");
  std::printf(
      "\nCost per block (p50 us, %u ch) of N gains, and per added plugin (slope from N = 1); grouped: "
      "the N in one sandbox group\n\n",
      scale_channels);
  std::printf(
      "| %4s | %6s | %9s | %9s | %9s | %10s | %14s | %15s | %14s | %17s |\n"
      "|------|--------|-----------|-----------|-----------|------------|----------------|-----------------|-"
      "---------------|-------------------|\n",
      "N", "frames", "native", "isolated", "grouped", "in-process", "isolated p99.9", "isolated/plugin",
      "grouped/plugin", "in-process/plugin");
  for (const auto& r : costs) {
    if (r.path != "native") continue;
    const CostRow* iso = find(costs, "python-isolated", r.plugins, r.frames);
    const CostRow* grp = find(costs, "python-grouped", r.plugins, r.frames);
    const CostRow* inp = find(costs, "python-inprocess", r.plugins, r.frames);
    if (iso == nullptr || grp == nullptr || inp == nullptr) continue;
    std::printf("| %4u | %6u | %9.2f | %9.1f | %9.1f | %10.1f | %14.1f | %15.2f | %14.2f | %17.2f |\n",
                r.plugins, r.frames, r.stats.p50, iso->stats.p50, grp->stats.p50, inp->stats.p50,
                iso->stats.p999, marginal_us(costs, *iso), marginal_us(costs, *grp),
                marginal_us(costs, *inp));
  }
  std::printf("\n");
}

}  // namespace

int run_scale(const ScaleSettings& settings, InProcessPython& python) {
  std::vector<StartupRow> startups;
  std::vector<CostRow> costs;
  for (std::uint32_t n = 1; n <= settings.max_plugins; n *= 2) {
    std::fprintf(stderr, "sandpipe-bench --scale: %u plugins...\n", n);
    measure(n, settings, python, startups, costs);
  }
  print_tables(startups, costs);
  return publish_json(report_json(settings, startups, costs).dump(2) + "\n", settings.json_path);
}

}  // namespace sandpipe::bench
