// Source and sink plugins offline: a chain that starts with a Python source (earlier API
// `read_audio`, SDK `generate`) or ends with a Python sink (`write_audio`, `consume`), rendered
// by `sandpipe render` in real sandboxes. Every comparison is exact: the fixtures' signals are
// counters whose values float32 holds exactly.
#include <gtest/gtest.h>
#include <sndfile.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "host/chain/chain.h"
#include "host/config/config.h"
#include "host/slot/processor.h"
#include "host/chain/render.h"

namespace sandpipe::host {
namespace {

namespace fs = std::filesystem;

const std::string legacy_dir =
    std::string(SANDPIPE_SOURCE_ROOT) + "/tests/host/fixtures/earlier-api/plugins_py/";
const std::string sdk_dir = std::string(SANDPIPE_SOURCE_ROOT) + "/tests/sources-sinks/fixtures/sdk/";

/// The counter the fixtures produce: frame n, channel c (interleaved).
float counter(std::uint64_t n, std::uint32_t c, std::uint64_t period) {
  return static_cast<float>(c + 1) * static_cast<float>((n % period) + 1) / 4096.0F;
}

class SourcesSinks : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "sandpipe-srcsink-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  /// Writes a float WAV of `frames` frames: noise-like but exact values k/1024.
  fs::path write_input(std::uint32_t channels, std::uint32_t rate, sf_count_t frames) {
    input_.assign(static_cast<std::size_t>(frames) * channels, 0.0F);
    std::uint32_t x = 7;
    for (float& v : input_) {
      x = x * 1664525U + 1013904223U;
      v = static_cast<float>(static_cast<int>(x >> 22) - 512) / 1024.0F;
    }
    SF_INFO info{};
    info.samplerate = static_cast<int>(rate);
    info.channels = static_cast<int>(channels);
    info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
    const fs::path p = dir_ / "in.wav";
    SNDFILE* f = sf_open(p.c_str(), SFM_WRITE, &info);
    EXPECT_NE(f, nullptr);
    if (f != nullptr) {
      EXPECT_EQ(sf_writef_float(f, input_.data(), frames), frames);
      sf_close(f);
    }
    return p;
  }

  /// Renders `config_text` (an empty `input`: --frames/--rate from `options`) and returns out.wav.
  std::vector<float> render(std::string_view config_text, const fs::path& input, RenderOptions options = {}) {
    const auto config = parse_config(config_text, "test.conf", SANDPIPE_SOURCE_ROOT);
    std::ostringstream summary;
    report_ = render_file(config, input, dir_ / "out.wav", options, summary);
    summary_ = summary.str();
    SF_INFO info{};
    SNDFILE* f = sf_open((dir_ / "out.wav").c_str(), SFM_READ, &info);
    EXPECT_NE(f, nullptr);
    if (f == nullptr) return {};
    out_info_ = info;
    std::vector<float> out(static_cast<std::size_t>(info.frames * info.channels));
    sf_readf_float(f, out.data(), info.frames);
    sf_close(f);
    return out;
  }

  /// What record_sink.py wrote: raw little-endian float32, interleaved.
  [[nodiscard]] std::vector<float> captured(const fs::path& p) const {
    std::ifstream in(p, std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<float> out(bytes.size() / sizeof(float));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
    return out;
  }

  [[nodiscard]] std::string capture_plugin(const fs::path& file, bool allow_writes = true) const {
    return R"({ name = "rec" path = ")" + legacy_dir + R"(record_sink.py")" +
           (allow_writes ? " allow-writes = \"" + file.parent_path().string() + "\"" : "") + R"( params = { path = ")" + file.string() +
           R"(" } })";
  }

  fs::path dir_;
  std::vector<float> input_;
  RenderReport report_;
  SF_INFO out_info_{};
  std::string summary_;
};

