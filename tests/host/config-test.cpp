// Chain config: SPA-JSON syntax, type detection and errors that name file and line.
#include "host/config/config.h"

#include <gtest/gtest.h>

#include <unistd.h>
#include <cfloat>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <utility>
#include <vector>

namespace sandpipe::host {
namespace {

namespace fs = std::filesystem;

/// A scratch directory with a few plugin files, removed afterwards.
class ConfigDir : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string templ = (fs::temp_directory_path() / "sandpipe-config-XXXXXX").string();
    ASSERT_NE(mkdtemp(templ.data()), nullptr);
    dir_ = templ;
    std::ofstream(dir_ / "effect.py") << "import sandpipe\n";
    std::ofstream(dir_ / "fake.so") << "not an elf";
    std::ofstream(dir_ / "notes.txt") << "hello";
    fs::copy_file("/proc/self/exe", dir_ / "real.so");  // any ELF file will do for detection
  }
  void TearDown() override { fs::remove_all(dir_); }

  ChainConfig parse(std::string_view text) { return parse_config(text, "chain.conf", dir_); }

  /// The ConfigError message for `text`, or "" if it parsed.
  std::string error_of(std::string_view text) {
    try {
      (void)parse(text);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "";
  }

  fs::path dir_;
};

TEST_F(ConfigDir, ParsesTheDocumentedExample) {
  const auto config = parse(R"(
    node.name = "sandpipe-fx"
    channels  = 2
    plugins = [
      { name = "trim" path = "builtin:gain"   params = { gain = 0.5 } }
      { name = "lp"   path = "builtin:biquad" params = { type = "lowpass" freq = 8000 q = 0.707 } }
    ]
  )");
  EXPECT_EQ(config.node_name, "sandpipe-fx");
  EXPECT_EQ(config.node_description, "sandpipe-fx");
  EXPECT_EQ(config.channels, 2U);
  ASSERT_EQ(config.plugins.size(), 2U);
  EXPECT_EQ(config.plugins[0].name, "trim");
  EXPECT_EQ(config.plugins[0].kind, PluginKind::native_builtin);
  ASSERT_EQ(config.plugins[0].params.size(), 1U);
  EXPECT_EQ(std::get<double>(config.plugins[0].params[0].value), 0.5);
  const auto& lp = config.plugins[1].params;
  ASSERT_EQ(lp.size(), 3U);
  EXPECT_EQ(std::get<std::string>(lp[0].value), "lowpass");
  EXPECT_EQ(std::get<double>(lp[1].value), 8000.0);
  EXPECT_EQ(lp[2].line, 6);
}

TEST_F(ConfigDir, AcceptsBracesCommentsAndJsonPunctuation) {
  const auto config = parse(R"({
    # a comment
    "node.name": "x", "channels": 1,
    "plugins": [ { "name": "g", "path": "builtin:gain", "params": { "gain": 2, "mute": false } } ]
  })");
  EXPECT_EQ(config.node_name, "x");
  EXPECT_EQ(config.channels, 1U);
  ASSERT_EQ(config.plugins.size(), 1U);
  EXPECT_EQ(std::get<bool>(config.plugins[0].params[1].value), false);
}

TEST_F(ConfigDir, DefaultsWhenKeysAreAbsent) {
  const auto config = parse("");
  EXPECT_EQ(config.node_name, "sandpipe");
  EXPECT_EQ(config.channels, 2U);
  EXPECT_TRUE(config.plugins.empty());
  EXPECT_EQ(config.latency_max_ms, 20.0);
  EXPECT_TRUE(config.sandbox_zygote);
}

TEST_F(ConfigDir, SandboxZygoteIsABoolean) {
  EXPECT_FALSE(parse("sandbox.zygote = false").sandbox_zygote);
  EXPECT_TRUE(parse("sandbox.zygote = true").sandbox_zygote);
  EXPECT_NE(error_of("sandbox.zygote = \"no\"").find("chain.conf:1: sandbox.zygote must be true or false"),
            std::string::npos)
      << error_of("sandbox.zygote = \"no\"");
}

