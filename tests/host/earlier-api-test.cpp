// Plugins written for the earlier pipeline (tests/host/fixtures/earlier-api, written from
// /work/shared/earlier-python-api.md) through the `sandpipe` binary as a user runs it: `render`
// with exact samples, the lifecycle calls in the earlier host's order with stop() and shutdown()
// at the end, `inspect` without starting anything, and a load error (exit 2) for each kind of
// bad plugin. Every test of a working plugin runs in both layouts: the fixture folder in place
// (no base_plugin.py: Sandpipe's is found) and a copy that ships its own base_plugin.py.
#include <gtest/gtest.h>
#include <sndfile.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "pw-test-util.h"
#include "temp-dir.h"

namespace {

namespace fs = std::filesystem;

const fs::path fixtures = fs::path(SANDPIPE_SOURCE_ROOT) / "tests/host/fixtures/earlier-api";

struct Outcome {
  int status = -1;
  std::string output;  ///< stdout and stderr together (the plugins' prints come on stderr)
};

Outcome run_sandpipe(const std::string& args) {
  auto [output, status] =
      sandpipe::integration::run_command(std::string(SANDPIPE_EXE) + " " + args + " 2>&1");
  return {status, std::move(output)};
}

/// A float32 WAV of `frames` × `channels` from `sample(frame, channel)`.
template <typename Fn>
void write_wav(const fs::path& path, int channels, int frames, Fn sample) {
  std::vector<float> data(static_cast<std::size_t>(frames * channels));
  for (int n = 0; n < frames; ++n)
    for (int c = 0; c < channels; ++c) data[static_cast<std::size_t>(n * channels + c)] = sample(n, c);
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  ASSERT_EQ(sf_writef_float(f, data.data(), frames), frames);
  sf_close(f);
}

/// The interleaved samples of a WAV file (empty if it cannot be read).
std::vector<float> read_wav(const fs::path& path) {
  SF_INFO info{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (f == nullptr) return {};
  std::vector<float> data(static_cast<std::size_t>(info.frames * info.channels));
  sf_readf_float(f, data.data(), info.frames);
  sf_close(f);
  return data;
}

/// An input every sample of which differs, exactly representable (k / 8192).
float input_sample(int n, int c) { return static_cast<float>((n * 7 + c * 3) % 4001 - 2000) / 8192.0F; }

/// The events `tag` printed ("trim_gain: start" → "start"), in order.
std::vector<std::string> events(const std::string& log, const std::string& tag) {
  std::vector<std::string> out;
  const std::string key = tag + ": ";
  for (std::size_t at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
    const std::size_t end = log.find('\n', at);
    out.push_back(log.substr(at + key.size(), end == std::string::npos ? end : end - at - key.size()));
  }
  return out;
}

std::size_t count(const std::vector<std::string>& list, const std::string& item) {
  return static_cast<std::size_t>(std::count(list.begin(), list.end(), item));
}

/// The earlier host's order, checked on what a plugin printed: `expected` appear in this order
/// (other events may come between), `start` only once, and stop then shutdown are its last.
void expect_lifecycle(const std::vector<std::string>& seen, const std::vector<std::string>& expected) {
  std::size_t at = 0;
  for (const auto& e : expected) {
    while (at < seen.size() && seen[at] != e) ++at;
    ASSERT_LT(at, seen.size()) << "missing or out of order: " << e;
  }
  EXPECT_EQ(count(seen, "initialize"), 1U);
  EXPECT_EQ(count(seen, "start"), 1U);
  ASSERT_GE(seen.size(), 2U);
  EXPECT_EQ(seen.back(), "shutdown");
  EXPECT_NE(std::find(seen.end() - 3, seen.end(), "stop"), seen.end()) << "stop() not at the end";
}

/// Parameter: true = a copy of the plugin folder that ships its own base_plugin.py.
class EarlierApi : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    if (GetParam()) {
      plugins_ = dir_.path() / "plugins_py";
      fs::copy(fixtures / "plugins_py", plugins_, fs::copy_options::recursive);
      fs::copy_file(fixtures / "own-base/base_plugin.py", plugins_ / "base_plugin.py");
      base_dir_ = plugins_;
    } else {
      plugins_ = fixtures / "plugins_py";
      base_dir_ = fs::path(SANDPIPE_SOURCE_ROOT) / "plugins-py";
    }
  }

  fs::path config(const std::string& plugins) const {
    const fs::path p = dir_.path() / "chain.conf";
    std::ofstream(p) << "channels = 2\nplugins = [\n" << plugins << "]\n";
    return p;
  }

  /// "created, base_plugin from DIR": the plugin got the base_plugin this layout promises.
  void expect_base(const std::vector<std::string>& seen) const {
    ASSERT_FALSE(seen.empty());
    EXPECT_EQ(seen.front(), "created, base_plugin from " + base_dir_.string());
  }

  /// `sandpipe render CHAIN in.wav out.wav EXTRA` in the test's folder.
  Outcome render(const fs::path& conf, const std::string& extra = {}) const {
    return run_sandpipe("render " + conf.string() + " " + (dir_.path() / "in.wav").string() + " " +
                        (dir_.path() / "out.wav").string() + extra);
  }

