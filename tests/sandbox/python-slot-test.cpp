// A Python slot through a real sandbox process: examples against independent references,
// both plugin APIs, deadlines, failures and the control requests.
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <fstream>

#include "sandbox-test-util.h"

namespace sandpipe::sandbox_test {
namespace {

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t max_frames = 512;
constexpr std::uint32_t total = 6000;

TEST(PythonSlot, GainMatchesNumpyReference) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}));
  EXPECT_EQ(proc->info().api, "sdk");
  EXPECT_EQ(proc->info().name, "Gain");
  const Signal in = test_signal(channels, total);
  const auto blocks = block_sizes(total, max_frames);
  const BlockRun run = run_blocks(*proc, in, blocks);
  for (auto s : run.statuses) ASSERT_EQ(s, BlockStatus::processed);
  const Signal ref = run_reference("gain", in, 48000.0, blocks, R"({"gain": 0.5})");
  EXPECT_TRUE(bit_equal(run.out, ref)) << "max diff " << max_abs_diff(run.out, ref);
  EXPECT_EQ(proc->counters().deadline_misses, 0u);
  EXPECT_EQ(proc->counters().blocks, blocks.size());
}

TEST(PythonSlot, BiquadKeepsStateAcrossBlocks) {
  auto proc =
      start_one(python_spec("eq", examples_dir() / "biquad.py",
                            {{"shape", std::string("lowpass"), 1}, {"freq", 500.0, 1}, {"q", 2.0, 1}}));
  const Signal in = test_signal(channels, total, 7);
  const auto blocks = block_sizes(total, max_frames);
  const BlockRun run = run_blocks(*proc, in, blocks);
  for (auto s : run.statuses) ASSERT_EQ(s, BlockStatus::processed);
  // The reference filters the whole signal in one go: any state lost between blocks shows.
  const Signal ref =
      run_reference("biquad", in, 48000.0, blocks, R"({"shape": "lowpass", "freq": 500.0, "q": 2.0})");
  EXPECT_LT(max_abs_diff(run.out, ref), 1e-5);
  EXPECT_GT(max_abs_diff(run.out, in), 0.05);  // it did filter
}

TEST(PythonSlot, ScramblerMatchesReferenceAndDescrambles) {
  const std::vector<ParamSetting> key = {{"key", std::string("hunter2"), 1}};
  const host::PluginSpec specs[] = {python_spec("enc", examples_dir() / "scrambler.py", key),
                                    python_spec("dec", examples_dir() / "scrambler.py", key)};
  auto procs = host::start_sandboxes(specs, 48000.0, channels, max_frames);
  ASSERT_EQ(procs.size(), 2u);
  EXPECT_NE(procs[0].instance->pid(), procs[1].instance->pid());
  const Signal in = test_signal(channels, 3000, 3);
  const auto blocks = block_sizes(3000, max_frames);
  const BlockRun enc = run_blocks(*procs[0].slot, in, blocks);
  const Signal ref = run_reference("scrambler", in, 48000.0, blocks, R"({"key": "hunter2"})");
  EXPECT_TRUE(bit_equal(enc.out, ref));
  EXPECT_FALSE(bit_equal(enc.out, in));
  EXPECT_EQ(procs[0].slot->counters().sanitized_blocks, 0u);  // scrambled, yet finite
  const BlockRun dec = run_blocks(*procs[1].slot, enc.out, blocks);
  EXPECT_TRUE(bit_equal(dec.out, in));
}

TEST(PythonSlot, ScramblerStateResumesAfterRestart) {
  const auto spec = python_spec("enc", examples_dir() / "scrambler.py", {{"key", std::string("k"), 1}});
  const Signal in = test_signal(channels, 2048, 5);
  Signal first(channels, 1024), second(channels, 1024);
  for (std::uint32_t c = 0; c < channels; ++c) {
    std::memcpy(first.ch(c), in.ch(c), 1024 * sizeof(float));
    std::memcpy(second.ch(c), in.ch(c) + 1024, 1024 * sizeof(float));
  }
  std::vector<std::byte> state;
  {
    auto proc = start_one(spec);
    (void)run_blocks(*proc, first, {512, 512});
    state = proc.instance->get_state();
  }
  ASSERT_EQ(state.size(), 8u);
  host::SandboxOptions options;
  options.states = {state};
  auto restarted = start_one(spec, channels, max_frames, options);
  const BlockRun run = run_blocks(*restarted, second, {512, 512});
  const Signal ref =
      run_reference("scrambler", second, 48000.0, {512, 512}, R"({"key": "k", "_position": 1024})");
  EXPECT_TRUE(bit_equal(run.out, ref));
}