TEST_F(ConfigDir, DetectsEachPluginType) {
  const auto config = parse(R"(plugins = [
      { name = "a" path = "builtin:delay" }
      { name = "b" path = "effect.py" }
      { name = "c" path = "real.so" }
    ])");
  ASSERT_EQ(config.plugins.size(), 3U);
  EXPECT_EQ(config.plugins[0].kind, PluginKind::native_builtin);
  EXPECT_EQ(config.plugins[1].kind, PluginKind::python);
  EXPECT_EQ(config.plugins[1].resolved, fs::canonical(dir_ / "effect.py"));
  EXPECT_EQ(config.plugins[2].kind, PluginKind::native_library);
}

TEST_F(ConfigDir, FailClosedBitExactAndVirtualMicKeys) {
  std::ofstream(dir_ / "legacy.py") << "def create_plugin():\n    return None\n";
  const auto config = parse(R"(mode = "source" target = "alsa_input.usb-mic"
    plugins = [
      { name = "a" path = "effect.py" on-failure = "mute" bit-exact = true }
      { name = "b" path = "builtin:gain" max-level = -6 }
      { name = "c" path = "effect.py" }
      { name = "d" path = "legacy.py" }
    ])");
  EXPECT_EQ(config.mode, NodeMode::source);
  EXPECT_EQ(config.target, "alsa_input.usb-mic");
  ASSERT_EQ(config.plugins.size(), 4U);
  EXPECT_TRUE(config.plugins[0].bit_exact);
  EXPECT_TRUE(config.plugins[0].on_failure_given);
  EXPECT_EQ(config.plugins[1].max_level_db, -6.0);
  EXPECT_FLOAT_EQ(max_level_linear(config.plugins[1].max_level_db), 0.50118723F);
  EXPECT_EQ(max_level_linear(default_max_level_db), max_level_linear(36.0));
  EXPECT_EQ(max_level_linear(800.0), FLT_MAX);
  // The default policy: mute for an earlier-API processor (as loaded, or by its file when it
  // never loaded), bypass for an SDK plugin or a sink, whatever the entry says wins.
  EXPECT_EQ(effective_on_failure(config.plugins[2], "sdk", "processor"), OnFailure::bypass);
  EXPECT_EQ(effective_on_failure(config.plugins[2], "legacy", "processor"), OnFailure::mute);
  EXPECT_EQ(effective_on_failure(config.plugins[2], "legacy", "sink"), OnFailure::bypass);
  EXPECT_EQ(effective_on_failure(config.plugins[2], "", ""), OnFailure::bypass);
  EXPECT_EQ(effective_on_failure(config.plugins[3], "", ""), OnFailure::mute);
  EXPECT_EQ(effective_on_failure(config.plugins[0], "sdk", "processor"), OnFailure::mute);
  PluginSpec given = config.plugins[3];
  given.on_failure = OnFailure::bypass;
  given.on_failure_given = true;
  EXPECT_EQ(effective_on_failure(given, "legacy", "processor"), OnFailure::bypass);
}

TEST_F(ConfigDir, FailClosedBitExactAndVirtualMicErrors) {
  EXPECT_NE(error_of("plugins = [ { name = \"a\" path = \"effect.py\" bit-exact = yes } ]")
                .find("bit-exact must be true or false"),
            std::string::npos);
  EXPECT_NE(error_of("plugins = [ { name = \"a\" path = \"effect.py\" max-level = 900 } ]").find("max-level must be"),
            std::string::npos);
  const auto both = error_of("plugins = [\n { name = \"a\" path = \"effect.py\" bit-exact = true\n max-level = 6 } ]");
  EXPECT_NE(both.find("chain.conf:3: max-level does not apply to a bit-exact slot"), std::string::npos) << both;
  EXPECT_NE(error_of("target = \"x\"").find("target applies to mode = \"sink\" or \"source\""), std::string::npos);
  EXPECT_NE(error_of("mode = \"mic\"").find("mode must be \"filter\", \"sink\" or \"source\""), std::string::npos);
}

TEST_F(ConfigDir, UnknownTopLevelKeyNamesFileAndLine) {
  const auto message = error_of("node.name = \"a\"\n\nchanels = 2\n");
  EXPECT_NE(message.find("chain.conf:3:"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown key \"chanels\""), std::string::npos) << message;
}

TEST_F(ConfigDir, UnknownPluginKeyIsAnError) {
  const auto message = error_of("plugins = [\n { name = \"a\" path = \"builtin:gain\" parms = { } }\n]");
  EXPECT_NE(message.find("chain.conf:2:"), std::string::npos) << message;
  EXPECT_NE(message.find("unknown plugin key \"parms\""), std::string::npos) << message;
}

