// Sandpipe on a desktop graph: parameters as Props (pw-cli, `sandpipe set`), the virtual sink
// with WirePlumber doing the linking, and a graph spanning "machines" through PipeWire's RTP
// modules on 127.0.0.1. One private session (tests/pw-session.sh) for the whole suite.
//
// No timed assertions: every wait polls a real condition (pw-dump, a log line, a process exit)
// with a generous timeout that only bounds a failure. Audio is judged by level and frequency
// (RTP and stream adapters add latency and may drop a packet at start-up), not sample by sample.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sndfile.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pw-test-util.h"

namespace sandpipe::desktop {
namespace {

namespace fs = std::filesystem;
using integration::Child;
using integration::Json;
using integration::poll_until;
using integration::pw_dump;
using integration::read_text;
using integration::run_command;
using namespace std::chrono_literals;

constexpr auto timeout = 30s;  // bounds failures only
constexpr double tone_hz = 1000.0;
constexpr double tone_peak = 0.5;
constexpr int rate = 48000;

std::string node_prop(const Json& dump, const std::string& name, const std::string& key) {
  for (const Json& o : dump.arr())
    if (o.text("type") == "PipeWire:Interface:Node" && o["info"]["props"].text("node.name") == name)
      return o["info"]["props"].text(key);
  return {};
}

/// Writes `seconds` of a stereo 1 kHz sine at tone_peak, float WAV.
void write_tone(const fs::path& file, double seconds) {
  SF_INFO info{};
  info.samplerate = rate;
  info.channels = 2;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open(file.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr) << sf_strerror(nullptr);
  const auto frames = static_cast<std::size_t>(seconds * rate);
  std::vector<float> data(frames * 2);
  for (std::size_t n = 0; n < frames; ++n)
    data[2 * n] = data[2 * n + 1] = static_cast<float>(tone_peak * std::sin(2 * M_PI * tone_hz * n / rate));
  sf_writef_float(f, data.data(), static_cast<sf_count_t>(frames));
  sf_close(f);
}

/// What a recording holds, judged in blocks of 100 ms of its first channel.
struct Judgement {
  int blocks_at_level = 0;   ///< blocks whose RMS is within `tolerance` of the expected RMS
  int loud_blocks = 0;       ///< blocks clearly above it (unprocessed audio)
  double freq_hz = 0;        ///< zero-crossing frequency over the blocks at level
  std::string levels;        ///< every block's RMS, for messages
};

Judgement judge(const fs::path& file, double expected_rms, double tolerance) {
  Judgement j;
  SF_INFO info{};
  SNDFILE* f = sf_open(file.c_str(), SFM_READ, &info);
  if (f == nullptr) {
    j.levels = std::string("cannot read: ") + sf_strerror(nullptr);
    return j;
  }
  std::vector<float> data(static_cast<std::size_t>(info.frames) * info.channels);
  sf_readf_float(f, data.data(), info.frames);
  sf_close(f);
  const std::size_t block = static_cast<std::size_t>(info.samplerate) / 10;
  std::size_t crossings = 0;
  std::size_t at_level_frames = 0;
  for (std::size_t start = 0; start + block <= static_cast<std::size_t>(info.frames); start += block) {
    double sum = 0;
    std::size_t zc = 0;
    for (std::size_t n = start; n < start + block; ++n) {
      const float x = data[n * info.channels];
      sum += static_cast<double>(x) * x;
      if (n > start && (data[(n - 1) * info.channels] < 0) != (x < 0)) ++zc;
    }
    const double rms = std::sqrt(sum / static_cast<double>(block));
    char buf[16];
    std::snprintf(buf, sizeof buf, "%.3f ", rms);
    j.levels += buf;
    if (std::fabs(rms - expected_rms) <= tolerance * expected_rms) {
      ++j.blocks_at_level;
      crossings += zc;
      at_level_frames += block;
    } else if (rms > expected_rms * (1 + 3 * tolerance)) {
      ++j.loud_blocks;
    }
  }
  if (at_level_frames > 0) j.freq_hz = crossings / 2.0 * info.samplerate / static_cast<double>(at_level_frames);
  return j;
}

// ---- the suite ------------------------------------------------------------------------------

class Desktop : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    session_dir_ = integration::start_pw_session(PW_SESSION_SH, "--rate 48000", session_error_);
    if (const char* sink = std::getenv("PW_SESSION_SINK")) sink_ = sink;  // NOLINT(concurrency-mt-unsafe)
  }

