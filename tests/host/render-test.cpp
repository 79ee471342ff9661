// Offline render through the real chain and the real built-in plugins: exact samples, exact
// length, latency compensated for every block size.
#include "host/chain/render.h"

#include <gtest/gtest.h>
#include <sndfile.h>
#include <unistd.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "host/chain/chain.h"
#include "host/config/config.h"

namespace sandpipe::host {
namespace {

namespace fs = std::filesystem;

struct Audio {
  int rate = 48000;
  int channels = 2;
  int format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  std::vector<float> samples;  ///< interleaved
  [[nodiscard]] std::size_t frames() const { return samples.size() / static_cast<std::size_t>(channels); }
};

void write_audio(const fs::path& file, const Audio& audio) {
  SF_INFO info{};
  info.samplerate = audio.rate;
  info.channels = audio.channels;
  info.format = audio.format;
  SNDFILE* f = sf_open(file.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  ASSERT_EQ(sf_writef_float(f, audio.samples.data(), static_cast<sf_count_t>(audio.frames())),
            static_cast<sf_count_t>(audio.frames()));
  sf_close(f);
}

Audio read_audio(const fs::path& file) {
  SF_INFO info{};
  SNDFILE* f = sf_open(file.c_str(), SFM_READ, &info);
  EXPECT_NE(f, nullptr) << sf_strerror(nullptr);
  Audio audio;
  if (f == nullptr) return audio;
  audio.rate = info.samplerate;
  audio.channels = info.channels;
  audio.format = info.format;
  audio.samples.resize(static_cast<std::size_t>(info.frames * info.channels));
  EXPECT_EQ(sf_readf_float(f, audio.samples.data(), info.frames), info.frames);
  sf_close(f);
  return audio;
}

/// A deterministic, non-repeating test signal: a sweep plus a little noise, different per channel.
Audio test_signal(std::size_t frames, int channels, int rate = 48000) {
  Audio audio;
  audio.rate = rate;
  audio.channels = channels;
  audio.samples.resize(frames * static_cast<std::size_t>(channels));
  std::uint32_t noise = 12345;
  for (std::size_t i = 0; i < frames; ++i) {
    for (int ch = 0; ch < channels; ++ch) {
      noise = noise * 1664525U + 1013904223U;
      const double t = static_cast<double>(i) / rate;
      const double sweep = std::sin(2 * M_PI * (100 + 2000 * t) * t * (ch + 1));
      audio.samples[i * static_cast<std::size_t>(channels) + static_cast<std::size_t>(ch)] =
          static_cast<float>(0.5 * sweep + 0.1 * ((noise >> 8) / 16777216.0 - 0.5));
    }
  }
  return audio;
}

class Render : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "sandpipe-render-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Renders `input` through the chain given as config text; returns the output file's audio.
  Audio render(std::string_view config_text, const Audio& input, std::uint32_t block = 512) {
    write_audio(dir_ / "in.wav", input);
    const auto config = parse_config(config_text, "test.conf", SANDPIPE_TEST_FIXTURE_DIR);
    std::ostringstream summary;
    RenderOptions options;
    options.block_frames = block;
    last_report_ = render_file(config, dir_ / "in.wav", dir_ / "out.wav", options, summary);
    last_summary_ = summary.str();
    return read_audio(dir_ / "out.wav");
  }

  fs::path dir_;
  RenderReport last_report_;
  std::string last_summary_;
};

TEST_F(Render, GainHalfHalvesEverySampleExactly) {
  const auto input = test_signal(48000 + 123, 2);
  const auto output = render(R"(plugins = [ { name = "trim" path = "builtin:gain" params = { gain = 0.5 } } ])", input);
  ASSERT_EQ(output.samples.size(), input.samples.size());
  EXPECT_EQ(output.rate, 48000);
  EXPECT_EQ(output.channels, 2);
  EXPECT_EQ(output.format, SF_FORMAT_WAV | SF_FORMAT_FLOAT);
  for (std::size_t i = 0; i < input.samples.size(); ++i)
    ASSERT_EQ(output.samples[i], input.samples[i] * 0.5F) << "sample " << i;
  EXPECT_NE(last_summary_.find("trim: blocks 94"), std::string::npos) << last_summary_;
}

TEST_F(Render, EmptyChainIsTheIdentity) {
  const auto input = test_signal(1000, 1, 44100);
  const auto output = render("", input, 64);
  EXPECT_EQ(output.rate, 44100);
  EXPECT_EQ(output.channels, 1);
  EXPECT_EQ(output.samples, input.samples);
}

TEST_F(Render, ReportedLatencyIsCompensatedForEveryBlockSize) {
  const auto input = test_signal(10007, 2);
  for (const std::uint32_t block : {1U, 7U, 64U, 512U, 4096U, 8192U}) {
    SCOPED_TRACE("block " + std::to_string(block));
    const auto output = render(R"(plugins = [
        { name = "la1" path = "lookahead.so" params = { frames = 100 } }
        { name = "la2" path = "lookahead.so" params = { frames = 37 } }
      ])", input, block);
    EXPECT_EQ(last_report_.latency_frames, 137U);
    ASSERT_EQ(output.samples.size(), input.samples.size());
    EXPECT_EQ(output.samples, input.samples);
  }
}

TEST_F(Render, LatencyLongerThanTheFileStillGivesTheFileBack) {
  const auto input = test_signal(50, 2);
  const auto output =
      render(R"(plugins = [ { name = "la" path = "lookahead.so" params = { frames = 3000 } } ])", input, 512);
  EXPECT_EQ(output.samples, input.samples);
}

TEST_F(Render, ChainOfBuiltinsMatchesTheProductOfItsParts) {
  // gain 0.5 then a delay of 10 frames (a delay *effect*: it reports no latency, so it shows).
  const auto input = test_signal(3000, 2);
  const auto output = render(R"(plugins = [
      { name = "g" path = "builtin:gain" params = { gain = 0.5 } }
      { name = "d" path = "builtin:delay" params = { frames = 10 } }
    ])", input, 128);
  ASSERT_EQ(output.samples.size(), input.samples.size());
  for (std::size_t frame = 0; frame < input.frames(); ++frame)
    for (std::size_t ch = 0; ch < 2; ++ch) {
      const float expected = frame < 10 ? 0.0F : input.samples[(frame - 10) * 2 + ch] * 0.5F;
      ASSERT_EQ(output.samples[frame * 2 + ch], expected) << "frame " << frame;
    }
}