TEST_F(ConfigDir, BadValuesAreErrors) {
  EXPECT_NE(error_of("channels = 9").find("channels must be a whole number from 1 to 8"), std::string::npos);
  EXPECT_NE(error_of("channels = 1.5").find("channels must be"), std::string::npos);
  EXPECT_NE(error_of("channels = two").find("\"channels\" must be a number"), std::string::npos);
  EXPECT_NE(error_of("node.name = \"has space\"").find("node.name"), std::string::npos);
  EXPECT_NE(error_of("plugins = { }").find("plugins must be a list"), std::string::npos);
  EXPECT_NE(error_of("plugins = [ { name = \"a\" path = \"builtin:gain\" on-failure = \"explode\" } ]")
                .find("on-failure must be"),
            std::string::npos);
  EXPECT_NE(error_of("plugins = [ { name = \"a\" path = \"builtin:gain\" params = { gain = null } } ]")
                .find("parameter \"gain\" is null"),
            std::string::npos);
}

TEST_F(ConfigDir, MissingFileNamesThePluginAndThePath) {
  const auto message = error_of("plugins = [\n  { name = \"fx\"\n    path = \"missing.py\" }\n]");
  EXPECT_NE(message.find("chain.conf:3:"), std::string::npos) << message;
  EXPECT_NE(message.find("plugin \"fx\": file not found"), std::string::npos) << message;
  EXPECT_NE(message.find("missing.py"), std::string::npos) << message;
}

TEST_F(ConfigDir, UnknownTypeIsAnErrorWithTheReason) {
  const auto message = error_of("plugins = [ { name = \"n\" path = \"notes.txt\" } ]");
  EXPECT_NE(message.find("cannot tell the plugin type of \"notes.txt\""), std::string::npos) << message;
}

TEST_F(ConfigDir, SharedObjectThatIsNotElfIsRefused) {
  const auto message = error_of("plugins = [ { name = \"n\" path = \"fake.so\" } ]");
  EXPECT_NE(message.find("is not an ELF shared object"), std::string::npos) << message;
}

TEST_F(ConfigDir, DuplicateNamesAndMissingFieldsAreErrors) {
  EXPECT_NE(error_of("plugins = [ { name = \"a\" path = \"builtin:gain\" }\n { name = \"a\" path = \"builtin:gain\" } ]")
                .find("already used on line 1"),
            std::string::npos);
  EXPECT_NE(error_of("plugins = [ { path = \"builtin:gain\" } ]").find("has no name"), std::string::npos);
  EXPECT_NE(error_of("plugins = [ { name = \"a\" } ]").find("plugin \"a\" has no path"), std::string::npos);
  EXPECT_NE(error_of("plugins = [ { name = \"a:b\" path = \"builtin:gain\" } ]").find("plugin name"),
            std::string::npos);
  EXPECT_NE(error_of("channels = 2\nchannels = 1").find("chain.conf:2: \"channels\" given twice"), std::string::npos);
}

TEST_F(ConfigDir, SyntaxErrorsAreReported) {
  EXPECT_NE(error_of("plugins = [ { name = \"a\" ").find("chain.conf:1:"), std::string::npos);
  EXPECT_NE(error_of("node.name = \"unterminated\n").find("chain.conf:"), std::string::npos);
  EXPECT_NE(error_of("node.name").find("has no value"), std::string::npos);
}

TEST_F(ConfigDir, ConfigOverTheSizeLimitIsRefused) {
  const std::string big = "node.description = \"" + std::string(max_config_bytes, 'x') + "\"";
  EXPECT_NE(error_of(big).find("more than the 4 MiB a config may have"), std::string::npos);
}

