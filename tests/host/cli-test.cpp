// The `sandpipe` command line as a user meets it: exit codes and messages.
#include <gtest/gtest.h>
#include <sndfile.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace {

namespace fs = std::filesystem;

struct Outcome {
  int status = -1;
  std::string output;  ///< stdout and stderr together
};

/// Runs the sandpipe binary with `args` through the shell (after the `env` assignments);
/// collects its output and exit status.
Outcome run_sandpipe(const std::string& args, const std::string& env = "") {
  const std::string command = env + " " + std::string(SANDPIPE_EXE) + " " + args + " 2>&1";
  Outcome outcome;
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return outcome;
  std::array<char, 4096> chunk{};
  while (fgets(chunk.data(), chunk.size(), pipe) != nullptr) outcome.output += chunk.data();
  const int raw = pclose(pipe);
  outcome.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return outcome;
}

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "sandpipe-cli-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  /// Writes `samples` (interleaved, `channels`) as a float WAV at 48 kHz.
  fs::path write_wav(const std::string& name, const std::vector<float>& samples, int channels) {
    SF_INFO info{};
    info.samplerate = 48000;
    info.channels = channels;
    info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
    SNDFILE* f = sf_open((dir_ / name).c_str(), SFM_WRITE, &info);
    EXPECT_NE(f, nullptr);
    if (f != nullptr) {
      sf_writef_float(f, samples.data(), static_cast<sf_count_t>(samples.size() / static_cast<std::size_t>(channels)));
      sf_close(f);
    }
    return dir_ / name;
  }
  /// The frames of a WAV file (interleaved); `frames` gets their count (-1: unreadable).
  static std::vector<float> read_wav(const fs::path& path, sf_count_t& frames) {
    SF_INFO info{};
    SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
    frames = -1;
    if (f == nullptr) return {};
    std::vector<float> out(static_cast<std::size_t>(info.frames * info.channels));
    frames = sf_readf_float(f, out.data(), info.frames);
    sf_close(f);
    return out;
  }
  fs::path dir_;
};

/// Our own executable's fixtures: tests/host/fixtures in the source tree.
const fs::path fixtures = fs::path(SANDPIPE_SOURCE_ROOT) / "tests" / "host" / "fixtures";

TEST_F(Cli, EveryCommandAnswersHelp) {
  for (const std::string command : {"run", "render", "check", "inspect", "set", "status", "reload"}) {
    for (const std::string flag : {" --help", " -h"}) {
      const auto out = run_sandpipe(command + flag);
      EXPECT_EQ(out.status, 0) << command << flag << ": " << out.output;
      EXPECT_NE(out.output.find("sandpipe " + command), std::string::npos) << command << ": " << out.output;
      EXPECT_NE(out.output.find("Exit status:"), std::string::npos) << command << ": " << out.output;
      EXPECT_EQ(out.output.find("no node"), std::string::npos) << command << ": " << out.output;
    }
  }
  // Also after the arguments: `status NODE --help` is help, not a node named --help.
  const auto status = run_sandpipe("status some-node --help");
  EXPECT_EQ(status.status, 0) << status.output;
  EXPECT_NE(status.output.find("--json"), std::string::npos) << status.output;
  const auto version = run_sandpipe("--version");
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.output.rfind("sandpipe ", 0), 0U) << version.output;
  EXPECT_EQ(run_sandpipe("").status, 2);
  EXPECT_EQ(run_sandpipe("help").status, 0);
}