TEST(PythonSlot, LateBlockFallsBackToDry) {
  // Block 3 sleeps two seconds inside the plugin; its deadline is 20 ms away.
  auto proc = start_one(python_spec("slow", examples_dir() / "slow.py",
                                    {{"delay_ms", 2000.0, 1}, {"only_block", 3.0, 1}, {"gain", 0.5, 1}}));
  proc->set_crossfade_frames(0);  // exact dry samples here; the ramps are tested in tests/scheduler
  const Signal in = test_signal(channels, 8 * 256, 11);
  Signal out(channels, in.frames);
  std::vector<BlockStatus> statuses;
  for (std::uint32_t b = 0; b < 8; ++b) {
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    const auto budget = b == 3 ? std::chrono::milliseconds(20) : generous;
    statuses.push_back(proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(budget)}));
  }
  for (std::uint32_t b = 0; b < 8; ++b) {
    SCOPED_TRACE("block " + std::to_string(b));
    EXPECT_EQ(statuses[b], b == 3 ? BlockStatus::bypassed : BlockStatus::processed);
    for (std::uint32_t c = 0; c < channels; ++c) {
      for (std::uint32_t i = b * 256; i < (b + 1) * 256; ++i) {
        const float want = b == 3 ? in.ch(c)[i] : in.ch(c)[i] * 0.5F;
        ASSERT_EQ(out.ch(c)[i], want) << "channel " << c << " frame " << i;  // exact, same positions
      }
    }
  }
  const auto counters = proc->counters();
  EXPECT_EQ(counters.deadline_misses, 1u);
  EXPECT_EQ(counters.bypassed_blocks, 1u);
  EXPECT_EQ(counters.blocks, 8u);
  EXPECT_TRUE(proc->usable());
  // The sandbox did process the late block (and discarded nothing of its own).
  EXPECT_EQ(proc.instance->stats().blocks, 8u);
}

TEST(PythonSlot, StalledSandboxIsNotWaitedOnUntilItCatchesUp) {
  // Block 1 takes five seconds (a hang, as far as the RT side knows). Its own cycle waits the
  // whole budget for it; the next one waits once more, in case it was only just late, but for a
  // quarter of its budget only: a hang must not take two whole budgets in a row (in a live
  // graph, one dropped cycle on a loaded machine). Block 3 then has all the time in the world,
  // and still must not wait: a hung sandbox would otherwise take the budget of every cycle until
  // the watchdog kills it. Once the sandbox has delivered what it owed, blocks are processed
  // again. The time bounds are the code's own (a wait runs to its deadline), with wide margins.
  using namespace std::chrono;
  auto proc = start_one(python_spec("slow", examples_dir() / "slow.py",
                                    {{"delay_ms", 5000.0, 1}, {"only_block", 1.0, 1}, {"gain", 0.5, 1}}));
  proc->set_crossfade_frames(0);
  const Signal in = test_signal(channels, 256, 5);
  Signal out(channels, in.frames);
  const float* ins[channels] = {in.ch(0), in.ch(1)};
  float* outs[channels] = {out.ch(0), out.ch(1)};
  milliseconds took{};
  const auto block = [&](milliseconds budget) {
    const auto t0 = steady_clock::now();
    const BlockStatus s = proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(budget)});
    took = duration_cast<milliseconds>(steady_clock::now() - t0);
    return s;
  };
  constexpr milliseconds budget{400};
  EXPECT_EQ(block(generous), BlockStatus::processed);
  EXPECT_EQ(block(budget), BlockStatus::bypassed);
  EXPECT_GE(took, budget - milliseconds(5)) << "the hang's own cycle did not wait for it";
  EXPECT_EQ(block(budget), BlockStatus::bypassed);
  EXPECT_GE(took, budget / 4 - milliseconds(5)) << "the second cycle did not wait once more";
  EXPECT_LT(took, budget * 3 / 4) << "the second cycle waited the whole budget again";
  // Without the stall rule this waits for block 1 (five seconds) and comes back processed.
  EXPECT_EQ(block(generous), BlockStatus::bypassed);
  EXPECT_LT(took, budget / 4) << "a stalled sandbox was waited on";
  const host::SlotCounters c = proc->counters();
  EXPECT_EQ(c.deadline_misses, 3u);
  // Each miss has its time, in order, and the rest of the ring is empty.
  EXPECT_GT(c.recent_miss_ns[0], 0u);
  EXPECT_GE(c.recent_miss_ns[1], c.recent_miss_ns[0] + 90'000'000u) << "the second miss waited 100 ms";
  EXPECT_GE(c.recent_miss_ns[2], c.recent_miss_ns[1]);
  EXPECT_LE(c.recent_miss_ns[2], shm::now_ns());
  EXPECT_EQ(c.recent_miss_ns[3], 0u);
  // Caught up: processed again, exactly, at its own positions.
  bool processed = false;
  for (int i = 0; i < 1500 && !processed; ++i) {
    processed = block(generous) == BlockStatus::processed;
    if (!processed) ::usleep(10'000);  // pacing the blocks, as a graph would
  }
  ASSERT_TRUE(processed) << "the slot never came back after the sandbox caught up";
  for (std::uint32_t c = 0; c < channels; ++c) {
    for (std::uint32_t i = 0; i < 256; ++i) ASSERT_EQ(out.ch(c)[i], in.ch(c)[i] * 0.5F) << c << " " << i;
  }
  EXPECT_TRUE(proc->usable());
}