TEST_F(SourcesSinks, LegacySourceRendersItsCounterWithoutAnInputFile) {
  RenderOptions options;
  options.frames = 5000;
  options.sample_rate = 44100;
  const auto out = render(R"(channels = 2
      plugins = [ { name = "tone" path = ")" +
                              legacy_dir + R"(counter_source.py" params = { period = 300 } } ])",
                          {}, options);
  ASSERT_EQ(out_info_.frames, 5000);
  EXPECT_EQ(out_info_.samplerate, 44100);
  EXPECT_EQ(out_info_.channels, 2);
  for (std::uint64_t n = 0; n < 5000; ++n)
    for (std::uint32_t c = 0; c < 2; ++c)
      ASSERT_EQ(out[n * 2 + c], counter(n, c, 300)) << "frame " << n << " ch " << c;
  EXPECT_EQ(report_.slots.at(0).counters.bypassed_blocks, 0U) << summary_;
}

TEST_F(SourcesSinks, SourceChainIgnoresTheInputSamplesButTakesItsShape) {
  // IN.wav gives length, rate and channels; the chain after the source sees only the source.
  const auto in = write_input(3, 32000, 1234);
  const auto out = render(R"(plugins = [
      { name = "tone" path = ")" +
                              legacy_dir + R"(counter_source.py" params = { period = 1000 } }
      { name = "trim" path = "builtin:gain" params = { gain = 0.5 } } ])",
                          in);
  ASSERT_EQ(out_info_.frames, 1234);
  EXPECT_EQ(out_info_.samplerate, 32000);
  ASSERT_EQ(out_info_.channels, 3);
  for (std::uint64_t n = 0; n < 1234; ++n)
    for (std::uint32_t c = 0; c < 3; ++c) ASSERT_EQ(out[n * 3 + c], 0.5F * counter(n, c, 1000)) << n;
}

TEST_F(SourcesSinks, SdkSourceFillsEveryBlockSizeAndFalseIsSilence) {
  RenderOptions options;
  options.frames = 3000;
  options.block_frames = 100;  // blocks 3, 6, 9... return False: silence
  const auto out = render(R"(channels = 1
      plugins = [ { name = "ramp" path = ")" +
                              sdk_dir + R"(ramp_source.py" params = { period = 64 gap = 3 } } ])",
                          {}, options);
  ASSERT_EQ(out.size(), 3000U);
  for (std::uint64_t n = 0; n < 3000; ++n) {
    const bool silent = ((n / 100) + 1) % 3 == 0;
    ASSERT_EQ(out[n], silent ? 0.0F : counter(n, 0, 64)) << n;
  }
}

TEST_F(SourcesSinks, LegacySinkReceivesExactlyWhatOutWavHolds) {
  // gain 0.5 → record_sink: the sink's file and OUT.wav are both the halved input.
  const auto in = write_input(2, 48000, 7000);
  const fs::path cap = dir_ / "cap.f32";
  const auto out = render(R"(plugins = [ { name = "trim" path = "builtin:gain" params = { gain = 0.5 } }
      )" + capture_plugin(cap) +
                              " ]",
                          in);
  ASSERT_EQ(out.size(), input_.size());
  for (std::size_t i = 0; i < input_.size(); ++i) ASSERT_EQ(out[i], 0.5F * input_[i]) << i;
  EXPECT_EQ(captured(cap), out);
  EXPECT_NE(summary_.find("rec: blocks"), std::string::npos) << summary_;
  EXPECT_EQ(report_.slots.at(1).counters.bypassed_blocks, 0U) << summary_;
}

TEST_F(SourcesSinks, SourceToSinkChainRecordsTheSourceThroughTheMiddle) {
  RenderOptions options;
  options.frames = 4096;
  options.block_frames = 333;
  const fs::path cap = dir_ / "cap.f32";
  const auto out = render(R"(channels = 2 plugins = [
      { name = "tone" path = ")" +
                              legacy_dir + R"(counter_source.py" params = { period = 777 } }
      { name = "trim" path = "builtin:gain" params = { gain = 0.25 } }
      )" + capture_plugin(cap) +
                              " ]",
                          {}, options);
  const auto got = captured(cap);
  ASSERT_EQ(got.size(), 4096U * 2);
  for (std::uint64_t n = 0; n < 4096; ++n)
    for (std::uint32_t c = 0; c < 2; ++c) ASSERT_EQ(got[n * 2 + c], 0.25F * counter(n, c, 777)) << n;
  EXPECT_EQ(out, got);
}

