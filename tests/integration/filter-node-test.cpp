// `sandpipe run` as a real node in a private headless PipeWire graph, checked with pw-dump and
// pw-probe. The suite starts its own session (tests/pw-session.sh) and stops it at the end.
//
// No timed assertions: every wait polls a real condition (a node in pw-dump, a line in a log,
// a count in the probe's status file) with a generous timeout that only bounds a failure.
#include <gtest/gtest.h>
#include <csignal>

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "pw-test-util.h"

namespace sandpipe::integration {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

constexpr auto startup_timeout = 30s;  // bounds failures only; on a quiet machine it takes < 1 s

std::vector<Json> ports_of(const Json& dump, double node_id) {
  std::vector<Json> ports;
  for (const Json& o : dump.arr()) {
    const Json& props = o["info"]["props"];
    if (o.text("type") == "PipeWire:Interface:Port" && props["node.id"].is_number() &&
        props["node.id"].num() == node_id) {
      ports.push_back(o);
    }
  }
  return ports;
}

bool node_present(const std::string& name) { return !find_node(pw_dump(), name).is_null(); }

// ---- the suite ------------------------------------------------------------------------------

/// `sandpipe set NODE PARAM TEXT`, then waits until the node's Props say `value`: empty when
/// they do, else what went wrong.
std::string set_and_wait(const std::string& node, const std::string& param, const std::string& text,
                         double value) {
  const auto [out, status] = run_command(std::string(SANDPIPE_EXE) + " set " + node + " " + param + " " + text + " 2>&1");
  if (status != 0) return "sandpipe set " + param + " exited " + std::to_string(status) + ": " + out;
  const bool seen = poll_until(
      [&] {
        const Json v = props_param(find_node(pw_dump(), node), param);
        return v.is_number() && v.num() == value;
      },
      startup_timeout);
  return seen ? std::string() : "the node's Props never said " + param + " = " + text;
}

/// Waits until the node's status file says slot `slot` was restarted once and runs again.
bool restarted_once(const fs::path& node_status, const std::string& slot) {
  return poll_until(
      [&] {
        const Json s = node_slot_status(node_status, slot);
        return !s.is_null() && s["restarts"].num() == 1 && s.text("state") == "running";
      },
      startup_timeout);
}

class FilterNode : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    session_dir_ = start_pw_session(PW_SESSION_SH, "--rate 48000 --quantum 512", session_error_);
  }

  static void TearDownTestSuite() {
    if (!session_dir_.empty()) {
      run_command(std::string(PW_SESSION_SH) + " stop " + session_dir_ + " 2>&1");
      session_dir_.clear();
    }
  }

  void SetUp() override {
    ASSERT_TRUE(session_error_.empty()) << session_error_;
    work_ = fs::temp_directory_path() / ("sandpipe-it-" + std::to_string(getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(work_);
    fs::create_directories(work_);
    // Each test leaves the graph at 48 kHz / 512.
    set_setting("clock.force-rate", "48000");
    set_setting("clock.force-quantum", "512");
  }

  void TearDown() override {
    if (!HasFailure()) {
      fs::remove_all(work_);
    } else {
      std::fprintf(stderr, "logs kept in %s\n", work_.c_str());
    }
  }

  static void set_setting(const std::string& key, const std::string& value) {
    auto [out, status] = run_command("pw-metadata -n settings 0 " + key + " " + value + " 2>&1");
    ASSERT_EQ(status, 0) << out;
  }

  /// Writes a config for `node_name` with the given plugins block entries.
  fs::path write_config(const std::string& node_name, const std::string& plugins) const {
    fs::path p = work_ / (node_name + ".conf");
    std::ofstream(p) << "node.name = \"" << node_name << "\"\n"
                     << "node.description = \"Sandpipe integration " << node_name << "\"\n"
                     << "channels = 2\n"
                     << "plugins = [\n"
                     << plugins << "]\n";
    return p;
  }

  /// Writes an SDK plugin whose process() is `body` to `plugin` as editors save: into a new
  /// file renamed over the old one, so the file changes at once.
  static void write_fx_plugin(const fs::path& plugin, const std::string& body) {
    const fs::path tmp = plugin.string() + ".new";
    std::ofstream(tmp) << "import sandpipe\n\nclass Fx(sandpipe.Plugin):\n    def process(self, block):\n"
                       << body;
    fs::rename(tmp, plugin);
  }

  static std::string gain_plugin(double gain) {
    return "  { name = \"trim\" path = \"builtin:gain\" params = { gain = " + std::to_string(gain) + " } }\n";
  }

  /// Starts `sandpipe run CONF` and waits until the node is in the graph.
  std::unique_ptr<Child> start_node(const std::string& node_name, const fs::path& conf) {
    auto child = std::make_unique<Child>(std::vector<std::string>{SANDPIPE_EXE, "run", conf.string()},
                                         work_ / (node_name + ".out"), work_ / (node_name + ".err"));
    const bool up = poll_until([&] { return !child->running() || node_present(node_name); }, startup_timeout);
    EXPECT_TRUE(up && child->running()) << "sandpipe did not come up; stderr:\n"
                                        << read_text(work_ / (node_name + ".err"));
    return child;
  }

  /// Stops `node` with SIGTERM and expects a clean exit and the node gone from the graph.
  void stop_node(Child& node, const std::string& node_name) {
    node.signal(SIGTERM);
    const auto status = node.wait_exit(startup_timeout);
    ASSERT_TRUE(status.has_value()) << "sandpipe ignored SIGTERM";
    EXPECT_EQ(*status, 0) << read_text(work_ / (node_name + ".err"));
    EXPECT_TRUE(poll_until([&] { return !node_present(node_name); }, startup_timeout))
        << "node still in the graph after exit";
  }

  /// Runs pw-probe against `target` to completion and returns its report.
  Json run_probe(const std::string& target, const std::vector<std::string>& extra) {
    std::vector<std::string> argv{
        PW_PROBE_EXE, "--target",       target, "--json", (work_ / "probe.json").string(),
        "--name",     "probe-" + target};
    argv.insert(argv.end(), extra.begin(), extra.end());
    Child probe(argv, work_ / "probe.out", work_ / "probe.err");
    const auto status = probe.wait_exit(120s);
    EXPECT_EQ(status, std::optional<int>(0))
        << read_text(work_ / "probe.err") << read_text(work_ / "probe.json");
    try {
      return Json::parse(read_text(work_ / "probe.json"));
    } catch (const std::exception& e) {
      ADD_FAILURE() << "probe report: " << e.what();
      return {};
    }
  }

  /// The common verdict on a probe report of an exact chain. Cycles the graph itself lost
  /// (xruns on a loaded machine: the capture read a whole buffer of another cycle, or got no
  /// buffer and read zeros; see CycleVerdict) are reported and bounded, never scored; any
  /// other mismatch fails. Dry (bypassed) cycles only count as lost where `allow_dry`.
  static void expect_exact(const Json& rep, double gain, std::int64_t delay, bool allow_dry = false) {
    ASSERT_TRUE(rep["ok"].is_null() ? false : rep["ok"].boolean()) << rep.text("error");
    EXPECT_GE(rep["frames"].num(), 48000);
    EXPECT_EQ(rep["delay_frames"].num(), static_cast<double>(delay));
    EXPECT_TRUE(rep["delay_reliable"].boolean());
    EXPECT_NEAR(rep["gain"].num(), gain, 1e-6);
    EXPECT_LE(rep["max_abs_error"].num(), 1e-6);
    // Where a slot may fall back, a ramp into or out of bypass is one too (the probe checked
    // that its every frame is processed, dry, or between the two at its own position).
    const double ramps = allow_dry ? rep["crossfade_cycles"].num() : 0;
    EXPECT_EQ(rep["wrong_cycles"].num() - ramps, 0) << "first bad cycles: " << first_bad(rep);
    EXPECT_EQ(rep["missing_cycles"].num(), 0);
    EXPECT_GT(rep["input_rms"].num(), 0.1);
    if (!allow_dry) {
      EXPECT_EQ(rep["dry_cycles"].num(), 0) << "unprocessed cycles: " << first_bad(rep);
    }
    const double lost =
        rep["stale_cycles"].num() + rep["silent_cycles"].num() + rep["dry_cycles"].num() + ramps;
    EXPECT_LE(2 * lost, rep["cycles"].num()) << "mostly lost or bypassed cycles: " << first_bad(rep);
    if (lost > 0) {
      std::fprintf(
          stderr,
          "note: of %.0f cycles %.0f stale, %.0f silent (graph xruns), %.0f bypassed, %.0f ramps to or from "
          "bypass; not scored: %s\n",
          rep["cycles"].num(), rep["stale_cycles"].num(), rep["silent_cycles"].num(), rep["dry_cycles"].num(), ramps,
          first_bad(rep).c_str());
    }
  }

  static std::string first_bad(const Json& rep) {
    std::string s;
    for (const Json& b : rep["first_bad_cycles"].arr()) {
      s += "[cycle " + b.text("index") + " pos " + b.text("position") + " +" + b.text("frames") + " off " +
           b.text("off_frames") + " shift " + b.text("matched_shift") +
           (b["dry"].is_null() || !b["dry"].boolean() ? "" : " dry") + "] ";
    }
    return s;
  }

  inline static std::string session_dir_;
  inline static std::string session_error_;
  fs::path work_;
};

TEST_F(FilterNode, AppearsWithClassNameAndPorts) {
  const std::string name = "sandpipe-it-ports";
  auto node = start_node(name, write_config(name, gain_plugin(0.5)));
  ASSERT_FALSE(HasFailure());

  const Json dump = pw_dump();
  const Json n = find_node(dump, name);
  ASSERT_FALSE(n.is_null());
  const Json& props = n["info"]["props"];
  EXPECT_EQ(props.text("media.class"), "Audio/Filter");
  EXPECT_EQ(props.text("node.description"), "Sandpipe integration " + name);
  EXPECT_EQ(props.text("media.type"), "Audio");
  EXPECT_EQ(props.text("media.category"), "Filter");
  EXPECT_EQ(props.text("media.role"), "DSP");
  EXPECT_FALSE(n["info"]["params"]["ProcessLatency"].is_null()) << "no ProcessLatency param";

  std::vector<std::string> names;
  for (const Json& p : ports_of(dump, n["id"].num())) {
    const Json& pp = p["info"]["props"];
    const std::string pname = pp.text("port.name");
    names.push_back(pname);
    EXPECT_EQ(pp.text("format.dsp"), "32 bit float mono audio") << pname;
    EXPECT_EQ(pname.substr(pname.find('_') + 1), pp.text("audio.channel")) << pname;
    EXPECT_EQ(p["info"].text("direction"), pname.rfind("input_", 0) == 0 ? "input" : "output") << pname;
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"input_FL", "input_FR", "output_FL", "output_FR"}));

  stop_node(*node, name);
}