TEST(PythonSlot, StalledSandboxIsWaitedOnAgainOnceItDeliveredWhatItOwed) {
  // Block 1 hangs for 300 ms; every other block takes 3 ms, and the calls come every 1 ms with a
  // generous budget: a slot that waits gets every block processed, one that only polls never
  // finds its block back. Once the sandbox has delivered the blocks the hang held up, the slot
  // must wait again. (It did not: every poll that found the current block still out counted as
  // a new miss, so the stall never ended, as in a live pipelined chain whose sandbox answers
  // just after the cycle starts: 3 × 5 ms plugins at 48k/512 went from 0.1 % to 95 % misses.)
  auto proc = start_one(
      python_spec("slow", examples_dir() / "slow.py",
                  {{"delay_ms", 300.0, 1}, {"only_block", 1.0, 1}, {"other_ms", 3.0, 1}, {"gain", 0.5, 1}}));
  proc->set_crossfade_frames(0);
  const Signal in = test_signal(channels, 256, 6);
  Signal out(channels, in.frames);
  const float* ins[channels] = {in.ch(0), in.ch(1)};
  float* outs[channels] = {out.ch(0), out.ch(1)};
  const auto block = [&](std::chrono::milliseconds budget) {
    return proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(budget)});
  };
  EXPECT_EQ(block(generous), BlockStatus::processed);
  EXPECT_EQ(block(std::chrono::milliseconds(20)), BlockStatus::bypassed);  // the hang
  EXPECT_EQ(block(std::chrono::milliseconds(20)), BlockStatus::bypassed);  // waited in vain: stalled
  int first_processed = -1;
  for (int i = 0; i < 3000 && first_processed < 0; ++i) {
    if (block(generous) == BlockStatus::processed) first_processed = i;
    ::usleep(1'000);  // calls faster than the sandbox's 3 ms per block
  }
  ASSERT_GE(first_processed, 0) << "the slot stayed stalled after the sandbox delivered what it owed";
  // Waited on again: every following block comes back processed, exactly.
  for (int i = 0; i < 10; ++i) {
    ASSERT_EQ(block(generous), BlockStatus::processed) << "block " << i << " after the recovery";
    for (std::uint32_t c = 0; c < channels; ++c)
      for (std::uint32_t f = 0; f < 256; ++f) ASSERT_EQ(out.ch(c)[f], in.ch(c)[f] * 0.5F) << c << " " << f;
  }
}

TEST(PythonSlot, LatencyDelaysTheDrySignal) {
  auto proc = start_one(python_spec("delay", fixtures_dir() / "misc/delay.py",
                                    {{"stall_block", 2.0, 1}, {"stall_ms", 2000.0, 1}}));
  ASSERT_EQ(proc->latency_frames(), 64u);
  const Signal in = test_signal(channels, 6 * 128, 2);
  Signal out(channels, in.frames);
  std::vector<BlockStatus> statuses;
  for (std::uint32_t b = 0; b < 6; ++b) {
    const float* ins[channels] = {in.ch(0) + b * 128, in.ch(1) + b * 128};
    float* outs[channels] = {out.ch(0) + b * 128, out.ch(1) + b * 128};
    // Block 2 stalls for 2 s against a 20 ms deadline: bypassed, and its dry output must line up.
    const auto budget = b == 2 ? std::chrono::milliseconds(20) : generous;
    statuses.push_back(proc->process_rt(ins, outs, 128, host::ProcessContext{deadline_in(budget)}));
  }
  EXPECT_EQ(statuses[2], BlockStatus::bypassed);
  const Signal ref = run_reference("delay", in, 48000.0, {}, R"({"latency": 64})");
  EXPECT_TRUE(bit_equal(out, ref));
}

