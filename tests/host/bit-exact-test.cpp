// Bit-exact slots (`bit-exact = true`, docs/encrypted-voice.md): a chain of real sandboxes and a
// built-in driven block by block (Chain::process_rt, as the node and render do), its output
// compared bit for bit with what went in. The scrambler (plugins-py/examples/scrambler.py) XORs
// sign and mantissa bits with a keystream and keeps the exponent, so NaN, Inf and denormal
// patterns stay such patterns through it, and a second one with the same key restores the input.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "host/chain.h"
#include "host/config.h"

namespace sandpipe::host {
namespace {

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t block = 256;
constexpr std::uint32_t blocks = 12;

/// Planar input, `blocks` blocks per channel: random bit patterns, every block full of NaN
/// (quiet and signalling), ±Inf, denormals, ±0 and normal numbers.
std::vector<std::uint32_t> hostile_patterns() {
  std::vector<std::uint32_t> x(std::size_t{channels} * block * blocks);
  std::uint64_t s = 0x9E3779B97F4A7C15ULL;
  for (std::size_t i = 0; i < x.size(); ++i) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    const auto r = static_cast<std::uint32_t>(s >> 11);
    switch (i % 8) {
      case 0: x[i] = 0x7FC00000U | (r & 0x003FFFFFU) | (r & 0x80000000U); break;  // quiet NaN
      case 1: x[i] = 0x7F800001U | (r & 0x003FFFFFU); break;                       // signalling NaN
      case 2: x[i] = (r & 0x80000000U) | 0x7F800000U; break;                       // ±Inf
      case 3: x[i] = (r & 0x807FFFFFU) | 1U; break;                                // denormal
      case 4: x[i] = r & 0x80000000U; break;                                       // ±0
      default: x[i] = r; break;                                                    // anything
    }
  }
  return x;
}

/// Runs `conf`'s chain over `in` (planar bit patterns) block by block; the output's bits.
std::vector<std::uint32_t> run_chain(const std::string& conf, const std::vector<std::uint32_t>& in,
                                     SlotCounters* first_slot = nullptr) {
  const ChainConfig config = parse_config(conf, "bit-exact.conf", SANDPIPE_SOURCE_ROOT);
  ChainOptions options;
  options.offline = true;
  options.calibration_blocks = 0;
  options.crossfade_frames = 64;  // the usual ramps: a bit-exact slot must not use them
  Chain chain(config, 48000.0, block, options);
  std::vector<float> x(in.size()), y(in.size());
  std::memcpy(x.data(), in.data(), in.size() * sizeof(float));
  const std::size_t line = std::size_t{block} * blocks;
  for (std::uint32_t b = 0; b < blocks; ++b) {
    const float* src[channels];
    float* dst[channels];
    for (std::uint32_t ch = 0; ch < channels; ++ch) {
      src[ch] = x.data() + ch * line + std::size_t{b} * block;
      dst[ch] = y.data() + ch * line + std::size_t{b} * block;
    }
    chain.process_rt(src, dst, block, UINT64_MAX / 2);
  }
  if (first_slot != nullptr) *first_slot = chain.slots().front()->counters();
  std::vector<std::uint32_t> out(y.size());
  std::memcpy(out.data(), y.data(), y.size() * sizeof(float));
  return out;
}

std::string scrambler_chain(const std::string& keys) {
  return "channels = 2\nplugins = [\n"
         "  { name = \"tx\" path = \"plugins-py/examples/scrambler.py\" mode = \"sync\" " + keys +
         " params = { key = \"k\" } }\n"
         "  { name = \"unity\" path = \"builtin:gain\" " + keys + " params = { gain = 1.0 } }\n"
         "  { name = \"rx\" path = \"plugins-py/examples/scrambler.py\" mode = \"sync\" " + keys +
         " params = { key = \"k\" } }\n]\n";
}

std::size_t differing(const std::vector<std::uint32_t>& a, const std::vector<std::uint32_t>& b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.size(); ++i) n += a[i] != b[i] ? 1 : 0;
  return n;
}

TEST(BitExact, NanInfAndDenormalPatternsPassTwoSlotsAndAUnityGain) {
  const auto in = hostile_patterns();
  SlotCounters tx;
  const auto out = run_chain(scrambler_chain("bit-exact = true"), in, &tx);
  EXPECT_EQ(differing(in, out), 0U) << "of " << in.size();
  EXPECT_EQ(tx.sanitized_blocks, 0U);
  EXPECT_EQ(tx.bypassed_blocks, 0U);
}

TEST(BitExact, WithoutItTheGuardTakesThePatternsForFailures) {
  // The contrast (the test above can fail): one scrambler alone. Bit-exact, its output is the
  // ciphertext (the input nowhere but by chance); without, every block holds NaN, so the guard
  // falls back to the dry input (bypass) for every block.
  const auto in = hostile_patterns();
  const std::string one =
      "channels = 2\nplugins = [ { name = \"tx\" path = \"plugins-py/examples/scrambler.py\" mode = \"sync\" ";
  SlotCounters guarded;
  EXPECT_EQ(differing(in, run_chain(one + "params = { key = \"k\" } } ]\n", in, &guarded)), 0U);
  EXPECT_EQ(guarded.sanitized_blocks, blocks);
  EXPECT_GT(differing(in, run_chain(one + "bit-exact = true params = { key = \"k\" } } ]\n", in)), in.size() * 3 / 4);
}

TEST(BitExact, SandboxKeepsDenormalsForABitExactSlotOnly) {
  // times_one.py multiplies by 1.0: denormals survive only without denormals-are-zero.
  std::vector<std::uint32_t> in(std::size_t{channels} * block * blocks);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = (i % 2 == 0 ? 0x00000001U : 0x80400000U) + (i & 0xFFFFU);
  const auto conf = [](const std::string& keys) {
    return "channels = 2\nplugins = [ { name = \"one\" path = \"tests/host/fixtures/times_one.py\" mode = "
           "\"sync\" " + keys + " } ]\n";
  };
  EXPECT_EQ(differing(in, run_chain(conf("bit-exact = true"), in)), 0U);
  EXPECT_EQ(differing(in, run_chain(conf(""), in)), in.size()) << "a default sandbox flushes denormals";
}

}  // namespace
}  // namespace sandpipe::host
