// The position-based RT core of SandboxProcessor with real sandboxes: pipelined delay, the link
// swap (replace_link with an in-process stand-in sandbox), mark_link_dead, ramps.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <variant>

#include "host/sandbox-client.h"
#include "host/sandbox-link.h"
#include "sandbox-test-util.h"
#include "shm/segment.h"

namespace sandpipe::sandbox_test {
namespace {

constexpr std::uint32_t channels = 2;

host::SandboxOptions slots(std::uint32_t n) {
  host::SandboxOptions o;
  o.slot_count = n;
  return o;
}

/// Runs `in` through `p` in calls of `n` frames each.
BlockRun run_fixed(host::Processor& p, const Signal& in, std::uint32_t n) {
  return run_blocks(p, in, std::vector<std::uint32_t>(in.frames / n, n), generous);
}

/// A sandbox stand-in in this process: a second mapping of the segment and a thread that
/// multiplies every job by `gain` and completes it.
class FakeSandbox {
 public:
  FakeSandbox(shm::Segment& host_segment, float gain) : gain_(gain) {
    auto attached = shm::Segment::attach(::fcntl(host_segment.fd(), F_DUPFD_CLOEXEC, 0));
    segment_.emplace(std::move(std::get<shm::Segment>(attached)));
    endpoint_.emplace(*segment_);
    thread_ = std::thread([this] { run(); });
  }
  FakeSandbox(const FakeSandbox&) = delete;
  FakeSandbox& operator=(const FakeSandbox&) = delete;
  ~FakeSandbox() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    while (!stop_) {
      shm::Job job;
      if (endpoint_->wait(job, 5'000'000) != shm::SandboxEndpoint::Wake::job) continue;
      for (std::uint32_t ch = 0; ch < endpoint_->geometry().channels; ++ch) {
        float* x = endpoint_->channel(job.slot, ch);
        for (std::uint32_t i = 0; i < job.frames; ++i) x[i] *= gain_;
      }
      endpoint_->complete(shm::Completion{job.seq, job.slot, job.frames, 0});
    }
  }

  float gain_;
  std::optional<shm::Segment> segment_;
  std::optional<shm::SandboxEndpoint> endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(SandboxPipeline, PipelinedSlotDelaysByExactlyKBlocks) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}), channels, 256,
                        slots(8));
  proc->set_pipeline(3, 256);
  EXPECT_EQ(proc->pipeline_blocks(), 3U);
  ASSERT_EQ(proc->latency_frames(), 768U);
  const Signal in = test_signal(channels, 40 * 256, 5);
  const BlockRun run = run_fixed(*proc, in, 256);
  for (std::uint32_t c = 0; c < channels; ++c)
    for (std::uint32_t i = 0; i < in.frames; ++i)
      ASSERT_EQ(run.out.ch(c)[i], i < 768 ? 0.0F : in.ch(c)[i - 768] * 0.5F) << "channel " << c << " frame " << i;
  for (auto s : run.statuses) EXPECT_EQ(s, BlockStatus::processed);
  EXPECT_EQ(proc->counters().bypassed_blocks, 0U);
}

TEST(SandboxPipeline, DepthIsClampedToTheSlotsThereAre) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py"), channels, 256);  // 4 slots
  EXPECT_EQ(proc->max_pipeline_blocks(), 2U);
  proc->set_pipeline(9, 256);
  EXPECT_EQ(proc->pipeline_blocks(), 2U);
  EXPECT_EQ(proc->latency_frames(), 512U);
}

TEST(SandboxPipeline, SmallCallsAgainstADeepPipelineStayExact) {
  // 16-frame calls, L = 2 × 256: 33 jobs would be out, only 8 slots: the slot waits for the
  // oldest job instead of dropping one.
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}), channels, 256,
                        slots(8));
  proc->set_pipeline(2, 256);
  const Signal in = test_signal(channels, 64 * 16, 8);
  const BlockRun run = run_fixed(*proc, in, 16);
  for (std::uint32_t i = 512; i < in.frames; ++i) ASSERT_EQ(run.out.ch(1)[i], in.ch(1)[i - 512] * 0.5F) << i;
  EXPECT_EQ(proc->counters().bypassed_blocks, 0U);
}