  sandpipe::test_util::TempDir dir_{"earlier-api"};
  fs::path plugins_;
  fs::path base_dir_;
};

TEST_P(EarlierApi, ProcessorRendersExactlyWithItsLatencyCompensated) {
  // trim_gain in examples/ (base_plugin from the parent folder, fx_helpers a package there,
  // gain_law a sibling module): gain 0.5 and a 37-frame delay it reports in seconds.
  constexpr int frames = 20000;
  write_wav(dir_.path() / "in.wav", 2, frames, input_sample);
  const auto conf = config("{ name = \"trim\" path = \"" + (plugins_ / "examples/trim_gain.py").string() +
                           "\" mode = \"sync\" params = { gain = 0.5 delay = 37 } }\n");
  const auto out = render(conf);
  ASSERT_EQ(out.status, 0) << out.output;
  const auto got = read_wav(dir_.path() / "out.wav");
  ASSERT_EQ(got.size(), static_cast<std::size_t>(frames * 2));
  for (std::size_t i = 0; i < got.size(); ++i)
    ASSERT_EQ(got[i], input_sample(static_cast<int>(i / 2), static_cast<int>(i % 2)) * 0.5F)
        << "sample " << i;
  const auto seen = events(out.output, "trim_gain");
  expect_base(seen);
  expect_lifecycle(seen, {"initialize", "set_sample_rate 48000", "set_channels 2", "set_parameter gain=0.5",
                          "set_parameter delay=37", "start", "stop", "shutdown"});
}

TEST_P(EarlierApi, TextParameterReachesThePluginAsGivenThroughASiblingModule) {
  // gain = "-6dB": a string, parsed by the plugin's sibling module gain_law.py.
  constexpr int frames = 3000;
  write_wav(dir_.path() / "in.wav", 2, frames, input_sample);
  const auto conf = config("{ name = \"trim\" path = \"" + (plugins_ / "examples/trim_gain.py").string() +
                           "\" mode = \"sync\" params = { gain = \"-6dB\" } }\n");
  const auto out = render(conf, " --block 100");
  ASSERT_EQ(out.status, 0) << out.output;
  const auto got = read_wav(dir_.path() / "out.wav");
  ASSERT_EQ(got.size(), static_cast<std::size_t>(frames * 2));
  const auto g = static_cast<float>(std::pow(10.0, -6.0 / 20.0));
  for (int n = 0; n < frames; ++n)
    ASSERT_EQ(got[static_cast<std::size_t>(n * 2 + 1)], input_sample(n, 1) * g) << "frame " << n;
  EXPECT_EQ(count(events(out.output, "trim_gain"), "set_parameter gain=-6dB"), 1U) << out.output;
}

TEST_P(EarlierApi, SourceRendersItsCounterExactly) {
  constexpr int frames = 5000;
  const auto conf = config("{ name = \"src\" path = \"" + (plugins_ / "counter_source.py").string() +
                           "\" params = { period = 300 } }\n");
  const auto out = run_sandpipe("render " + conf.string() + " " + (dir_.path() / "out.wav").string() +
                                " --frames " + std::to_string(frames));
  ASSERT_EQ(out.status, 0) << out.output;
  const auto got = read_wav(dir_.path() / "out.wav");
  ASSERT_EQ(got.size(), static_cast<std::size_t>(frames * 2));
  for (int n = 0; n < frames; ++n)
    for (int c = 0; c < 2; ++c)
      ASSERT_EQ(got[static_cast<std::size_t>(n * 2 + c)],
                static_cast<float>((c + 1) * (n % 300 + 1)) / 4096.0F)
          << "frame " << n << " channel " << c;
  const auto seen = events(out.output, "counter_source");
  expect_base(seen);
  expect_lifecycle(seen, {"initialize", "set_sample_rate 48000", "set_channels 2", "set_buffer_size 512",
                          "set_parameter period=300", "start", "stop", "shutdown"});
}

TEST_P(EarlierApi, SinkRecordsExactlyWhatReachesIt) {
  // trim_gain ×0.5 → record_sink: its file and OUT.wav are both the halved input; the sink opens
  // its file in start() (once) and closes it in stop().
  constexpr int frames = 7000;
  write_wav(dir_.path() / "in.wav", 2, frames, input_sample);
  const fs::path rec = dir_.path() / "rec.f32";
  const auto conf = config("{ name = \"trim\" path = \"" + (plugins_ / "examples/trim_gain.py").string() +
                           "\" mode = \"sync\" params = { gain = 0.5 } }\n"
                           "{ name = \"rec\" path = \"" +
                           (plugins_ / "record_sink.py").string() +
                           "\" allow-writes = \"" + dir_.path().string() + "\" params = { path = \"" + rec.string() +
                           "\" } }\n");
  const auto out = render(conf, " --block 256");
  ASSERT_EQ(out.status, 0) << out.output;
  std::ifstream in(rec, std::ios::binary);
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), static_cast<std::size_t>(frames * 2) * sizeof(float)) << out.output;
  std::vector<float> recorded(bytes.size() / sizeof(float));
  std::memcpy(recorded.data(), bytes.data(), bytes.size());
  const auto got = read_wav(dir_.path() / "out.wav");
  ASSERT_EQ(got.size(), recorded.size());
  for (int n = 0; n < frames; ++n)
    for (int c = 0; c < 2; ++c) {
      const auto i = static_cast<std::size_t>(n * 2 + c);
      ASSERT_EQ(recorded[i], input_sample(n, c) * 0.5F) << "frame " << n;
      ASSERT_EQ(got[i], recorded[i]) << "frame " << n;
    }
  const auto seen = events(out.output, "record_sink");
  expect_base(seen);
  expect_lifecycle(seen, {"initialize", "set_sample_rate 48000", "set_channels 2", "set_buffer_size 256",
                          "set_parameter path=" + rec.string(), "start",
                          std::to_string(frames) + " frames written to " + rec.string(), "shutdown"});
}