TEST_F(SourcesSinks, SdkSinkSeesTheBlockAndCannotChangeIt) {
  // The SDK sink overwrites its block with 123: downstream (OUT.wav) is unchanged.
  const auto in = write_input(2, 48000, 2000);
  const fs::path npy = dir_ / "got.npy";
  const auto out =
      render(R"(plugins = [ { name = "sum" path = ")" + sdk_dir +
                 R"(sum_sink.py" allow-writes = ")" + dir_.string() + R"(" params = { path = ")" + npy.string() + R"(" } } ])",
             in);
  EXPECT_EQ(out, input_);
  // The .npy holds (2, 2000) float32 after a header; its data is planar.
  std::ifstream f(npy, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  ASSERT_GE(bytes.size(), 2000U * 2 * sizeof(float));
  std::vector<float> planar(2000 * 2);
  std::memcpy(planar.data(), bytes.data() + bytes.size() - planar.size() * sizeof(float),
              planar.size() * sizeof(float));
  for (std::size_t n = 0; n < 2000; ++n)
    for (std::size_t c = 0; c < 2; ++c) ASSERT_EQ(planar[c * 2000 + n], input_[n * 2 + c]) << n;
}

TEST_F(SourcesSinks, SourceNotFirstIsAPluginErrorNamingIt) {
  const auto in = write_input(2, 48000, 100);
  try {
    render(R"(plugins = [ { name = "trim" path = "builtin:gain" }
        { name = "late-tone" path = ")" +
               legacy_dir + R"(counter_source.py" } ])",
           in);
    FAIL() << "expected a PluginError";
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("\"late-tone\" is a source"), std::string::npos) << e.what();
  }
}

TEST_F(SourcesSinks, SinkNotLastIsAPluginErrorNamingIt) {
  const auto in = write_input(2, 48000, 100);
  try {
    render(
        R"(plugins = [ )" + capture_plugin(dir_ / "x.f32") + R"( { name = "trim" path = "builtin:gain" } ])",
        in);
    FAIL() << "expected a PluginError";
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("\"rec\" is a sink"), std::string::npos) << e.what();
  }
}

/// Offline chain options without a calibration burst.
ChainOptions offline_options() {
  ChainOptions options;
  options.offline = true;
  options.calibration_blocks = 0;
  return options;
}

TEST_F(SourcesSinks, ChainShapeIsExposed) {
  const auto source =
      parse_config(R"(plugins = [ { name = "t" path = ")" + legacy_dir + R"(counter_source.py" } ])",
                   "t.conf", SANDPIPE_SOURCE_ROOT);
  const Chain a(source, 48000.0, 256, offline_options());
  EXPECT_TRUE(a.has_source());
  EXPECT_FALSE(a.has_sink());
  const auto sink = parse_config(
      R"(plugins = [ { name = "g" path = "builtin:gain" } )" + capture_plugin(dir_ / "y.f32") + " ]",
      "s.conf", SANDPIPE_SOURCE_ROOT);
  const Chain b(sink, 48000.0, 256, offline_options());
  EXPECT_FALSE(b.has_source());
  EXPECT_TRUE(b.has_sink());
  const auto plain =
      parse_config(R"(plugins = [ { name = "g" path = "builtin:gain" } ])", "p.conf", SANDPIPE_SOURCE_ROOT);
  const Chain c(plain, 48000.0, 256, offline_options());
  EXPECT_FALSE(c.has_source() || c.has_sink());
}