/// Not a timed test: prints what a 40 000-parameter parse costs (it took 9.4 s while the parser
/// counted lines from the top for each token and scanned the params for duplicates).
TEST_F(ConfigDir, ManyParametersParseOnceEach) {
  std::string text = "plugins = [ { name = \"big\" path = \"effect.py\" params = {\n";
  for (int i = 0; i < 40'000; ++i) text += "  p" + std::to_string(i) + " = " + std::to_string(i) + "\n";
  text += "} } ]\n";
  const auto t0 = std::chrono::steady_clock::now();
  const ChainConfig config = parse(text);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_EQ(config.plugins.at(0).params.size(), 40'000U);
  EXPECT_EQ(config.plugins.at(0).params.back().line, 40'001);
  std::printf("[ config ] 40000 parameters (%zu bytes) parsed in %.1f ms\n", text.size(), ms);
  std::string twice = text;
  twice.insert(twice.rfind("} } ]"), "  p7 = 1\n");
  EXPECT_NE(error_of(twice).find("chain.conf:40002: parameter \"p7\" given twice"), std::string::npos);
}

TEST_F(ConfigDir, ConsecutivePluginsOfOneSandboxGroupAreOneSlot) {
  const auto config = parse(R"(
    plugins = [
      { name = "a"   path = "effect.py" sandbox = "voice" params = { x = 1 } }
      { name = "b"   path = "effect.py" sandbox = "voice" on-failure = "mute" params = { x = 2 y = 3 } }
      { name = "n"   path = "builtin:gain" }
      { name = "c"   path = "effect.py" sandbox = "voice" }
      { name = "d"   path = "effect.py" sandbox = "voice" }
      { name = "e"   path = "effect.py" sandbox = "voice" }
      { name = "own" path = "effect.py" }
    ]
  )");
  ASSERT_EQ(config.plugins.size(), 4U);
  const PluginSpec& g = config.plugins[0];
  ASSERT_TRUE(is_group(g));
  EXPECT_EQ(g.name, "voice");
  EXPECT_EQ(g.sandbox, "voice");
  EXPECT_EQ(g.kind, PluginKind::python);
  ASSERT_EQ(g.members.size(), 2U);
  EXPECT_EQ(g.members[1].name, "b");
  EXPECT_EQ(g.on_failure, OnFailure::mute) << "the slot fails closed as its strictest member";
  ASSERT_EQ(g.params.size(), 3U);
  EXPECT_EQ(g.params[0].member, 0U);
  EXPECT_EQ(g.params[1].member, 1U);
  EXPECT_EQ(g.params[2].key, "y");
  EXPECT_EQ(config.plugins[1].name, "n");
  EXPECT_EQ(config.plugins[2].name, "voice-2") << "the second run of the group";
  EXPECT_EQ(config.plugins[2].members.size(), 3U);
  EXPECT_FALSE(is_group(config.plugins[3]));
  EXPECT_EQ(plugins_as_written(config).size(), 7U);
}

TEST_F(ConfigDir, SandboxDefaultSharedGroupsEveryRunOfPythonPlugins) {
  const auto config = parse(R"(
    sandbox.default = "shared"
    plugins = [
      { name = "a" path = "effect.py" }
      { name = "b" path = "effect.py" }
      { name = "alone" path = "effect.py" sandbox = "mine" }
      { name = "c" path = "effect.py" }
    ]
  )");
  ASSERT_EQ(config.plugins.size(), 3U);
  EXPECT_EQ(config.plugins[0].name, "shared");
  EXPECT_EQ(config.plugins[0].members.size(), 2U);
  EXPECT_EQ(config.plugins[1].name, "alone");
  EXPECT_EQ(config.plugins[2].name, "c") << "a run of one is a plain slot";
  EXPECT_NE(error_of("sandbox.default = \"pooled\"").find("sandbox.default must be \"isolated\" or \"shared\""),
            std::string::npos);
}

TEST_F(ConfigDir, SandboxGroupErrorsNameThePluginAndTheLine) {
  const auto native = error_of("plugins = [\n { name = \"n\" path = \"builtin:gain\" sandbox = \"g\" } ]");
  EXPECT_NE(native.find("chain.conf:2: sandbox applies to Python plugins only"), std::string::npos) << native;
  const auto disagree = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" sandbox = \"g\" mode = \"sync\" }\n"
      " { name = \"b\" path = \"effect.py\" sandbox = \"g\" } ]");
  EXPECT_NE(disagree.find("chain.conf:3: plugin \"b\" and plugin \"a\" (line 2) share sandbox group \"g\" but not "
                          "their mode"),
            std::string::npos)
      << disagree;
  // A member's reload reloads its group; in a relay, not yet.
  const auto reloaded = parse(
      "plugins = [\n { name = \"a\" path = \"effect.py\" sandbox = \"g\" }\n"
      " { name = \"b\" path = \"effect.py\" sandbox = \"g\" reload = true } ]");
  ASSERT_EQ(reloaded.plugins.size(), 1U);
  EXPECT_TRUE(reloaded.plugins[0].reload);
  EXPECT_FALSE(reloaded.plugins[0].members[0].reload);
  EXPECT_TRUE(reloaded.plugins[0].members[1].reload);
  const auto relayed = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" sandbox = \"g\" mode = \"pipelined\" }\n"
      " { name = \"b\" path = \"effect.py\" sandbox = \"g\" mode = \"pipelined\" reload = true }\n"
      " { name = \"c\" path = \"effect.py\" mode = \"pipelined\" blocks = 0 } ]");
  EXPECT_NE(relayed.find("chain.conf:2: sandbox group \"g\" is pipelined right after or before another"),
            std::string::npos)
      << relayed;
  const auto clash = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" sandbox = \"b\" }\n"
      " { name = \"b\" path = \"effect.py\" sandbox = \"b\" } ]");
  EXPECT_NE(clash.find("sandbox group \"b\" has the name of a plugin"), std::string::npos) << clash;
  EXPECT_NE(error_of("plugins = [ { name = \"a\" path = \"effect.py\" sandbox = \"x:y\" } ]").find("must be 1-64"),
            std::string::npos);
}

