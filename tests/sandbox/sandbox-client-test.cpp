// Starting sandboxes: load failures with their tracebacks, detection of the two APIs,
// `inspect`, teardown, and a host that does not trust what its sandbox sends.
#include <signal.h>
#include <stdlib.h>

#include <gtest/gtest.h>

#include "sandbox-test-util.h"

namespace sandpipe::sandbox_test {
namespace {

std::string load_error(const PluginSpec& spec, const host::SandboxOptions& options = {}) {
  try {
    (void)start_one(spec, 2, 512, options);
  } catch (const host::PluginError& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& hay, const std::string& needle) { return hay.find(needle) != std::string::npos; }

TEST(SandboxClient, ImportErrorCarriesTraceback) {
  const std::string what = load_error(python_spec("broken", fixtures_dir() / "broken/import_error.py"));
  EXPECT_TRUE(contains(what, "python plugin \"broken\"")) << what;
  EXPECT_TRUE(contains(what, "ModuleNotFoundError: No module named 'sandpipe_fixture_module_that_does_not_exist'"))
      << what;
  EXPECT_TRUE(contains(what, "Traceback (most recent call last):")) << what;
  EXPECT_TRUE(contains(what, "import_error.py\", line 3, in <module>")) << what;
  EXPECT_FALSE(contains(what, "_sandbox.py")) << "glue frames are hidden:\n" << what;
}

TEST(SandboxClient, RaiseInInitCarriesTraceback) {
  const std::string what = load_error(python_spec("lic", fixtures_dir() / "broken/raises_in_init.py"));
  EXPECT_TRUE(contains(what, "RuntimeError: license file /etc/fixture.lic not found")) << what;
  EXPECT_TRUE(contains(what, "in __init__")) << what;
  EXPECT_TRUE(contains(what, "in check_license")) << what;
}

TEST(SandboxClient, SyntaxErrorNamesTheLine) {
  const std::string what = load_error(python_spec("syn", fixtures_dir() / "broken/syntax_error.py"));
  EXPECT_TRUE(contains(what, "SyntaxError")) << what;
  EXPECT_TRUE(contains(what, "syntax_error.py\", line 4")) << what;
}

TEST(SandboxClient, FileWithoutPluginIsAClearError) {
  const std::string what = load_error(python_spec("np", fixtures_dir() / "broken/no_plugin.py"));
  EXPECT_TRUE(contains(what, "no plugin found")) << what;
  EXPECT_TRUE(contains(what, "sandpipe.Plugin")) << what;
  EXPECT_TRUE(contains(what, "create_plugin()")) << what;
}

TEST(SandboxClient, TwoPluginClassesAreAmbiguous) {
  const std::string what = load_error(python_spec("two", fixtures_dir() / "misc/two_plugins.py"));
  EXPECT_TRUE(contains(what, "several sandpipe.Plugin subclasses (A, B)")) << what;
}

TEST(SandboxClient, UnknownConfigParamFailsTheLoad) {
  const std::string what = load_error(python_spec("g", examples_dir() / "gain.py", {{"volume", 1.0, 3}}));
  EXPECT_TRUE(contains(what, "unknown parameter 'volume' (parameters: gain, mute)")) << what;
}

TEST(SandboxClient, ConfigParamOutOfRangeFailsTheLoad) {
  const std::string what = load_error(python_spec("g", examples_dir() / "gain.py", {{"gain", 9.0, 3}}));
  EXPECT_TRUE(contains(what, "gain: 9.0 is outside 0 .. 4")) << what;
}

TEST(SandboxClient, LegacyPluginRefusingAParamFailsTheLoad) {
  const std::string what =
      load_error(python_spec("lg", earlier_api_examples() / "legacy_gain.py", {{"gain_db", 99.0, 3}}));
  EXPECT_TRUE(contains(what, "set_parameter('gain_db', '99') returned False")) << what;
}

TEST(SandboxClient, OneFailureNamesOnlyThatPlugin) {
  const PluginSpec specs[] = {python_spec("good", examples_dir() / "gain.py"),
                              python_spec("bad", fixtures_dir() / "broken/raises_in_init.py"),
                              python_spec("eq", examples_dir() / "biquad.py")};
  try {
    (void)host::start_sandboxes(specs, 48000.0, 2, 512);
    FAIL() << "expected PluginError";
  } catch (const host::PluginError& e) {
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "python plugin \"bad\"")) << what;
    EXPECT_FALSE(contains(what, "\"good\"")) << what;
    EXPECT_FALSE(contains(what, "\"eq\"")) << what;
  }
}

TEST(SandboxClient, StartSandboxesReturnsOneSlotAndProcessPerSpecInOrder) {
  const PluginSpec specs[] = {python_spec("one", examples_dir() / "gain.py"),
                              python_spec("two", fixtures_dir() / "misc/delay.py"),
                              python_spec("three", earlier_api_examples() / "legacy_gain.py")};
  auto procs = host::start_sandboxes(specs, 44100.0, 1, 256);
  ASSERT_EQ(procs.size(), 3u);
  EXPECT_EQ(procs[0].slot->name(), "one");
  EXPECT_EQ(procs[1].slot->name(), "two");
  EXPECT_EQ(procs[1].slot->latency_frames(), 64u);
  EXPECT_EQ(procs[2].slot->name(), "three");
  for (const auto& p : procs) {
    ASSERT_TRUE(p.instance);
    EXPECT_EQ(p.instance->phase(), host::SandboxInstance::Phase::loaded);
    EXPECT_GT(p.instance->pid(), 0);
  }
}

TEST(SandboxClient, MissingFileIsAClearError) {
  const std::string what = load_error(python_spec("nope", fixtures_dir() / "does-not-exist.py"));
  EXPECT_TRUE(contains(what, "does-not-exist.py: no such file")) << what;
}

TEST(SandboxClient, DescribeShowsSdkParams) {
  const std::string text = host::describe_python_plugin(examples_dir() / "biquad.py");
  EXPECT_TRUE(contains(text, "API:         sdk")) << text;
  EXPECT_TRUE(contains(text, "Name:        Biquad EQ")) << text;
  EXPECT_TRUE(contains(text, "Version:     1.0.0")) << text;
  EXPECT_TRUE(contains(text, "Latency:     0 frames")) << text;
  EXPECT_TRUE(contains(text, "freq     number   default 1000, range 20 .. 20000 Hz")) << text;
  EXPECT_TRUE(contains(text, "shape    choice   default \"peak\", one of: lowpass, highpass")) << text;
}

TEST(SandboxClient, PluginImportsAModuleFromItsOwnFolder) {
  const std::string text = host::describe_python_plugin(fixtures_dir() / "misc/uses_sibling.py");
  EXPECT_TRUE(contains(text, "Name:        Gain from a sibling module")) << text;
}

TEST(SandboxClient, DescribeDetectsLegacyPlugin) {
  const std::string text = host::describe_python_plugin(earlier_api_examples() / "legacy_gain.py");
  EXPECT_TRUE(contains(text, "API:         earlier API processor")) << text;
  EXPECT_TRUE(contains(text, "Name:        Legacy Gain")) << text;
  // The earlier API declares no parameters: what the plugin answers with get_parameter().
  EXPECT_TRUE(contains(text, "gain_db  number   now 0")) << text;
}

TEST(SandboxClient, DescribeThrowsPluginError) {
  EXPECT_THROW((void)host::describe_python_plugin(fixtures_dir() / "broken/no_plugin.py"), host::PluginError);
}

TEST(SandboxClient, DestructorReapsTheSandbox) {
  pid_t pid = -1;
  {
    auto proc = start_one(python_spec("g", examples_dir() / "gain.py"));
    pid = proc.instance->pid();
    ASSERT_EQ(::kill(pid, 0), 0);
  }
  EXPECT_EQ(::kill(pid, 0), -1);  // gone and reaped: no zombie left to signal
  EXPECT_EQ(errno, ESRCH);
}

TEST(SandboxClient, StubbornPluginIsKilledAfterShutdownTimeout) {
  LogCapture logs;
  host::SandboxOptions options;
  options.log = logs.sink();
  options.shutdown_timeout = std::chrono::milliseconds(300);
  pid_t pid = -1;
  {
    auto proc = start_one(python_spec("stubborn", earlier_api_examples().parent_path().parent_path() / "bad/ignores_shutdown.py"), 2, 512, options);
    pid = proc.instance->pid();
  }
  EXPECT_EQ(::kill(pid, 0), -1);
  EXPECT_TRUE(logs.contains("killing it")) << logs.all();
}

// --- a sandbox that misbehaves on purpose -----------------------------------------------------

class FakeSandbox : public ::testing::Test {
 protected:
  std::string start_error(const std::string& mode, std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    ::setenv("SANDPIPE_FAKE_SANDBOX_MODE", mode.c_str(), 1);
    host::SandboxOptions options;
    options.sandbox_executable = SANDPIPE_FAKE_SANDBOX;
    options.start_timeout = timeout;
    options.shutdown_timeout = std::chrono::milliseconds(500);
    return load_error(python_spec("fake", examples_dir() / "gain.py"), options);
  }
};

TEST_F(FakeSandbox, VersionMismatchIsRefused) {
  const std::string what = start_error("version");
  EXPECT_TRUE(contains(what, "version mismatch: sandbox speaks protocol 99")) << what;
}

TEST_F(FakeSandbox, OversizedFrameIsRefused) {
  const std::string what = start_error("garbage");
  EXPECT_TRUE(contains(what, "broke the control protocol (frame of")) << what;
}

TEST_F(FakeSandbox, InvalidDescriptionIsRefused) {
  const std::string what = start_error("bad-info");
  EXPECT_TRUE(contains(what, "parameter level: default outside its range")) << what;
}

TEST_F(FakeSandbox, CrashIsReported) {
  const std::string what = start_error("crash");
  EXPECT_TRUE(contains(what, "killed by signal SIGABRT")) << what;
}

TEST_F(FakeSandbox, SilenceTimesOut) {
  const std::string what = start_error("silent", std::chrono::milliseconds(300));
  EXPECT_TRUE(contains(what, "no answer within")) << what;
}

TEST_F(FakeSandbox, CompletionWithWrongSeqMakesTheSlotDryForGood) {
  ::setenv("SANDPIPE_FAKE_SANDBOX_MODE", "wrong-seq", 1);
  host::SandboxOptions options;
  options.sandbox_executable = SANDPIPE_FAKE_SANDBOX;
  auto proc = start_one(python_spec("fake", examples_dir() / "gain.py"), 2, 512, options);
  const Signal in = test_signal(2, 512);
  const BlockRun run = run_blocks(*proc, in, {256, 256});
  EXPECT_TRUE(bit_equal(run.out, in));
  EXPECT_FALSE(proc->usable());
  EXPECT_EQ(run.statuses[1], BlockStatus::bypassed);
}

}  // namespace
}  // namespace sandpipe::sandbox_test