TEST_P(EarlierApi, InspectSaysWhichApiAndStartsNothing) {
  struct Case {
    std::string file, api, tag;
    std::vector<std::string> params;
  };
  const Case cases[] = {
      {"examples/trim_gain.py", "earlier API processor", "trim_gain", {"gain", "delay"}},
      {"counter_source.py", "earlier API source", "counter_source", {"period"}},
      // A recording sink inspected without allow-writes: start() would open its file.
      {"record_sink.py", "earlier API sink", "record_sink", {}},
  };
  for (const auto& c : cases) {
    const auto out = run_sandpipe("inspect " + (plugins_ / c.file).string());
    ASSERT_EQ(out.status, 0) << out.output;
    EXPECT_NE(out.output.find("API:         " + c.api), std::string::npos) << out.output;
    for (const auto& p : c.params)
      EXPECT_NE(out.output.find("  " + p + " "), std::string::npos) << p << out.output;
    const auto seen = events(out.output, c.tag);
    ASSERT_EQ(seen.size(), 1U) << "inspect ran more than create_plugin():\n" << out.output;
    EXPECT_EQ(seen.front().rfind("created", 0), 0U) << out.output;
  }
  const auto sdk =
      run_sandpipe("inspect " + std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py");
  EXPECT_EQ(sdk.status, 0) << sdk.output;
  EXPECT_NE(sdk.output.find("API:         sdk processor"), std::string::npos) << sdk.output;
}

INSTANTIATE_TEST_SUITE_P(Layouts, EarlierApi, ::testing::Values(false, true), [](const auto& info) {
  return info.param ? "OwnBasePlugin" : "SandpipesBasePlugin";
});

TEST(EarlierApiBadInput, EachIsALoadErrorNamingTheFileAndTheProblem) {
  struct Case {
    std::string file;
    std::vector<std::string> says;
  };
  const Case cases[] = {
      {"no_plugin.py", {"no subclass of sandpipe.Plugin and no create_plugin()"}},
      {"factory_raises.py",
       {"create_plugin() raised: RuntimeError: no licence key found", "Traceback",
        "factory_raises.py\", line 5"}},
      {"factory_junk.py", {"create_plugin() returned a processor (HalfAPlugin) without initialize()"}},
      {"info_junk.py", {"get_info() returned dict", "not a PluginInfo"}},
      {"initialize_false.py", {"initialize() returned False", "initialize_false: no device"}},
      // Initialised, then refused to start: it still gets its shutdown().
      {"start_false.py", {"start() returned False", "start_false: shutdown"}},
  };
  sandpipe::test_util::TempDir dir("earlier-api-bad");
  write_wav(dir.path() / "in.wav", 2, 1000, input_sample);
  for (const auto& c : cases) {
    const fs::path conf = dir.path() / "bad.conf";
    std::ofstream(conf) << "plugins = [ { name = \"bad\" path = \"" << (fixtures / "bad" / c.file).string()
                        << "\" mode = \"sync\" } ]\n";
    const auto out = run_sandpipe("render " + conf.string() + " " + (dir.path() / "in.wav").string() + " " +
                                  (dir.path() / "out.wav").string());
    EXPECT_EQ(out.status, 2) << c.file << ":\n" << out.output;
    EXPECT_NE(out.output.find((fixtures / "bad" / c.file).string()), std::string::npos) << out.output;
    for (const auto& s : c.says) EXPECT_NE(out.output.find(s), std::string::npos) << s << "\n" << out.output;
  }
}



TEST(EarlierApiBasePlugin, MatchesTheSpecNameForName) {
  // Sandpipe's base_plugin (plugins-py/) checked by check_base_plugin.py: every name, enum
  // member and value, signature, default and abstract method of the earlier API.
  const auto [out, status] = sandpipe::integration::run_command(
      "/usr/bin/python3 " + (fixtures / "check_base_plugin.py").string() + " " + SANDPIPE_SOURCE_ROOT +
      "/plugins-py 2>&1");
  EXPECT_EQ(status, 0) << out;
  EXPECT_EQ(out, "ok\n");
}

}  // namespace
