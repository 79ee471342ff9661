// builtin:gain through the host loader.
#include <gtest/gtest.h>

#include <cmath>

#include "native-test-util.h"

namespace sandpipe::test {
namespace {

using host::ParamSetting;

Signal noise_signal(std::size_t channels, std::size_t length) {
  Signal s(channels, std::vector<float>(length));
  std::uint32_t state = 12345;
  for (auto& channel : s) {
    for (float& x : channel) {
      state = state * 1664525u + 1013904223u;  // LCG: deterministic, every bit pattern of interest
      x = (static_cast<float>(state >> 8) / 8388608.0f - 1.0f) * 1.5f;
    }
  }
  return s;
}

TEST(Gain, HalfHalvesEverySampleBitExactly) {
  auto gain = make(builtin_spec("trim", "gain", {{"gain", 0.5}}));
  const Signal input = noise_signal(2, 5000);
  const auto result = run_blocks(*gain, input, {1, 64, 1024, 333});
  for (std::size_t c = 0; c < input.size(); ++c) {
    for (std::size_t n = 0; n < input[c].size(); ++n) {
      ASSERT_EQ(result.output[c][n], input[c][n] * 0.5f) << "channel " << c << " frame " << n;
    }
  }
  for (auto status : result.statuses) EXPECT_EQ(status, host::BlockStatus::processed);
}

TEST(Gain, DefaultIsUnity) {
  auto gain = make(builtin_spec("g", "gain"));
  const Signal input = noise_signal(2, 512);
  EXPECT_EQ(run_blocks(*gain, input, {128}).output, input);
}

TEST(Gain, MuteSilencesWhateverTheGain) {
  auto gain = make(builtin_spec("g", "gain", {{"gain", 4.0}, {"mute", true}}));
  const auto result = run_blocks(*gain, noise_signal(2, 700), {256});
  for (const auto& channel : result.output) {
    for (float x : channel) ASSERT_EQ(x, 0.0f);
  }
}

TEST(Gain, AcceptsTheEndsOfItsRange) {
  auto silent = make(builtin_spec("g", "gain", {{"gain", 0.0}}), 1);
  auto loud = make(builtin_spec("g", "gain", {{"gain", 16.0}}), 1);
  const Signal input = noise_signal(1, 64);
  const auto quiet = run_blocks(*silent, input, {64}).output;
  const auto boosted = run_blocks(*loud, input, {64}).output;
  for (std::size_t n = 0; n < 64; ++n) {
    EXPECT_EQ(quiet[0][n], 0.0f);
    EXPECT_EQ(boosted[0][n], input[0][n] * 16.0f);
  }
}

TEST(Gain, ChangeWhileRunningRampsOverOneBlockThenHolds) {
  // Through the raw ABI: the host only sets parameters before the first block today.
  RawBuiltin plugin("gain.so");
  const auto& desc = plugin.desc();
  sandpipe_instance* instance = desc.instantiate(&desc, test_rate, 1, 4);
  std::vector<float> ones(4, 1.0f), out(4);
  const float* in_ptr = ones.data();
  float* out_ptr = out.data();
  desc.set_param(instance, 0, 0.5f);  // before the first block: applies at once
  desc.process(instance, &in_ptr, &out_ptr, 4);
  EXPECT_EQ(out, std::vector<float>(4, 0.5f));
  desc.set_param(instance, 0, 1.5f);  // while running: a linear ramp that lands on the block's end
  desc.process(instance, &in_ptr, &out_ptr, 4);
  EXPECT_EQ(out, (std::vector<float>{0.75f, 1.0f, 1.25f, 1.5f}));
  desc.process(instance, &in_ptr, &out_ptr, 4);
  EXPECT_EQ(out, std::vector<float>(4, 1.5f));
  desc.set_param(instance, 1, 1.0f);  // mute ramps down the same way
  desc.process(instance, &in_ptr, &out_ptr, 4);
  EXPECT_EQ(out, (std::vector<float>{1.125f, 0.75f, 0.375f, 0.0f}));
  desc.destroy(instance);
}

TEST(Gain, ReportsNoLatency) { EXPECT_EQ(make(builtin_spec("g", "gain"))->latency_frames(), 0u); }

}  // namespace
}  // namespace sandpipe::test