TEST_F(ConfigDir, ConsecutivePipelinedPythonPluginsAreOneRelay) {
  const auto config = parse(R"(
    plugins = [
      { name = "a" path = "effect.py" mode = "pipelined" params = { x = 1 } }
      { name = "b" path = "effect.py" mode = "pipelined" blocks = 0 on-failure = "mute" params = { y = 2 } }
      { name = "c" path = "effect.py" mode = "pipelined" blocks = 2 timeout-ms = 50 }
      { name = "s" path = "effect.py" mode = "sync" }
      { name = "d" path = "effect.py" mode = "pipelined" }
    ]
  )");
  ASSERT_EQ(config.plugins.size(), 3U);
  const PluginSpec& relay = config.plugins[0];
  ASSERT_TRUE(is_relay(relay));
  EXPECT_FALSE(is_group(relay));
  EXPECT_EQ(relay.name, "a..c");
  EXPECT_EQ(relay.mode, SlotMode::pipelined);
  EXPECT_EQ(relay.blocks, 3U) << "the run's blocks are its plugins' sum";
  EXPECT_EQ(relay.on_failure, OnFailure::mute) << "the slot fails closed as its strictest plugin";
  ASSERT_EQ(relay.stages.size(), 3U);
  EXPECT_EQ(relay.stages[2].timeout_ms, 50.0) << "each keeps its own options";
  ASSERT_EQ(relay.params.size(), 2U);
  EXPECT_EQ(relay.params[1].member, 1U);
  EXPECT_EQ(config.plugins[1].name, "s");
  EXPECT_FALSE(is_relay(config.plugins[2])) << "a pipelined plugin alone is a slot like any other";
  EXPECT_EQ(plugins_as_written(config).size(), 5U);

  const auto host = parse(R"(
    pipeline.handoff = "host"
    plugins = [
      { name = "a" path = "effect.py" mode = "pipelined" }
      { name = "b" path = "effect.py" mode = "pipelined" }
    ]
  )");
  EXPECT_EQ(host.plugins.size(), 2U) << "no relay through the host";
}

