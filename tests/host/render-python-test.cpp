// `sandpipe render` with Python plugins in real sandbox processes, alone and mixed with native
// ones: the same results as independent implementations, in order, sample-aligned.
#include <gtest/gtest.h>
#include <sndfile.h>
#include <unistd.h>

#include <cmath>
#include <sstream>

#include "host/config/config.h"
#include "host/slot/processor.h"
#include "host/chain/render.h"

namespace sandpipe::host {
namespace {

namespace fs = std::filesystem;

class RenderPython : public ::testing::Test {
 protected:
  static constexpr int rate = 48000;
  static constexpr int channels = 2;

  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "sandpipe-renderpy-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    // Noise and a sweep, different per channel, never silent.
    input_.resize(n_frames_ * channels);
    std::uint32_t noise = 99;
    for (std::size_t i = 0; i < n_frames_; ++i)
      for (std::size_t ch = 0; ch < channels; ++ch) {
        noise = noise * 1664525U + 1013904223U;
        input_[i * channels + ch] = static_cast<float>(0.4 * std::sin(0.001 * static_cast<double>(i * i % 100000) * (ch + 1)) +
                                                       0.2 * ((noise >> 8) / 16777216.0 - 0.5));
      }
    SF_INFO info{};
    info.samplerate = rate;
    info.channels = channels;
    info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
    SNDFILE* f = sf_open((dir_ / "in.wav").c_str(), SFM_WRITE, &info);
    ASSERT_NE(f, nullptr);
    ASSERT_EQ(sf_writef_float(f, input_.data(), frames_), frames_);
    sf_close(f);
  }
  void TearDown() override { fs::remove_all(dir_); }

  /// Renders in.wav through the chain (paths relative to the source tree) and returns out.wav.
  std::vector<float> render(std::string_view config_text, std::uint32_t block = 512) {
    const auto config = parse_config(config_text, "test.conf", SANDPIPE_SOURCE_ROOT);
    std::ostringstream summary;
    RenderOptions options;
    options.block_frames = block;
    const auto report = render_file(config, dir_ / "in.wav", dir_ / "out.wav", options, summary);
    summary_ = summary.str();
    EXPECT_EQ(report.frames, static_cast<std::uint64_t>(frames_));
    SF_INFO info{};
    SNDFILE* f = sf_open((dir_ / "out.wav").c_str(), SFM_READ, &info);
    EXPECT_NE(f, nullptr);
    if (f == nullptr) return {};
    EXPECT_EQ(info.frames, frames_);
    EXPECT_EQ(info.channels, channels);
    EXPECT_EQ(info.samplerate, rate);
    std::vector<float> out(static_cast<std::size_t>(info.frames * info.channels));
    sf_readf_float(f, out.data(), info.frames);
    sf_close(f);
    return out;
  }

  static constexpr sf_count_t frames_ = 20000;
  static constexpr std::size_t n_frames_ = 20000;
  fs::path dir_;
  std::vector<float> input_;
  std::string summary_;
};

TEST_F(RenderPython, MixedNativeAndPythonChainRunsInOrder) {
  // native ×0.5 → Python ×0.5 → native delay of 3 frames: every product is exact in float.
  const auto out = render(R"(plugins = [
      { name = "pre"  path = "builtin:gain" params = { gain = 0.5 } }
      { name = "py"   path = "plugins-py/examples/gain.py" params = { gain = 0.5 } }
      { name = "late" path = "builtin:delay" params = { frames = 3 } }
    ])", 300);
  ASSERT_EQ(out.size(), input_.size());
  for (std::size_t frame = 0; frame < n_frames_; ++frame)
    for (std::size_t ch = 0; ch < channels; ++ch) {
      const float expected = frame < 3 ? 0.0F : input_[(frame - 3) * channels + ch] * 0.25F;
      ASSERT_EQ(out[frame * channels + ch], expected) << "frame " << frame << " ch " << ch;
    }
  EXPECT_NE(summary_.find("py: blocks 67, deadline misses 0, bypassed 0"), std::string::npos) << summary_;
}