TEST_F(SourcesSinks, SinkWithoutAllowWritesCannotOpenItsFile) {
  // The sandbox is read-only by default: the recording sink fails to load, saying why.
  const auto in = write_input(2, 48000, 100);
  try {
    render(R"(plugins = [ )" + capture_plugin(dir_ / "z.f32", false) + " ]", in);
    FAIL() << "expected a PluginError";
  } catch (const PluginError& e) {
    EXPECT_NE(std::string(e.what()).find("PermissionError"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(dir_ / "z.f32"));
}

TEST_F(SourcesSinks, RenderWithoutInputNeedsASource) {
  RenderOptions options;
  options.frames = 100;
  EXPECT_THROW(render(R"(plugins = [ { name = "g" path = "builtin:gain" } ])", {}, options), RenderError);
}

TEST(SourcesSinksConfig, AllowWritesIsAPythonOnlyDirectory) {
  const std::string py = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  auto c = parse_config(R"(plugins = [ { name = "p" path = ")" + py + R"(" allow-writes = "/tmp" } ])",
                        "a.conf", "/");
  EXPECT_EQ(c.plugins.at(0).allow_writes, fs::path("/tmp"));
  c = parse_config(R"(plugins = [ { name = "p" path = ")" + py + R"(" } ])", "a.conf", "/");
  EXPECT_TRUE(c.plugins.at(0).allow_writes.empty());
  c = parse_config(R"(plugins = [ { name = "p" path = ")" + py + R"(" allow-writes = false } ])", "a.conf", "/");
  EXPECT_TRUE(c.plugins.at(0).allow_writes.empty());
  for (const char* bad : {"\"/nonexistent-dir\"", "true", "\"/\""}) {
    EXPECT_THROW((void)parse_config(R"(plugins = [ { name = "p" path = ")" + py + R"(" allow-writes = )" + bad +
                                        " } ])",
                                    "a.conf", "/"),
                 ConfigError)
        << bad;
  }
  EXPECT_THROW((void)parse_config(R"(plugins = [ { name = "g" path = "builtin:gain" allow-writes = "/tmp" } ])",
                                  "a.conf", "/"),
               ConfigError);
}

TEST(SourcesSinksCli, RendersASourceChainWithFramesAndRate) {
  std::string templ = (fs::temp_directory_path() / "sandpipe-srcsink-cli-XXXXXX").string();
  ASSERT_NE(mkdtemp(templ.data()), nullptr);
  const fs::path dir = templ;
  std::ofstream(dir / "src.conf") << "channels = 1\nplugins = [ { name = \"tone\" path = \"" << legacy_dir
                                  << "counter_source.py\" params = { period = 50 } } ]\n";
  const std::string cmd = std::string(SANDPIPE_EXE) + " render " + (dir / "src.conf").string() + " " +
                          (dir / "out.wav").string() + " --frames 999 --rate 22050 2>&1";
  const int status = std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe): single-threaded test
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd;
  SF_INFO info{};
  SNDFILE* f = sf_open((dir / "out.wav").c_str(), SFM_READ, &info);
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(info.frames, 999);
  EXPECT_EQ(info.samplerate, 22050);
  std::vector<float> out(999);
  sf_readf_float(f, out.data(), 999);
  sf_close(f);
  for (std::uint64_t n = 0; n < 999; ++n) ASSERT_EQ(out[n], counter(n, 0, 50)) << n;
  // --frames with a chain that has no source: refused, exit 1 (runtime).
  std::ofstream(dir / "plain.conf") << "plugins = [ { name = \"g\" path = \"builtin:gain\" } ]\n";
  const int refused = std::system((std::string(SANDPIPE_EXE) + " render " + (dir / "plain.conf").string() +
                                   " " + (dir / "o.wav").string() + " --frames 10 2>/dev/null")
                                      .c_str());  // NOLINT(concurrency-mt-unsafe)
  EXPECT_TRUE(WIFEXITED(refused) && WEXITSTATUS(refused) != 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sandpipe::host