TEST_F(FilterNode, HalvesTheProbeSignalExactly) {
  const std::string name = "sandpipe-it-gain";
  auto node = start_node(name, write_config(name, gain_plugin(0.5)));
  ASSERT_FALSE(HasFailure());
  const Json rep = run_probe(name, {"--frames", "96000", "--expect-gain", "0.5"});
  expect_exact(rep, 0.5, 0);
  EXPECT_NEAR(rep["gain_db"].num(), -6.0206, 1e-3);
  EXPECT_EQ(rep["rate"].num(), 48000);
  stop_node(*node, name);
}

TEST_F(FilterNode, ProbeMeasuresTheChainDelay) {
  // 10 ms at 48 kHz: 480 frames, and the gain still exact once aligned.
  const std::string name = "sandpipe-it-delay";
  auto node = start_node(
      name, write_config(name, gain_plugin(0.25) +
                                   "  { name = \"d\" path = \"builtin:delay\" params = { ms = 10 } }\n"));
  ASSERT_FALSE(HasFailure());
  const Json rep = run_probe(name, {"--frames", "96000", "--expect-gain", "0.25"});
  expect_exact(rep, 0.25, 480);
  stop_node(*node, name);
}

TEST_F(FilterNode, RunsWithOnlySomeChannelsLinked) {
  // The probe links FL only: FR's ports have no buffers. FL must still come through exactly.
  const std::string name = "sandpipe-it-partial";
  auto node = start_node(name, write_config(name, gain_plugin(0.5)));
  ASSERT_FALSE(HasFailure());
  const Json rep = run_probe(name, {"--channels", "1", "--frames", "48000", "--expect-gain", "0.5"});
  expect_exact(rep, 0.5, 0);
  ASSERT_EQ(rep["channels"].arr().size(), 1U);
  EXPECT_EQ(rep["channels"].arr()[0].text("position"), "FL");
  stop_node(*node, name);
  const std::string err = read_text(work_ / (name + ".err"));
  EXPECT_EQ(err.find("partial=0 "), std::string::npos) << "expected partially linked cycles: " << err;
}