TEST(PythonSlot, LegacyGainRunsUnmodified) {
  auto proc = start_one(python_spec("lg", earlier_api_examples() / "legacy_gain.py", {{"gain_db", -6.0, 1}}));
  EXPECT_EQ(proc->info().api, "legacy");
  EXPECT_EQ(proc->info().name, "Legacy Gain");
  ASSERT_EQ(proc->info().params.size(), 1u);
  EXPECT_EQ(proc->info().params[0].key, "gain_db");
  EXPECT_EQ(proc->info().params[0].kind, "number");  // the config gives a number
  const Signal in = test_signal(channels, total);
  const auto blocks = block_sizes(total, max_frames);
  const BlockRun run = run_blocks(*proc, in, blocks);
  for (auto s : run.statuses) ASSERT_EQ(s, BlockStatus::processed);
  const Signal ref = run_reference("legacy_gain", in, 48000.0, blocks, R"({"gain_db": -6.0})");
  EXPECT_TRUE(bit_equal(run.out, ref)) << max_abs_diff(run.out, ref);
}

TEST(PythonSlot, LegacyGateMatchesReferenceAndIsSilentWhenDisabled) {
  auto proc = start_one(python_spec("gate", earlier_api_examples() / "legacy_gate.py",
                                    {{"threshold_db", -30.0, 1}, {"floor_db", -60.0, 1}}));
  const Signal in = test_signal(channels, total);
  const auto blocks = block_sizes(total, max_frames);
  const BlockRun run = run_blocks(*proc, in, blocks);
  const Signal ref =
      run_reference("legacy_gate", in, 48000.0, blocks, R"({"threshold_db": -30, "floor_db": -60})");
  EXPECT_LT(max_abs_diff(run.out, ref), 1e-7);
  EXPECT_GT(max_abs_diff(run.out, in), 1e-4);  // the quiet stretch was gated

  // Disabled, it returns False: "not processed". An earlier-API processor is fail-closed by
  // default (docs/encrypted-voice.md): exact zeros.
  ASSERT_EQ(proc.instance->set_param({"enabled", false, 0}), std::nullopt);  // reaches it as "false"
  const BlockRun off = run_blocks(*proc, in, blocks);
  for (auto s : off.statuses) EXPECT_EQ(s, BlockStatus::muted);
  EXPECT_TRUE(bit_equal(off.out, Signal(in.channels, in.frames)));

  // With on-failure = "bypass" in its entry, False passes the block on as the plugin asked.
  auto spec = python_spec("gate", earlier_api_examples() / "legacy_gate.py",
                          {{"threshold_db", -30.0, 1}, {"floor_db", -60.0, 1}, {"enabled", false, 1}});
  spec.on_failure = host::OnFailure::bypass;
  spec.on_failure_given = true;
  auto passing = start_one(spec);
  const BlockRun passed = run_blocks(*passing, in, blocks);
  for (auto s : passed.statuses) EXPECT_EQ(s, BlockStatus::processed);  // the plugin's choice: no bypass
  EXPECT_TRUE(bit_equal(passed.out, in));
  EXPECT_EQ(passing->counters().bypassed_blocks, 0u);
}

TEST(PythonSlot, PassthroughOutputsUntouchedInput) {
  // An earlier-API plugin: with on-failure = "bypass" False passes the untouched input on; by
  // default (fail-closed) the block is exact zeros, neither the input nor its scribbles.
  auto spec = python_spec("scribble", earlier_api_examples().parent_path().parent_path() / "bad/scribble_passthrough.py");
  const Signal in = test_signal(channels, 1024);
  EXPECT_TRUE(bit_equal(run_blocks(*start_one(spec), in, {512, 512}).out, Signal(channels, 1024)));
  spec.on_failure = host::OnFailure::bypass;
  spec.on_failure_given = true;
  EXPECT_TRUE(bit_equal(run_blocks(*start_one(spec), in, {512, 512}).out, in));
}