TEST(SandboxPipeline, ReplaceLinkAdoptsTheNewSandboxAndDropsWhatTheOldOwed) {
  // The old sandbox takes 2 s over block 5, so that block is certainly still owed at the swap.
  auto proc = start_one(python_spec("slow", examples_dir() / "slow.py",
                                    {{"delay_ms", 2000.0, 1}, {"only_block", 5.0, 1}, {"gain", 0.5, 1}}),
                        channels, 256);
  proc->set_crossfade_frames(0);  // exact samples: which positions are wet and which dry
  proc->set_pipeline(1, 256);
  const Signal in = test_signal(channels, 12 * 256, 3);
  Signal out(channels, in.frames);
  auto call = [&](std::uint32_t b) {
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    return proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(generous)});
  };
  for (std::uint32_t b = 0; b < 6; ++b) EXPECT_EQ(call(b), BlockStatus::processed);
  EXPECT_EQ(proc->active_generation(), 1U);

  auto segment = shm::Segment::create(shm::Geometry{channels, 256, 4});
  auto link = std::make_unique<host::SandboxLink>(std::move(segment), proc->next_link_generation());
  FakeSandbox fake(link->segment, 2.0F);
  ASSERT_TRUE(proc->replace_link(std::move(link)));
  auto second = std::make_unique<host::SandboxLink>(shm::Segment::create(shm::Geometry{channels, 256, 4}), 9);
  EXPECT_FALSE(proc->replace_link(std::move(second)));  // the first offer is still pending
  EXPECT_NE(second, nullptr);                            // and the caller keeps its link

  // Block 6 reads block 5's positions: owed by the old sandbox, dropped at the swap: dry.
  // From block 7 on: the new sandbox, 2x.
  EXPECT_EQ(call(6), BlockStatus::bypassed);
  EXPECT_EQ(proc->active_generation(), 2U);
  for (std::uint32_t b = 7; b < 12; ++b) EXPECT_EQ(call(b), BlockStatus::processed);
  for (std::uint32_t i = 0; i < 256; ++i) {
    ASSERT_EQ(out.ch(0)[6 * 256 + i], in.ch(0)[5 * 256 + i]) << i;
    ASSERT_EQ(out.ch(0)[8 * 256 + i], in.ch(0)[7 * 256 + i] * 2.0F) << i;
  }
  EXPECT_FALSE(proc->link_failed());
  // replace_link() collects first (once: the old link is parked for one more collect before it
  // is freed, and here the old sandbox, whose control conversation still points at that link,
  // lives on until the processor goes; in the node the Supervisor replaces both together).
  EXPECT_TRUE(proc->replace_link(std::move(second)));
}

TEST(SandboxPipeline, MarkLinkDeadEndsAWaitAtOnceAndGoesDry) {
  auto proc = start_one(python_spec("slow", examples_dir() / "slow.py",
                                    {{"delay_ms", 5000.0, 1}, {"only_block", 1.0, 1}, {"gain", 0.5, 1}}));
  proc->set_crossfade_frames(0);
  const Signal in = test_signal(channels, 3 * 256, 4);
  Signal out(channels, in.frames);
  auto call = [&](std::uint32_t b, std::chrono::milliseconds budget) {
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    return proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(budget)});
  };
  EXPECT_EQ(call(0, generous), BlockStatus::processed);
  EXPECT_EQ(proc->oldest_outstanding_age_ns(shm::now_ns()), 0U);
  // A watchdog thread: as soon as block 1 is out, it declares the sandbox dead.
  std::atomic<std::uint64_t> seen_age{0};
  std::thread watchdog([&] {
    std::uint64_t age = 0;
    while ((age = proc->oldest_outstanding_age_ns(shm::now_ns())) == 0) std::this_thread::yield();
    seen_age = age;
    proc->mark_link_dead();
  });
  // A minute's deadline: only the abort can end this wait early.
  EXPECT_EQ(call(1, std::chrono::milliseconds(60'000)), BlockStatus::bypassed);
  watchdog.join();
  EXPECT_GT(seen_age.load(), 0U);
  EXPECT_EQ(call(2, generous), BlockStatus::bypassed);  // dry until a new link arrives
  for (std::uint32_t i = 256; i < 768; ++i) ASSERT_EQ(out.ch(0)[i], in.ch(0)[i]) << i;
  const auto c = proc->counters();
  EXPECT_EQ(c.deadline_misses, 0U);  // a dead sandbox is not a late one
  EXPECT_EQ(c.bypassed_blocks, 2U);
}

TEST(SandboxPipeline, DryToWetFadesInAndWetToDryHasNoStep) {
  // Block 3 of 8 is late: wet → dry → wet. Ramps of 64 frames on both edges.
  auto proc = start_one(python_spec("slow", examples_dir() / "slow.py",
                                    {{"delay_ms", 2000.0, 1}, {"only_block", 3.0, 1}, {"gain", 0.5, 1}}));
  const Signal in = test_signal(channels, 8 * 256, 11);
  Signal out(channels, in.frames);
  for (std::uint32_t b = 0; b < 8; ++b) {
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    const auto budget = b == 3 ? std::chrono::milliseconds(20) : generous;
    (void)proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(budget)});
  }
  const float* x = in.ch(0);
  const float* y = out.ch(0);
  // Wet → dry at 768: the output continues from the last wet sample, then decays onto dry.
  const float step_wet = std::fabs(y[768] - y[767]);
  EXPECT_LE(step_wet, std::fabs(x[768] - x[767]) + 1e-6F);
  for (std::uint32_t i = 768 + 64; i < 1024; ++i) ASSERT_EQ(y[i], x[i]) << i;
  // Dry → wet at 1024: a linear ramp from dry to wet over 64 frames.
  for (std::uint32_t j = 0; j < 64; ++j) {
    const float d = x[1024 + j];
    const float w = x[1024 + j] * 0.5F;
    const float g = static_cast<float>(j) / 64.0F;
    ASSERT_NEAR(y[1024 + j], d + g * (w - d), 1e-6F) << j;
  }
  for (std::uint32_t i = 1024 + 64; i < 2048; ++i) ASSERT_EQ(y[i], x[i] * 0.5F) << i;
}