TEST_F(FilterNode, RunsAPythonSlotThroughItsSandbox) {
  // The same exact halving, done by the example Python plugin in its sandbox process. A block
  // the sandbox misses its deadline for comes back dry (bypass): reported, bounded, not scored.
  const std::string name = "sandpipe-it-python";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  auto node = start_node(
      name, write_config(name, "  { name = \"py\" path = \"" + plugin + "\" params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());
  const Json rep = run_probe(name, {"--frames", "96000", "--expect-gain", "0.5"});
  expect_exact(rep, 0.5, 0, /*allow_dry=*/true);
  stop_node(*node, name);
  const std::string err = read_text(work_ / (name + ".err"));
  EXPECT_NE(err.find("slot py: blocks="), std::string::npos) << err;
}

/// How often `line` occurs in `text`.
std::size_t occurrences(const std::string& text, const std::string& line) {
  std::size_t n = 0;
  for (std::size_t at = text.find(line); at != std::string::npos; at = text.find(line, at + 1)) ++n;
  return n;
}

TEST_F(FilterNode, RunsAnEarlierApiProcessorAndSetsItsParameterLive) {
  // trim_gain.py, written for the earlier pipeline (tests/host/fixtures/earlier-api): gain and a
  // 48-frame delay it reports as latency, in both layouts: the folder in place (Sandpipe's
  // base_plugin) with a numeric gain, and a copy that ships its own base_plugin.py with the gain
  // as a string (a text Prop). A `sandpipe set` reaches its set_parameter() and changes the
  // audio; a value the plugin stores otherwise (it caps the gain at 2) is published as its
  // get_parameter() reads it back, not as sent; its lifecycle runs once, and stop()/shutdown()
  // come at the node's exit.
  const fs::path fixtures = fs::path(SANDPIPE_SOURCE_ROOT) / "tests/host/fixtures/earlier-api";
  for (const bool own_base : {false, true}) {
    SCOPED_TRACE(own_base ? "own base_plugin.py" : "Sandpipe's base_plugin");
    const std::string name = own_base ? "sandpipe-it-earlier-own" : "sandpipe-it-earlier";
    fs::path plugins = fixtures / "plugins_py";
    if (own_base) {
      plugins = work_ / "plugins_py";
      fs::copy(fixtures / "plugins_py", plugins, fs::copy_options::recursive);
      fs::copy_file(fixtures / "own-base/base_plugin.py", plugins / "base_plugin.py");
    }
    const std::string gain = own_base ? "\"0.5\"" : "0.5";
    auto node = start_node(
        name,
        write_config(name, "  { name = \"fx\" path = \"" + (plugins / "examples/trim_gain.py").string() +
                               "\" mode = \"sync\" params = { gain = " + gain + " delay = 48 } }\n"));
    ASSERT_FALSE(HasFailure());
    // The value get_parameter() reads back is published, typed as the config gave it.
    const Json published = props_param(find_node(pw_dump(), name), "fx:gain");
    if (own_base) {
      EXPECT_TRUE(published.is_string() && published.str() == "0.5") << read_text(work_ / (name + ".err"));
    } else {
      EXPECT_TRUE(published.is_number() && published.num() == 0.5) << read_text(work_ / (name + ".err"));
    }
    expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"}), 0.5, 48, /*allow_dry=*/true);

    auto [out, status] = run_command(std::string(SANDPIPE_EXE) + " set " + name + " fx:gain 0.25 2>&1");
    EXPECT_EQ(status, 0) << out;
    EXPECT_TRUE(poll_until(
        [&] {
          const Json v = props_param(find_node(pw_dump(), name), "fx:gain");
          return own_base ? v.is_string() && v.str() == "0.25" : v.is_number() && v.num() == 0.25;
        },
        startup_timeout))
        << read_text(work_ / (name + ".err"));
    (void)run_probe(name, {"--frames", "4800"});  // the change reaches the sandbox meanwhile
    expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 48,
                 /*allow_dry=*/true);

    // 8 is sent, the plugin stores 2: Props (and `sandpipe set`) show 2.
    std::tie(out, status) = run_command(std::string(SANDPIPE_EXE) + " set " + name + " fx:gain 8 2>&1");
    EXPECT_EQ(status, 0) << out;
    EXPECT_NE(out.find(own_base ? "fx:gain = \"2\" (what the plugin reads back; sent \"8\")"
                                : "fx:gain = 2 (what the plugin reads back; sent 8)"),
              std::string::npos)
        << out;
    Json held;
    EXPECT_TRUE(poll_until(
        [&] {
          held = props_param(find_node(pw_dump(), name), "fx:gain");
          return own_base ? held.is_string() && held.str() == "2" : held.is_number() && held.num() == 2.0;
        },
        startup_timeout))
        << read_text(work_ / (name + ".err"));
    stop_node(*node, name);

    const std::string err = read_text(work_ / (name + ".err"));
    EXPECT_NE(err.find("trim_gain: set_parameter gain=0.25"), std::string::npos) << err;
    EXPECT_NE(err.find("trim_gain: set_parameter gain=8"), std::string::npos) << err;
    EXPECT_EQ(occurrences(err, "trim_gain: created"), 1U) << "a spare made an instance:\n" << err;
    EXPECT_EQ(occurrences(err, "trim_gain: start\n"), 1U) << err;
    const auto stop = err.find("trim_gain: stop\n");
    ASSERT_NE(stop, std::string::npos) << err;
    EXPECT_NE(err.find("trim_gain: shutdown\n", stop), std::string::npos) << err;
    EXPECT_NE(err.find("trim_gain: created, base_plugin from " +
                       (own_base ? plugins.string() : std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py")),
              std::string::npos)
        << err;
  }
}

TEST_F(FilterNode, RunsASandboxGroupAsOneSlotWithEachMembersOwnParamsAndLatency) {
  // An SDK gain and the earlier pipeline's trim_gain (48 frames of latency) in one sandbox
  // group: one process and one hop. The probe hears both (× 0.5, delayed 48 frames: the slot's
  // latency is its members' sum), a `sandpipe set` of one member reaches only it, and the status
  // lists both under the group's slot, the earlier-API one failing closed (mute).
  const std::string name = "sandpipe-it-group";
  const std::string gain = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  const std::string trim =
      std::string(SANDPIPE_SOURCE_ROOT) + "/tests/host/fixtures/earlier-api/plugins_py/examples/trim_gain.py";
  auto node = start_node(
      name, write_config(name, "  { name = \"a\" path = \"" + gain +
                                   "\" mode = \"sync\" sandbox = \"voice\" params = { gain = 0.5 } }\n"
                                   "  { name = \"fx\" path = \"" + trim +
                                   "\" mode = \"sync\" sandbox = \"voice\" params = { gain = 1.0 delay = 48 } }\n"));
  ASSERT_FALSE(HasFailure());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"}), 0.5, 48, /*allow_dry=*/true);

  EXPECT_EQ(set_and_wait(name, "fx:gain", "0.5", 0.5), "")
      << read_text(work_ / (name + ".err"));
  EXPECT_TRUE(props_param(find_node(pw_dump(), name), "a:gain").num() == 0.5) << "only fx's gain changed";
  (void)run_probe(name, {"--frames", "4800"});  // the change reaches the sandbox meanwhile
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 48, /*allow_dry=*/true);

  auto [out, status] = run_command(std::string(SANDPIPE_EXE) + " status --json " + name + " 2>&1");
  ASSERT_EQ(status, 0) << out;
  const Json st = Json::parse(out);
  ASSERT_EQ(st["slots"].arr().size(), 1U) << out;
  const Json slot = st["slots"].arr().at(0);
  EXPECT_EQ(slot["name"].str(), "voice");
  EXPECT_EQ(slot["group"].str(), "voice");
  EXPECT_EQ(slot["on_failure"].str(), "mute") << "fails closed as its earlier-API member";
  ASSERT_EQ(slot["members"].arr().size(), 2U) << out;
  EXPECT_EQ(slot["members"].arr().at(0)["name"].str(), "a");
  EXPECT_EQ(slot["members"].arr().at(0)["on_failure"].str(), "bypass");
  EXPECT_EQ(slot["members"].arr().at(1)["name"].str(), "fx");
  EXPECT_EQ(slot["members"].arr().at(1)["on_failure"].str(), "mute");
  EXPECT_EQ(slot["members"].arr().at(1)["latency_frames"].num(), 48);
  std::tie(out, status) = run_command(std::string(SANDPIPE_EXE) + " status " + name + " 2>&1");
  EXPECT_NE(out.find("+ fx"), std::string::npos) << out;
  stop_node(*node, name);
  const std::string err = read_text(work_ / (name + ".err"));
  EXPECT_NE(err.find("trim_gain: set_parameter gain=0.5"), std::string::npos) << err;
}

TEST_F(FilterNode, RunsPipelinedPluginsInARowAsARelayAndRestartsOnlyTheOneKilled) {
  // Three pipelined gains in a row are one relay, one block deep (the later two say blocks = 0):
  // the probe hears × 0.125 delayed one quantum, not three. A `sandpipe set` of one reaches only
  // it; the status lists the three, each with its own sandbox; SIGKILL to the middle one's
  // sandbox restarts it alone, with its params, and the others keep their processes.
  const std::string name = "sandpipe-it-relay";
  const std::string gain = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  std::string entries;
  for (const char* n : {"a", "b", "c"}) {
    entries += std::string("  { name = \"") + n + "\" path = \"" + gain + "\" mode = \"pipelined\" " +
               (std::string(n) == "a" ? "" : "blocks = 0 ") + "params = { gain = 0.5 } }\n";
  }
  auto node = start_node(name, write_config(name, entries));
  ASSERT_FALSE(HasFailure());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.125"}), 0.125, 512, /*allow_dry=*/true);

  EXPECT_EQ(set_and_wait(name, "b:gain", "0.25", 0.25), "") << read_text(work_ / (name + ".err"));
  EXPECT_TRUE(props_param(find_node(pw_dump(), name), "a:gain").num() == 0.5) << "only b's gain changed";
  (void)run_probe(name, {"--frames", "4800"});  // the change reaches the sandbox meanwhile
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.0625"}), 0.0625, 512, true);

  const fs::path node_status = node_status_file(name);
  auto [out, status] = run_command(std::string(SANDPIPE_EXE) + " status --json " + name + " 2>&1");
  ASSERT_EQ(status, 0) << out;
  const Json st = Json::parse(out);
  ASSERT_EQ(st["slots"].arr().size(), 3U) << out;
  std::vector<double> pids;
  for (std::size_t k = 0; k < 3; ++k) {
    const Json slot = st["slots"].arr().at(k);
    EXPECT_EQ(slot["relay"].str(), "a..c") << out;
    EXPECT_EQ(slot["relay_stage"].num(), static_cast<double>(k));
    pids.push_back(slot["pid"].num());
  }
  EXPECT_EQ(st["slots"].arr().at(0)["latency_frames"].num(), 512) << out;
  EXPECT_NE(pids[0], pids[1]);
  EXPECT_NE(pids[1], pids[2]);

  ::kill(static_cast<pid_t>(pids[1]), SIGKILL);
  EXPECT_TRUE(restarted_once(node_status, "b")) << read_text(node_status) << read_text(work_ / (name + ".err"));
  EXPECT_EQ(node_slot_status(node_status, "a")["pid"].num(), pids[0]) << "a kept its sandbox";
  EXPECT_EQ(node_slot_status(node_status, "c")["pid"].num(), pids[2]) << "c kept its sandbox";
  EXPECT_EQ(node_slot_status(node_status, "a")["restarts"].num(), 0);
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.0625"}), 0.0625, 512, true);
  stop_node(*node, name);
}

TEST_F(FilterNode, RunsAPipelinedSandboxGroupAsOneStageOfARelay) {
  // Group g (a, b) and c, all pipelined, are one relay one block deep: g's sandbox hands each
  // block straight to c's. `sandpipe set` reaches a group's member (b) and the stage after it
  // (c) by their own names; SIGKILL to g's sandbox restarts the group alone, with b's param.
  const std::string name = "sandpipe-it-relay-group";
  const std::string gain = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  std::string entries;
  for (const char* n : {"a", "b", "c"}) {
    const bool grouped = std::string(n) != "c";
    entries += std::string("  { name = \"") + n + "\" path = \"" + gain + "\" mode = \"pipelined\" " +
               (grouped ? "sandbox = \"g\" " : "blocks = 0 ") + "params = { gain = 0.5 } }\n";
  }
  auto node = start_node(name, write_config(name, entries));
  ASSERT_FALSE(HasFailure());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.125"}), 0.125, 512,
               /*allow_dry=*/true);

  for (const char* param : {"b:gain", "c:gain"})
    EXPECT_EQ(set_and_wait(name, param, "0.25", 0.25), "") << read_text(work_ / (name + ".err"));
  EXPECT_TRUE(props_param(find_node(pw_dump(), name), "a:gain").num() == 0.5) << "a's gain did not change";
  (void)run_probe(name, {"--frames", "4800"});  // the changes reach the sandboxes meanwhile
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.03125"}), 0.03125, 512, true);

  const fs::path node_status = node_status_file(name);
  const Json g = node_slot_status(node_status, "g");
  const Json c = node_slot_status(node_status, "c");
  ASSERT_FALSE(g.is_null()) << read_text(node_status);
  ASSERT_FALSE(c.is_null()) << read_text(node_status);
  EXPECT_EQ(g["relay"].str(), "g..c");
  EXPECT_EQ(g["members"].arr().size(), 2U) << read_text(node_status);
  EXPECT_EQ(c["relay_stage"].num(), 1);
  EXPECT_NE(g["pid"].num(), c["pid"].num());

  ::kill(static_cast<pid_t>(g["pid"].num()), SIGKILL);
  EXPECT_TRUE(restarted_once(node_status, "g")) << read_text(node_status) << read_text(work_ / (name + ".err"));
  EXPECT_EQ(node_slot_status(node_status, "c")["pid"].num(), c["pid"].num()) << "c kept its sandbox";
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.03125"}), 0.03125, 512, true);
  stop_node(*node, name);
}

TEST_F(FilterNode, EarlierApiLoadErrorFailsTheSlotAndStatusSaysWhy) {
  // initialize() returns False: the node still starts (the slot falls back per its on-failure)
  // and `sandpipe status` names the file and the reason.
  const std::string name = "sandpipe-it-earlier-bad";
  const std::string plugin =
      std::string(SANDPIPE_SOURCE_ROOT) + "/tests/host/fixtures/earlier-api/bad/initialize_false.py";
  auto node = start_node(name, write_config(name, "  { name = \"bad\" path = \"" + plugin +
                                                      "\" mode = \"sync\" }\n" + gain_plugin(0.5)));
  ASSERT_FALSE(HasFailure());
  std::string status;
  EXPECT_TRUE(poll_until(
      [&] {
        status = run_command(std::string(SANDPIPE_EXE) + " status " + name + " 2>&1").first;
        return status.find("initialize() returned False") != std::string::npos;
      },
      startup_timeout))
      << status << read_text(work_ / (name + ".err"));
  EXPECT_NE(status.find("initialize_false.py"), std::string::npos) << status;
  EXPECT_EQ(node_slot_status(node_status_file(name), "bad").text("state"), "failed") << status;
  stop_node(*node, name);
}

TEST_F(FilterNode, KeepsPlayingWhenASandboxIsKilledAndRestartsIt) {
  // A live graph, a Python slot, and its sandbox SIGKILLed from outside while audio flows: the
  // node keeps running, the supervisor restarts the sandbox (status file), and the probe sees
  // processed or dry audio at the right positions, never anything shifted or garbled. The only
  // cycles that are neither are the wet↔dry crossfades around the outage (64 frames each).
  const std::string name = "sandpipe-it-crash";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  auto node = start_node(name, write_config(name, "  { name = \"py\" path = \"" + plugin +
                                                      "\" mode = \"sync\" params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());

  ASSERT_NE(std::getenv("XDG_RUNTIME_DIR"), nullptr);
  const fs::path node_status = node_status_file(name);
  auto slot = [&] { return node_slot_status(node_status, "py"); };
  auto slot_num = [&](const char* key) {
    const Json s = slot();
    return s.is_null() || !s[key].is_number() ? -1.0 : s[key].num();
  };
  ASSERT_TRUE(
      poll_until([&] { return slot().text("state") == "running" && slot_num("pid") > 0; }, startup_timeout))
      << read_text(node_status);
  const auto first_pid = static_cast<pid_t>(slot_num("pid"));

  const fs::path probe_status = work_ / "probe-status.json";
  Child probe(
      {PW_PROBE_EXE, "--target", name, "--frames", "0", "--max-seconds", "60", "--expect-gain", "0.5",
       "--json", (work_ / "probe.json").string(), "--status", probe_status.string(), "--name", "probe-crash"},
      work_ / "probe.out", work_ / "probe.err");
  auto frames = [&]() -> double {
    try {
      const Json f = Json::parse(read_text(probe_status))["frames_by_quantum"]["512"];
      return f.is_number() ? f.num() : 0.0;
    } catch (const std::exception&) {
      return 0.0;
    }
  };
  ASSERT_TRUE(poll_until([&] { return frames() >= 24000; }, startup_timeout))
      << read_text(work_ / "probe.err");

  ASSERT_EQ(::kill(first_pid, SIGKILL), 0);
  ASSERT_TRUE(poll_until(
      [&] {
        return slot_num("restarts") >= 1 && slot().text("state") == "running" && slot_num("pid") > 0 &&
               static_cast<pid_t>(slot_num("pid")) != first_pid;
      },
      startup_timeout))
      << read_text(node_status);
  EXPECT_TRUE(node->running());
  const double after_restart = frames();
  ASSERT_TRUE(poll_until([&] { return frames() >= after_restart + 24000; }, startup_timeout));

  probe.signal(SIGTERM);
  ASSERT_EQ(probe.wait_exit(60s), std::optional<int>(0)) << read_text(work_ / "probe.err");
  const Json rep = Json::parse(read_text(work_ / "probe.json"));
  ASSERT_TRUE(rep["ok"].is_null() ? false : rep["ok"].boolean()) << rep.text("error");
  EXPECT_EQ(rep["delay_frames"].num(), 0.0) << "the timeline shifted";
  EXPECT_EQ(rep["missing_cycles"].num(), 0);
  EXPECT_LE(rep["wrong_cycles"].num(), 4) << "more than the crossfades: " << first_bad(rep);
  EXPECT_GE(rep["good_cycles"].num(), 0.8 * rep["cycles"].num()) << first_bad(rep);
  EXPECT_EQ(slot().text("kind"), "python");
  EXPECT_GE(slot_num("crashes"), 1.0);
  std::fprintf(
      stderr,
      "note: %.0f cycles: %.0f good, %.0f dry, %.0f crossfade, %.0f lost by the graph; restart %.1f ms\n",
      rep["cycles"].num(), rep["good_cycles"].num(), rep["dry_cycles"].num(), rep["wrong_cycles"].num(),
      rep["stale_cycles"].num() + rep["silent_cycles"].num(), slot_num("last_restart_ms"));
  stop_node(*node, name);
}

TEST_F(FilterNode, ReloadsAChangedPythonFileAndKeepsTheOldOneWhenTheNewOneFails) {
  // `reload = true`: editing the plugin's file swaps the new code in while the node runs; a
  // version that does not load is reported and the running one stays.
  const std::string name = "sandpipe-it-reload";
  const fs::path plugin = work_ / "fx.py";
  const auto write_plugin = [&](const std::string& body) { write_fx_plugin(plugin, body); };
  write_plugin("        block *= 0.5\n");
  auto node = start_node(name, write_config(name, "  { name = \"fx\" path = \"" + plugin.string() +
                                                      "\" mode = \"sync\" reload = true }\n"));
  ASSERT_FALSE(HasFailure());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"}), 0.5, 0, /*allow_dry=*/true);

  ASSERT_NE(std::getenv("XDG_RUNTIME_DIR"), nullptr);
  const fs::path node_status = node_status_file(name);
  auto slot = [&] { return node_slot_status(node_status, "fx"); };

  write_plugin("        block *= 0.25\n");
  ASSERT_TRUE(poll_until([&] { return slot()["reloads"].is_number() && slot()["reloads"].num() >= 1; },
                         startup_timeout))
      << read_text(node_status) << read_text(work_ / (name + ".err"));
  (void)run_probe(name, {"--frames", "4800"});  // the switch and its crossfade happen here
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 0, /*allow_dry=*/true);

  write_plugin("        block *= (\n");  // a syntax error
  ASSERT_TRUE(poll_until([&] { return slot().text("last_error").find("reload failed") != std::string::npos; },
                         startup_timeout))
      << read_text(node_status);
  EXPECT_NE(slot().text("last_error").find("SyntaxError"), std::string::npos) << slot().text("last_error");
  EXPECT_EQ(slot()["reloads"].num(), 1);
  EXPECT_EQ(slot().text("state"), "running");
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 0, /*allow_dry=*/true);
  stop_node(*node, name);
}

TEST_F(FilterNode, ReloadsAWholeSandboxGroupWhenAMembersFileChanges) {
  // fx (`reload = true`) and b share group g. Editing fx.py reloads the group: a new process
  // loads both, b keeps the gain `sandpipe set` gave it. `sandpipe reload NODE b` (a member's
  // name) reloads the group on demand.
  const std::string name = "sandpipe-it-reload-group";
  const fs::path plugin = work_ / "fx.py";
  write_fx_plugin(plugin, "        block *= 0.5\n");
  const std::string gain = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  auto node = start_node(
      name, write_config(name, "  { name = \"fx\" path = \"" + plugin.string() +
                                   "\" mode = \"sync\" sandbox = \"g\" reload = true }\n"
                                   "  { name = \"b\" path = \"" +
                                   gain + "\" mode = \"sync\" sandbox = \"g\" params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 0, /*allow_dry=*/true);
  ASSERT_EQ(set_and_wait(name, "b:gain", "0.25", 0.25), "");
  (void)run_probe(name, {"--frames", "4800"});
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.125"}), 0.125, 0, true);

  const fs::path node_status = node_status_file(name);
  auto group = [&] { return node_slot_status(node_status, "g"); };
  const double first_pid = group()["pid"].num();
  write_fx_plugin(plugin, "        block *= 0.25\n");
  ASSERT_TRUE(poll_until([&] { return group()["reloads"].is_number() && group()["reloads"].num() >= 1; },
                         startup_timeout))
      << read_text(node_status) << read_text(work_ / (name + ".err"));
  (void)run_probe(name, {"--frames", "4800"});  // the switch and its crossfade happen here
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.0625"}), 0.0625, 0, true);
  EXPECT_NE(group()["pid"].num(), first_pid) << "a new process for the group";
  EXPECT_EQ(group()["restarts"].num(), 0);

  auto [out, status] = run_command(std::string(SANDPIPE_EXE) + " reload " + name + " b --timeout 60 2>&1");
  EXPECT_EQ(status, 0) << out << read_text(work_ / (name + ".err"));
  EXPECT_NE(out.find("g reloaded from group g (fx.py, gain.py)"), std::string::npos) << out;
  EXPECT_EQ(group()["reloads"].num(), 2) << read_text(node_status);
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.0625"}), 0.0625, 0, true);
  stop_node(*node, name);
}

TEST_F(FilterNode, ReloadCommandCrossfadesToTheNewVersionAndReportsFailures) {
  // `sandpipe reload NODE SLOT` on a slot without `reload = true`, pipelined (a block is in
  // flight at every swap, which a restart would drop): gain 0.5 → 0.25 while a probe listens.
  // The output goes from one gain to the other through a wet → wet crossfade: no dry frame,
  // no shift. A broken version is refused with its traceback and 0.25 keeps playing.
  const std::string name = "sandpipe-it-reload-cmd";
  const fs::path plugin = work_ / "fx.py";
  const auto write_plugin = [&](const std::string& body) { write_fx_plugin(plugin, body); };
  const auto reload = [&](const std::string& node, const std::string& slot) {
    return run_command(std::string(SANDPIPE_EXE) + " reload " + node + " " + slot + " --timeout 60 2>&1");
  };
  write_plugin("        block *= 0.5\n");
  auto node =
      start_node(name, write_config(name, gain_plugin(1.0) + "  { name = \"fx\" path = \"" + plugin.string() +
                                              "\" mode = \"pipelined\" blocks = 1 }\n"));
  ASSERT_FALSE(HasFailure());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"}), 0.5, 512, /*allow_dry=*/true);

  ASSERT_NE(std::getenv("XDG_RUNTIME_DIR"), nullptr);
  const fs::path node_status = node_status_file(name);
  auto slot = [&] { return node_slot_status(node_status, "fx"); };

  // Errors first: nothing may change.
  auto [out, status] = reload(name, "nope");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("no slot \"nope\""), std::string::npos) << out;
  EXPECT_NE(out.find("fx (python)"), std::string::npos) << out;
  std::tie(out, status) = reload(name, "trim");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("trim is a native plugin"), std::string::npos) << out;
  std::tie(out, status) = reload("sandpipe-it-no-such-node", "fx");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("no node \"sandpipe-it-no-such-node\" is running"), std::string::npos) << out;
  std::tie(out, status) = run_command(std::string(SANDPIPE_EXE) + " reload " + name + " 2>&1");
  EXPECT_EQ(status, 2) << out;

  // The reload while the probe listens.
  const fs::path probe_status = work_ / "probe-status.json";
  Child probe({PW_PROBE_EXE, "--target", name, "--frames", "0", "--max-seconds", "60", "--expect-gain", "0.5",
               "--second-gain", "0.25", "--json", (work_ / "probe.json").string(), "--status",
               probe_status.string(), "--name", "probe-reload"},
              work_ / "probe.out", work_ / "probe.err");
  auto frames = [&]() -> double {
    try {
      const Json f = Json::parse(read_text(probe_status))["frames_by_quantum"]["512"];
      return f.is_number() ? f.num() : 0.0;
    } catch (const std::exception&) {
      return 0.0;
    }
  };
  ASSERT_TRUE(poll_until([&] { return frames() >= 24000; }, startup_timeout))
      << read_text(work_ / "probe.err");
  write_plugin("        block *= 0.25\n");
  const auto asked = std::chrono::steady_clock::now();
  std::tie(out, status) = reload(name, "fx");
  std::fprintf(stderr, "note: sandpipe reload took %.0f ms: %s",
               std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - asked).count(),
               out.c_str());
  EXPECT_EQ(status, 0) << out << read_text(work_ / (name + ".err"));
  EXPECT_NE(out.find("the new version is playing"), std::string::npos) << out;
  EXPECT_EQ(slot()["reloads"].num(), 1) << read_text(node_status);
  const double after = frames();
  ASSERT_TRUE(poll_until([&] { return frames() >= after + 24000; }, startup_timeout));
  probe.signal(SIGTERM);
  ASSERT_EQ(probe.wait_exit(60s), std::optional<int>(0)) << read_text(work_ / "probe.err");
  const Json rep = Json::parse(read_text(work_ / "probe.json"));
  ASSERT_TRUE(rep["ok"].is_null() ? false : rep["ok"].boolean()) << rep.text("error");
  EXPECT_EQ(rep["delay_frames"].num(), 512.0) << "the timeline shifted";
  EXPECT_EQ(rep["missing_cycles"].num(), 0);
  EXPECT_EQ(rep["dry_cycles"].num(), 0) << "unprocessed cycles: " << first_bad(rep);
  EXPECT_EQ(rep["dry_frames"].num(), 0) << "unprocessed frames: " << first_bad(rep);
  // The crossfade (64 frames) lies in one cycle or spans two; graph xruns are counted apart.
  EXPECT_LE(rep["wrong_cycles"].num(), 2) << "more than the crossfade: " << first_bad(rep);
  EXPECT_GE(rep["good_cycles"].num(), 0.8 * rep["cycles"].num()) << first_bad(rep);
  std::fprintf(stderr, "note: %.0f cycles: %.0f good, %.0f crossfade, %.0f lost by the graph\n",
               rep["cycles"].num(), rep["good_cycles"].num(), rep["wrong_cycles"].num(),
               rep["stale_cycles"].num() + rep["silent_cycles"].num());
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 512,
               /*allow_dry=*/true);

  // Nothing is linked now, so the graph does not run the node: a reload loads and answers that
  // it takes over at the next cycle. Two requests at once, then one more (it replaces the
  // version still waiting to be taken in): none of them hangs.
  const std::string both = "cd " + work_.string() + " && { " + SANDPIPE_EXE + " reload " + name +
                           " fx > r1.txt 2>&1 & " + SANDPIPE_EXE + " reload " + name +
                           " fx > r2.txt 2>&1; s2=$?; wait $!; echo $? $s2; }";
  std::tie(out, status) = run_command(both);
  EXPECT_EQ(out, "0 0\n") << read_text(work_ / "r1.txt") << read_text(work_ / "r2.txt");
  for (const char* f : {"r1.txt", "r2.txt"}) {
    EXPECT_NE(read_text(work_ / f).find("fx reloaded from"), std::string::npos) << read_text(work_ / f);
  }
  std::tie(out, status) = reload(name, "fx");
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("takes over at the next cycle"), std::string::npos) << out;
  const double reloads = slot()["reloads"].num();
  EXPECT_GE(reloads, 2) << read_text(node_status);

  // A version that does not load: the command fails with the traceback, 0.25 keeps playing.
  write_plugin("        block *= (\n");
  std::tie(out, status) = reload(name, "fx");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("reload failed, the running version stays"), std::string::npos) << out;
  EXPECT_NE(out.find("SyntaxError"), std::string::npos) << out;
  std::fprintf(stderr, "note: a broken version: %s", out.c_str());
  EXPECT_EQ(slot()["reloads"].num(), reloads) << read_text(node_status);
  EXPECT_EQ(slot().text("state"), "running");
  expect_exact(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 512,
               /*allow_dry=*/true);
  stop_node(*node, name);
  EXPECT_FALSE(fs::exists(node_status.parent_path() / (name + ".sock"))) << "the request socket stays behind";
}