TEST(PythonSlot, ExceptionInProcessGivesDryAndIsLogged) {
  LogCapture logs;
  host::SandboxOptions options;
  options.log = logs.sink();
  auto proc = start_one(python_spec("flaky", fixtures_dir() / "broken/raises_in_process.py"), channels,
                        max_frames, options);
  proc->set_crossfade_frames(0);  // exact dry samples here; the ramps are tested in tests/scheduler
  const Signal in = test_signal(channels, 4 * 256);
  const BlockRun run = run_blocks(*proc, in, {256, 256, 256, 256});
  ASSERT_EQ(run.statuses.size(), 4u);
  for (std::uint32_t b = 0; b < 4; ++b) {
    const bool raised = b % 2 == 1;
    EXPECT_EQ(run.statuses[b], raised ? BlockStatus::bypassed : BlockStatus::processed);
    for (std::uint32_t i = b * 256; i < (b + 1) * 256; ++i) {
      ASSERT_EQ(run.out.ch(0)[i], raised ? in.ch(0)[i] : in.ch(0)[i] * 2.0F);
    }
  }
  EXPECT_EQ(proc.instance->stats().exceptions, 2u);  // stats() also drains the socket: the logs are in
  EXPECT_TRUE(logs.contains("[flaky] exception in process(): ValueError: flaky block 2")) << logs.all();
  EXPECT_TRUE(logs.contains("raises_in_process.py\", line 13, in process")) << logs.all();
}

TEST(PythonSlot, NonFiniteOutputIsReplacedByDry) {
  auto proc = start_one(python_spec("nan", fixtures_dir() / "broken/nan_output.py"));
  proc->set_crossfade_frames(0);  // exact dry samples here; the ramps are tested in tests/scheduler
  const Signal in = test_signal(channels, 3 * 128);
  const BlockRun run = run_blocks(*proc, in, {128, 128, 128});
  EXPECT_EQ(run.statuses[0], BlockStatus::processed);
  EXPECT_EQ(run.statuses[1], BlockStatus::bypassed);
  EXPECT_EQ(run.statuses[2], BlockStatus::processed);
  EXPECT_EQ(run.out.ch(1)[10], in.ch(1)[10] * 3.0F);  // a returned array is copied in
  EXPECT_EQ(run.out.ch(0)[128], in.ch(0)[128]);
  EXPECT_EQ(run.out.ch(1)[200], in.ch(1)[200]);
  EXPECT_EQ(proc->counters().sanitized_blocks, 1u);
}

TEST(PythonSlot, RunsInAnotherProcess) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py"));
  ASSERT_GT(proc.instance->pid(), 0);
  EXPECT_NE(proc.instance->pid(), ::getpid());
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/" + std::to_string(proc.instance->pid()) + "/exe", ec);
  ASSERT_FALSE(ec);
  EXPECT_EQ(exe.filename(), "sandpipe-sandbox");
  EXPECT_FALSE(proc->info().python_version.empty());
}

/// The sandbox lives in its own PID namespace (pid 2 there) yet is the host's own child: the
/// real-time priority the host sets on its pid reaches the process that runs the plugin.
TEST(PythonSlot, RealTimePriorityReachesThePluginInItsPidNamespace) {
  host::SandboxOptions options;
  options.rt_priority = 11;
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py"), channels, max_frames, options);
  const Signal in = test_signal(channels, 256);
  EXPECT_EQ(run_blocks(*proc, in, {256}).statuses[0], BlockStatus::processed);
  std::ifstream status("/proc/" + std::to_string(proc.instance->pid()) + "/status");
  std::string line;
  std::string nspid;
  while (std::getline(status, line))
    if (line.starts_with("NSpid:")) nspid = line;
  EXPECT_EQ(nspid, "NSpid:\t" + std::to_string(proc.instance->pid()) + "\t2");
  const int policy = ::sched_getscheduler(proc.instance->pid());
  if (policy == SCHED_OTHER && ::geteuid() != 0) GTEST_SKIP() << "no permission for SCHED_FIFO here";
  EXPECT_EQ(policy & ~SCHED_RESET_ON_FORK, SCHED_FIFO);
  sched_param param{};
  ASSERT_EQ(::sched_getparam(proc.instance->pid(), &param), 0);
  EXPECT_EQ(param.sched_priority, 11);
}

