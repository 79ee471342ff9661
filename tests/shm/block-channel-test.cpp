// HostEndpoint and SandboxEndpoint in one process (two mappings of one memfd): the protocol, and
// what the host does when the sandbox side of the segment says something impossible.
#include "shm/block-channel.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <thread>
#include <variant>

#include "shm/layout.h"
#include "shm/segment.h"

namespace sandpipe::shm {
namespace {

constexpr std::uint64_t no_wait = 0;

/// The host's segment plus a second mapping of it, as the sandbox process would have.
struct Channel {
  explicit Channel(Geometry geometry = Geometry{2, 64, 4}, std::optional<std::uint32_t> start = std::nullopt)
      : host_segment(Segment::create(geometry)),
        sandbox_segment(attach(host_segment)),
        host(with_indices_at(host_segment, start)),
        sandbox(sandbox_segment) {}

  static Segment& with_indices_at(Segment& segment, std::optional<std::uint32_t> start) {
    if (start) {
      detail::set_ring_indices_for_testing(segment, *start);
    }
    return segment;
  }

  static Segment attach(const Segment& segment) {
    auto attached = Segment::attach(::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 0));
    if (!std::holds_alternative<Segment>(attached)) {
      std::abort();
    }
    return std::move(std::get<Segment>(attached));
  }

  /// The sandbox's view of the shared ring control blocks, for tests that play a broken sandbox.
  detail::SegmentParts shared() {
    return detail::segment_parts(sandbox_segment.base(), detail::compute_layout(sandbox_segment.geometry()));
  }

