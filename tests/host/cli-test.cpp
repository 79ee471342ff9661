// The `sandpipe` command line as a user meets it: exit codes and messages.
#include <gtest/gtest.h>
#include <sndfile.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Outcome {
  int status = -1;
  std::string output;  ///< stdout and stderr together
};

/// Runs the sandpipe binary with `args` through the shell; collects its output and exit status.
Outcome run_sandpipe(const std::string& args) {
  const std::string command = std::string(SANDPIPE_EXE) + " " + args + " 2>&1";
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
  fs::path dir_;
};

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
  write("fx.py", "");
  const auto conf = write("chain.conf", R"(plugins = [
    { name = "trim" path = "builtin:gain" }
    { name = "fx" path = "fx.py" }
  ])");
  const auto out = run_sandpipe("check " + conf.string());
  EXPECT_EQ(out.status, 0) << out.output;
  EXPECT_NE(out.output.find("trim: native (built-in)"), std::string::npos) << out.output;
  EXPECT_NE(out.output.find("fx: python (sandboxed)"), std::string::npos) << out.output;
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

TEST_F(Cli, OversizedConfigExitsTwo) {
  const auto conf = write("huge.conf", "node.description = \"" + std::string(5 << 20, 'x') + "\"\n");
  const auto out = run_sandpipe("check " + conf.string());
  EXPECT_EQ(out.status, 2) << out.output;
  EXPECT_NE(out.output.find("huge.conf: the config is " + std::to_string(fs::file_size(conf)) +
                            " bytes, more than the 4 MiB a config may have"),
            std::string::npos)
      << out.output;
}

TEST_F(Cli, BadPluginParamExitsTwoBeforeStarting) {
  const auto conf = write("chain.conf", R"(plugins = [ { name = "g" path = "builtin:gain" params = { gian = 1 } } ])");
  const auto out = run_sandpipe("check " + conf.string());
  EXPECT_EQ(out.status, 0) << "check parses only: " << out.output;
  const auto run = run_sandpipe("run " + conf.string());
  EXPECT_EQ(run.status, 2) << run.output;
  EXPECT_NE(run.output.find("\"gian\""), std::string::npos) << run.output;
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
