// The position-based RT core of PythonSlot with real sandboxes: pipelined delay, the link
// swap (replace_link with an in-process stand-in sandbox), mark_link_dead, ramps.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <optional>
#include <thread>
#include <variant>

#include "fake-sandbox-thread.h"
#include "host/python/sandbox-client.h"
#include "host/python/sandbox-link.h"
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

/// A reload (LinkSwap::reload) from a real sandbox at gain 0.5 to a stand-in at 0.25, in sync
/// mode (k = 0) or pipelined (k = 1). Channel 1 is a constant 1.0, channel 0 noise.
void expect_wet_to_wet_reload(std::uint32_t k) {
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}), channels, 256);
  proc->set_pipeline(k, 256);
  const std::uint32_t lat = proc->latency_frames();
  ASSERT_EQ(lat, k * 256);
  constexpr std::uint32_t blocks = 14;
  constexpr std::uint32_t offer_at = 6;
  Signal in = test_signal(channels, blocks * 256, 21);
  std::fill_n(in.ch(1), in.frames, 1.0F);
  Signal out(channels, in.frames);
  std::vector<BlockStatus> statuses;
  std::optional<FakeSandbox> fake;
  for (std::uint32_t b = 0; b < blocks; ++b) {
    if (b == offer_at) {
      auto link = std::make_unique<host::SandboxLink>(shm::Segment::create(shm::Geometry{channels, 256, 4}),
                                                      proc->next_link_generation());
      fake.emplace(link->segment, 0.25F);
      ASSERT_TRUE(proc->replace_link(std::move(link), host::LinkSwap::reload));
    }
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    statuses.push_back(proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(generous)}));
    if (b == offer_at) {
      EXPECT_TRUE(proc->handing_over() || proc->active_generation() == 2U) << "not adopted";
    }
  }
  EXPECT_FALSE(proc->handing_over());
  EXPECT_EQ(proc->active_generation(), 2U);
  for (auto s : statuses) EXPECT_EQ(s, BlockStatus::processed);
  EXPECT_EQ(proc->counters().bypassed_blocks, 0U);
  EXPECT_EQ(out.frames, in.frames);

  // The constant channel: 0.5 (old), then a monotonic blend, then 0.25 (new): never the dry 1.0.
  const float* y = out.ch(1);
  std::uint32_t between = 0;
  for (std::uint32_t i = lat; i < out.frames; ++i) {
    ASSERT_GE(y[i], 0.25F) << "frame " << i;
    ASSERT_LE(y[i], 0.5F) << "frame " << i;
    if (i > lat) {
      ASSERT_LE(y[i], y[i - 1]) << "not monotonic at frame " << i;
    }
    if (y[i] > 0.25F && y[i] < 0.5F) ++between;
  }
  EXPECT_EQ(y[lat], 0.5F);
  EXPECT_EQ(y[out.frames - 1], 0.25F);
  EXPECT_EQ(between, 63U) << "a 64-frame crossfade ends on the new version's sample";
  // The noise channel: at every frame the input of the same position (no shift) times a gain
  // in [0.25, 0.5] that only falls.
  const float* x = in.ch(0);
  double last_gain = 0.5;
  for (std::uint32_t i = lat; i < out.frames; ++i) {
    const float want_old = x[i - lat] * 0.5F;
    const float want_new = x[i - lat] * 0.25F;
    ASSERT_LE(std::fabs(out.ch(0)[i] - want_old) + std::fabs(out.ch(0)[i] - want_new),
              std::fabs(want_old - want_new) + 1e-6F)
        << "frame " << i << " is not between the old and the new version's output";
    if (std::fabs(x[i - lat]) > 1e-3F) {
      const double gain = out.ch(0)[i] / x[i - lat];
      ASSERT_LE(gain, last_gain + 1e-5) << "frame " << i;
      last_gain = gain;
    }
  }
  EXPECT_NEAR(last_gain, 0.25, 1e-5);
}

TEST(SandboxPipeline, ReloadCrossfadesFromOldWetToNewWetInSyncMode) { expect_wet_to_wet_reload(0); }

TEST(SandboxPipeline, ReloadCrossfadesFromOldWetToNewWetWhenPipelined) {
  // One block in flight at the swap: a restart would drop it (dry); a reload lets the old
  // version finish it and fades over only once the new one's output is there.
  expect_wet_to_wet_reload(1);
}

TEST(SandboxPipeline, ReloadWhoseNewSandboxDiesFallsBackToARestart) {
  // The new link is dead before the hand-over ends: the RT side takes it over as a restart
  // would (dry, no hang) instead of waiting for it.
  auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}), channels, 256);
  const Signal in = test_signal(channels, 4 * 256, 22);
  Signal out(channels, in.frames);
  auto call = [&](std::uint32_t b) {
    const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
    float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
    return proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(generous)});
  };
  EXPECT_EQ(call(0), BlockStatus::processed);
  // No stand-in answers this segment; the link is declared dead before the RT side's next call.
  auto link = std::make_unique<host::SandboxLink>(shm::Segment::create(shm::Geometry{channels, 256, 4}),
                                                  proc->next_link_generation());
  ASSERT_TRUE(proc->replace_link(std::move(link), host::LinkSwap::reload));
  proc->mark_link_dead();
  EXPECT_EQ(call(1), BlockStatus::bypassed);
  EXPECT_FALSE(proc->handing_over());
  EXPECT_EQ(proc->active_generation(), 2U);
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