  static void TearDownTestSuite() {
    if (!session_dir_.empty()) run_command(std::string(PW_SESSION_SH) + " stop " + session_dir_ + " 2>&1");
    session_dir_.clear();
  }

  void SetUp() override {
    ASSERT_TRUE(session_error_.empty()) << session_error_;
    work_ = fs::temp_directory_path() / ("sandpipe-desk-" + std::to_string(getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(work_);
    fs::create_directories(work_);
    set_default_sink(sink_);
  }

  void TearDown() override {
    if (!HasFailure()) {
      fs::remove_all(work_);
    } else {
      std::fprintf(stderr, "logs kept in %s\n", work_.c_str());
    }
  }

  /// Makes `name` the configured default sink and waits until WirePlumber uses it.
  static void set_default_sink(const std::string& name) {
    auto [out, status] = run_command("pw-metadata 0 default.configured.audio.sink '{ \"name\": \"" + name +
                                     "\" }' Spa:String:JSON 2>&1");
    ASSERT_EQ(status, 0) << out;
    EXPECT_TRUE(poll_until(
        [&] {
          return run_command("pw-metadata 0 default.audio.sink 2>/dev/null").first.find("\"" + name + "\"") !=
                 std::string::npos;
        },
        timeout))
        << "WirePlumber did not make " << name << " the default sink";
  }

  fs::path write_config(const std::string& name, const std::string& extra, const std::string& plugins) const {
    fs::path p = work_ / (name + ".conf");
    std::ofstream(p) << "node.name = \"" << name << "\"\nchannels = 2\n" << extra << "plugins = [\n" << plugins << "]\n";
    return p;
  }

  std::unique_ptr<Child> start_node(const std::string& name, const fs::path& conf) {
    auto child = std::make_unique<Child>(std::vector<std::string>{SANDPIPE_EXE, "run", conf.string()},
                                         work_ / (name + ".out"), log_of(name));
    const bool up = poll_until(
        [&] { return !child->running() || read_text(log_of(name)).find(") ready") != std::string::npos; }, timeout);
    EXPECT_TRUE(up && child->running()) << "sandpipe did not come up:\n" << read_text(log_of(name));
    return child;
  }

  void stop_node(Child& node, const std::string& name) {
    node.signal(SIGTERM);
    EXPECT_EQ(node.wait_exit(timeout), std::optional<int>(0)) << read_text(log_of(name));
  }

  fs::path log_of(const std::string& name) const { return work_ / (name + ".err"); }

  bool log_has(const std::string& name, const std::string& text) const {
    return read_text(log_of(name)).find(text) != std::string::npos;
  }

  /// `sandpipe set ARGS…`: exit status and stderr.
  std::pair<int, std::string> sandpipe_set(const std::string& args) const {
    auto [out, status] = run_command(std::string(SANDPIPE_EXE) + " set " + args + " 2>&1");
    return {status, out};
  }

  /// `pw-cli enum-params ID WHAT` of the node named `name`.
  static std::string enum_params(const std::string& name, const std::string& what) {
    const double id = node_id(pw_dump(), name);
    if (id < 0) return {};
    return run_command("pw-cli enum-params " + std::to_string(static_cast<long>(id)) + " " + what + " 2>&1").first;
  }

  /// The line after `String "NAME"` in enum-params Props output: the published value.
  static std::string published(const std::string& node, const std::string& param) {
    const std::string text = enum_params(node, "Props");
    const auto at = text.find("String \"" + param + "\"");
    if (at == std::string::npos) return {};
    const auto start = text.find('\n', at) + 1;
    auto line = text.substr(start, text.find('\n', start) - start);
    line.erase(0, line.find_first_not_of(' '));
    return line;
  }

  /// Records `target` (a source, or a sink's monitor with `monitor`) while the tone plays into
  /// `play_target`; returns the recording.
  fs::path play_and_record(const std::string& play_target, const std::string& record_target, bool monitor) {
    const fs::path tone = work_ / "tone.wav";
    write_tone(tone, 3.0);
    const fs::path rec = work_ / "rec.wav";
    std::vector<std::string> rec_argv{"pw-record", "--target", record_target, "--format", "f32", "--rate", "48000",
                                      "--channels", "2", "-P",
                                      std::string("{ node.name = \"desk-rec\"") +
                                          (monitor ? " stream.capture.sink = true" : "") + " }",
                                      rec.string()};
    Child recorder(rec_argv, work_ / "rec.out", work_ / "rec.err");
    EXPECT_TRUE(poll_until([&] { return links_between(pw_dump(), record_target, "desk-rec") >= 1; }, timeout))
        << "recorder not linked to " << record_target << ": " << read_text(work_ / "rec.err");
    Child player({"pw-cat", "--playback", "--target", play_target, "-P", "{ node.name = \"desk-play\" }",
                  tone.string()},
                 work_ / "play.out", work_ / "play.err");
    EXPECT_EQ(player.wait_exit(60s), std::optional<int>(0)) << read_text(work_ / "play.err");
    // pw-cat returns once its last buffer is queued; the tail still travels through the graph
    // (and the network): stop the recorder once it has captured another second of audio.
    const auto size_now = [&] {
      std::error_code ec;
      const auto n = fs::file_size(rec, ec);
      return ec ? std::uintmax_t{0} : n;
    };
    const std::uintmax_t wanted = size_now() + std::uintmax_t{rate} * 2 * sizeof(float);
    EXPECT_TRUE(poll_until([&] { return size_now() >= wanted; }, timeout)) << read_text(work_ / "rec.err");
    recorder.signal(SIGINT);
    EXPECT_TRUE(recorder.wait_exit(timeout).has_value());
    return rec;
  }

  inline static std::string session_dir_;
  inline static std::string session_error_;
  inline static std::string sink_ = "sandpipe-test-sink";
  fs::path work_;
};

const std::string gain_and_lowpass =
    "  { name = \"trim\" path = \"builtin:gain\" params = { gain = 0.5 } }\n"
    "  { name = \"lp\" path = \"builtin:biquad\" params = { type = \"lowpass\" freq = 8000 } }\n";

TEST_F(Desktop, ListsEveryParameterAsPropInfoAndProps) {
  const std::string name = "desk-props";
  auto node = start_node(name, write_config(name, "", gain_and_lowpass));
  ASSERT_FALSE(HasFailure());
  const std::string info = enum_params(name, "PropInfo");
  for (const char* p : {"\"trim:gain\"", "\"trim:mute\"", "\"lp:type\"", "\"lp:freq\"", "\"lp:q\""})
    EXPECT_NE(info.find(p), std::string::npos) << p << " not in PropInfo:\n" << info;
  EXPECT_NE(info.find("String \"highpass\""), std::string::npos) << "choice labels missing:\n" << info;
  EXPECT_EQ(published(name, "trim:gain"), "Float 0.500000");
  EXPECT_EQ(published(name, "lp:type"), "Int 0");
  EXPECT_EQ(published(name, "lp:freq"), "Float 8000.000000");
  stop_node(*node, name);
}

TEST_F(Desktop, SetChangesTheGainHeardThroughTheNode) {
  const std::string name = "desk-set";
  auto node = start_node(name, write_config(name, "", "  { name = \"trim\" path = \"builtin:gain\" params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());

  auto [status, out] = sandpipe_set(name + " trim:gain 0.25");
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(poll_until([&] { return published(name, "trim:gain") == "Float 0.250000"; }, timeout))
      << read_text(log_of(name));
  EXPECT_TRUE(log_has(name, "set trim:gain = 0.25"));

  // The change reached the data thread: the probe measures exactly a quarter.
  const fs::path report = work_ / "probe.json";
  Child probe({PW_PROBE_EXE, "--target", name, "--frames", "48000", "--expect-gain", "0.25", "--json",
               report.string(), "--name", "desk-probe"},
              work_ / "probe.out", work_ / "probe.err");
  ASSERT_EQ(probe.wait_exit(120s), std::optional<int>(0)) << read_text(work_ / "probe.err");
  const Json rep = Json::parse(read_text(report));
  EXPECT_NEAR(rep["gain"].num(), 0.25, 1e-6) << read_text(report);

  // pw-cli set-param reaches the same handler.
  const auto id = static_cast<long>(node_id(pw_dump(), name));
  auto [cli_out, cli_status] =
      run_command("pw-cli set-param " + std::to_string(id) + " Props '{ params = [ \"trim:gain\" 0.75 ] }' 2>&1");
  EXPECT_EQ(cli_status, 0) << cli_out;
  EXPECT_TRUE(poll_until([&] { return published(name, "trim:gain") == "Float 0.750000"; }, timeout))
      << read_text(log_of(name));
  stop_node(*node, name);
}

TEST_F(Desktop, RefusesUnknownNamesAndWrongTypesAndClampsRanges) {
  const std::string name = "desk-refuse";
  auto node = start_node(name, write_config(name, "", gain_and_lowpass));
  ASSERT_FALSE(HasFailure());
  // `sandpipe set` validates against the node's PropInfo as the node does: it prints each
  // refusal and exits 1, sends what the node takes, and reads it back.
  auto [status, out] = sandpipe_set(name + " nope:x 1 lp:type bogus trim:gain 99 trim:mute yes");
  EXPECT_EQ(status, 1) << out;
  EXPECT_NE(out.find("refused \"nope:x\": unknown parameter (known: trim:gain, trim:mute, lp:type"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("refused \"lp:type\": expects one of: lowpass, highpass"), std::string::npos) << out;
  EXPECT_NE(out.find("note: \"trim:gain\": 99 is out of range [0, 16], clamped to 16"), std::string::npos) << out;
  EXPECT_NE(out.find("refused \"trim:mute\": expects true or false, got \"yes\""), std::string::npos) << out;
  EXPECT_NE(out.find("trim:gain = 16"), std::string::npos) << out;
  EXPECT_TRUE(log_has(name, "set trim:gain = 16")) << read_text(log_of(name));
  EXPECT_EQ(published(name, "lp:type"), "Int 0");
  EXPECT_EQ(published(name, "trim:gain"), "Float 16.000000");

  // Every value taken (a choice by name, a clamped one with a note): exit 0.
  auto [ok_status, ok_out] = sandpipe_set(name + " lp:type highpass trim:gain -3");
  EXPECT_EQ(ok_status, 0) << ok_out;
  EXPECT_NE(ok_out.find("lp:type = \"highpass\""), std::string::npos) << ok_out;
  EXPECT_NE(ok_out.find("clamped to 0"), std::string::npos) << ok_out;
  EXPECT_EQ(published(name, "lp:type"), "Int 1");

  // pw-cli set-param reaches the node's own validation: the same words, in its log.
  const auto id = static_cast<long>(node_id(pw_dump(), name));
  run_command("pw-cli set-param " + std::to_string(id) +
              " Props '{ params = [ \"nope:x\" 1 \"lp:type\" \"bogus\" \"trim:mute\" \"yes\" \"trim:gain\" 99 ] }' 2>&1");
  EXPECT_TRUE(poll_until([&] { return published(name, "trim:gain") == "Float 16.000000"; }, timeout));
  const std::string log = read_text(log_of(name));
  EXPECT_NE(log.find("cannot set \"nope:x\": unknown parameter (known: trim:gain, trim:mute, lp:type"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("cannot set \"lp:type\": expects one of: lowpass, highpass"), std::string::npos) << log;
  EXPECT_NE(log.find("\"trim:gain\": 99 is out of range [0, 16], clamped to 16"), std::string::npos) << log;
  EXPECT_NE(log.find("cannot set \"trim:mute\": expects true or false, got \"yes\""), std::string::npos) << log;

  // The status of the same node, for people and for programs.
  auto [table, table_status] = run_command(std::string(SANDPIPE_EXE) + " status " + name + " 2>&1");
  EXPECT_EQ(table_status, 0) << table;
  EXPECT_NE(table.find("trim"), std::string::npos) << table;
  auto [json, json_status] = run_command(std::string(SANDPIPE_EXE) + " status " + name + " --json 2>&1");
  EXPECT_EQ(json_status, 0) << json;
  const Json parsed = Json::parse(json);
  EXPECT_EQ(parsed["slots"].arr().size(), 2U) << json;
  EXPECT_EQ(parsed["slots"].arr()[0].text("name"), "trim") << json;

  auto [missing_status, missing_out] = sandpipe_set("no-such-node trim:gain 1");
  EXPECT_EQ(missing_status, 1);
  EXPECT_NE(missing_out.find("no node named \"no-such-node\""), std::string::npos) << missing_out;
  auto [usage_status, usage_out] = sandpipe_set(name + " gain 1");
  EXPECT_EQ(usage_status, 2);
  EXPECT_NE(usage_out.find("is not SLOT:PARAM"), std::string::npos) << usage_out;
  stop_node(*node, name);
}

TEST_F(Desktop, PythonParametersGoThroughTheSandboxControlChannel) {
  const std::string name = "desk-python";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  auto node = start_node(
      name, write_config(name, "", "  { name = \"py\" path = \"" + plugin + "\" params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(published(name, "py:gain"), "Float 0.500000");
  auto [status, out] = sandpipe_set(name + " py:gain 0.25 py:gain 9");
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(poll_until([&] { return log_has(name, "set py:gain = 4"); }, timeout)) << read_text(log_of(name));
  EXPECT_TRUE(log_has(name, "set py:gain = 0.25"));
  EXPECT_TRUE(poll_until([&] { return published(name, "py:gain") == "Float 4.000000"; }, timeout));
  stop_node(*node, name);
}

TEST_F(Desktop, SinkModeIsADeviceWhoseOutputWirePlumberPlaysOnTheDefaultSink) {
  const std::string name = "desk-sink";
  auto node = start_node(name, write_config(name, "mode = \"sink\"\n",
                                            "  { name = \"trim\" path = \"builtin:gain\" params = { gain = 0.25 } }\n"));
  ASSERT_FALSE(HasFailure());
  Json dump = pw_dump();
  EXPECT_EQ(node_prop(dump, name, "media.class"), "Audio/Sink");
  EXPECT_EQ(node_prop(dump, name + ".output", "media.class"), "Stream/Output/Audio");
  EXPECT_TRUE(poll_until([&] { return links_between(pw_dump(), name + ".output", sink_) == 2; }, timeout))
      << "WirePlumber did not link the output to the default sink";
  EXPECT_NE(run_command("wpctl status 2>&1").first.find(name), std::string::npos);

  const fs::path rec = play_and_record(name, sink_, /*monitor=*/true);
  const double expected = 0.25 * tone_peak / std::sqrt(2.0);
  const Judgement j = judge(rec, expected, 0.05);
  EXPECT_GE(j.blocks_at_level, 20) << "levels: " << j.levels;  // 2 of the 3 s, processed
  EXPECT_EQ(j.loud_blocks, 0) << "unprocessed audio reached the device: " << j.levels;
  EXPECT_NEAR(j.freq_hz, tone_hz, 10.0) << j.levels;

  // Props live on the sink node, as on filter-chain's capture stream.
  auto [status, out] = sandpipe_set(name + " trim:gain 0.5");
  EXPECT_EQ(status, 0) << out;
  EXPECT_TRUE(poll_until([&] { return published(name, "trim:gain") == "Float 0.500000"; }, timeout));
  stop_node(*node, name);
}

TEST_F(Desktop, SinkModePublishesTheChainsLatencyOnBothStreams) {
  // A Python gain pipelined 2 blocks deep at a quantum of 512 (what the player asks for): the
  // chain delays by 1024 frames, and both streams say so on their ports, as a device would.
  const std::string name = "desk-sink-latency";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  auto node = start_node(name, write_config(name, "mode = \"sink\"\n",
                                            "  { name = \"fx\" path = \"" + plugin +
                                                "\" mode = \"pipelined\" blocks = 2 params = { gain = 0.5 } }\n"));
  ASSERT_FALSE(HasFailure());
  const fs::path tone = work_ / "tone.wav";
  write_tone(tone, 20.0);
  Child player({"pw-cat", "--playback", "--target", name, "--latency", "512", "-P",
                "{ node.name = \"desk-lat-play\" }", tone.string()},
               work_ / "play.out", work_ / "play.err");
  EXPECT_TRUE(poll_until([&] { return links_between(pw_dump(), "desk-lat-play", name) == 2; }, timeout))
      << read_text(work_ / "play.err");
  double in = -1;
  double out = -1;
  EXPECT_TRUE(poll_until(
      [&] {
        const Json dump = pw_dump();
        in = port_latency(dump, node_id(dump, name), "playback_FL", "Input");
        out = port_latency(dump, node_id(dump, name + ".output"), "output_FL", "Output");
        return in == 1024 && out == 1024;
      },
      timeout))
      << "latency towards the device " << in << ", from the application " << out << ", not 1024\n"
      << read_text(log_of(name));
  player.signal(SIGTERM);
  EXPECT_TRUE(player.wait_exit(timeout).has_value());
  stop_node(*node, name);
}

TEST_F(Desktop, RtpOnLoopbackCarriesTheProcessedSignalToAnotherGraphNode) {
  // sandpipe (sink mode) → default sink = module-rtp-sink → UDP 127.0.0.1 → module-rtp-source
  // (an Audio/Source here) → pw-record. The modules run in their own client process, as they
  // would on two machines (the receiving one would run the rtp-source part).
  const int base = 20000 + static_cast<int>(getpid() % 20000) * 2;
  const fs::path conf = work_ / "rtp.conf";
  std::ofstream(conf)
      << "context.spa-libs = { audio.convert.* = audioconvert/libspa-audioconvert support.* = support/libspa-support }\n"
         "context.modules = [\n"
         "  { name = libpipewire-module-rt flags = [ ifexists nofail ] }\n"
         "  { name = libpipewire-module-protocol-native }\n"
         "  { name = libpipewire-module-client-node }\n"
         "  { name = libpipewire-module-adapter }\n"
         "  { name = libpipewire-module-rtp-sink args = {\n"
         "      sap.ip = 127.0.0.1 sap.port = "
      << base << " source.ip = 127.0.0.1 destination.ip = 127.0.0.1 destination.port = " << base + 1
      << "\n      sess.name = \"desk-rtp-in\" audio.rate = 48000 audio.channels = 2 audio.position = [ FL FR ]\n"
         "      stream.props = { media.class = \"Audio/Sink\" node.name = \"desk-rtp-out\" } } }\n"
         "  { name = libpipewire-module-rtp-source args = {\n"
         "      sap.ip = 127.0.0.1 sap.port = "
      << base << " sess.latency.msec = 50 stream.props = { media.class = \"Audio/Source\" } } }\n]\n";
  Child modules({"pipewire", "-c", conf.string()}, work_ / "rtp.out", work_ / "rtp.err");
  ASSERT_TRUE(poll_until([&] { return node_id(pw_dump(), "desk-rtp-out") >= 0; }, timeout)) << read_text(work_ / "rtp.err");
  // The receiving side appears once the sender's SAP announcement arrived.
  ASSERT_TRUE(poll_until([&] { return node_id(pw_dump(), "desk-rtp-in") >= 0; }, timeout)) << read_text(work_ / "rtp.err");
  set_default_sink("desk-rtp-out");

  const std::string name = "desk-net";
  auto node = start_node(name, write_config(name, "mode = \"sink\"\n",
                                            "  { name = \"trim\" path = \"builtin:gain\" params = { gain = 0.25 } }\n"));
  ASSERT_FALSE(HasFailure());
  EXPECT_TRUE(poll_until([&] { return links_between(pw_dump(), name + ".output", "desk-rtp-out") == 2; }, timeout));

  const fs::path rec = play_and_record(name, "desk-rtp-in", /*monitor=*/false);
  const double expected = 0.25 * tone_peak / std::sqrt(2.0);
  // S16 on the wire, a resampler in the receiver and a packet or two lost while it locks on.
  const Judgement j = judge(rec, expected, 0.1);
  EXPECT_GE(j.blocks_at_level, 15) << "levels: " << j.levels;
  EXPECT_EQ(j.loud_blocks, 0) << j.levels;
  // The receiver's rate-matching resampler pulls the pitch by up to ~1 % while it locks on
  // (11.5 and 14.6 Hz seen on a loaded machine); a wrong rate anywhere (44.1 vs 48 kHz) is off by 8.8 %.
  EXPECT_NEAR(j.freq_hz, tone_hz, 0.03 * tone_hz) << j.levels;

  stop_node(*node, name);
  set_default_sink(sink_);
  modules.signal(SIGTERM);
  EXPECT_TRUE(modules.wait_exit(timeout).has_value());
}

}  // namespace
}  // namespace sandpipe::desktop
