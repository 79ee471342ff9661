// A relay of sandboxes (direct hand-off) in one process: the host's endpoint on the head and tail
// edges, three sandbox endpoints on their own segments chained through the edges between them,
// each side with its own mapping of every memfd, as the processes would have.
#include <fcntl.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <thread>
#include <variant>
#include <vector>

#include "shm/block-channel.h"
#include "shm/segment.h"

namespace sandpipe::shm {
namespace {

constexpr Geometry geometry{2, 64, 4};
constexpr std::uint32_t frames = 48;

Segment attach(const Segment& segment) {
  auto attached = Segment::attach(::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 0));
  if (!std::holds_alternative<Segment>(attached)) std::abort();
  return std::move(std::get<Segment>(attached));
}

/// One sandbox of the relay: its own segment, and its own mappings of the edges it uses.
struct Member {
  Member(Segment& input_edge, Segment& output_edge, bool to_host)
      : host_own(Segment::create(geometry)),
        own(attach(host_own)),
        input(attach(input_edge)),
        output(attach(output_edge)),
        endpoint(own) {
    EXPECT_TRUE(endpoint.take_input_from(input));
    EXPECT_TRUE(endpoint.send_output_to(output, to_host));
  }

  /// Takes the next job, multiplies its block by `gain` in our slot, completes it with `status`.
  void process(float gain, CompletionStatus status = CompletionStatus::processed) {
    Job job;
    ASSERT_EQ(endpoint.wait(job, 0), SandboxEndpoint::Wake::job);
    for (std::uint32_t ch = 0; ch < geometry.channels; ++ch) {
      float* samples = endpoint.channel(job.slot, ch);
      for (std::uint32_t i = 0; i < job.frames; ++i) samples[i] *= gain;
    }
    endpoint.complete(Completion{job.seq, job.slot, job.frames, static_cast<std::uint32_t>(status)});
  }

  Segment host_own;  ///< the host's mapping (for the bell)
  Segment own;
  Segment input;
  Segment output;
  SandboxEndpoint endpoint;
};

/// Host, edges (head, two between, tail) and three sandboxes.
struct Relay {
  Relay() {
    for (int i = 0; i < 4; ++i) edges.push_back(Segment::create(geometry));
    host = std::make_unique<HostEndpoint>(edges.front(), edges.back());
    for (std::size_t m = 0; m < 3; ++m) members.push_back(make_member(m));
  }
  std::unique_ptr<Member> make_member(std::size_t m) {
    return std::make_unique<Member>(edges[m], edges[m + 1], m == 2);
  }

  /// Submits a block of `seq` whose sample i of channel ch is seq + i + 100 ch.
  void submit(std::uint32_t seq, std::uint32_t slot) {
    for (std::uint32_t ch = 0; ch < geometry.channels; ++ch) {
      float* samples = host->channel_rt(slot, ch);
      for (std::uint32_t i = 0; i < frames; ++i) samples[i] = static_cast<float>(seq + i + 100 * ch);
    }
    ASSERT_TRUE(host->submit_rt(Job{seq, slot, frames, 0}));
  }

  Completion collect() {
    Completion done;
    EXPECT_EQ(host->wait_complete_rt(done, now_ns() + 1'000'000), WaitResult::ready);
    return done;
  }