TEST(SandboxPipeline, DepthChangeWhileRunningCrossfadesTimelines) {
  // A 10 Hz sine through gain 0.5, pipelined 1 → 3 → 0 (sync) blocks while running. A hard
  // switch would jump 512 frames of the sine (a step of up to ≈ 0.33); the 64-frame crossfade
  // from the old timeline to the new one keeps every step within the sine's own slope plus
  // 1/64 of its swing, and afterwards the output is exactly the input 768 (then 0) frames late.
  auto proc =
      start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}), channels, 256, slots(8));
  proc->set_pipeline(1, 256);
  Signal in(channels, 48 * 256);
  for (std::uint32_t c = 0; c < channels; ++c)
    for (std::uint32_t i = 0; i < in.frames; ++i)
      in.ch(c)[i] = static_cast<float>(0.5 * std::sin(2.0 * M_PI * 10.0 * i / 48000.0 + c));
  Signal out(channels, in.frames);
  for (std::uint32_t b = 0; b < 48; ++b) {
    if (b == 16) proc->set_pipeline(3, 256);
    if (b == 32) proc->set_pipeline(0, 256);
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    EXPECT_EQ(proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(generous)}),
              BlockStatus::processed);
  }
  const float slope = static_cast<float>(0.5 * 0.5 * 2.0 * M_PI * 10.0 / 48000.0);  // gain × amplitude × ω
  const float bound = 2 * slope + 0.5F / 64.0F + 1e-5F;
  for (std::uint32_t c = 0; c < channels; ++c) {
    const float* x = in.ch(c);
    const float* y = out.ch(c);
    float worst = 0.0F;
    for (std::uint32_t i = 512; i < in.frames; ++i) worst = std::max(worst, std::fabs(y[i] - y[i - 1]));
    EXPECT_LE(worst, bound) << "channel " << c << ": a step at a depth change";
    for (std::uint32_t i = 16 * 256 + 64; i < 32 * 256; ++i)
      ASSERT_EQ(y[i], x[i - 768] * 0.5F) << c << " " << i;
    for (std::uint32_t i = 32 * 256 + 64; i < in.frames; ++i) ASSERT_EQ(y[i], x[i] * 0.5F) << c << " " << i;
  }
  EXPECT_EQ(proc->counters().bypassed_blocks, 0U);
}

TEST(SandboxPipeline, MuteOnFailureGivesSilenceForMissingPositions) {
  PluginSpec spec = python_spec("slow", examples_dir() / "slow.py",
                                {{"delay_ms", 2000.0, 1}, {"only_block", 1.0, 1}, {"gain", 0.5, 1}});
  spec.on_failure = host::OnFailure::mute;
  auto proc = start_one(spec);
  proc->set_crossfade_frames(0);
  const Signal in = test_signal(channels, 3 * 256, 12);
  Signal out(channels, in.frames);
  std::vector<BlockStatus> st;
  for (std::uint32_t b = 0; b < 3; ++b) {
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    st.push_back(proc->process_rt(ins, outs, 256,
                                  host::ProcessContext{deadline_in(b == 1 ? std::chrono::milliseconds(20) : generous)}));
  }
  EXPECT_EQ(st[1], BlockStatus::muted);
  for (std::uint32_t i = 256; i < 512; ++i) ASSERT_EQ(out.ch(1)[i], 0.0F);
  EXPECT_EQ(proc->counters().deadline_misses, 1U);
}

}  // namespace
}  // namespace sandpipe::sandbox_test