TEST_F(FilterNode, ReloadCommandTimesOutOnANodeThatDoesNotAnswer) {
  // A socket that accepts (the kernel's backlog) but never answers, and one nobody listens on.
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  ASSERT_NE(runtime, nullptr);
  const fs::path dir = fs::path(runtime) / "sandpipe";
  fs::create_directories(dir);
  const fs::path mute = dir / "sandpipe-it-mute.sock";
  fs::remove(mute);
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", mute.c_str());
  ASSERT_EQ(::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(fd, 4), 0);
  auto [out, status] =
      run_command(std::string(SANDPIPE_EXE) + " reload sandpipe-it-mute fx --timeout 0.5 2>&1");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("no answer from node \"sandpipe-it-mute\" within 0.5 s"), std::string::npos) << out;
  ::close(fd);  // the file stays: a stale socket
  std::tie(out, status) = run_command(std::string(SANDPIPE_EXE) + " reload sandpipe-it-mute fx 2>&1");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("is not running (stale"), std::string::npos) << out;
  fs::remove(mute);
}

TEST_F(FilterNode, ExitsZeroOnSigtermAndLeavesTheGraph) {
  const std::string name = "sandpipe-it-sigterm";
  auto node = start_node(name, write_config(name, gain_plugin(1.0)));
  ASSERT_FALSE(HasFailure());
  stop_node(*node, name);
  // Its ports are gone as well.
  const Json dump = pw_dump();
  for (const Json& o : dump.arr()) {
    EXPECT_NE(o["info"]["props"].text("node.name"), name);
  }
}

