// builtin:delay through the host loader.
#include <gtest/gtest.h>

#include "native-test-util.h"

namespace sandpipe::test {
namespace {

using host::ParamSetting;

/// Checks that `output` is `input` delayed by exactly `delay` frames, silence before.
void expect_delayed(const Signal& input, const Signal& output, std::size_t delay) {
  for (std::size_t c = 0; c < input.size(); ++c) {
    for (std::size_t n = 0; n < input[c].size(); ++n) {
      const float expected = n < delay ? 0.0f : input[c][n - delay];
      ASSERT_EQ(output[c][n], expected) << "delay " << delay << " channel " << c << " frame " << n;
    }
  }
}

TEST(Delay, ShiftsByExactFramesAcrossVaryingBlocks) {
  const Signal input = ramp_signal(2, 20000);
  const std::vector<std::uint32_t> blocks = {1, 7, 64, 3, 1024, 256, 5, 1000, 2};
  for (double frames : {0.0, 1.0, 2.0, 63.0, 1024.0, 1500.0, 4099.0}) {
    auto delay = make(builtin_spec("d", "delay", {{"frames", frames}}));
    expect_delayed(input, run_blocks(*delay, input, blocks).output, static_cast<std::size_t>(frames));
  }
}

TEST(Delay, MillisecondsRoundToNearestFrame) {
  const Signal input = ramp_signal(1, 4000);
  auto ten_ms = make(builtin_spec("d", "delay", {{"ms", 10.0}}), 1);
  expect_delayed(input, run_blocks(*ten_ms, input, {100}).output, 480);
  auto fraction = make(builtin_spec("d", "delay", {{"ms", 0.03}}), 1);  // 1.44 frames at 48 kHz
  expect_delayed(input, run_blocks(*fraction, input, {100}).output, 1);
}

TEST(Delay, FramesAndMillisecondsAdd) {
  const Signal input = ramp_signal(2, 3000);
  auto delay = make(builtin_spec("d", "delay", {{"ms", 1.0}, {"frames", 2.0}}));
  expect_delayed(input, run_blocks(*delay, input, {17, 512}).output, 48 + 2);
}

TEST(Delay, HoldsItsLongestDelay) {
  // 2 s at 48 kHz plus 96000 frames: the documented maximum of the line allocated in instantiate.
  const std::size_t longest = 96000 + 96000;
  auto delay = make(builtin_spec("d", "delay", {{"ms", 2000.0}, {"frames", 96000.0}}), 1);
  const Signal input = ramp_signal(1, longest + 3000);
  expect_delayed(input, run_blocks(*delay, input, {1024, 999}).output, longest);
}

TEST(Delay, ReportsNoLatencyBecauseTheDelayIsTheEffect) {
  auto delay = make(builtin_spec("d", "delay", {{"ms", 250.0}}));
  EXPECT_EQ(delay->latency_frames(), 0u);
}

TEST(Delay, InPlaceProcessingMatchesSeparateBuffers) {
  const Signal input = ramp_signal(1, 2000);
  auto delay = make(builtin_spec("d", "delay", {{"frames", 37.0}}), 1, test_rate, 100);
  const auto separate = run_blocks(*delay, input, {100}).output[0];
  EXPECT_EQ(run_in_place("delay.so", 1, 37.0f, input[0], 100), separate);
}

}  // namespace
}  // namespace sandpipe::test