TEST_F(ConfigDir, APipelinedSandboxGroupIsOneStageOfARelay) {
  const auto config = parse(R"(
    plugins = [
      { name = "a" path = "effect.py" mode = "pipelined" sandbox = "g" params = { x = 1 } }
      { name = "b" path = "effect.py" mode = "pipelined" sandbox = "g" on-failure = "mute" params = { y = 2 } }
      { name = "c" path = "effect.py" mode = "pipelined" blocks = 0 params = { z = 3 } }
      { name = "d" path = "effect.py" mode = "pipelined" blocks = 0 sandbox = "h" }
      { name = "e" path = "effect.py" mode = "pipelined" blocks = 0 sandbox = "h" params = { w = 4 } }
    ]
  )");
  ASSERT_EQ(config.plugins.size(), 1U);
  const PluginSpec& relay = config.plugins[0];
  ASSERT_TRUE(is_relay(relay));
  EXPECT_FALSE(is_group(relay)) << "the relay is not its first stage's group";
  EXPECT_TRUE(relay.sandbox.empty());
  EXPECT_EQ(relay.name, "g..h");
  EXPECT_EQ(relay.blocks, 1U);
  EXPECT_EQ(relay.on_failure, OnFailure::mute) << "b's, through its group";
  ASSERT_EQ(relay.stages.size(), 3U);
  EXPECT_TRUE(is_group(relay.stages[0]));
  EXPECT_EQ(relay.stages[0].members.size(), 2U);
  EXPECT_FALSE(is_group(relay.stages[1]));
  EXPECT_TRUE(is_group(relay.stages[2]));
  // The slot's params count its plugins as written: a, b, c, d, e.
  std::vector<std::pair<std::string, std::uint32_t>> params;
  for (const ParamSetting& p : relay.params) params.emplace_back(p.key, p.member);
  EXPECT_EQ(params,
            (std::vector<std::pair<std::string, std::uint32_t>>{{"x", 0}, {"y", 1}, {"z", 2}, {"w", 4}}));
  // Each stage keeps its own: a group's members by their index in the group.
  ASSERT_EQ(relay.stages[2].params.size(), 1U);
  EXPECT_EQ(relay.stages[2].params[0].member, 1U);
  std::vector<std::string> names;
  for (const PluginSpec* plugin : plugins_as_written(config)) names.push_back(plugin->name);
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c", "d", "e"}));

  const auto zero = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" mode = \"pipelined\" sandbox = \"g\" blocks = 0 }\n"
      " { name = \"b\" path = \"effect.py\" mode = \"pipelined\" sandbox = \"g\" blocks = 0 }\n"
      " { name = \"c\" path = \"effect.py\" mode = \"pipelined\" } ]");
  EXPECT_NE(zero.find("chain.conf:2: sandbox group \"g\" has blocks = 0"), std::string::npos) << zero;
}

TEST_F(ConfigDir, RelayErrorsNameThePluginAndTheLine) {
  const auto first = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" mode = \"pipelined\" blocks = 0 }\n"
      " { name = \"b\" path = \"effect.py\" mode = \"pipelined\" } ]");
  EXPECT_NE(first.find("chain.conf:2: plugin \"a\" has blocks = 0, which only a pipelined Python plugin or "
                       "group right after"),
            std::string::npos)
      << first;
  const auto host = error_of(
      "pipeline.handoff = \"host\"\nplugins = [\n { name = \"a\" path = \"effect.py\" mode = \"pipelined\" }\n"
      " { name = \"b\" path = \"effect.py\" mode = \"pipelined\" blocks = 0 } ]");
  EXPECT_NE(host.find("chain.conf:4: plugin \"b\" has blocks = 0"), std::string::npos) << host;
  EXPECT_NE(host.find("pipeline.handoff = \"host\" makes no relays"), std::string::npos) << host;
  const auto reload = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" mode = \"pipelined\" }\n"
      " { name = \"b\" path = \"effect.py\" mode = \"pipelined\" reload = true } ]");
  EXPECT_NE(reload.find("chain.conf:3: plugin \"b\" is pipelined right after or before another"), std::string::npos)
      << reload;
  const auto deep = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" mode = \"pipelined\" blocks = 10 }\n"
      " { name = \"b\" path = \"effect.py\" mode = \"pipelined\" blocks = 10 } ]");
  EXPECT_NE(deep.find("chain.conf:2: the relay from plugin \"a\" to plugin \"b\" is 20 blocks deep"),
            std::string::npos)
      << deep;
  const auto exact = error_of(
      "plugins = [\n { name = \"a\" path = \"effect.py\" mode = \"pipelined\" bit-exact = true }\n"
      " { name = \"b\" path = \"effect.py\" mode = \"pipelined\" } ]");
  EXPECT_NE(exact.find("chain.conf:3: plugin \"b\" and plugin \"a\" (line 2) are pipelined one after the other"),
            std::string::npos)
      << exact;
}

TEST(LoadConfig, MissingConfigFileIsAnError) {
  EXPECT_THROW((void)load_config("/nonexistent/chain.conf"), ConfigError);
}

TEST(ChannelPositions, FollowPipeWireNames) {
  EXPECT_EQ(channel_positions(1), std::vector<std::string>{"MONO"});
  EXPECT_EQ(channel_positions(2), (std::vector<std::string>{"FL", "FR"}));
  EXPECT_EQ(channel_positions(6).back(), "RR");
}

}  // namespace
}  // namespace sandpipe::host