  std::vector<Segment> edges;
  std::unique_ptr<HostEndpoint> host;
  std::vector<std::unique_ptr<Member>> members;
};

TEST(Relay, PassesABlockThroughEverySandboxInOrderToTheHost) {
  Relay relay;
  relay.submit(7, 1);
  relay.members[0]->process(2.0F);
  relay.members[1]->process(3.0F);
  relay.members[2]->process(5.0F);
  const Completion done = relay.collect();
  EXPECT_EQ(done.seq, 7U);
  EXPECT_EQ(done.slot, 1U);
  EXPECT_EQ(done.frames, frames);
  EXPECT_EQ(done.status, static_cast<std::uint32_t>(CompletionStatus::processed));
  for (std::uint32_t ch = 0; ch < geometry.channels; ++ch) {
    const float* out = relay.host->output_channel_rt(1, ch);
    for (std::uint32_t i = 0; i < frames; ++i) ASSERT_EQ(out[i], 30.0F * static_cast<float>(7 + i + 100 * ch));
    // The head edge still holds the input the host wrote: nobody writes back into it.
    EXPECT_EQ(relay.host->channel_rt(1, ch)[5], static_cast<float>(7 + 5 + 100 * ch));
  }
  EXPECT_EQ(relay.members[1]->endpoint.forwarded(), 1U);
  EXPECT_EQ(relay.members[2]->endpoint.forwarded(), 1U);
}

TEST(Relay, EveryLaterSandboxStillSeesTheBlockButTheRunSaysItFailed) {
  Relay relay;
  relay.submit(1, 0);
  relay.submit(2, 1);
  relay.members[0]->process(2.0F, CompletionStatus::failed);
  relay.members[0]->process(2.0F, CompletionStatus::passthrough);
  for (int block = 0; block < 2; ++block) {
    relay.members[1]->process(3.0F);
    relay.members[2]->process(5.0F);
  }
  EXPECT_EQ(relay.collect().status, static_cast<std::uint32_t>(CompletionStatus::failed));
  // A block passed through unprocessed stays unprocessed to the host (mute must not play it).
  EXPECT_EQ(relay.collect().status, static_cast<std::uint32_t>(CompletionStatus::passthrough));
  // The last sandbox processed both: its state moved with every block.
  EXPECT_EQ(relay.host->output_channel_rt(0, 0)[0], 30.0F * 1.0F);
}

TEST(Relay, ASandboxRestartedInTheMiddleCostsOnlyTheBlockItHeld) {
  Relay relay;
  relay.submit(1, 0);
  relay.submit(2, 1);
  relay.submit(3, 2);
  for (int block = 0; block < 3; ++block) relay.members[0]->process(2.0F);
  // The middle sandbox takes block 1 and dies with it.
  Job taken;
  ASSERT_EQ(relay.members[1]->endpoint.wait(taken, 0), SandboxEndpoint::Wake::job);
  relay.members[1] = relay.make_member(1);  // its restart: the same edges, a new segment
  for (int block = 0; block < 2; ++block) {
    relay.members[1]->process(3.0F);
    relay.members[2]->process(5.0F);
  }
  const Completion lost = relay.collect();
  EXPECT_EQ(lost.seq, 1U);
  EXPECT_EQ(lost.status, static_cast<std::uint32_t>(CompletionStatus::failed));
  const Completion second = relay.collect();
  EXPECT_EQ(second.seq, 2U);
  EXPECT_EQ(second.status, static_cast<std::uint32_t>(CompletionStatus::processed));
  EXPECT_EQ(relay.host->output_channel_rt(1, 0)[0], 30.0F * 2.0F);
  EXPECT_EQ(relay.collect().seq, 3U);
  EXPECT_EQ(relay.host->in_flight(), 0U);
  EXPECT_FALSE(relay.host->failed());
}

TEST(Relay, ACompletionForNoJobInFlightIsStillCorrupt) {
  Relay relay;
  relay.submit(1, 0);
  // The tail's completions ring, written by hand as a broken last sandbox would.
  Member& last = *relay.members[2];
  Job job;
  relay.members[0]->process(1.0F);
  relay.members[1]->process(1.0F);
  ASSERT_EQ(last.endpoint.wait(job, 0), SandboxEndpoint::Wake::job);
  last.endpoint.complete(Completion{job.seq + 5, job.slot, job.frames, 0});
  Completion done;
  EXPECT_EQ(relay.host->wait_complete_rt(done, now_ns() + 1'000'000), WaitResult::corrupt);
}

TEST(Relay, TheBellWakesASandboxSleepingOnItsInputEdge) {
  Relay relay;
  Member& middle = *relay.members[1];
  ControlBell bell(middle.host_own, relay.edges[1]);
  SandboxEndpoint::Wake wake = SandboxEndpoint::Wake::timeout;
  std::thread sandbox([&] {
    Job job;
    wake = middle.endpoint.wait(job, 2'000'000'000);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  bell.ring();
  sandbox.join();
  EXPECT_EQ(wake, SandboxEndpoint::Wake::control);
}

}  // namespace
}  // namespace sandpipe::shm