TEST_F(FilterNode, KeepsAudioExactAcrossQuantumChanges) {
  const std::string name = "sandpipe-it-quantum";
  auto node = start_node(name, write_config(name, gain_plugin(0.5)));
  ASSERT_FALSE(HasFailure());

  const fs::path status_file = work_ / "probe-status.json";
  Child probe(
      {PW_PROBE_EXE, "--target", name, "--frames", "0", "--max-seconds", "60", "--expect-gain", "0.5",
       "--json", (work_ / "probe.json").string(), "--status", status_file.string(), "--name", "probe-q"},
      work_ / "probe.out", work_ / "probe.err");

  // frames the probe captured at quantum `q` so far
  auto frames_at = [&](int q) -> double {
    try {
      const Json st = Json::parse(read_text(status_file));
      const Json& f = st["frames_by_quantum"][std::to_string(q)];
      return f.is_number() ? f.num() : 0.0;
    } catch (const std::exception&) {
      return 0.0;  // not written yet
    }
  };
  constexpr double enough = 24000;  // half a second of audio at each quantum
  ASSERT_TRUE(poll_until([&] { return frames_at(512) >= enough; }, startup_timeout))
      << read_text(work_ / "probe.err");
  // Down to the smallest usual quantum, then up past the chain's block size (2048: the chain
  // splits) to PipeWire's quantum limit.
  for (const int q : {64, 1024, 4096, 8192}) {
    set_setting("clock.force-quantum", std::to_string(q));
    ASSERT_TRUE(poll_until([&] { return frames_at(q) >= enough; }, startup_timeout))
        << "quantum " << q << ": " << read_text(status_file);
  }

  probe.signal(SIGTERM);
  ASSERT_EQ(probe.wait_exit(60s), std::optional<int>(0)) << read_text(work_ / "probe.err");
  const Json rep = Json::parse(read_text(work_ / "probe.json"));
  expect_exact(rep, 0.5, 0);
  std::vector<double> seen;
  for (const Json& q : rep["quanta"].arr()) {
    seen.push_back(q["quantum"].num());
    EXPECT_LE(q["max_abs_error"].num(), 1e-6) << "quantum " << q["quantum"].num();
    EXPECT_EQ(q["wrong_cycles"].num(), 0) << "quantum " << q["quantum"].num();
    EXPECT_LE(2 * (q["stale_cycles"].num() + q["silent_cycles"].num()), q["cycles"].num())
        << "quantum " << q["quantum"].num();
  }
  EXPECT_EQ(seen, (std::vector<double>{512, 64, 1024, 4096, 8192}));

  stop_node(*node, name);
  const std::string err = read_text(work_ / (name + ".err"));
  EXPECT_NE(err.find("oversized=0 "), std::string::npos) << err;
}

