// Fault isolation through `render_file`: each fixture misbehaves on marked blocks only, so the
// output is exactly dry there and exactly processed (× 0.5) everywhere else, whatever the
// machine's load. Ramps are off (crossfade 0) so samples compare bit for bit.
#include <signal.h>
#include <sndfile.h>
#include <stdlib.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <bit>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../temp-dir.h"
#include "host/config/config.h"
#include "host/chain/render.h"

namespace sandpipe::host {
namespace {

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t block = 256;
constexpr std::uint32_t blocks = 16;
constexpr std::uint32_t frames = block * blocks;
constexpr float marker = 0.875F;  // faulty.py MARKER
constexpr float pwned = 0.25F;    // faulty.py PWNED

std::filesystem::path fixtures() { return SANDPIPE_FAULT_FIXTURES; }

using test_util::TempDir;

/// Log lines from the supervisor thread.
struct Log {
  std::mutex mutex;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> on_line;
  [[nodiscard]] std::size_t count(const std::string& needle) {
    std::lock_guard lock(mutex);
    std::size_t n = 0;
    for (const auto& l : lines) n += l.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }
  [[nodiscard]] std::string all() {
    std::lock_guard lock(mutex);
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
};

/// Interleaved input: noise in ±0.4, with MARKER as the first sample of each marked block.
std::vector<float> make_input(const std::set<std::uint32_t>& marked) {
  std::vector<float> x(std::size_t{frames} * channels);
  std::uint32_t state = 12345;
  for (auto& v : x) {
    state = state * 1664525u + 1013904223u;
    v = (static_cast<float>(state >> 8) / 16777216.0F - 0.5F) * 0.8F;
  }
  for (const std::uint32_t b : marked) x[std::size_t{b} * block * channels] = marker;
  return x;
}

void write_wav(const std::filesystem::path& path, const std::vector<float>& x) {
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(sf_writef_float(f, x.data(), frames), frames);
  sf_close(f);
}

std::vector<float> read_wav(const std::filesystem::path& path) {
  SF_INFO info{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (f == nullptr) return {};
  std::vector<float> y(static_cast<std::size_t>(info.frames) * static_cast<std::size_t>(info.channels));
  sf_readf_float(f, y.data(), info.frames);
  sf_close(f);
  return y;
}

struct RenderRun {
  RenderReport report;
  std::vector<float> in;
  std::vector<float> out;
  std::string summary;
};

std::string conf_for(const std::string& fault, const std::string& extra_keys, const std::string& extra_params,
                     const std::string& top = "") {
  // mode = "sync": a pipelined slot has the next block in flight too when it dies (that block
  // is lost as well); sync makes "only the faulty block" exact whatever the machine's load.
  return top + "\nplugins = [ { name = \"f\" mode = \"sync\" path = \"" +
         (fixtures() / "faulty.py").string() + "\" " + extra_keys + " params = { fault = \"" + fault + "\" " +
         extra_params + " } } ]\n";
}

RenderRun render(const std::string& conf_text, const std::set<std::uint32_t>& marked, Log& log,
                 bool allow_bypass = false, double timeout_ms = 5000.0, std::uint32_t crossfade = 0) {
  TempDir dir("faults");
  RenderRun run;
  run.in = make_input(marked);
  write_wav(dir.path() / "in.wav", run.in);
  const ChainConfig config = parse_config(conf_text, "faults.conf", fixtures());
  RenderOptions options;
  options.block_frames = block;
  options.crossfade_frames = crossfade;
  options.timeout_ms = timeout_ms;
  options.allow_bypass = allow_bypass;
  options.log = [&log](std::string_view plugin, SandboxLogLevel, std::string_view line) {
    std::string text = "[" + std::string(plugin) + "] " + std::string(line);
    {
      std::lock_guard lock(log.mutex);
      log.lines.push_back(text);
    }
    if (log.on_line) log.on_line(text);
  };
  std::ostringstream summary;
  run.report = render_file(config, dir.path() / "in.wav", dir.path() / "out.wav", options, summary);
  run.summary = summary.str();
  run.out = read_wav(dir.path() / "out.wav");
  return run;
}

/// Block b of `out` is exactly the dry input.
bool dry_block(const RenderRun& r, std::uint32_t b) {
  const std::size_t at = std::size_t{b} * block * channels;
  return std::memcmp(r.out.data() + at, r.in.data() + at, std::size_t{block} * channels * sizeof(float)) == 0;
}

/// Block b of `out` is exactly the input × 0.5.
bool wet_block(const RenderRun& r, std::uint32_t b) {
  const std::size_t at = std::size_t{b} * block * channels;
  for (std::size_t i = 0; i < std::size_t{block} * channels; ++i)
    if (r.out[at + i] != r.in[at + i] * 0.5F) return false;
  return true;
}

/// Dry exactly on `dry`, processed exactly elsewhere, same length, nothing a forbidden action
/// would have produced.
void expect_only(const RenderRun& r, const std::set<std::uint32_t>& dry) {
  ASSERT_EQ(r.report.frames, frames);
  ASSERT_EQ(r.out.size(), r.in.size()) << "output length";
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (dry.count(b) != 0) {
      EXPECT_TRUE(dry_block(r, b)) << "block " << b << " should be dry\n" << r.summary;
    } else {
      EXPECT_TRUE(wet_block(r, b)) << "block " << b << " should be processed\n" << r.summary;
    }
  }
  for (const float v : r.out) ASSERT_NE(v, pwned) << "a forbidden action succeeded";
  // What `sandpipe render` counts (and exits 1 for): exactly the blocks that came out dry.
  EXPECT_EQ(blocks_not_processed(r.report), dry.size()) << r.summary;
}

const SlotStatus& slot(const RenderRun& r) { return r.report.slots.at(0); }

// ---- crashes: the block that was processing is dry, the next one runs on a new sandbox ----

void expect_restarted_once(const std::string& fault, const std::string& crash_text) {
  Log log;
  const RenderRun r = render(conf_for(fault, "", ""), {5}, log);
  expect_only(r, {5});
  EXPECT_EQ(slot(r).restarts, 1u) << log.all();
  EXPECT_EQ(slot(r).crashes, 1u);
  EXPECT_EQ(slot(r).state, SlotState::running);
  EXPECT_NE(slot(r).last_error.find(crash_text), std::string::npos) << slot(r).last_error;
  EXPECT_FALSE(r.report.degraded);
  ASSERT_EQ(r.report.restart_ms.size(), 1u);
}

#if defined(__SANITIZE_ADDRESS__)
// ASan in the sandbox catches the SIGSEGV, reports it and exits with status 1.
TEST(FaultRender, SegfaultInThePluginRestartsIt) { expect_restarted_once("segfault", "status 1"); }
#else
TEST(FaultRender, SegfaultInThePluginRestartsIt) { expect_restarted_once("segfault", "SIGSEGV"); }
#endif
TEST(FaultRender, OsExitRestartsIt) { expect_restarted_once("exit", "status 7"); }
TEST(FaultRender, AbortRestartsIt) { expect_restarted_once("abort", "SIGABRT"); }
TEST(FaultRender, SelfSigkillRestartsIt) { expect_restarted_once("sigkill", "SIGKILL"); }

TEST(FaultRender, SigkillFromOutsideRestartsIt) {
  Log log;
  log.on_line = [](const std::string& line) {
    const auto at = line.find("waiting-for-kill pid=");
    if (at != std::string::npos) ::kill(std::stoi(line.substr(at + 21)), SIGKILL);
  };
  const RenderRun r = render(conf_for("wait-for-kill", "", ""), {7}, log, false, 60'000.0);
  expect_only(r, {7});
  EXPECT_EQ(slot(r).restarts, 1u) << log.all();
  EXPECT_NE(slot(r).last_error.find("SIGKILL"), std::string::npos) << slot(r).last_error;
}

TEST(FaultRender, TheSpareImportsThePluginModuleBeforeItIsNeeded) {
  // scipy_faulty.py prints "imported in pid N" at its top level (behind `import scipy.signal`).
  // The running sandbox is killed only once another sandbox, the spare, has printed it: the spare
  // imported the module before the crash it covers. The restart then runs in that spare, which
  // did not import the module again at its load (one line from its pid), and says so.
  Log log;
  std::mutex m;
  pid_t waiting = -1;
  std::set<pid_t> imported;
  bool killed = false;
  log.on_line = [&](const std::string& line) {
    std::lock_guard lock(m);
    if (const auto at = line.find("waiting-for-kill pid="); at != std::string::npos) {
      waiting = std::stoi(line.substr(at + 21));
    }
    if (const auto at = line.find("imported in pid "); at != std::string::npos) {
      imported.insert(std::stoi(line.substr(at + 16)));
    }
    const bool spare_imported =
        std::any_of(imported.begin(), imported.end(), [&](pid_t p) { return p != waiting; });
    if (!killed && waiting > 0 && spare_imported) killed = ::kill(waiting, SIGKILL) == 0;
  };
  const std::string conf = "plugins = [ { name = \"f\" mode = \"sync\" path = \"" +
                           (fixtures() / "scipy_faulty.py").string() +
                           "\" params = { fault = \"wait-for-kill\" } } ]\n";
  const RenderRun r = render(conf, {7}, log, false, 60'000.0);
  expect_only(r, {7});
  EXPECT_TRUE(killed) << "no spare imported the module while the plugin waited\n" << log.all();
  EXPECT_EQ(slot(r).restarts, 1u) << log.all();
  EXPECT_NE(slot(r).last_error.find("SIGKILL"), std::string::npos) << slot(r).last_error;
  EXPECT_EQ(log.count("restarted (pid " + std::to_string(slot(r).pid) + ")"), 1u) << log.all();
  EXPECT_EQ(log.count("module imported ahead"), 1u) << log.all();
  EXPECT_EQ(log.count("imported in pid " + std::to_string(slot(r).pid)), 1u) << log.all();
}

TEST(FaultRender, StateIsRestoredAfterARestart) {
  // The fixture's state is its block count; it is polled, so a restart resumes from it (or
  // from a later poll): the log says the sandbox was restarted and the output is exact.
  Log log;
  const RenderRun r = render(conf_for("exit", "", ""), {3, 11}, log);
  expect_only(r, {3, 11});
  EXPECT_EQ(slot(r).restarts, 2u) << log.all();
}

// ---- hangs: the watchdog kills, the block is dry, the render does not wait past it ----

TEST(FaultRender, InfiniteLoopIsKilledByTheWatchdog) {
  Log log;
  const RenderRun r = render(conf_for("hang", "timeout-ms = 300", ""), {4}, log);
  expect_only(r, {4});
  EXPECT_EQ(slot(r).hangs, 1u) << log.all();
  EXPECT_EQ(slot(r).restarts, 1u);
  EXPECT_NE(slot(r).last_error.find("did not finish a block"), std::string::npos);
}

TEST(FaultRender, SleepPastTheBudgetIsKilledByTheWatchdog) {
  Log log;
  const RenderRun r = render(conf_for("sleep", "timeout-ms = 300", "seconds = 30"), {9}, log);
  expect_only(r, {9});
  EXPECT_EQ(slot(r).hangs, 1u) << log.all();
}

TEST(FaultRender, RenderTimeoutIsTheDefaultWatchdog) {
  Log log;
  const RenderRun r = render(conf_for("sleep", "", "seconds = 30"), {2}, log, false, 400.0);
  expect_only(r, {2});
  EXPECT_EQ(slot(r).hangs, 1u) << log.all();
}

// ---- bad output and exceptions: that block only, no restart --------------------------------

TEST(FaultRender, ExceptionEveryFewBlocksBypassesThoseBlocksAndLogsOnce) {
  Log log;
  const RenderRun r = render(conf_for("raise", "", ""), {2, 6, 10, 14}, log);
  expect_only(r, {2, 6, 10, 14});
  EXPECT_EQ(slot(r).restarts, 0u);
  EXPECT_EQ(slot(r).counters.bypassed_blocks, 4u);
  EXPECT_EQ(log.count("Traceback"), 1u) << "one traceback for a repeated exception\n" << log.all();
  EXPECT_NE(slot(r).last_error.find("injected fault"), std::string::npos);
}

TEST(FaultRender, NanOutputIsReplacedByTheDrySignal) {
  Log log;
  const RenderRun r = render(conf_for("nan", "", ""), {3}, log);
  expect_only(r, {3});
  EXPECT_EQ(slot(r).counters.sanitized_blocks, 1u);
}

TEST(FaultRender, InfOutputIsReplacedByTheDrySignal) {
  Log log;
  const RenderRun r = render(conf_for("inf", "", ""), {12}, log);
  expect_only(r, {12});
  EXPECT_EQ(slot(r).counters.sanitized_blocks, 1u);
}

TEST(FaultRender, WrongShapeIsAnExceptionForThatBlock) {
  Log log;
  const RenderRun r = render(conf_for("shape", "", ""), {6}, log);
  expect_only(r, {6});
  EXPECT_NE(log.all().find("shape"), std::string::npos) << log.all();
}

TEST(FaultRender, WrongDtypeIsAnExceptionForThatBlock) {
  Log log;
  const RenderRun r = render(conf_for("dtype", "", ""), {6}, log);
  expect_only(r, {6});
  EXPECT_EQ(slot(r).restarts, 0u);
}

// ---- confinement: refused actions raise inside the plugin --------------------------------

void expect_refused(const std::string& fault, const std::string& params = "") {
  Log log;
  const RenderRun r = render(conf_for(fault, "", params), {8}, log);
  expect_only(r, {8});
  EXPECT_EQ(slot(r).restarts, 0u) << log.all();
  EXPECT_NE(log.all().find("Error"), std::string::npos) << log.all();
}

TEST(FaultConfinement, NetworkSocketIsRefused) { expect_refused("socket"); }
TEST(FaultConfinement, ForkIsRefused) { expect_refused("fork"); }
TEST(FaultConfinement, SubprocessIsRefused) { expect_refused("subprocess"); }
TEST(FaultConfinement, SignalToTheHostIsRefused) { expect_refused("kill-parent"); }

TEST(FaultConfinement, WritingAFileIsRefused) {
  TempDir dir("faults");
  const auto target = dir.path() / "written-by-plugin";
  expect_refused("write", "target = \"" + target.string() + "\"");
  EXPECT_FALSE(std::filesystem::exists(target));
  expect_refused("write", "target = \"/etc/sandpipe-fault-test\"");
  EXPECT_FALSE(std::filesystem::exists("/etc/sandpipe-fault-test"));
}

TEST(FaultConfinement, MemoryBombHitsTheLimit) {
  Log log;
  const RenderRun r = render(conf_for("membomb", "memory-mb = 512 timeout-ms = 3000", ""), {5}, log);
  expect_only(r, {5});
  // MemoryError in process() (an exception), or the interpreter itself fails to allocate and
  // dies (a restart): either way only that block.
  EXPECT_GE(slot(r).exceptions + slot(r).restarts, 1u) << log.all();
}

// ---- protocol breaches: killed at once, restarted ------------------------------------------

TEST(FaultProtocol, CorruptSharedSegmentRestartsIt) {
  Log log;
  const RenderRun r = render(conf_for("corrupt", "", ""), {6}, log);
  expect_only(r, {6});
  EXPECT_EQ(slot(r).restarts, 1u) << log.all();
}

TEST(FaultProtocol, MalformedControlMessageRestartsIt) {
  Log log;
  const RenderRun r = render(conf_for("garbage", "", ""), {6}, log);
  expect_only(r, {6});
  EXPECT_EQ(slot(r).restarts, 1u) << log.all();
  EXPECT_NE(slot(r).last_error.find("protocol"), std::string::npos) << slot(r).last_error;
}

// ---- limits and load failures ---------------------------------------------------------------

TEST(FaultRender, TooManyCrashesGiveUpAndTheRestStaysDry) {
  Log log;
  const RenderRun r = render(conf_for("exit", "", "", "restart.max = 2"), {2, 4, 6, 8}, log);
  // Crashes at 2 and 4 are restarted; the third (6) gives up: dry from there on.
  expect_only(r, {2, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  EXPECT_EQ(slot(r).state, SlotState::bypassed);
  EXPECT_EQ(slot(r).restarts, 2u);
  EXPECT_TRUE(r.report.degraded);
}

TEST(FaultRender, LoadFailureFailsTheRenderWithItsTraceback) {
  Log log;
  const std::string conf =
      "plugins = [ { name = \"b\" path = \"" + (fixtures() / "load_error.py").string() + "\" } ]\n";
  try {
    (void)render(conf, {}, log);
    FAIL() << "expected PluginError";
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("constructor exploded on purpose"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Traceback"), std::string::npos) << e.what();
  }
}

TEST(FaultRender, LoadFailureWithAllowBypassRendersDry) {
  Log log;
  const std::string conf =
      "plugins = [ { name = \"b\" path = \"" + (fixtures() / "import_error.py").string() + "\" } ]\n";
  const RenderRun r = render(conf, {}, log, true);
  ASSERT_EQ(r.out.size(), r.in.size());
  EXPECT_EQ(r.out, r.in);
  EXPECT_EQ(slot(r).state, SlotState::failed);
  EXPECT_TRUE(r.report.degraded);
  EXPECT_NE(slot(r).last_error.find("sandpipe_no_such_module"), std::string::npos) << slot(r).last_error;
}

TEST(FaultRender, MuteOnFailureGivesSilenceForTheFaultyBlock) {
  Log log;
  const RenderRun r = render(conf_for("raise", "on-failure = \"mute\"", ""), {5}, log);
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b) {
    const std::size_t at = std::size_t{b} * block * channels;
    if (b == 5) {
      for (std::size_t i = 0; i < std::size_t{block} * channels; ++i) ASSERT_EQ(r.out[at + i], 0.0F) << i;
    } else {
      EXPECT_TRUE(wet_block(r, b)) << b;
    }
  }
}


// ---- fail-closed slots (on-failure = "mute"): the processed block, or exact zeros ----------

/// Block b of `out` is all exact zeros (+0.0, bit for bit).
bool zero_block(const RenderRun& r, std::uint32_t b) {
  const std::size_t at = std::size_t{b} * block * channels;
  for (std::size_t i = 0; i < std::size_t{block} * channels; ++i)
    if (std::bit_cast<std::uint32_t>(r.out[at + i]) != 0U) return false;
  return true;
}

/// Block b of `out` is, bit for bit, the input × 0.5.
bool exact_wet_block(const RenderRun& r, std::uint32_t b) {
  const std::size_t at = std::size_t{b} * block * channels;
  for (std::size_t i = 0; i < std::size_t{block} * channels; ++i)
    if (std::bit_cast<std::uint32_t>(r.out[at + i]) != std::bit_cast<std::uint32_t>(r.in[at + i] * 0.5F))
      return false;
  return true;
}

/// With the usual 64-frame ramps on: zeros exactly on `silent`, the processed block exactly
/// everywhere else, and no frame anywhere equal to its input (the plaintext).
void expect_fail_closed(const std::string& fault, const std::string& keys, const std::set<std::uint32_t>& silent,
                        const std::string& top = "", double timeout_ms = 5000.0) {
  Log log;
  const RenderRun r = render(conf_for(fault, "on-failure = \"mute\" " + keys, "", top), {3, 9}, log, false,
                             timeout_ms, /*crossfade=*/64);
  ASSERT_EQ(r.out.size(), r.in.size()) << r.summary;
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (silent.count(b) != 0) {
      EXPECT_TRUE(zero_block(r, b)) << fault << ": block " << b << " should be exact zeros\n" << r.summary;
    } else {
      EXPECT_TRUE(exact_wet_block(r, b)) << fault << ": block " << b << " should be processed\n" << r.summary;
    }
  }
  for (std::size_t i = 0; i < r.out.size(); ++i)
    ASSERT_FALSE(r.in[i] != 0.0F && r.out[i] == r.in[i]) << fault << ": frame " << i / channels << " is dry";
}

TEST(FailClosedRender, CrashGivesZerosForItsBlockOnly) { expect_fail_closed("segfault", "", {3, 9}); }
TEST(FailClosedRender, HangGivesZerosForItsBlockOnly) { expect_fail_closed("hang", "", {3, 9}, "", 300.0); }
TEST(FailClosedRender, ExceptionGivesZerosForItsBlockOnly) { expect_fail_closed("raise", "", {3, 9}); }
TEST(FailClosedRender, FalseFromProcessGivesZerosNotTheHalfDoneBlock) {
  expect_fail_closed("refuse", "", {3, 9});
}
TEST(FailClosedRender, NanGivesZeros) { expect_fail_closed("nan", "", {3, 9}); }
TEST(FailClosedRender, BeyondMaxLevelGivesZeros) { expect_fail_closed("huge", "", {3, 9}); }
TEST(FailClosedRender, BeyondALowerMaxLevelGivesZeros) {
  // max-level = -12 dBFS (0.251): the processed noise (within ±0.2) passes; the marked block's
  // first sample, 0.875 × 0.5, does not, so that block is silent.
  Log log;
  const RenderRun r = render(conf_for("none", "on-failure = \"mute\" max-level = -12", ""), {3}, log);
  for (std::uint32_t b = 0; b < blocks; ++b)
    EXPECT_TRUE(b == 3 ? zero_block(r, b) : exact_wet_block(r, b)) << b << "\n" << r.summary;
  EXPECT_EQ(slot(r).counters.sanitized_blocks, 1U);
}
TEST(FailClosedRender, GivenUpSlotStaysSilentAndSaysSo) {
  // restart.max = 0: the first crash gives the slot up; from there on it is silent, never dry.
  Log log;
  const RenderRun r = render(conf_for("segfault", "on-failure = \"mute\"", "", "restart.max = 0"), {3}, log,
                             /*allow_bypass=*/false, 5000.0, 64);
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (b < 3) {
      EXPECT_TRUE(exact_wet_block(r, b)) << b;
    } else {
      EXPECT_TRUE(zero_block(r, b)) << b << "\n" << r.summary;
    }
  }
  EXPECT_EQ(slot(r).state, SlotState::bypassed);
  EXPECT_NE(r.summary.find("MUTED"), std::string::npos) << r.summary;
  EXPECT_NE(log.all().find("giving up, the slot stays muted (silent)"), std::string::npos) << log.all();
}
TEST(FailClosedRender, BypassStillGivesTheDryBlock) {
  // The contrast: without mute the same False block is the dry input (the test above can fail).
  Log log;
  const RenderRun r = render(conf_for("refuse", "", ""), {3}, log);
  expect_only(r, {3});
}

// ---- sandbox groups: one process for several plugins, each with its own on-failure ----------

/// A chain of faulty.py / remembers.py entries (name, file, extra keys, params), each in sandbox
/// group "g" unless its keys name another.
std::string group_conf(const std::vector<std::array<std::string, 4>>& entries) {
  std::string text = "plugins = [\n";
  for (const auto& [name, file, keys, params] : entries) {
    text += "  { name = \"" + name + "\" mode = \"sync\" path = \"" + (fixtures() / file).string() + "\" " +
            (keys.find("sandbox") == std::string::npos ? "sandbox = \"g\" " : "") + keys + " params = { " + params +
            " } }\n";
  }
  return text + "]\n";
}

/// Block b of `out` is exactly the input × `gain` (a power of two: exact in float).
bool scaled_block(const RenderRun& r, std::uint32_t b, float gain) {
  const std::size_t at = std::size_t{b} * block * channels;
  for (std::size_t i = 0; i < std::size_t{block} * channels; ++i)
    if (r.out[at + i] != r.in[at + i] * gain) return false;
  return true;
}

/// The same length out as in; block `dry` exactly the input (its sandbox down), every block
/// before it exactly × `before` and every one after it × `after`.
void expect_dry_once(const RenderRun& r, std::uint32_t dry, float before, float after, Log& log) {
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (b == dry) {
      EXPECT_TRUE(dry_block(r, b)) << "the block the sandbox held when it died\n" << r.summary;
    } else {
      EXPECT_TRUE(scaled_block(r, b, b < dry ? before : after)) << b << "\n" << r.summary << log.all();
    }
  }
}

TEST(SandboxGroup, ThreePluginsRunInOneProcessAsOneSlotInChainOrder) {
  Log log;
  const RenderRun r = render(group_conf({{"a", "faulty.py", "", "fault = \"none\""},
                                         {"b", "remembers.py", "", "tag = \"b\" gain = 0.25"},
                                         {"c", "faulty.py", "", "fault = \"none\""}}),
                             {}, log);
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b) EXPECT_TRUE(scaled_block(r, b, 0.0625F)) << b << "\n" << r.summary;
  ASSERT_EQ(r.report.slots.size(), 1u) << "one slot for the group";
  const SlotStatus& s = slot(r);
  EXPECT_EQ(s.name, "g");
  EXPECT_EQ(s.group, "g");
  ASSERT_EQ(s.members.size(), 3u);
  EXPECT_EQ(s.members[0].name, "a");
  EXPECT_EQ(s.members[1].name, "b");
  EXPECT_EQ(s.members[2].name, "c");
  EXPECT_EQ(s.counters.blocks, blocks);
  EXPECT_EQ(blocks_not_processed(r.report), 0u) << r.summary;
  EXPECT_NE(r.summary.find("member b: exceptions 0"), std::string::npos) << r.summary;
}

TEST(SandboxGroup, AMemberThatRaisesIsPassedByAndTheOthersStillPlay) {
  // a raises on the marked block: its part is bypassed (the block as it came), b and c play on.
  Log log;
  const RenderRun r = render(group_conf({{"a", "faulty.py", "", "fault = \"raise\""},
                                         {"b", "faulty.py", "", "fault = \"none\""},
                                         {"c", "faulty.py", "", "fault = \"none\""}}),
                             {5}, log);
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b)
    EXPECT_TRUE(scaled_block(r, b, b == 5 ? 0.25F : 0.125F)) << b << "\n" << r.summary;
  const SlotStatus& s = slot(r);
  ASSERT_EQ(s.members.size(), 3u);
  EXPECT_EQ(s.members[0].exceptions, 1u) << r.summary;
  EXPECT_EQ(s.members[1].exceptions, 0u);
  EXPECT_EQ(s.members[2].exceptions, 0u);
  EXPECT_EQ(s.members[0].on_failure, OnFailure::bypass);
  EXPECT_NE(s.members[0].last_error.find("injected fault"), std::string::npos) << s.members[0].last_error;
  EXPECT_EQ(s.restarts, 0u) << "an exception is not a crash";
  EXPECT_EQ(log.count("member a: exception in process(): RuntimeError: injected fault"), 1u) << log.all();
}

TEST(SandboxGroup, AMutedMemberThatRaisesSilencesTheBlockFromItOn) {
  Log log;
  const RenderRun r = render(group_conf({{"a", "faulty.py", "", "fault = \"none\""},
                                         {"enc", "faulty.py", "on-failure = \"mute\"", "fault = \"raise\""},
                                         {"c", "faulty.py", "", "fault = \"none\""}}),
                             {}, log);
  // enc sees a's output (the marker × 0.5), so it never fires here: every block plays.
  for (std::uint32_t b = 0; b < blocks; ++b) EXPECT_TRUE(scaled_block(r, b, 0.125F)) << b;
  // The slot fails closed as its strictest member: mute while the sandbox is down or late.
  EXPECT_EQ(slot(r).on_failure, OnFailure::mute);
  EXPECT_EQ(slot(r).members.at(1).on_failure, OnFailure::mute);
  EXPECT_EQ(slot(r).members.at(0).on_failure, OnFailure::bypass);

  const RenderRun m = render(group_conf({{"enc", "faulty.py", "on-failure = \"mute\"", "fault = \"raise\""},
                                         {"b", "faulty.py", "", "fault = \"none\""},
                                         {"c", "faulty.py", "", "fault = \"none\""}}),
                             {5}, log);
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (b == 5) {
      EXPECT_TRUE(scaled_block(m, b, 0.0F)) << "the muted member's block must be silence from it on";
    } else {
      EXPECT_TRUE(scaled_block(m, b, 0.125F)) << b;
    }
  }
  for (std::size_t i = 0; i < m.out.size(); ++i)
    ASSERT_FALSE(m.in[i] != 0.0F && m.out[i] == m.in[i]) << "frame " << i / channels << " is plaintext";
}

TEST(SandboxGroup, ACrashRestartsTheWholeGroupWithEveryMembersOwnState) {
  // a crashes on the marked block 10: the group's block is dry, then the group comes back in a
  // new process where each remembers.py got its own state back (× 0.5 more; another's → NaN).
  Log log;
  const RenderRun r = render(group_conf({{"a", "faulty.py", "", "fault = \"segfault\""},
                                         {"one", "remembers.py", "", "tag = \"one\""},
                                         {"two", "remembers.py", "", "tag = \"two\""}}),
                             {10}, log);
  expect_dry_once(r, 10, 0.125F, 0.03125F, log);  // after: each member's state restored
  const SlotStatus& s = slot(r);
  EXPECT_EQ(s.restarts, 1u) << log.all();
  EXPECT_EQ(s.crashes, 1u);
  EXPECT_EQ(s.state, SlotState::running);
  EXPECT_EQ(blocks_not_processed(r.report), 1u) << r.summary;
}

TEST(SandboxGroup, AGroupSplitByAnotherPluginIsOneProcessPerRun) {
  Log log;
  const RenderRun r = render(group_conf({{"a", "faulty.py", "", "fault = \"none\""},
                                         {"b", "faulty.py", "", "fault = \"none\""},
                                         {"solo", "faulty.py", "sandbox = \"other\"", "fault = \"none\""},
                                         {"c", "faulty.py", "", "fault = \"none\""},
                                         {"d", "faulty.py", "", "fault = \"none\""}}),
                             {}, log);
  for (std::uint32_t b = 0; b < blocks; ++b) EXPECT_TRUE(scaled_block(r, b, 0.03125F)) << b;
  ASSERT_EQ(r.report.slots.size(), 3u);
  EXPECT_EQ(r.report.slots[0].name, "g");
  EXPECT_EQ(r.report.slots[1].name, "solo");
  EXPECT_TRUE(r.report.slots[1].members.empty()) << "a group of one is a plain slot";
  EXPECT_EQ(r.report.slots[2].name, "g-2");
  EXPECT_NE(r.report.slots[0].pid, r.report.slots[2].pid);
}

// ---- relays: consecutive pipelined plugins, each in its own sandbox, handing blocks on -----

/// A chain of pipelined faulty.py / remembers.py entries (name, file, extra keys, params): one
/// relay, one block deep (the plugins after the first say blocks = 0, unless their keys give it).
std::string relay_conf(const std::vector<std::array<std::string, 4>>& entries) {
  std::string text = "plugins = [\n";
  bool first = true;
  for (const auto& [name, file, keys, params] : entries) {
    text += "  { name = \"" + name + "\" mode = \"pipelined\" " +
            (first || keys.find("blocks") != std::string::npos ? "" : "blocks = 0 ") + "path = \"" +
            (fixtures() / file).string() + "\" " + keys + " params = { " + params + " } }\n";
    first = false;
  }
  return text + "]\n";
}

TEST(Relay, PipelinedPluginsInARowAreOneRelayEachInItsOwnSandbox) {
  Log log;
  const RenderRun r = render(relay_conf({{"a", "faulty.py", "", "fault = \"none\""},
                                         {"b", "remembers.py", "", "tag = \"b\" gain = 0.25"},
                                         {"c", "faulty.py", "", "fault = \"none\""}}),
                             {}, log);
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b) EXPECT_TRUE(scaled_block(r, b, 0.0625F)) << b << "\n" << r.summary;
  ASSERT_EQ(r.report.slots.size(), 3u) << "an entry per plugin, each its own sandbox";
  for (std::uint32_t k = 0; k < 3; ++k) {
    EXPECT_EQ(r.report.slots[k].relay, "a..c");
    EXPECT_EQ(r.report.slots[k].relay_stage, k);
    EXPECT_EQ(r.report.slots[k].state, SlotState::running);
  }
  EXPECT_NE(r.report.slots[0].pid, r.report.slots[1].pid);
  EXPECT_NE(r.report.slots[1].pid, r.report.slots[2].pid);
  EXPECT_GE(r.report.slots[0].counters.blocks, blocks) << "the relay's blocks, on its first plugin";
  EXPECT_EQ(r.report.slots[1].counters.blocks, 0u);
  EXPECT_EQ(r.report.latency_frames, block) << "one block of pipeline for the three";
  EXPECT_EQ(blocks_not_processed(r.report), 0u) << r.summary;
  EXPECT_NE(r.summary.find("in relay a..c"), std::string::npos) << r.summary;
}

