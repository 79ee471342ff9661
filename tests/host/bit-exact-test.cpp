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

#include "host/chain/chain.h"
#include "host/config/config.h"
#include "host/python/sandbox-client.h"

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

// ---- the encrypted-voice cipher (plugins-py/examples/voice_cipher.py) ----------------------

/// Planar 15-bit audio (multiples of 2^-14 in [-1, 1), what the cipher carries exactly), with
/// FAULT_MARKER (0.875) as the first sample of each block in `marked`.
std::vector<std::uint32_t> voice(const std::vector<std::uint32_t>& marked = {}) {
  std::vector<std::uint32_t> x(std::size_t{channels} * block * blocks);
  std::uint32_t s = 7;
  for (auto& v : x) {
    s = s * 1664525U + 1013904223U;
    v = std::bit_cast<std::uint32_t>(static_cast<float>(static_cast<int>(s >> 18) - 8192) / 16384.0F);
  }
  for (const std::uint32_t b : marked) x[std::size_t{b} * block] = std::bit_cast<std::uint32_t>(0.875F);
  return x;
}

std::string voice_chain(const std::string& tx_params) {
  return "channels = 2\nplugins = [\n"
         "  { name = \"tx\" path = \"tests/host/fixtures/voice_tx.py\" mode = \"sync\" on-failure = \"mute\" "
         "bit-exact = true params = { key = \"k\" " + tx_params + " } }\n"
         "  { name = \"rx\" path = \"tests/host/fixtures/voice_rx.py\" mode = \"sync\" on-failure = \"mute\" "
         "bit-exact = true params = { key = \"k\" } }\n]\n";
}

TEST(VoiceCipher, ScramblerThenDescramblerGivesTheInputBitForBit) {
  const auto in = voice();
  EXPECT_EQ(differing(in, run_chain(voice_chain(""), in)), 0U);
}

TEST(VoiceCipher, CiphertextIsNeverPlaintextNorAFragileFloat) {
  const auto in = voice();
  const auto out = run_chain(
      "channels = 2\nplugins = [ { name = \"tx\" path = \"tests/host/fixtures/voice_tx.py\" mode = \"sync\" "
      "bit-exact = true params = { key = \"k\" } } ]\n",
      in);
  std::size_t same = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const float c = std::bit_cast<float>(out[i]);
    same += out[i] == in[i] ? 1 : 0;
    // An odd multiple of 2^-15 inside (-1, 1): normal, non-zero, exact as a 16-bit integer.
    ASSERT_TRUE(c > -1.0F && c < 1.0F && c != 0.0F) << i << ": " << c;
    const float n = c * 32768.0F;
    ASSERT_EQ(n, static_cast<float>(static_cast<int>(n))) << i;
    ASSERT_NE(static_cast<int>(n) % 2, 0) << i;
  }
  EXPECT_LT(same, out.size() / 1000) << "ciphertext equal to the plaintext";
}

/// A TX failure of each kind: its block reaches RX as zeros and comes out as silence (never the
/// plaintext); RX is back in step two samples into the next block.
void expect_silent_gap(const std::string& fault) {
  const auto in = voice({4});
  const auto out = run_chain(voice_chain("fault = \"" + fault + "\""), in);
  const std::size_t line = std::size_t{block} * blocks;
  for (std::uint32_t ch = 0; ch < channels; ++ch) {
    for (std::uint32_t b = 0; b < blocks; ++b) {
      for (std::uint32_t f = 0; f < block; ++f) {
        const std::size_t i = ch * line + std::size_t{b} * block + f;
        if (b == 4) {
          ASSERT_EQ(out[i], 0U) << fault << ": ch " << ch << " block 4 frame " << f;
        } else if (!(b == 5 && f < 2)) {
          ASSERT_EQ(out[i], in[i]) << fault << ": ch " << ch << " block " << b << " frame " << f;
        }
      }
    }
  }
}

TEST(VoiceCipher, ExceptionInTheScramblerIsSilenceAtTheOtherEnd) { expect_silent_gap("raise"); }
TEST(VoiceCipher, FalseFromTheScramblerIsSilenceAtTheOtherEnd) { expect_silent_gap("false"); }

TEST(VoiceCipher, TheEarlierApiExamplesRoundTripAndFailClosedByDefault) {
  // plugins-py/examples/voice_scrambler.py and voice_descrambler.py as the users' setup runs
  // them (docs/examples/tx.conf, rx.conf), but without on-failure: the earlier API's default.
  const std::string conf =
      "channels = 2\nplugins = [\n"
      "  { name = \"tx\" path = \"plugins-py/examples/voice_scrambler.py\" mode = \"sync\" bit-exact = true }\n"
      "  { name = \"rx\" path = \"plugins-py/examples/voice_descrambler.py\" mode = \"sync\" bit-exact = true }\n]\n";
  const auto in = voice();
  EXPECT_EQ(differing(in, run_chain(conf, in)), 0U);
  ChainOptions options;
  options.offline = true;
  options.calibration_blocks = 0;
  const Chain chain(parse_config(conf, "voice.conf", SANDPIPE_SOURCE_ROOT), 48000.0, block, options);
  for (const auto& slot : chain.slots()) {
    const auto* sandbox = dynamic_cast<const PythonSlot*>(slot.get());
    ASSERT_NE(sandbox, nullptr);
    EXPECT_EQ(sandbox->info().api, "legacy");
    EXPECT_EQ(sandbox->on_failure(), OnFailure::mute) << slot->name();
  }
  for (const auto& st : chain.supervisor().status()) EXPECT_EQ(st.on_failure, OnFailure::mute) << st.name;
}

}  // namespace
}  // namespace sandpipe::host