TEST_F(Cli, RenderExitsOneWhenAPluginFailsSomeBlocksAndStillWritesTheWholeFile) {
  // 10 blocks of 512; the plugin raises in blocks 3, 6 and 9 (those come out dry), halves the rest.
  const auto conf = write("chain.conf", "plugins = [ { name = \"fx\" path = \"" +
                                            (fixtures / "every_third_fails.py").string() + "\" } ]");
  std::vector<float> samples(2 * 5120);
  for (std::size_t i = 0; i < samples.size(); ++i) samples[i] = 0.001F * static_cast<float>(i % 500);
  const auto in = write_wav("in.wav", samples, 2);
  const auto out_path = dir_ / "out.wav";
  const auto out = run_sandpipe("render " + conf.string() + " " + in.string() + " " + out_path.string());
  EXPECT_EQ(out.status, 1) << out.output;
  EXPECT_NE(out.output.find("NOT PROCESSED: 3 of 10 blocks of slot \"fx\""), std::string::npos) << out.output;
  // The first error, with its traceback down to the line that raised.
  EXPECT_NE(out.output.find("block 3 is not for me"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("Traceback"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("in refuse"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("3 blocks were not processed"), std::string::npos) << out.output;

  sf_count_t frames = 0;
  const auto got = read_wav(out_path, frames);
  ASSERT_EQ(frames, 5120) << "the whole file is written";
  // Each block after its first 64 frames (the wet/dry ramp): halved, or dry where it failed.
  for (std::size_t block = 0; block < 10; ++block) {
    const bool failed = (block + 1) % 3 == 0;
    for (std::size_t i = (block * 512 + 64) * 2; i < (block + 1) * 512 * 2; ++i)
      ASSERT_EQ(got[i], failed ? samples[i] : samples[i] * 0.5F) << "block " << block << ", sample " << i;
  }

  // --allow-bypass accepts it: exit 0, the summary still says so.
  const auto allowed =
      run_sandpipe("render " + conf.string() + " " + in.string() + " " + out_path.string() + " --allow-bypass");
  EXPECT_EQ(allowed.status, 0) << allowed.output;
  EXPECT_NE(allowed.output.find("NOT PROCESSED: 3 of 10 blocks"), std::string::npos) << allowed.output;
}

TEST_F(Cli, RenderCountsTheBlocksAPluginReturnedFalseFor) {
  const auto conf = write("chain.conf", "plugins = [ { name = \"fx\" path = \"" +
                                            (fixtures / "declines_some.py").string() + "\" } ]");
  const auto in = write_wav("in.wav", std::vector<float>(2 * 6 * 512, 0.25F), 2);
  const auto out = run_sandpipe("render " + conf.string() + " " + in.string() + " " + (dir_ / "out.wav").string());
  EXPECT_EQ(out.status, 1) << out.output;
  EXPECT_NE(out.output.find("returned False 2, not processed 2"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("NOT PROCESSED: 2 of 6 blocks of slot \"fx\""), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("the plugin returned False for 2 blocks"), std::string::npos) << out.output;
  sf_count_t frames = 0;
  (void)read_wav(dir_ / "out.wav", frames);
  EXPECT_EQ(frames, 6 * 512);
}

TEST_F(Cli, RenderExitsOneWhenANativePluginsOutputIsReplacedForNaN) {
  // Every 4th block of the native fixture holds one NaN: the host plays the dry input instead.
  if (!fs::exists(SANDPIPE_POISON_PLUGIN)) GTEST_SKIP() << "no " << SANDPIPE_POISON_PLUGIN;
  const auto conf = write("chain.conf", std::string("plugins = [ { name = \"p\" path = \"") + SANDPIPE_POISON_PLUGIN +
                                            "\" params = { period = 4 } } ]");
  const auto in = write_wav("in.wav", std::vector<float>(2 * 8 * 512, 0.25F), 2);
  const auto out = run_sandpipe("render " + conf.string() + " " + in.string() + " " + (dir_ / "out.wav").string());
  EXPECT_EQ(out.status, 1) << out.output;
  EXPECT_NE(out.output.find("NOT PROCESSED: 2 of 8 blocks of slot \"p\" came out dry; first error: its output held NaN"),
            std::string::npos)
      << out.output;
  sf_count_t frames = 0;
  const auto got = read_wav(dir_ / "out.wav", frames);
  EXPECT_EQ(frames, 8 * 512);
  for (const float v : got) ASSERT_TRUE(std::isfinite(v));
}

TEST_F(Cli, RenderExitsTwoForAPluginThatCannotLoad) {
  write("broken.py", "def oops(:\n");
  const auto conf = write("chain.conf", R"(plugins = [ { name = "fx" path = "broken.py" } ])");
  const auto in = write_wav("in.wav", std::vector<float>(2 * 1024, 0.25F), 2);
  const auto out = run_sandpipe("render " + conf.string() + " " + in.string() + " " + (dir_ / "out.wav").string());
  EXPECT_EQ(out.status, 2) << out.output;
  EXPECT_NE(out.output.find("broken.py"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("SyntaxError"), std::string::npos) << out.output;
  // With --allow-bypass the slot passes audio: the file is written, exit 0.
  const auto allowed = run_sandpipe("render " + conf.string() + " " + in.string() + " " +
                                    (dir_ / "out.wav").string() + " --allow-bypass");
  EXPECT_EQ(allowed.status, 0) << allowed.output;
  EXPECT_NE(allowed.output.find("NOT PROCESSED: 2 of 2 blocks"), std::string::npos) << allowed.output;
}

TEST_F(Cli, SetRefusesBadUsageWithTwoAndAMissingDaemonWithOne) {
  for (const char* args : {"set", "set node", "set node trim:gain", "set node gain 1", "set node :gain 1",
                           "set node trim: 1", "set node trim:gain 1 lp:freq"}) {
    const auto out = run_sandpipe(args);
    EXPECT_EQ(out.status, 2) << args << ": " << out.output;
  }
  // A negative value is a value, not an option; with no daemon there: exit 1, said why.
  const auto out = run_sandpipe("set node trim:gain -0.5", "PIPEWIRE_REMOTE=sandpipe-cli-test-nobody");
  EXPECT_EQ(out.status, 1) << out.output;
  EXPECT_NE(out.output.find("cannot connect to PipeWire"), std::string::npos) << out.output;
}

/// `sandpipe status` reads $XDG_RUNTIME_DIR/sandpipe/NODE.status (the live tests read a real
/// node's): one for a live pid (this test's) and one for a dead one.
TEST_F(Cli, StatusPrintsATableOrJsonAndExitsOneForANodeThatIsNotRunning) {
  fs::create_directories(dir_ / "sandpipe");
  const std::string env = "XDG_RUNTIME_DIR=" + dir_.string();
  const auto status_json = [](long pid) {
    using nlohmann::ordered_json;
    const auto slot = [](const char* name, const char* kind, const char* state, int bypassed, int misses,
                         int exceptions, int restarts, const char* mode, int latency, long slot_pid,
                         const char* last_error) {
      return ordered_json{{"name", name},
                          {"kind", kind},
                          {"state", state},
                          {"blocks", 10},
                          {"bypassed_blocks", bypassed},
                          {"deadline_misses", misses},
                          {"exceptions", exceptions},
                          {"restarts", restarts},
                          {"mode", mode},
                          {"latency_frames", latency},
                          {"pid", slot_pid},
                          {"last_error", last_error}};
    };
    const ordered_json status = {
        {"node", "n"},
        {"pid", pid},
        {"instance", "x"},
        {"time", 0},
        {"timing", {{"cycles", 10}, {"overruns", 0}, {"longest_cycle_us", 90}}},
        {"slots",
         {slot("trim", "native", "running", 0, 0, 0, 0, "", 0, -1, ""),
          slot("fx", "python", "restarting", 3, 1, 2, 1, "auto", 512, 1234,
               "sandbox killed by SIGKILL\nmore")}},
    };
    return status.dump() + "\n";
  };
  const std::string live = status_json(static_cast<long>(::getpid()));
  std::ofstream(dir_ / "sandpipe" / "n.status") << live;

  const auto json = run_sandpipe("status n --json", env);
  EXPECT_EQ(json.status, 0) << json.output;
  EXPECT_EQ(json.output, live);

  const auto table = run_sandpipe("status n", env);
  EXPECT_EQ(table.status, 0) << table.output;
  for (const char* text : {"slot", "state", "dry", "misses", "restarts", "latency", "trim", "native", "fx",
                           "python", "restarting", "1234", "fx: last error: sandbox killed by SIGKILL"})
    EXPECT_NE(table.output.find(text), std::string::npos) << text << "\n" << table.output;
  EXPECT_EQ(table.output.find("more"), std::string::npos) << "the table shows the first line\n" << table.output;

  // A node that died without removing its file; a node that never ran; a file that is not JSON.
  pid_t child = fork();
  if (child == 0) _exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(waitpid(child, nullptr, 0), child);
  std::ofstream(dir_ / "sandpipe" / "dead.status") << status_json(static_cast<long>(child));
  std::ofstream(dir_ / "sandpipe" / "junk.status") << "{ not json";
  for (const char* node : {"dead", "never", "junk"}) {
    for (const char* flag : {"", " --json"}) {
      const auto out = run_sandpipe(std::string("status ") + node + flag, env);
      EXPECT_EQ(out.status, 1) << node << flag << ": " << out.output;
      EXPECT_NE(out.output.find(node), std::string::npos) << out.output;
    }
  }
  EXPECT_EQ(run_sandpipe("status", env).status, 2);
  EXPECT_EQ(run_sandpipe("status a b", env).status, 2);
}

TEST_F(Cli, HelpDescribesEveryCommand) {
  const auto out = run_sandpipe("--help");
  EXPECT_EQ(out.status, 0);
  for (const char* word : {"run CHAIN.conf", "render CHAIN.conf", "check CHAIN.conf", "inspect PLUGIN.py",
                           "reload NODE SLOT", "EXIT STATUS"})
    EXPECT_NE(out.output.find(word), std::string::npos) << word;
}

TEST_F(Cli, UnknownCommandIsAUsageError) {
  const auto out = run_sandpipe("frobnicate x");
  EXPECT_EQ(out.status, 2);
  EXPECT_NE(out.output.find("unknown command \"frobnicate\""), std::string::npos) << out.output;
}

TEST_F(Cli, ReloadNeedsANodeAndASlot) {
  for (const char* args : {"reload", "reload node", "reload node a b", "reload node fx --timeout 0",
                           "reload node fx --timeout", "reload node fx --frobnicate"}) {
    const auto out = run_sandpipe(args);
    EXPECT_EQ(out.status, 2) << args << ": " << out.output;
  }
}

TEST_F(Cli, CheckShowsDetectedTypes) {
  write("fx.py", "import sandpipe\n\nclass Fx(sandpipe.Plugin):\n    def process(self, block):\n        pass\n");
  const auto conf = write("chain.conf", R"(plugins = [
    { name = "trim" path = "builtin:gain" }
    { name = "fx" path = "fx.py" }
  ])");
  const auto out = run_sandpipe("check " + conf.string());
  EXPECT_EQ(out.status, 0) << out.output;
  EXPECT_NE(out.output.find("trim: native (built-in)"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("fx: python (sandboxed)"), std::string::npos) << out.output;
}

TEST_F(Cli, CheckExitsTwoForAPythonPluginThatCannotLoad) {
  // tests/host/fixtures/earlier-api/bad: each file breaks the plugin one way.
  const fs::path bad = fixtures / "earlier-api" / "bad";
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"no_plugin.py", {"no plugin found", "no create_plugin() function"}},
      {"factory_raises.py", {"create_plugin() raised", "RuntimeError: no licence key found", "Traceback"}},
      {"factory_junk.py", {"create_plugin() returned a processor (HalfAPlugin) without initialize(), start()"}},
      {"info_junk.py", {"get_info() returned dict", "not a PluginInfo"}},
  };
  for (const auto& [file, needles] : cases) {
    const auto conf = write("chain.conf", "plugins = [ { name = \"trim\" path = \"builtin:gain\" }\n"
                                          "  { name = \"fx\" path = \"" + (bad / file).string() + "\" } ]");
    const auto out = run_sandpipe("check " + conf.string());
    EXPECT_EQ(out.status, 2) << file << ": " << out.output;
    EXPECT_NE(out.output.find("python plugin \"fx\" (" + (bad / file).string() + "): "), std::string::npos)
        << file << ": " << out.output;
    for (const auto& needle : needles) EXPECT_NE(out.output.find(needle), std::string::npos) << file << ": " << out.output;
  }
  // initialize() or start() returning False shows only when the plugin runs: check runs neither.
  for (const std::string file : {"initialize_false.py", "start_false.py"}) {
    const auto conf = write("chain.conf", "plugins = [ { name = \"fx\" path = \"" + (bad / file).string() + "\" } ]");
    const auto out = run_sandpipe("check " + conf.string());
    EXPECT_EQ(out.status, 0) << file << ": " << out.output;
    EXPECT_EQ(out.output.find(": initialize"), std::string::npos) << file << ": " << out.output;
    EXPECT_EQ(out.output.find(": start"), std::string::npos) << file << ": " << out.output;
  }
}

TEST_F(Cli, MalformedConfigExitsTwoWithFileAndLine) {
  const auto conf = write("bad.conf", "node.name = \"x\"\nplugins = [\n  { name = \"a\" path = \"nope.wav\" }\n]\n");
  for (const std::string command : {"check ", "run ", "render "}) {
    const auto out = run_sandpipe(command + conf.string() + (command == "render " ? " in.wav out.wav" : ""));
    EXPECT_EQ(out.status, 2) << command << out.output;
    EXPECT_NE(out.output.find("bad.conf:3: plugin \"a\": cannot tell the plugin type of \"nope.wav\""),
              std::string::npos)
        << out.output;
  }
}

TEST_F(Cli, CheckRefusesNativeParamsAsRunAndRenderDo) {
  write_wav("in.wav", std::vector<float>(2 * 512, 0.25F), 2);
  // A bad name, a wrong type, a value out of range: the same message, exit 2, from all three.
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"gian = 1", "unknown parameter \"gian\"; valid: gain"},
      {"gain = \"loud\"", "parameter \"gain\" expects a number in [0, 16], got \"loud\""},
      {"gain = 99", "parameter \"gain\" = 99 is out of range [0, 16]"},
  };
  for (const auto& [params, message] : cases) {
    const auto conf = write("chain.conf", "plugins = [ { name = \"g\" path = \"builtin:gain\" params = { " + params + " } } ]");
    for (const std::string command : {"check ", "run ", "render "}) {
      const auto out = run_sandpipe(command + conf.string() +
                                    (command == "render " ? " " + (dir_ / "in.wav").string() + " " + (dir_ / "out.wav").string() : ""));
      EXPECT_EQ(out.status, 2) << command << params << ": " << out.output;
      EXPECT_NE(out.output.find("plugin \"g\" (builtin:gain): " + message), std::string::npos)
          << command << params << ": " << out.output;
    }
  }
  const auto good = write("good.conf", R"(plugins = [ { name = "g" path = "builtin:gain" params = { gain = 2 } } ])");
  const auto out = run_sandpipe("check " + good.string());
  EXPECT_EQ(out.status, 0) << out.output;
}

TEST_F(Cli, OversizedConfigExitsTwo) {
  const auto conf = write("huge.conf", "node.description = \"" + std::string(5 << 20, 'x') + "\"\n");
  const auto out = run_sandpipe("check " + conf.string());
  EXPECT_EQ(out.status, 2) << out.output;
  EXPECT_NE(out.output.find("huge.conf: the config is " + std::to_string(fs::file_size(conf)) +
                            " bytes, more than the 4 MiB a config may have"),
            std::string::npos)
      << out.output;
}

TEST_F(Cli, RenderHalvesEverySampleThroughTheBinary) {
  const auto conf = write("chain.conf", R"(plugins = [ { name = "trim" path = "builtin:gain" params = { gain = 0.5 } } ])");
  std::vector<float> samples(2 * 3000);
  for (std::size_t i = 0; i < samples.size(); ++i) samples[i] = static_cast<float>((static_cast<int>(i * 7919 % 2001) - 1000) / 1000.0);
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = 2;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* in = sf_open((dir_ / "in.wav").c_str(), SFM_WRITE, &info);
  ASSERT_NE(in, nullptr);
  sf_writef_float(in, samples.data(), 3000);
  sf_close(in);

  const auto out = run_sandpipe("render " + conf.string() + " " + (dir_ / "in.wav").string() + " " +
                                (dir_ / "out.wav").string() + " --block 100");
  ASSERT_EQ(out.status, 0) << out.output;
  EXPECT_NE(out.output.find("trim: blocks 30"), std::string::npos) << out.output;

  SF_INFO out_info{};
  SNDFILE* result = sf_open((dir_ / "out.wav").c_str(), SFM_READ, &out_info);
  ASSERT_NE(result, nullptr);
  ASSERT_EQ(out_info.frames, 3000);
  std::vector<float> got(samples.size());
  sf_readf_float(result, got.data(), 3000);
  sf_close(result);
  for (std::size_t i = 0; i < samples.size(); ++i) ASSERT_EQ(got[i], samples[i] * 0.5F) << i;
}

TEST_F(Cli, RenderRejectsBadOptions) {
  const auto conf = write("chain.conf", "");
  EXPECT_EQ(run_sandpipe("render " + conf.string() + " a.wav b.wav --block 0").status, 2);
  EXPECT_EQ(run_sandpipe("render " + conf.string() + " a.wav b.wav --block x").status, 2);
  EXPECT_EQ(run_sandpipe("render " + conf.string() + " a.wav b.wav --colour").status, 2);
  EXPECT_EQ(run_sandpipe("render " + conf.string() + " a.wav").status, 2);
  const auto missing = run_sandpipe("render " + conf.string() + " /nonexistent/a.wav " + (dir_ / "b.wav").string());
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.output.find("/nonexistent/a.wav"), std::string::npos) << missing.output;
}

}  // namespace