TEST_F(Render, ReadsOtherFormatsAndWritesFloat) {
  auto input = test_signal(2000, 2);
  input.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  write_audio(dir_ / "in16.wav", input);
  const auto pcm = read_audio(dir_ / "in16.wav");  // what 16-bit quantisation made of it
  const auto config = parse_config("", "test.conf", dir_);
  std::ostringstream summary;
  (void)render_file(config, dir_ / "in16.wav", dir_ / "out.wav", RenderOptions{}, summary);
  const auto output = read_audio(dir_ / "out.wav");
  EXPECT_EQ(output.format, SF_FORMAT_WAV | SF_FORMAT_FLOAT);
  EXPECT_EQ(output.samples, pcm.samples);
}

TEST_F(Render, UnreadableInputNamesTheFile) {
  std::ofstream(dir_ / "junk.wav") << "this is not audio";
  const auto config = parse_config("", "test.conf", dir_);
  std::ostringstream summary;
  try {
    (void)render_file(config, dir_ / "junk.wav", dir_ / "out.wav", RenderOptions{}, summary);
    FAIL() << "expected a RenderError";
  } catch (const RenderError& e) {
    EXPECT_NE(std::string(e.what()).find("junk.wav"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "out.wav"));
}

TEST_F(Render, BlockSizeOutOfRangeIsRefused) {
  write_audio(dir_ / "in.wav", test_signal(10, 1));
  const auto config = parse_config("", "test.conf", dir_);
  std::ostringstream summary;
  RenderOptions options;
  options.block_frames = 9000;
  EXPECT_THROW((void)render_file(config, dir_ / "in.wav", dir_ / "out.wav", options, summary), RenderError);
}

TEST(ChainBuild, UnknownBuiltinParamIsAPluginErrorNamingIt) {
  const auto config =
      parse_config(R"(plugins = [ { name = "g" path = "builtin:gain" params = { gian = 1 } } ])", "t.conf", ".");
  try {
    Chain chain(config, 48000, 512);
    FAIL() << "expected a PluginError";
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("gian"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("\"g\""), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sandpipe::host