TEST_F(RenderPython, ScramblerTwiceWithTheSameKeyRestoresTheInput) {
  // Two sandboxes in a row: the second one's keystream undoes the first one's, bit for bit.
  const auto out = render(R"(plugins = [
      { name = "enc" path = "plugins-py/examples/scrambler.py" params = { key = "s3cret" } }
      { name = "dec" path = "plugins-py/examples/scrambler.py" params = { key = "s3cret" } }
    ])", 256);
  EXPECT_EQ(out, input_);
}

TEST_F(RenderPython, AutoModeRendersLikeSyncFromTheFirstSample) {
  // A stateful plugin must see the file's first sample as its first block: no calibration burst
  // offline, so `auto` (the default) and `sync` give the very same keystream.
  const auto automatic = render(R"(plugins = [ { name = "enc" path = "plugins-py/examples/scrambler.py" params = { key = "k" } } ])");
  const auto sync = render(R"(plugins = [ { name = "enc" path = "plugins-py/examples/scrambler.py" mode = "sync" params = { key = "k" } } ])");
  EXPECT_EQ(automatic, sync);
}

TEST_F(RenderPython, ScramblerChangesEverySampleOnItsOwn) {
  const auto out = render(R"(plugins = [ { name = "enc" path = "plugins-py/examples/scrambler.py" params = { key = "k" } } ])");
  ASSERT_EQ(out.size(), input_.size());
  std::size_t same = 0;
  for (std::size_t i = 0; i < out.size(); ++i) same += out[i] == input_[i] ? 1 : 0;
  EXPECT_LT(same, out.size() / 100) << "the cipher left too many samples untouched";
}

TEST_F(RenderPython, PythonBiquadMatchesTheNativeBiquad) {
  // Two independent implementations of the RBJ cookbook, one in numpy/scipy in a sandbox, one
  // in C++ in-process, over the same block partition.
  const auto py = render(R"(plugins = [
      { name = "eq" path = "plugins-py/examples/biquad.py" params = { shape = "lowpass" freq = 2000 q = 0.9 } } ])", 512);
  const auto native = render(R"(plugins = [
      { name = "eq" path = "builtin:biquad" params = { type = "lowpass" freq = 2000 q = 0.9 } } ])", 512);
  ASSERT_EQ(py.size(), native.size());
  double worst = 0;
  for (std::size_t i = 0; i < py.size(); ++i) worst = std::max(worst, std::abs(static_cast<double>(py[i]) - native[i]));
  EXPECT_LT(worst, 1e-4);
  // …and it really filtered: the output differs from the input.
  double moved = 0;
  for (std::size_t i = 0; i < py.size(); ++i) moved = std::max(moved, std::abs(static_cast<double>(py[i]) - input_[i]));
  EXPECT_GT(moved, 0.05);
}

TEST_F(RenderPython, LegacyPluginRunsUnmodifiedWithStringParams) {
  const auto out = render(R"(plugins = [
      { name = "old" path = "tests/host/fixtures/earlier-api/plugins_py/examples/legacy_gain.py" params = { gain_db = "-6" } } ])");
  ASSERT_EQ(out.size(), input_.size());
  const float g = static_cast<float>(std::pow(10.0, -6.0 / 20.0));
  for (std::size_t i = 0; i < out.size(); ++i) ASSERT_EQ(out[i], input_[i] * g) << i;
}

TEST_F(RenderPython, PluginThatCannotImportFailsWithItsTraceback) {
  try {
    (void)render(R"(plugins = [ { name = "bad" path = "tests/sandbox/fixtures/broken/import_error.py" } ])");
    FAIL() << "expected a PluginError";
  } catch (const PluginError& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("bad"), std::string::npos) << message;
    EXPECT_NE(message.find("Traceback"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace sandpipe::host