TEST(PythonSlot, SetParamTakesEffectOnNextBlock) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py"));
  const Signal in = test_signal(channels, 512);
  EXPECT_TRUE(bit_equal(run_blocks(*proc, in, {512}).out, in));
  ASSERT_EQ(proc.instance->set_param({"gain", 2.0, 0}), std::nullopt);
  const BlockRun run = run_blocks(*proc, in, {512});
  EXPECT_EQ(run.out.ch(1)[77], in.ch(1)[77] * 2.0F);
  ASSERT_EQ(proc.instance->set_param({"mute", true, 0}), std::nullopt);
  EXPECT_EQ(run_blocks(*proc, in, {512}).out.ch(0)[5], 0.0F);
}

TEST(PythonSlot, SetParamRefusesBadValues) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py"));
  const auto out_of_range = proc.instance->set_param({"gain", 9.0, 0});
  ASSERT_TRUE(out_of_range.has_value());
  EXPECT_NE(out_of_range->find("outside 0 .. 4"), std::string::npos) << *out_of_range;
  const auto unknown = proc.instance->set_param({"volume", 1.0, 0});
  ASSERT_TRUE(unknown.has_value());
  EXPECT_NE(unknown->find("unknown parameter 'volume'"), std::string::npos) << *unknown;
  const auto wrong_type = proc.instance->set_param({"mute", std::string("loud"), 0});
  ASSERT_TRUE(wrong_type.has_value());
  // Still running normally after the refusals.
  const Signal in = test_signal(channels, 256);
  EXPECT_EQ(run_blocks(*proc, in, {256}).statuses[0], BlockStatus::processed);
}

TEST(PythonSlot, PrintsReachTheLogWithPluginName) {
  LogCapture logs;
  host::SandboxOptions options;
  options.log = logs.sink();
  auto proc =
      start_one(python_spec("chatty", fixtures_dir() / "misc/prints.py"), channels, max_frames, options);
  EXPECT_TRUE(logs.contains("[chatty] prepared at 48000 Hz with 2 channels")) << logs.all();
  const Signal in = test_signal(channels, 512);
  (void)run_blocks(*proc, in, {256, 256});
  (void)proc.instance->stats();  // a round trip: everything printed before it has arrived
  EXPECT_TRUE(logs.contains("[chatty] block 2")) << logs.all();
}

TEST(PythonSlot, KilledSandboxLeavesSlotDry) {
  LogCapture logs;
  host::SandboxOptions options;
  options.log = logs.sink();
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 3.0, 1}}), channels,
                        max_frames, options);
  proc->set_crossfade_frames(0);  // exact dry samples here; the ramps are tested in tests/scheduler
  const Signal in = test_signal(channels, 512);
  EXPECT_EQ(run_blocks(*proc, in, {256}).statuses[0], BlockStatus::processed);
  ASSERT_EQ(::kill(proc.instance->pid(), SIGKILL), 0);
  // Wait for the real condition: the control socket reports the hang-up. What the supervisor
  // then does (tests/faults) is done by hand here: the RT side is told the link is dead.
  pollfd pfd{proc.instance->control_fd(), POLLIN, 0};
  ASSERT_EQ(::poll(&pfd, 1, 30'000), 1);
  proc.instance->pump();
  EXPECT_TRUE(proc.instance->gone());
  const std::string why = proc.instance->gone_reason();
  EXPECT_NE(why.find("killed by signal SIGKILL"), std::string::npos) << why;
  EXPECT_TRUE(proc->usable());
  proc->mark_link_dead();
  EXPECT_FALSE(proc->usable());
  const BlockRun run = run_blocks(*proc, in, {256, 256});
  EXPECT_TRUE(bit_equal(run.out, in));
  EXPECT_EQ(run.statuses[0], BlockStatus::bypassed);
}

TEST(PythonSlot, GarbageCollectorIsFrozenAndDisabled) {
  const TempDir dir("sandbox-test");
  const auto file = dir.path() / "gccheck.py";
  std::ofstream(file) << "import gc\nimport sandpipe\n\n"
                         "class GcCheck(sandpipe.Plugin):\n"
                         "    def process(self, block):\n"
                         "        block[...] = float(not gc.isenabled() and gc.get_freeze_count() > 0)\n";
  auto proc = start_one(python_spec("gc", file));
  const Signal in = test_signal(channels, 64);
  const BlockRun run = run_blocks(*proc, in, {64});
  EXPECT_EQ(run.out.ch(0)[0], 1.0F);  // automatic collection off, load-time heap frozen
  EXPECT_EQ(run.out.ch(1)[63], 1.0F);
}

}  // namespace
}  // namespace sandpipe::sandbox_test