  /// Sandbox side: takes the next job and completes it as-is (processed).
  void echo_one() {
    Job job;
    ASSERT_EQ(sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
    sandbox.complete(Completion{job.seq, job.slot, job.frames, 0});
  }

  Segment host_segment;
  Segment sandbox_segment;
  HostEndpoint host;
  SandboxEndpoint sandbox;
};

std::uint64_t soon() { return now_ns() + 1'000'000; }

TEST(BlockChannel, RoundTripsABlockThroughTheSlot) {
  Channel channel;
  float* left = channel.host.channel_rt(1, 0);
  float* right = channel.host.channel_rt(1, 1);
  ASSERT_NE(left, nullptr);
  ASSERT_NE(right, nullptr);
  for (int i = 0; i < 64; ++i) {
    left[i] = static_cast<float>(i);
    right[i] = static_cast<float>(-i);
  }
  ASSERT_TRUE(channel.host.submit_rt(Job{7, 1, 64, 0}));

  Job job;
  ASSERT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
  EXPECT_EQ(job.seq, 7U);
  EXPECT_EQ(job.slot, 1U);
  EXPECT_EQ(job.frames, 64U);
  for (std::uint32_t ch = 0; ch < 2; ++ch) {
    float* samples = channel.sandbox.channel(job.slot, ch);
    for (std::uint32_t i = 0; i < job.frames; ++i) {
      samples[i] *= 2.0F;
    }
  }
  channel.sandbox.complete(
      Completion{job.seq, job.slot, job.frames, static_cast<std::uint32_t>(CompletionStatus::processed)});

  Completion done;
  ASSERT_EQ(channel.host.wait_complete_rt(done, soon()), WaitResult::ready);
  EXPECT_EQ(done.seq, 7U);
  EXPECT_EQ(done.slot, 1U);
  EXPECT_EQ(done.status, static_cast<std::uint32_t>(CompletionStatus::processed));
  EXPECT_EQ(left[10], 20.0F);
  EXPECT_EQ(right[10], -20.0F);
  EXPECT_EQ(channel.host.in_flight(), 0U);
}

TEST(BlockChannel, StridesDescribeTheSlotLayout) {
  Channel channel(Geometry{3, 100, 4});
  SandboxEndpoint& sandbox = channel.sandbox;
  EXPECT_EQ(sandbox.channel_stride(), 112U);  // 100 floats rounded up to a 64-byte multiple
  EXPECT_EQ(sandbox.slot_stride(), 3 * 112U);
  EXPECT_EQ(sandbox.channel(0, 1) - sandbox.channel(0, 0), 112);
  EXPECT_EQ(sandbox.channel(2, 1) - sandbox.channel(0, 0), 2 * 3 * 112 + 112);
  EXPECT_EQ(channel.host.channel_stride(), sandbox.channel_stride());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(sandbox.channel(3, 2)) % cache_line_size, 0U);
  EXPECT_EQ(sandbox.channel(4, 0), nullptr);
  EXPECT_EQ(sandbox.channel(0, 3), nullptr);
  EXPECT_EQ(channel.host.channel_rt(4, 0), nullptr);
  EXPECT_EQ(channel.host.channel_rt(0, 3), nullptr);
}

TEST(BlockChannel, WrapsAroundIndicesNearUint32Max) {
  Channel channel(Geometry{1, 16, 4}, std::numeric_limits<std::uint32_t>::max() - 6);
  std::uint32_t next_completed = 0;
  for (std::uint32_t seq = 0; seq < 100; ++seq) {
    ASSERT_TRUE(channel.host.submit_rt(Job{seq, seq % 4, 16, 0}));
    if (seq % 3 == 2) {  // let a few pile up, in varying numbers
      while (channel.host.in_flight() > 0) {
        channel.echo_one();
        Completion done;
        ASSERT_EQ(channel.host.wait_complete_rt(done, soon()), WaitResult::ready);
        ASSERT_EQ(done.seq, next_completed++);
      }
    }
  }
  EXPECT_FALSE(channel.host.failed());
}

TEST(HostEndpoint, SubmitFailsWhenEverySlotIsInFlight) {
  Channel channel;
  for (std::uint32_t seq = 0; seq < 4; ++seq) {
    ASSERT_TRUE(channel.host.submit_rt(Job{seq, seq, 8, 0}));
  }
  EXPECT_FALSE(channel.host.submit_rt(Job{4, 0, 8, 0}));
  // The sandbox takes a job off the ring, but its slot is still in flight until completed.
  Job job;
  ASSERT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
  EXPECT_FALSE(channel.host.submit_rt(Job{4, 0, 8, 0}));
  channel.sandbox.complete(Completion{job.seq, job.slot, job.frames, 0});
  Completion done;
  ASSERT_EQ(channel.host.try_complete_rt(done), WaitResult::ready);
  EXPECT_TRUE(channel.host.submit_rt(Job{4, 0, 8, 0}));
  EXPECT_FALSE(channel.host.failed());
}

TEST(HostEndpoint, SubmitRejectsAJobOutOfRange) {
  Channel channel;
  EXPECT_FALSE(channel.host.submit_rt(Job{0, 4, 8, 0}));
  EXPECT_FALSE(channel.host.submit_rt(Job{0, 0, 65, 0}));
  EXPECT_EQ(channel.host.in_flight(), 0U);
  EXPECT_FALSE(channel.host.failed());  // our mistake, not the sandbox's
}

TEST(HostEndpoint, WaitTimesOutWhenTheSandboxDoesNotAnswer) {
  Channel channel;
  channel.host.set_spin_ns(0);
  ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::timeout);
  EXPECT_EQ(channel.host.wait_complete_rt(done, now_ns() + 200'000), WaitResult::timeout);
  channel.host.set_spin_ns(HostEndpoint::default_spin_ns);
  EXPECT_EQ(channel.host.wait_complete_rt(done, now_ns() + 200'000), WaitResult::timeout);
  EXPECT_EQ(channel.host.wait_complete_rt(done, 0), WaitResult::timeout);  // deadline long past
  channel.echo_one();
  EXPECT_EQ(channel.host.wait_complete_rt(done, 0), WaitResult::ready);  // ready beats the deadline
}

TEST(HostEndpoint, IdleHintFollowsTheSandboxNotTheCollector) {
  Channel channel;
  EXPECT_TRUE(channel.host.sandbox_idle_hint());
  ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  ASSERT_TRUE(channel.host.submit_rt(Job{1, 1, 8, 0}));
  EXPECT_FALSE(channel.host.sandbox_idle_hint());  // two jobs the sandbox has not answered
  channel.echo_one();
  EXPECT_FALSE(channel.host.sandbox_idle_hint());  // one still open
  const std::uint32_t answered = channel.host.answered_hint();
  channel.echo_one();
  // Both answered, neither collected by the host: the sandbox is idle, not hung.
  EXPECT_TRUE(channel.host.sandbox_idle_hint());
  EXPECT_EQ(channel.host.answered_hint(), answered + 1);  // progress the watchdog can see
  EXPECT_EQ(channel.host.in_flight(), 2U);
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::ready);
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::ready);
  EXPECT_TRUE(channel.host.sandbox_idle_hint());
}

TEST(HostEndpoint, WaitReturnsAtOnceWithNothingInFlight) {
  Channel channel;
  Completion done;
  EXPECT_EQ(channel.host.wait_complete_rt(done, std::numeric_limits<std::uint64_t>::max()),
            WaitResult::timeout);
}

TEST(HostEndpoint, WaitGivesUpAtOnceWhenTheAbortFlagIsSet) {
  Channel channel;
  std::atomic<bool> abort{true};
  channel.host.set_abort_flag(&abort);
  ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  Completion done;
  EXPECT_EQ(channel.host.wait_complete_rt(done, std::numeric_limits<std::uint64_t>::max()),
            WaitResult::timeout);
  channel.echo_one();
  EXPECT_EQ(channel.host.wait_complete_rt(done, 0), WaitResult::ready);  // a waiting completion still pops
}

TEST(HostEndpoint, WakeWaiterEndsASleepingWaitOnAnotherThread) {
  Channel channel;
  std::atomic<bool> abort{false};
  channel.host.set_abort_flag(&abort);
  channel.host.set_spin_ns(0);
  channel.host.release_rt_thread();
  std::atomic<bool> returned{false};
  WaitResult result = WaitResult::ready;
  std::thread waiter([&] {
    ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
    Completion done;
    // A minute: if the wake were lost the test would notice (it would take that long).
    const std::uint64_t start = now_ns();
    result = channel.host.wait_complete_rt(done, start + 60'000'000'000ULL);
    returned = true;
  });
  // Wait (yielding, no sleep) until the waiter has announced its futex sleep, then abort it.
  auto* completions = channel.shared().completions_control;
  while (completions->sleeping.load() == 0) std::this_thread::yield();
  abort.store(true);
  channel.host.wake_waiter();
  waiter.join();
  EXPECT_TRUE(returned);
  EXPECT_EQ(result, WaitResult::timeout);
  EXPECT_FALSE(channel.host.failed());
}

TEST(HostEndpoint, CompletionWithWrongSeqIsCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{5, 2, 8, 0}));
  Job job;
  ASSERT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
  channel.sandbox.complete(Completion{6, 2, 8, 0});
  Completion done;
  EXPECT_EQ(channel.host.wait_complete_rt(done, soon()), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionNamingAnotherSlotIsCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{5, 2, 8, 0}));
  channel.sandbox.complete(Completion{5, 1, 8, 0});
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionWithSlotOutOfRangeIsCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{5, 2, 8, 0}));
  channel.sandbox.complete(Completion{5, 1000, 8, 0});
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionWithTooManyFramesIsCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{5, 2, 8, 0}));
  channel.sandbox.complete(Completion{5, 2, 65, 0});
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionWithUnknownStatusIsCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{5, 2, 8, 0}));
  channel.sandbox.complete(Completion{5, 2, 8, 3});
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionWithoutAJobInFlightIsCorrupt) {
  Channel channel;
  channel.sandbox.complete(Completion{0, 0, 8, 0});
  Completion done;
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionWriteIndexTooFarAheadIsCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  channel.shared().completions_control->write.store(5);
  Completion done;
  EXPECT_EQ(channel.host.wait_complete_rt(done, soon()), WaitResult::corrupt);
}