TEST_F(FilterNode, BuildsForTheGraphRateAndRebuildsWhenItChanges) {
  const std::string name = "sandpipe-it-rate";
  set_setting("clock.force-rate", "44100");
  auto node = start_node(name, write_config(name, gain_plugin(0.5)));
  ASSERT_FALSE(HasFailure());
  const fs::path err = work_ / (name + ".err");
  EXPECT_TRUE(poll_until([&] { return read_text(err).find("chain at 44100 Hz") != std::string::npos; },
                         startup_timeout))
      << read_text(err);

  Json rep = run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"});
  expect_exact(rep, 0.5, 0);
  EXPECT_EQ(rep["rate"].num(), 44100);

  // The graph goes back to 48 kHz under the running node: the data thread notices, the main
  // thread builds a new chain and swaps it in.
  set_setting("clock.force-rate", "48000");
  rep = run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"});
  expect_exact(rep, 0.5, 0);
  EXPECT_EQ(rep["rate"].num(), 48000);
  EXPECT_TRUE(poll_until([&] { return read_text(err).find("rebuilding the chain") != std::string::npos; },
                         startup_timeout))
      << read_text(err);

  stop_node(*node, name);
  EXPECT_NE(read_text(err).find("rebuilds=1"), std::string::npos) << read_text(err);
}

