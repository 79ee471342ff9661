// A relay of sandboxes (host/python/relay.h) through real sandbox processes: one PythonSlot, three
// sandboxes handing each block straight to the next, and what a killed one in the middle costs.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "host/python/relay.h"
#include "host/python/sandbox-process.h"
#include "sandbox-test-util.h"

namespace sandpipe::sandbox_test {
namespace {

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t max_frames = 512;

/// One PythonSlot over a relay of `gain.py` sandboxes, one per gain, each loaded and serving.
class GainRelay {
 public:
  explicit GainRelay(std::vector<double> gains) : gains_(std::move(gains)) {
    auto link = host::make_relay_link(gains_.size(), shm::Geometry{channels, max_frames, shm::max_slots}, 1);
    host::SandboxLink& relay = *link;
    slot = std::make_unique<PythonSlot>("relay", std::move(link), max_frames);
    slot->set_crossfade_frames(0);  // blocks compare bit for bit
    for (std::size_t i = 0; i < gains_.size(); ++i) {
      host::SandboxLaunch launch;
      launch.name = "g" + std::to_string(i);
      launch.file = examples_dir() / "gain.py";
      launch.executable = host::default_sandbox_executable();
      launch.geometry = shm::Geometry{channels, max_frames, shm::max_slots};
      launch.log = logs.sink();
      host::join_relay(launch, relay, i, gains_.size());
      launches_.push_back(launch);
      sandboxes.emplace_back();
      start(i);
    }
    host::PythonPluginInfo info;
    info.api = "sdk";
    info.role = "processor";
    slot->set_plugin(info);
  }

  /// (Re)starts sandbox `i`: spawned, loaded with its gain, waited for.
  void start(std::size_t i) {
    sandboxes[i].reset();
    auto instance = host::SandboxInstance::spawn(launches_[i], ++generation_);
    instance->set_params({{"gain", gains_[i], 1}});
    instance->send_load({});
    ASSERT_EQ(instance->wait_loaded(host::SandboxInstance::Clock::now() + std::chrono::seconds(20)), "");
    sandboxes[i] = std::move(instance);
  }

  LogCapture logs;
  std::unique_ptr<PythonSlot> slot;  // NOTE: before the sandboxes, which borrow its link's edges
  std::vector<std::unique_ptr<host::SandboxInstance>> sandboxes;

 private:
  std::vector<double> gains_;
  std::vector<host::SandboxLaunch> launches_;
  std::uint64_t generation_ = 1;
};

Signal scaled(const Signal& in, float gain) {
  Signal out(in.channels, in.frames);
  for (std::size_t i = 0; i < in.data.size(); ++i) out.data[i] = in.data[i] * gain;
  return out;
}

TEST(Relay, ThreeSandboxesPlayAsOneSlotEachInItsOwnProcess) {
  GainRelay relay({0.5, 2.0, 0.75});
  const Signal in = test_signal(channels, 6000);
  const auto blocks = block_sizes(6000, max_frames);
  const BlockRun run = run_blocks(*relay.slot, in, blocks);
  for (auto status : run.statuses) ASSERT_EQ(status, BlockStatus::processed);
  // × 0.5 × 2 is exact in float32, so the relay's output is the input × 0.75, bit for bit.
  EXPECT_TRUE(bit_equal(run.out, scaled(in, 0.75F))) << "max diff " << max_abs_diff(run.out, scaled(in, 0.75F));
  EXPECT_NE(relay.sandboxes[0]->pid(), relay.sandboxes[1]->pid());
  EXPECT_NE(relay.sandboxes[1]->pid(), relay.sandboxes[2]->pid());
  for (auto& sandbox : relay.sandboxes) EXPECT_EQ(sandbox->stats().blocks, blocks.size());
  EXPECT_EQ(relay.slot->counters().deadline_misses, 0U);
}

TEST(Relay, APipelinedRelayAddsItsBlocksOnceForTheWholeRun) {
  GainRelay relay({0.5, 2.0, 0.75});
  relay.slot->set_pipeline(1, max_frames);
  EXPECT_EQ(relay.slot->latency_frames(), max_frames);  // one block for three sandboxes
  const Signal in = test_signal(channels, 20 * max_frames);
  const std::vector<std::uint32_t> blocks(20, max_frames);
  const BlockRun run = run_blocks(*relay.slot, in, blocks);
  for (std::size_t b = 1; b < blocks.size(); ++b) ASSERT_EQ(run.statuses[b], BlockStatus::processed) << b;
  for (std::uint32_t ch = 0; ch < channels; ++ch)
    for (std::uint32_t i = max_frames; i < in.frames; ++i)
      ASSERT_EQ(run.out.ch(ch)[i], in.ch(ch)[i - max_frames] * 0.75F) << "channel " << ch << " frame " << i;
}

TEST(Relay, ASandboxKilledInTheMiddleCostsOnlyItsOwnBlocks) {
  GainRelay relay({0.5, 2.0, 0.75});
  const Signal in = test_signal(channels, 40 * max_frames, 3);
  const std::vector<std::uint32_t> ten(10, max_frames);
  Signal part(channels, 10 * max_frames);
  const auto run_part = [&](std::uint32_t first_block, std::chrono::milliseconds budget) {
    for (std::uint32_t ch = 0; ch < channels; ++ch)
      std::memcpy(part.ch(ch), in.ch(ch) + first_block * max_frames, 10 * max_frames * sizeof(float));
    return run_blocks(*relay.slot, part, ten, budget);
  };
  const Signal want_first = scaled(part, 0.75F);
  BlockRun before = run_part(0, generous);
  for (auto status : before.statuses) ASSERT_EQ(status, BlockStatus::processed);

  ::kill(relay.sandboxes[1]->pid(), SIGKILL);
  ASSERT_TRUE(relay.sandboxes[1]->wait_exit(host::SandboxInstance::Clock::now() + std::chrono::seconds(5)));
  const BlockRun down = run_part(10, std::chrono::milliseconds(20));
  for (auto status : down.statuses) EXPECT_NE(status, BlockStatus::processed);

  relay.start(1);  // the same edges: sandboxes 0 and 2 never noticed
  // A graph cycle's worth of time: the new sandbox works off the blocks queued for it meanwhile
  // (the blocks above go unprocessed back to back, far faster than a graph runs them).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const BlockRun after = run_part(20, generous);
  // The first blocks after the restart may still be the dead one's (lost: dry); then every
  // block is processed again, by all three, in its place.
  std::size_t first_wet = 0;
  while (first_wet < after.statuses.size() && after.statuses[first_wet] != BlockStatus::processed) ++first_wet;
  ASSERT_LT(first_wet, 3U);
  const Signal want = scaled(part, 0.75F);
  for (std::size_t b = first_wet; b < after.statuses.size(); ++b) {
    ASSERT_EQ(after.statuses[b], BlockStatus::processed) << "block " << b;
    for (std::uint32_t ch = 0; ch < channels; ++ch)
      ASSERT_EQ(std::memcmp(after.out.ch(ch) + b * max_frames, want.ch(ch) + b * max_frames,
                            max_frames * sizeof(float)),
                0)
          << "block " << b;
  }
  EXPECT_FALSE(relay.slot->link_failed());
  EXPECT_GT(relay.sandboxes[0]->stats().blocks, 20U);  // never restarted
}

}  // namespace
}  // namespace sandpipe::sandbox_test