TEST(Relay, APluginThatCrashesInTheMiddleIsRestartedAloneWithItsState) {
  // b crashes on the marked block 10 (one passes the marker on unchanged): that block is lost,
  // the relay plays on through b's new sandbox; one and two never restart, so they keep playing
  // at their gain (restored from a state they would play × 0.5 more).
  Log log;
  const RenderRun r = render(relay_conf({{"one", "remembers.py", "", "tag = \"one\" gain = 1.0"},
                                         {"b", "faulty.py", "", "fault = \"segfault\""},
                                         {"two", "remembers.py", "", "tag = \"two\" gain = 1.0"}}),
                             {10}, log);
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (b == 10) {
      EXPECT_TRUE(dry_block(r, b)) << "the block b held when it died\n" << r.summary;
    } else {
      EXPECT_TRUE(wet_block(r, b)) << b << "\n" << r.summary << log.all();
    }
  }
  ASSERT_EQ(r.report.slots.size(), 3u);
  EXPECT_EQ(r.report.slots[1].name, "b");
  EXPECT_EQ(r.report.slots[1].restarts, 1u) << log.all();
  EXPECT_EQ(r.report.slots[1].crashes, 1u);
  EXPECT_EQ(r.report.slots[0].restarts, 0u);
  EXPECT_EQ(r.report.slots[2].restarts, 0u);
  EXPECT_EQ(blocks_not_processed(r.report), 1u) << r.summary;
}