// A rate change keeps the Python slots' sandboxes (issue 15): the same four processes, told the
// new rate between two blocks, each plugin prepared for it with its params (an SDK plugin whose
// level depends on the rate it was prepared for says which one it was; an earlier-API plugin
// gets stop(), set_sample_rate(), start()). No sandbox restarts, no calibration.
TEST_F(FilterNode, KeepsItsPythonSandboxesWhenTheGraphRateChanges) {
  const std::string name = "sandpipe-it-rate-py";
  const std::string root = SANDPIPE_SOURCE_ROOT;
  const std::string gain = root + "/plugins-py/examples/gain.py";
  const std::string earlier = root + "/tests/host/fixtures/earlier-api/plugins_py/examples/trim_gain.py";
  const std::string slots =
      "  { name = \"rate\" path = \"" + root + "/tests/integration/fixtures/rate_gain.py\" mode = \"sync\" params = { gain = 0.5 } }\n"
      "  { name = \"half\" path = \"" + gain + "\" mode = \"sync\" params = { gain = 0.5 } }\n"
      "  { name = \"trim\" path = \"" + earlier + "\" mode = \"sync\" params = { gain = 2.0 delay = 0 } }\n"
      "  { name = \"unity\" path = \"" + gain + "\" mode = \"sync\" params = { gain = 1.0 } }\n";
  set_setting("clock.force-rate", "44100");
  auto node = start_node(name, write_config(name, slots));
  ASSERT_FALSE(HasFailure());
  const fs::path err = work_ / (name + ".err");
  const fs::path node_status = node_status_file(name);
  const std::vector<std::string> names = {"rate", "half", "trim", "unity"};
  auto pids = [&] {
    std::vector<double> out;
    for (const auto& slot : names) {
      const Json s = node_slot_status(node_status, slot);
      out.push_back(s.is_null() || s.text("state") != "running" || !s["pid"].is_number() ? -1.0 : s["pid"].num());
    }
    return out;
  };
  auto all_running = [&] {
    const auto p = pids();
    return std::all_of(p.begin(), p.end(), [](double pid) { return pid > 0; });
  };
  ASSERT_TRUE(poll_until(all_running, startup_timeout)) << read_text(node_status);
  const std::vector<double> before = pids();

  // Four sync sandboxes in a row: a cycle one of them misses (the machine's stalls) comes out
  // neither processed nor dry, so the verdict asks for the level in nine cycles of ten, not all.
  const auto expect_level = [&](const Json& rep, double gain, double rate) {
    ASSERT_TRUE(rep["ok"].is_null() ? false : rep["ok"].boolean()) << rep.text("error");
    EXPECT_EQ(rep["rate"].num(), rate);
    EXPECT_EQ(rep["delay_frames"].num(), 0.0);
    EXPECT_EQ(rep["missing_cycles"].num(), 0);
    EXPECT_GE(rep["good_cycles"].num(), 0.9 * rep["cycles"].num())
        << "not at gain " << gain << ": " << first_bad(rep);
  };
  expect_level(run_probe(name, {"--frames", "48000", "--expect-gain", "0.25"}), 0.25, 44100);

  set_setting("clock.force-rate", "48000");
  // The graph only runs (and the node only sees the new rate) while something plays through it;
  // the blocks before each sandbox took the rate are at the old level, so this run is not scored.
  (void)run_probe(name, {"--frames", "24000", "--expect-gain", "0.5"});
  ASSERT_TRUE(poll_until([&] { return occurrences(read_text(err), "prepared for 48000 Hz in the same sandbox") >= 4; },
                         startup_timeout))
      << read_text(err);
  expect_level(run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"}), 0.5, 48000);

  EXPECT_EQ(pids(), before) << "a sandbox was replaced:\n" << read_text(node_status);
  for (const auto& slot : names) {
    const Json s = node_slot_status(node_status, slot);
    EXPECT_EQ(s["restarts"].num(), 0) << slot;
    EXPECT_EQ(s["crashes"].num(), 0) << slot;
  }
  stop_node(*node, name);
  const std::string text = read_text(err);
  EXPECT_NE(text.find("rebuilds=1"), std::string::npos) << text;
  const auto rebuilt = text.find("swapped in after ");
  ASSERT_NE(rebuilt, std::string::npos) << text;
  std::fprintf(stderr, "note: rate change: the chain was rebuilt and swapped in after %s\n",
               text.substr(rebuilt + 17, text.find('\n', rebuilt) - rebuilt - 17).c_str());
}

// A plugin that raises while it is prepared for the new rate is restarted at that rate, with its
// state, in a new sandbox (reliability.md's fault table), and plays on there.
TEST_F(FilterNode, RestartsAPythonPluginThatCannotFollowARateChange) {
  const std::string name = "sandpipe-it-rate-refused";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/tests/integration/fixtures/rate_refuser.py";
  set_setting("clock.force-rate", "44100");
  auto node = start_node(name, write_config(name, "  { name = \"refuser\" path = \"" + plugin +
                                                      "\" mode = \"sync\" params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());
  const fs::path err = work_ / (name + ".err");
  const fs::path node_status = node_status_file(name);
  auto slot = [&] { return node_slot_status(node_status, "refuser"); };
  auto slot_num = [&](const char* key) {
    const Json s = slot();
    return s.is_null() || !s[key].is_number() ? -1.0 : s[key].num();
  };
  ASSERT_TRUE(poll_until([&] { return slot().text("state") == "running" && slot_num("pid") > 0; }, startup_timeout))
      << read_text(node_status);
  const double first_pid = slot_num("pid");

  set_setting("clock.force-rate", "48000");
  (void)run_probe(name, {"--frames", "24000", "--expect-gain", "0.5"});  // the graph runs: the rate is seen
  ASSERT_TRUE(poll_until(
      [&] { return slot_num("restarts") >= 1 && slot().text("state") == "running" && slot_num("pid") > 0; },
      startup_timeout))
      << read_text(node_status) << read_text(err);
  EXPECT_NE(slot_num("pid"), first_pid);
  EXPECT_EQ(slot_num("crashes"), 1);
  EXPECT_NE(read_text(err).find("could not follow the graph's rate to 48000 Hz"), std::string::npos) << read_text(err);
  EXPECT_NE(read_text(err).find("prepared at 44100 Hz already"), std::string::npos) << read_text(err);
  const Json rep = run_probe(name, {"--frames", "48000", "--expect-gain", "0.5"});
  expect_exact(rep, 0.5, 0, /*allow_dry=*/true);
  EXPECT_EQ(rep["rate"].num(), 48000);
  stop_node(*node, name);
}

// The node logs through PipeWire's log on its own topics (host/slot/log.h): with PIPEWIRE_DEBUG
// unset it says what it always said, each line with its level and topic; PIPEWIRE_DEBUG turns
// topics down as for any PipeWire client. The exit summary is not logging: always printed.
TEST_F(FilterNode, LogsOnSandpipeTopicsAsPipewireDebugSays) {
  const std::string name = "sandpipe-it-log";
  const fs::path conf = write_config(name, gain_plugin(1.0));
  const fs::path err = work_ / (name + ".err");
  // Runs the node with PIPEWIRE_DEBUG = `debug` (nullopt: unset), sends it an unknown name and
  // trim:gain = `gain`, waits until its Props show the gain (the refusal is logged before),
  // stops it and returns its stderr.
  const auto run_node = [&](const std::optional<std::string>& debug, double gain) {
    std::vector<std::string> argv{"env"};
    if (debug) {
      argv.push_back("PIPEWIRE_DEBUG=" + *debug);
    } else {
      argv.insert(argv.end(), {"-u", "PIPEWIRE_DEBUG"});
    }
    argv.insert(argv.end(), {SANDPIPE_EXE, "run", conf.string()});
    Child node(argv, work_ / (name + ".out"), err);
    EXPECT_TRUE(poll_until([&] { return !node.running() || node_present(name); }, startup_timeout))
        << read_text(err);
    const auto id = static_cast<long>(node_id(pw_dump(), name));
    run_command("pw-cli set-param " + std::to_string(id) +
                " Props '{ params = [ \"nope:x\" 1 \"trim:gain\" " + std::to_string(gain) + " ] }' 2>&1");
    EXPECT_TRUE(poll_until(
        [&] {
          const Json v = props_param(find_node(pw_dump(), name), "trim:gain");
          return v.is_number() && v.num() == gain;
        },
        startup_timeout))
        << read_text(err);
    stop_node(node, name);
    return read_text(err);
  };
  // The whole line of `text` that contains `what`; empty if none does.
  const auto line_with = [](const std::string& text, const std::string& what) {
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);)
      if (line.find(what) != std::string::npos) return line;
    return std::string{};
  };
  const auto has = [](const std::string& line, const std::string& what) {
    return line.find(what) != std::string::npos;
  };
  const std::string refused = "cannot set \"nope:x\": unknown parameter";

  // Unset: warnings and info, each with its level and topic.
  std::string log = run_node(std::nullopt, 0.25);
  std::string line = line_with(log, ") ready, 2 channels");
  EXPECT_TRUE(has(line, "[I]") && has(line, " sandpipe.node ")) << log;
  line = line_with(log, refused);
  EXPECT_TRUE(has(line, "[W]") && has(line, " sandpipe.props ")) << log;
  line = line_with(log, "set trim:gain = 0.25");
  EXPECT_TRUE(has(line, "[I]") && has(line, " sandpipe.props ")) << log;
  EXPECT_EQ(line_with(log, "cycles=").rfind("sandpipe: cycles=", 0), 0U) << log;  // plain, as before

  // sandpipe.*:1: errors only; the exit summary stays.
  log = run_node("sandpipe.*:1", 0.5);
  EXPECT_FALSE(has(log, refused)) << log;
  EXPECT_FALSE(has(log, "set trim:gain")) << log;
  EXPECT_FALSE(has(log, ") ready")) << log;
  EXPECT_EQ(line_with(log, "cycles=").rfind("sandpipe: cycles=", 0), 0U) << log;

  // One topic at warnings, the others at PipeWire's default level (warnings as well).
  log = run_node("sandpipe.props:2", 0.75);
  line = line_with(log, refused);
  EXPECT_TRUE(has(line, "[W]") && has(line, " sandpipe.props ")) << log;
  EXPECT_FALSE(has(log, "set trim:gain")) << log;
  EXPECT_FALSE(has(log, ") ready")) << log;
}

}  // namespace
}  // namespace sandpipe::integration