TEST(HostEndpoint, CompletionWriteIndexMovingBackwardsIsCorrupt) {
  Channel channel;
  for (std::uint32_t seq = 0; seq < 3; ++seq) {
    ASSERT_TRUE(channel.host.submit_rt(Job{seq, seq, 8, 0}));
  }
  channel.echo_one();
  channel.echo_one();
  Completion done;
  ASSERT_EQ(channel.host.try_complete_rt(done), WaitResult::ready);  // host has now seen write == 2
  channel.shared().completions_control->write.store(1);
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
}

TEST(HostEndpoint, StaysFailedOnceCorrupt) {
  Channel channel;
  ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  channel.sandbox.complete(Completion{1, 0, 8, 0});
  Completion done;
  ASSERT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
  EXPECT_TRUE(channel.host.failed());
  // Even a now-perfect sandbox cannot revive it.
  channel.shared().completions_control->write.store(0);
  channel.shared().completions_control->read.store(0);
  EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::corrupt);
  EXPECT_EQ(channel.host.wait_complete_rt(done, soon()), WaitResult::corrupt);
  EXPECT_FALSE(channel.host.submit_rt(Job{1, 1, 8, 0}));
  EXPECT_EQ(channel.host.channel_rt(0, 0), nullptr);
}

TEST(HostEndpoint, JobsReadIndexAheadOfWritesIsCorrupt) {
  Channel channel;
  channel.shared().jobs_control->read.store(3);
  EXPECT_FALSE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  EXPECT_TRUE(channel.host.failed());
}

