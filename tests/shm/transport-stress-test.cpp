// The block channel across real processes: the sandbox half is shm-test-child, started with
// fork + exec and handed the segment's fd. Honest, killed and hostile children.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "shm/block-channel.h"
#include "shm/segment.h"
#include "tests/shm/child-process.h"

namespace sandpipe::shm {
namespace {

using testing::ChildProcess;

constexpr std::uint64_t patience_ns = 1'000'000'000;  // per wait; a timeout only means "look again"

/// Starts shm-test-child on `segment` (the child gets its own fd for it).
std::unique_ptr<ChildProcess> start_child(const Segment& segment, const std::string& mode,
                                          std::vector<std::string> extra = {}) {
  const int fd = ::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 10);
  std::vector<std::string> args{mode};
  if (mode == "die-after") {
    args.push_back(extra.at(0));
    extra.erase(extra.begin());
  }
  args.push_back(std::to_string(fd));
  args.insert(args.end(), extra.begin(), extra.end());
  auto child = std::make_unique<ChildProcess>(SANDPIPE_SHM_TEST_CHILD, args, std::vector<int>{fd});
  ::close(fd);
  return child;
}

std::uint32_t frames_for(std::uint32_t seq, std::uint32_t max_frames) { return 1 + (seq * 37U) % max_frames; }

/// Exact in float32 (< 2^20), as is 2x + 1.
std::uint32_t input_value(std::uint32_t seq, std::uint32_t ch, std::uint32_t i) {
  return (seq * 2654435761U + ch * 40503U + i * 97U) & 0xFFFFFU;
}

void fill_block(HostEndpoint& host, const Job& job) {
  for (std::uint32_t ch = 0; ch < host.geometry().channels; ++ch) {
    float* samples = host.channel_rt(job.slot, ch);
    for (std::uint32_t i = 0; i < job.frames; ++i) {
      samples[i] = static_cast<float>(input_value(job.seq, ch, i));
    }
  }
}

/// True if the slot holds 2x + 1 of what fill_block() wrote: compares a plain and a
/// position-weighted checksum (catches wrong values and moved samples).
bool block_checksum_matches(HostEndpoint& host, const Completion& done) {
  std::uint64_t expected = 0;
  std::uint64_t actual = 0;
  std::uint64_t expected_weighted = 0;
  std::uint64_t actual_weighted = 0;
  for (std::uint32_t ch = 0; ch < host.geometry().channels; ++ch) {
    const float* samples = host.channel_rt(done.slot, ch);
    for (std::uint32_t i = 0; i < done.frames; ++i) {
      const std::uint64_t want = 2ULL * input_value(done.seq, ch, i) + 1;
      const auto got = static_cast<std::uint64_t>(samples[i]);
      expected += want;
      actual += got;
      expected_weighted += want * (i + 1 + ch * 8192ULL);
      actual_weighted += got * (i + 1 + ch * 8192ULL);
    }
  }
  return expected == actual && expected_weighted == actual_weighted;
}

/// Streams `blocks` blocks through the child keeping `depth` in flight; checks each one.
void stream_blocks(HostEndpoint& host, ChildProcess& child, std::uint32_t blocks, std::uint32_t depth) {
  const Geometry geometry = host.geometry();
  std::uint32_t next_submit = 0;
  std::uint32_t next_complete = 0;
  std::uint32_t bad_checksums = 0;
  while (next_complete < blocks) {
    while (next_submit < blocks && host.in_flight() < depth) {
      const Job job{next_submit, next_submit & (geometry.slot_count - 1), frames_for(next_submit, geometry.max_frames),
                    0};
      fill_block(host, job);
      ASSERT_TRUE(host.submit_rt(job)) << "block " << next_submit;
      ++next_submit;
    }
    Completion done;
    const WaitResult result = host.wait_complete_rt(done, now_ns() + patience_ns);
    if (result == WaitResult::timeout) {
      ASSERT_FALSE(child.try_wait().has_value()) << "child ended early";
      continue;
    }
    ASSERT_EQ(result, WaitResult::ready) << "block " << next_complete;
    ASSERT_EQ(done.seq, next_complete);  // exactly once, in order
    ASSERT_EQ(done.frames, frames_for(done.seq, geometry.max_frames));
    bad_checksums += block_checksum_matches(host, done) ? 0 : 1;
    ++next_complete;
  }
  EXPECT_EQ(bad_checksums, 0U);
}

void stop_child(HostEndpoint& host, ChildProcess& child) {
  host.notify_control();  // shm-test-child exits on a control notification
  const int status = child.wait();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
}

TEST(BlockChannelAcrossProcesses, DeliversAMillionBlocksExactlyOnceInOrder) {
  Segment segment = Segment::create(Geometry{2, 256, 4});
  HostEndpoint host(segment);
  auto child = start_child(segment, "echo");
  stream_blocks(host, *child, 1'000'000, 4);
  EXPECT_FALSE(host.failed());
  stop_child(host, *child);
}

TEST(BlockChannelAcrossProcesses, DeliversBlocksInOrderWhenBothSidesSleep) {
  // No spinning anywhere: every hand-over goes through the announce / re-check / futex path.
  Segment segment = Segment::create(Geometry{2, 64, 4});
  HostEndpoint host(segment);
  host.set_spin_ns(0);
  auto child = start_child(segment, "echo", {"0"});
  stream_blocks(host, *child, 100'000, 1);
  stream_blocks(host, *child, 100'000, 3);
  EXPECT_FALSE(host.failed());
  stop_child(host, *child);
}

TEST(BlockChannelAcrossProcesses, DeliversBlocksWhenBothSidesSpin) {
  Segment segment = Segment::create(Geometry{1, 128, 2});
  HostEndpoint host(segment);
  host.set_spin_ns(50'000);
  auto child = start_child(segment, "echo", {"50000"});
  stream_blocks(host, *child, 200'000, 2);
  EXPECT_FALSE(host.failed());
  stop_child(host, *child);
}

TEST(BlockChannelAcrossProcesses, HostTimesOutThenSeesAKilledChild) {
  Segment segment = Segment::create(Geometry{2, 256, 4});
  HostEndpoint host(segment);
  auto child = start_child(segment, "echo");
  stream_blocks(host, *child, 10'000, 4);

  // Four blocks in flight, then the child is killed: some may have completed, the rest never will.
  for (std::uint32_t seq = 10'000; seq < 10'004; ++seq) {
    const Job job{seq, seq & 3, 256, 0};
    fill_block(host, job);
    ASSERT_TRUE(host.submit_rt(job));
  }
  child->kill(SIGKILL);
  std::uint32_t ready = 0;
  std::uint32_t timeouts_after_death = 0;
  while (timeouts_after_death < 3) {
    const bool dead = child->try_wait().has_value();
    Completion done;
    const WaitResult result = host.wait_complete_rt(done, now_ns() + 2'000'000);
    ASSERT_NE(result, WaitResult::corrupt);
    if (result == WaitResult::ready) {
      EXPECT_EQ(done.seq, 10'000 + ready);
      ++ready;
    } else if (dead) {
      ++timeouts_after_death;
    }
  }
  const int status = child->wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_LE(ready, 4U);
  EXPECT_EQ(host.in_flight(), 4 - ready);
  // With nobody consuming, the host fills its slots and is then refused, never blocked.
  std::uint32_t accepted = 0;
  for (std::uint32_t seq = 20'000; seq < 20'010; ++seq) {
    accepted += host.submit_rt(Job{seq, seq & 3, 16, 0}) ? 1 : 0;
  }
  EXPECT_EQ(accepted, ready);
  Completion done;
  EXPECT_EQ(host.wait_complete_rt(done, now_ns() + 1'000'000), WaitResult::timeout);
  EXPECT_FALSE(host.failed());
}

TEST(BlockChannelAcrossProcesses, HostTimesOutWhenTheChildDiesHoldingAJob) {
  Segment segment = Segment::create(Geometry{2, 128, 4});
  HostEndpoint host(segment);
  auto child = start_child(segment, "die-after", {"5000"});
  std::uint32_t next_submit = 0;
  std::uint32_t next_complete = 0;
  std::uint32_t timeouts_after_death = 0;
  while (timeouts_after_death < 3) {
    while (host.in_flight() < 4) {
      const Job job{next_submit, next_submit & 3, frames_for(next_submit, 128), 0};
      fill_block(host, job);
      ASSERT_TRUE(host.submit_rt(job));
      ++next_submit;
    }
    const bool dead = child->try_wait().has_value();
    Completion done;
    const WaitResult result = host.wait_complete_rt(done, now_ns() + 2'000'000);
    ASSERT_NE(result, WaitResult::corrupt);
    if (result == WaitResult::ready) {
      ASSERT_EQ(done.seq, next_complete);
      ASSERT_TRUE(block_checksum_matches(host, done));
      ++next_complete;
    } else if (dead) {
      ++timeouts_after_death;
    }
  }
  EXPECT_EQ(next_complete, 5000U);  // block 5000 was taken and never finished
  EXPECT_EQ(host.in_flight(), 4U);
  const int status = child->wait();
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

struct HostileTally {
  std::uint64_t results[3] = {0, 0, 0};  // by WaitResult
  std::uint32_t corrupt_endpoints = 0;
  std::uint32_t violations = 0;  // anything the host must never do or return
  float sink = 0.0F;             // keeps the reads of returned audio from being optimised away
};

/// One host endpoint on a segment a hostile child writes to: submit and wait until it fails or
/// `iterations` pass. Checks every value it is handed and that a failed endpoint stays failed.
void run_host_against(Segment& segment, std::uint32_t iterations, std::uint64_t spin_ns, HostileTally& tally) {
  const auto* segment_begin = static_cast<const std::byte*>(segment.base());
  const auto* segment_end = segment_begin + segment.size_bytes();
  auto in_segment = [&](const float* p, std::uint32_t frames) {
    const auto* begin = reinterpret_cast<const std::byte*>(p);
    return begin >= segment_begin && begin + std::size_t{frames} * sizeof(float) <= segment_end;
  };
  const Geometry geometry = segment.geometry();
  HostEndpoint host(segment);
  host.set_spin_ns(spin_ns);
  for (std::uint32_t seq = 0; seq < iterations && !host.failed(); ++seq) {
    const Job job{seq, seq & (geometry.slot_count - 1), 1 + seq % geometry.max_frames, 0};
    if (float* samples = host.channel_rt(job.slot, geometry.channels - 1)) {
      tally.violations += in_segment(samples, geometry.max_frames) ? 0 : 1;
      samples[job.frames - 1] = 1.0F;
    }
    (void)host.submit_rt(job);
    Completion done;
    const WaitResult result = host.wait_complete_rt(done, now_ns() + 50'000);
    ++tally.results[static_cast<int>(result)];
    if (result == WaitResult::ready) {
      tally.violations += (done.slot < geometry.slot_count && done.frames <= geometry.max_frames) ? 0 : 1;
      const float* out = host.channel_rt(done.slot, 0);
      tally.violations += (out != nullptr && in_segment(out, done.frames)) ? 0 : 1;
      for (std::uint32_t i = 0; out != nullptr && i < done.frames; ++i) {
        tally.sink += out[i];
      }
    }
  }
  if (host.failed()) {
    ++tally.corrupt_endpoints;
    Completion done;
    tally.violations += host.submit_rt(Job{0, 0, 1, 0}) ? 1 : 0;
    tally.violations += host.try_complete_rt(done) == WaitResult::corrupt ? 0 : 1;
    tally.violations += host.wait_complete_rt(done, now_ns() + 1'000'000) == WaitResult::corrupt ? 0 : 1;
    tally.violations += host.channel_rt(0, 0) == nullptr ? 0 : 1;
  }
}

void report(const std::string& mode, const HostileTally& tally) {
  std::printf("%s: %llu ready, %llu timeout, %llu corrupt results; %u endpoints ended corrupt (sink %g)\n",
              mode.c_str(), static_cast<unsigned long long>(tally.results[0]),
              static_cast<unsigned long long>(tally.results[1]), static_cast<unsigned long long>(tally.results[2]),
              tally.corrupt_endpoints, static_cast<double>(tally.sink));
}

TEST(BlockChannelAcrossProcesses, ScribblingChildNeverCrashesTheHost) {
  // Pure noise over the whole segment, header and rings included, as fast as the child can.
  // Endpoints are bound again and again to the scribbled segment (indices already junk).
  Segment segment = Segment::create(Geometry{2, 64, 4});
  auto child = start_child(segment, "scribble");
  HostileTally tally;
  for (std::uint32_t round = 0; round < 400; ++round) {
    run_host_against(segment, 200, round % 2 == 0 ? 0 : 2'000, tally);
  }
  EXPECT_EQ(tally.violations, 0U);
  EXPECT_GT(tally.corrupt_endpoints, 0U);
  EXPECT_FALSE(child->try_wait().has_value()) << "the scribbler should still be running";
  report("scribble", tally);
}

TEST(BlockChannelAcrossProcesses, ChaoticChildNeverCrashesTheHost) {
  // A child that mostly behaves and now and then writes near-plausible lies: each round a fresh
  // segment and child, so the host gets real completions before it catches the lie.
  HostileTally tally;
  for (std::uint32_t round = 0; round < 60; ++round) {
    Segment segment = Segment::create(Geometry{2, 64, 4});
    auto child = start_child(segment, "chaos");
    run_host_against(segment, 20'000, round % 2 == 0 ? 0 : 5'000, tally);
    EXPECT_FALSE(child->try_wait().has_value()) << "the chaos child should still be running";
  }
  EXPECT_EQ(tally.violations, 0U);
  EXPECT_GT(tally.corrupt_endpoints, 0U);
  EXPECT_GT(tally.results[static_cast<int>(WaitResult::ready)], 0U);
  report("chaos", tally);
}

}  // namespace
}  // namespace sandpipe::shm
