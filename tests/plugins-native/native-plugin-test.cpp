// Loading native plugins: search path, ABI checks, parameter validation, and the NativeProcessor's
// output check.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>

#include "native-test-util.h"

namespace sandpipe::test {
namespace {

using host::ParamSetting;
using host::PluginError;
namespace fs = std::filesystem;

/// Sets an environment variable for one test and puts the old value back. Tests run on one thread.
// NOLINTBEGIN(concurrency-mt-unsafe)
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ScopedEnv(ScopedEnv&&) = delete;
  ScopedEnv& operator=(ScopedEnv&&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};
// NOLINTEND(concurrency-mt-unsafe)

/// The message make_native_processor throws for `spec`, or "" if it loads.
std::string load_error(const host::PluginSpec& spec, double rate = test_rate) {
  try {
    (void)make(spec, 2, rate);
  } catch (const PluginError& e) {
    return e.what();
  }
  return "";
}

// ---- search path ------------------------------------------------------------------------------

TEST(BuiltinSearchPath, EnvironmentEntriesComeFirstInOrder) {
  ScopedEnv env("SANDPIPE_PLUGIN_PATH", "/opt/a::/opt/b:");
  const auto dirs = host::builtin_search_path();
  ASSERT_EQ(dirs.size(), 4u);
  EXPECT_EQ(dirs[0], fs::path("/opt/a"));
  EXPECT_EQ(dirs[1], fs::path("/opt/b"));
  EXPECT_EQ(dirs[2], fs::path(SANDPIPE_BUILTIN_DIR));
  EXPECT_EQ(dirs[3], fs::path(SANDPIPE_BUILTIN_INSTALL_DIR));
}

TEST(BuiltinSearchPath, BuildTreeBeforeInstalledWithoutEnvironment) {
  ScopedEnv env("SANDPIPE_PLUGIN_PATH", "");
  const auto dirs = host::builtin_search_path();
  ASSERT_EQ(dirs.size(), 2u);
  EXPECT_EQ(dirs[0], fs::path(SANDPIPE_BUILTIN_DIR));
  EXPECT_EQ(dirs[1], fs::path(SANDPIPE_BUILTIN_INSTALL_DIR));
}

TEST(NativePlugin, BuiltinIsFoundThroughSandpipePluginPath) {
  ScopedEnv env("SANDPIPE_PLUGIN_PATH", fixture_path("").string());
  auto invert = make(builtin_spec("inv", "invert"));
  const Signal input = ramp_signal(2, 100);
  const auto output = run_blocks(*invert, input, {100}).output;
  EXPECT_EQ(output[1][10], -input[1][10]);
}

TEST(NativePlugin, UnknownBuiltinListsWhereItLookedAndWhatExists) {
  const std::string message = load_error(builtin_spec("x", "reverb"));
  EXPECT_NE(message.find("plugin \"x\" (builtin:reverb): no built-in plugin \"reverb\""), std::string::npos)
      << message;
  EXPECT_NE(message.find(SANDPIPE_BUILTIN_DIR), std::string::npos) << message;
  EXPECT_NE(message.find("available: biquad, delay, gain"), std::string::npos) << message;
}

TEST(NativePlugin, BuiltinNameCannotLeaveTheSearchPath) {
  const std::string message = load_error(builtin_spec("x", "../builtins/gain"));
  EXPECT_NE(message.find("is not a built-in name"), std::string::npos) << message;
}

// ---- loading third-party .so files ------------------------------------------------------------

TEST(NativePlugin, LoadsThirdPartySharedObjectByPath) {
  auto invert = make(library_spec("inv", fixture_path("invert.so")));
  EXPECT_EQ(invert->name(), "inv");
  EXPECT_EQ(invert->latency_frames(), 0u);
  const Signal input = ramp_signal(2, 300);
  const auto result = run_blocks(*invert, input, {64});
  for (std::size_t c = 0; c < 2; ++c) {
    for (std::size_t n = 0; n < 300; ++n) ASSERT_EQ(result.output[c][n], -input[c][n]);
  }
  auto bypassed = make(library_spec("inv", fixture_path("invert.so"), {{"enabled", false}}));
  EXPECT_EQ(run_blocks(*bypassed, input, {64}).output, input);
}

TEST(NativePlugin, InstancesOfOneLibraryOutliveEachOther) {
  auto first = make(builtin_spec("a", "gain", {{"gain", 2.0}}), 1);
  auto second = make(builtin_spec("b", "gain", {{"gain", 3.0}}), 1);
  first.reset();  // dlclose drops one reference; the library stays mapped for `second`
  const Signal input = ramp_signal(1, 10);
  EXPECT_EQ(run_blocks(*second, input, {10}).output[0][4], input[0][4] * 3.0f);
}

TEST(NativePlugin, WrongAbiVersionIsRefused) {
  EXPECT_EQ(load_error(library_spec("old", fixture_path("wrong-abi.so"))),
            "plugin \"old\" (wrong-abi.so): built for plugin ABI version 99; this host speaks version 1");
}

TEST(NativePlugin, DescriptorShorterThanTheAbiIsRefused) {
  const std::string message = load_error(library_spec("s", fixture_path("short-struct.so")));
  EXPECT_NE(message.find("plugin \"s\" (short-struct.so): descriptor is "), std::string::npos) << message;
  EXPECT_NE(message.find("bytes; plugin ABI version 1 needs at least " +
                         std::to_string(sizeof(sandpipe_plugin_descriptor))),
            std::string::npos)
      << message;
}

TEST(NativePlugin, SharedObjectWithoutEntryIsRefused) {
  const std::string message = load_error(library_spec("n", fixture_path("no-entry.so")));
  EXPECT_NE(message.find("does not export \"sandpipe_plugin_entry\": not a Sandpipe native plugin"),
            std::string::npos)
      << message;
}

TEST(NativePlugin, FileThatIsNotASharedObjectIsRefused) {
  const fs::path file = fs::path(::testing::TempDir()) / "sandpipe-not-elf.so";
  std::ofstream(file) << "not an ELF file\n";
  const std::string message = load_error(library_spec("t", file));
  fs::remove(file);
  EXPECT_NE(message.find("plugin \"t\" (sandpipe-not-elf.so): cannot load " + file.string() + ": "),
            std::string::npos)
      << message;
}

TEST(NativePlugin, MissingFileIsRefused) {
  const std::string message = load_error(library_spec("m", fixture_path("absent.so")));
  EXPECT_NE(message.find("no such file: "), std::string::npos) << message;
}

TEST(NativePlugin, PythonSpecIsNotLoadedNatively) {
  auto spec = library_spec("py", "/tmp/effect.py");
  spec.kind = host::PluginKind::python;
  EXPECT_NE(load_error(spec).find("is a Python plugin, not a native one"), std::string::npos);
}

TEST(NativePlugin, FailedInstantiateIsReported) {
  // The delay refuses rates whose 2 s line would not fit its index type.
  const std::string message = load_error(builtin_spec("d", "delay"), 2.0e6);
  EXPECT_NE(message.find("plugin \"d\" (builtin:delay): instantiate failed for 2000000 Hz, 2 channels"),
            std::string::npos)
      << message;
}

// ---- parameters -------------------------------------------------------------------------------

TEST(NativePlugin, UnknownParameterListsValidKeys) {
  EXPECT_EQ(load_error(builtin_spec("lp", "biquad", {{"frq", 8000.0}})),
            "plugin \"lp\" (builtin:biquad): unknown parameter \"frq\"; valid: type, freq, q, gain");
}

TEST(NativePlugin, OutOfRangeValueNamesPluginParamValueAndRange) {
  EXPECT_EQ(load_error(builtin_spec("trim", "gain", {{"gain", 20.0}})),
            "plugin \"trim\" (builtin:gain): parameter \"gain\" = 20 is out of range [0, 16]");
  EXPECT_EQ(load_error(builtin_spec("lp", "biquad", {{"q", 0.01}})),
            "plugin \"lp\" (builtin:biquad): parameter \"q\" = 0.01 is out of range [0.025, 40]");
  EXPECT_EQ(load_error(builtin_spec("d", "delay", {{"ms", -1.0}})),
            "plugin \"d\" (builtin:delay): parameter \"ms\" = -1 is out of range [0, 2000]");
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(load_error(builtin_spec("g", "gain", {{"gain", nan}})).find("is out of range"),
            std::string::npos);
  EXPECT_NE(load_error(builtin_spec("g", "gain", {{"gain", 1e300}})).find("is out of range"),
            std::string::npos);
}

TEST(NativePlugin, RangeEndsAreComparedAsTheFloatThePluginSees) {
  // 0.025 as a double is below 0.025f, the declared minimum; the plugin gets 0.025f either way.
  EXPECT_EQ(load_error(builtin_spec("lp", "biquad", {{"q", 0.025}, {"freq", 48000.0}})), "");
}

TEST(NativePlugin, WrongTypeIsRefused) {
  EXPECT_EQ(load_error(builtin_spec("g", "gain", {{"gain", std::string("loud")}})),
            "plugin \"g\" (builtin:gain): parameter \"gain\" expects a number in [0, 16], got \"loud\"");
  EXPECT_EQ(load_error(builtin_spec("g", "gain", {{"gain", true}})),
            "plugin \"g\" (builtin:gain): parameter \"gain\" expects a number in [0, 16], got true");
  EXPECT_EQ(load_error(builtin_spec("g", "gain", {{"mute", 1.0}})),
            "plugin \"g\" (builtin:gain): parameter \"mute\" expects true or false, got 1");
  EXPECT_EQ(load_error(builtin_spec("g", "gain", {{"mute", std::string("yes")}})),
            "plugin \"g\" (builtin:gain): parameter \"mute\" expects true or false, got \"yes\"");
  EXPECT_EQ(load_error(builtin_spec("lp", "biquad", {{"type", false}})),
            "plugin \"lp\" (builtin:biquad): parameter \"type\" expects one of: lowpass, highpass, bandpass, "
            "notch, peaking, lowshelf, highshelf, allpass; got false");
}

TEST(NativePlugin, EnumAcceptsChoiceNameOrIndexOnly) {
  EXPECT_EQ(
      load_error(builtin_spec("lp", "biquad", {{"type", std::string("lopass")}})),
      "plugin \"lp\" (builtin:biquad): parameter \"type\" = \"lopass\" is not one of: lowpass, highpass, "
      "bandpass, notch, peaking, lowshelf, highshelf, allpass");
  EXPECT_NE(load_error(builtin_spec("lp", "biquad", {{"type", 8.0}})).find("is not a choice index in [0, 7]"),
            std::string::npos);
  EXPECT_NE(load_error(builtin_spec("lp", "biquad", {{"type", 1.5}})).find("is not a choice index"),
            std::string::npos);
  EXPECT_EQ(load_error(builtin_spec("lp", "biquad", {{"type", 7.0}})), "");
  EXPECT_EQ(load_error(builtin_spec("lp", "biquad", {{"type", std::string("notch")}})), "");
}

TEST(NativePlugin, IntegerParameterRefusesFractions) {
  EXPECT_EQ(
      load_error(builtin_spec("d", "delay", {{"frames", 1.5}})),
      "plugin \"d\" (builtin:delay): parameter \"frames\" expects a whole number in [0, 96000], got 1.5");
}

TEST(NativePlugin, ParameterGivenTwiceIsRefused) {
  EXPECT_EQ(load_error(builtin_spec("g", "gain", {{"gain", 1.0}, {"gain", 2.0}})),
            "plugin \"g\" (builtin:gain): parameter \"gain\" is given twice");
}

// ---- the output check -------------------------------------------------------------------------

TEST(NativeProcessor, NanOutputIsReplacedByDryInput) {
  auto poison = make(library_spec("p", fixture_path("poison.so")));
  const Signal input = ramp_signal(2, 1000);
  const auto result = run_blocks(*poison, input, {100});
  EXPECT_EQ(result.output, input);
  for (auto status : result.statuses) EXPECT_EQ(status, host::BlockStatus::bypassed);
  EXPECT_EQ(poison->counters().blocks, 10u);
  EXPECT_EQ(poison->counters().sanitized_blocks, 10u);
}

TEST(NativeProcessor, InfOutputIsReplacedByDryInput) {
  auto poison = make(library_spec("p", fixture_path("poison.so"), {{"value", std::string("inf")}}), 1);
  const Signal input = ramp_signal(1, 64);
  const auto result = run_blocks(*poison, input, {64});
  EXPECT_EQ(result.output, input);
  EXPECT_EQ(poison->counters().sanitized_blocks, 1u);
}

TEST(NativeProcessor, SanitizedBlocksStayAlignedWithPluginLatency) {
  // Every third block is poisoned; its dry replacement must be delayed like the wet blocks around
  // it, including blocks shorter than the latency.
  auto poison = make(library_spec("p", fixture_path("poison.so"), {{"latency", 5.0}, {"period", 3.0}}), 2);
  ASSERT_EQ(poison->latency_frames(), 5u);
  const Signal input = ramp_signal(2, 3000);
  const std::vector<std::uint32_t> blocks = {2, 3, 1, 64, 4, 7, 5, 100, 1, 1, 1, 9};
  const auto result = run_blocks(*poison, input, blocks);
  for (std::size_t c = 0; c < 2; ++c) {
    for (std::size_t n = 0; n < input[c].size(); ++n) {
      ASSERT_EQ(result.output[c][n], n < 5 ? 0.0f : input[c][n - 5]) << "channel " << c << " frame " << n;
    }
  }
  const auto counters = poison->counters();
  EXPECT_EQ(counters.blocks, result.statuses.size());
  EXPECT_EQ(counters.sanitized_blocks, result.statuses.size() / 3);
  for (std::size_t b = 0; b < result.statuses.size(); ++b) {
    EXPECT_EQ(result.statuses[b], b % 3 == 2 ? host::BlockStatus::bypassed : host::BlockStatus::processed)
        << b;
  }
}

TEST(NativeProcessor, OverflowToInfFromAWellMeaningPluginIsSanitizedToo) {
  auto gain = make(builtin_spec("g", "gain", {{"gain", 16.0}}));
  Signal input(2, std::vector<float>(256, std::numeric_limits<float>::max() / 4));  // × 16 overflows
  input[0][3] = -1.0f;
  const auto result = run_blocks(*gain, input, {128});
  EXPECT_EQ(result.output, input);
  EXPECT_EQ(gain->counters().sanitized_blocks, 2u);
}

TEST(NativeProcessor, CountsBlocksAndOnlyBadOnesAsSanitized) {
  auto gain = make(builtin_spec("g", "gain", {{"gain", 2.0}}));
  const auto result = run_blocks(*gain, ramp_signal(2, 300), {128});
  for (auto status : result.statuses) EXPECT_EQ(status, host::BlockStatus::processed);
  EXPECT_EQ(gain->counters().blocks, 3u);
  EXPECT_EQ(gain->counters().sanitized_blocks, 0u);
  EXPECT_EQ(gain->counters().bypassed_blocks, 0u);
}

TEST(NativeProcessor, BlockAboveMaxFramesIsMutedWithoutCallingThePlugin) {
  auto delay = make(builtin_spec("d", "delay"), 1, test_rate, 16);
  std::vector<float> in(32, 1.0f), out(32, 7.0f);
  const float* in_ptr = in.data();
  float* out_ptr = out.data();
  EXPECT_EQ(delay->process_rt(&in_ptr, &out_ptr, 32, {}), host::BlockStatus::muted);
  EXPECT_EQ(out, std::vector<float>(32, 0.0f));
  EXPECT_EQ(delay->counters().blocks, 0u);
}

}  // namespace
}  // namespace sandpipe::test