TEST(SandboxEndpoint, TimesOutWithoutJobs) {
  Channel channel;
  Job job;
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::timeout);
  EXPECT_EQ(channel.sandbox.wait(job, 100'000), SandboxEndpoint::Wake::timeout);
  channel.sandbox.set_spin_ns(50'000);
  EXPECT_EQ(channel.sandbox.wait(job, 100'000), SandboxEndpoint::Wake::timeout);
}

/// SCHED_FIFO at `priority` for the calling thread, where permitted (else it stays as it is).
void make_realtime(int priority) {
  sched_param p{};
  p.sched_priority = priority;
  (void)::sched_setscheduler(0, SCHED_FIFO, &p);
}

/// Jobs every `period_ns` (as a graph cycle would send them) to a sandbox thread that echoes
/// them; returns how many found the sandbox awake, i.e. no wake syscall was needed. `seen`: the
/// counters at the end, with the last cadence the sandbox followed (a stall of the machine in
/// the last few intervals leaves it without a steady one at the very end).
std::uint32_t paced_jobs_found_awake(std::uint64_t lead_ns, std::uint32_t jobs, std::uint64_t period_ns,
                                     SandboxEndpoint::Anticipation& seen) {
  Channel channel;
  channel.sandbox.set_lead_ns(lead_ns);
  std::atomic<bool> stop{false};
  std::uint64_t followed = 0;
  std::thread sandbox([&] {
    (void)::prctl(PR_SET_TIMERSLACK, 1UL);  // as sandbox/main.cpp does
    make_realtime(70);                      // as a live sandbox runs
    std::uint32_t done = 0;
    while (!stop.load()) {
      Job job;
      if (channel.sandbox.wait(job, 20'000'000) != SandboxEndpoint::Wake::job) continue;
      channel.sandbox.complete(Completion{job.seq, job.slot, job.frames, 0});
      const SandboxEndpoint::Anticipation now = channel.sandbox.anticipation();
      if (now.period_ns != 0) followed = now.period_ns;
      if (++done == jobs) {  // before the job that ends it
        seen = now;
        seen.period_ns = followed;
      }
    }
  });
  // Both sides wake on time, as a graph's real-time threads do (the default 50 µs timer slack
  // of a normal thread would jitter the cadence by as much, and a test running beside this one
  // would preempt a normal thread for milliseconds).
  (void)::prctl(PR_SET_TIMERSLACK, 1UL);
  const int old_policy = ::sched_getscheduler(0);
  sched_param old_param{};
  (void)::sched_getparam(0, &old_param);
  make_realtime(80);
  const auto& sleeping = channel.shared().jobs_control->sleeping;
  std::uint32_t awake = 0;
  timespec next{};
  ::clock_gettime(CLOCK_MONOTONIC, &next);
  for (std::uint32_t i = 0; i < jobs; ++i) {
    next.tv_nsec += static_cast<long>(period_ns);
    while (next.tv_nsec >= 1'000'000'000L) {
      next.tv_nsec -= 1'000'000'000L;
      ++next.tv_sec;
    }
    ::clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, nullptr);  // the pacing, not a sync
    awake += sleeping.load() == 0 ? 1 : 0;
    EXPECT_TRUE(channel.host.submit_rt(Job{i, i % 4, 64, 0}));
    Completion done;
    EXPECT_EQ(channel.host.wait_complete_rt(done, now_ns() + 1'000'000'000ULL), WaitResult::ready);
  }
  stop.store(true);
  channel.host.submit_rt(Job{jobs, jobs % 4, 64, 0});  // ends the sandbox's wait
  sandbox.join();
  (void)::sched_setscheduler(0, old_policy, &old_param);
  return awake;
}

TEST(SandboxEndpoint, AnticipatesJobsThatComeAtASteadyCadence) {
  // 2 ms apart, like a 96-frame quantum: once the cadence is known the sandbox stops sleeping
  // shortly before each job is due, so the host's submit finds it awake and needs no wake-up.
  // Without anticipation it is asleep for every one. (Margins: a loaded machine may let the
  // sandbox thread wake late now and then; it then sleeps like before, which is still correct.)
  constexpr std::uint32_t jobs = 300;
  SandboxEndpoint::Anticipation off;
  SandboxEndpoint::Anticipation on;
  const std::uint32_t awake_off = paced_jobs_found_awake(0, jobs, 2'000'000, off);
  const std::uint32_t awake_on = paced_jobs_found_awake(100'000, jobs, 2'000'000, on);
  EXPECT_EQ(off.waits, 0U);
  EXPECT_LE(awake_off, jobs / 20) << "a sandbox that does not anticipate sleeps between jobs";
  EXPECT_GE(on.waits, jobs / 2) << "the sandbox did not follow the cadence";
  EXPECT_GE(awake_on, jobs / 3) << "anticipated waits " << on.waits << ", caught " << on.caught;
  EXPECT_GE(on.caught, awake_on / 2);
  EXPECT_NEAR(static_cast<double>(on.period_ns), 2e6, 0.5e6);
}

TEST(SandboxEndpoint, DoesNotAnticipateBursts) {
  // Jobs back to back (a render, a calibration burst): no cadence worth a spin.
  Channel channel;
  for (std::uint32_t i = 0; i < 64; ++i) {
    ASSERT_TRUE(channel.host.submit_rt(Job{i, i % 4, 64, 0}));
    channel.echo_one();
    Completion done;
    ASSERT_EQ(channel.host.try_complete_rt(done), WaitResult::ready);
  }
  Job job;
  EXPECT_EQ(channel.sandbox.wait(job, 1'000'000), SandboxEndpoint::Wake::timeout);
  EXPECT_EQ(channel.sandbox.anticipation().waits, 0U);
  EXPECT_EQ(channel.sandbox.anticipation().period_ns, 0U);
}

TEST(SandboxEndpoint, MergesControlNotifications) {
  Channel channel;
  channel.host.notify_control();
  channel.host.notify_control();
  Job job;
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::control);
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::timeout);
  channel.host.notify_control();
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::control);
}

TEST(SandboxEndpoint, ReturnsAJobBeforeAControlNotification) {
  Channel channel;
  channel.host.notify_control();
  ASSERT_TRUE(channel.host.submit_rt(Job{0, 0, 8, 0}));
  Job job;
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::control);
}

TEST(SandboxEndpoint, SkipsJobsOutOfRange) {
  Channel channel;
  // Play a broken host: push jobs straight into the shared ring.
  const detail::SegmentParts parts = detail::segment_parts(
      channel.host_segment.base(), detail::compute_layout(channel.host_segment.geometry()));
  SpscProducer<Job> raw(parts.jobs_control, parts.jobs, 4);
  ASSERT_EQ(raw.try_push(Job{0, 4, 8, 0}), PushResult::ok);          // slot out of range
  ASSERT_EQ(raw.try_push(Job{1, 0, 1'000'000, 0}), PushResult::ok);  // too many frames
  ASSERT_EQ(raw.try_push(Job{2, 3, 64, 0}), PushResult::ok);         // fine
  Job job;
  ASSERT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
  EXPECT_EQ(job.seq, 2U);
  EXPECT_EQ(job.slot, 3U);
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::timeout);
}

TEST(SandboxEndpoint, RecoversFromAnImpossibleJobsIndex) {
  Channel channel;
  channel.shared().jobs_control->write.store(1'000);
  Job job;
  EXPECT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::timeout);
  // Resynchronised at 1000: later jobs from there on are taken normally.
  const detail::SegmentParts parts = channel.shared();
  SpscProducer<Job> raw(parts.jobs_control, parts.jobs, 4);
  ASSERT_EQ(raw.try_push(Job{9, 1, 8, 0}), PushResult::ok);
  ASSERT_EQ(channel.sandbox.wait(job, no_wait), SandboxEndpoint::Wake::job);
  EXPECT_EQ(job.seq, 9U);
}

TEST(SandboxEndpoint, DropsCompletionsWhenTheHostLetsTheRingFill) {
  Channel channel;
  for (std::uint32_t i = 0; i < 6; ++i) {
    channel.sandbox.complete(Completion{i, 0, 8, 0});  // no crash, nothing beyond capacity
  }
  EXPECT_EQ(channel.shared().completions_control->write.load(), 4U);
}

#ifndef NDEBUG
TEST(HostEndpointDeathTest, AssertsWhenRtMethodsRunOnTwoThreads) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Channel channel;
        Completion done;
        (void)channel.host.try_complete_rt(done);
        std::thread other([&] { (void)channel.host.try_complete_rt(done); });
        other.join();
      },
      "two threads");
}

TEST(HostEndpoint, RtThreadCanBeReleasedForANewOne) {
  Channel channel;
  Completion done;
  (void)channel.host.try_complete_rt(done);
  channel.host.release_rt_thread();
  std::thread other([&] { EXPECT_EQ(channel.host.try_complete_rt(done), WaitResult::timeout); });
  other.join();
}
#endif

}  // namespace
}  // namespace sandpipe::shm