TEST(Relay, AMutedPluginThatFailsSilencesTheRelaysBlock) {
  // enc raises on the marked block: the plugins after it still see the block, but the relay's
  // output for it is silence (its on-failure is mute as its strictest plugin's), never plaintext.
  Log log;
  const RenderRun r = render(relay_conf({{"enc", "faulty.py", "on-failure = \"mute\"", "fault = \"raise\""},
                                         {"b", "faulty.py", "", "fault = \"none\""}}),
                             {5}, log);
  ASSERT_EQ(r.out.size(), r.in.size());
  for (std::uint32_t b = 0; b < blocks; ++b)
    EXPECT_TRUE(scaled_block(r, b, b == 5 ? 0.0F : 0.25F)) << b << "\n" << r.summary;
  for (std::size_t i = 0; i < r.out.size(); ++i)
    ASSERT_FALSE(r.in[i] != 0.0F && r.out[i] == r.in[i]) << "frame " << i / channels << " is plaintext";
  EXPECT_EQ(slot(r).on_failure, OnFailure::mute);
  EXPECT_EQ(slot(r).restarts, 0u) << "an exception is not a crash";
}

TEST(Relay, APipelinedGroupIsOneStageAndACrashRestartsOnlyThatGroup) {
  // Group g (a, one) hands each block straight to two's sandbox. a crashes on the marked block
  // 10: that block is dry, g comes back in a new process with one's state (× 0.5 more), and two
  // never restarts (it keeps playing at its gain, 1.0).
  Log log;
  const RenderRun r =
      render(relay_conf({{"a", "faulty.py", "sandbox = \"g\"", "fault = \"segfault\""},
                         {"one", "remembers.py", "sandbox = \"g\" blocks = 1", "tag = \"one\""},
                         {"two", "remembers.py", "", "tag = \"two\" gain = 1.0"}}),
             {10}, log);
  expect_dry_once(r, 10, 0.25F, 0.125F, log);  // after: one's state restored
  ASSERT_EQ(r.report.slots.size(), 2u) << "an entry per sandbox: the group and two";
  const SlotStatus& g = r.report.slots[0];
  EXPECT_EQ(g.name, "g");
  EXPECT_EQ(g.relay, "g..two");
  EXPECT_EQ(g.group, "g");
  ASSERT_EQ(g.members.size(), 2u);
  EXPECT_EQ(g.members[1].name, "one");
  EXPECT_EQ(g.restarts, 1u) << log.all();
  EXPECT_EQ(g.crashes, 1u);
  EXPECT_EQ(r.report.slots[1].name, "two");
  EXPECT_EQ(r.report.slots[1].relay_stage, 1u);
  EXPECT_EQ(r.report.slots[1].restarts, 0u);
  EXPECT_EQ(r.report.latency_frames, block) << "one block of pipeline for the three plugins";
  EXPECT_EQ(blocks_not_processed(r.report), 1u) << r.summary;
}

}  // namespace
}  // namespace sandpipe::host
