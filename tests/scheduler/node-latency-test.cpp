// The latency a node with a pipelined Python slot reports to the graph (pw-dump) equals the
// delay pw-probe measures through it. Own private PipeWire session (tests/pw-session.sh).
// No timed assertions: every wait polls a real condition, with a timeout that bounds failures.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "pw-test-util.h"

namespace sandpipe::integration {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

pid_t spawn(const std::vector<std::string>& argv, const fs::path& out, const fs::path& err) {
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDOUT_FILENO);
    dup2(open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644), STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/// ProcessLatency.rate (frames) of the node named `name` in pw-dump, or -1.
double process_latency(const std::string& name) {
  auto [out, status] = run_command("pw-dump 2>/dev/null");
  if (status != 0 || out.empty()) return -1;
  const Json dump = Json::parse(out);
  for (const Json& o : dump.arr()) {
    if (o.text("type") != "PipeWire:Interface:Node" || o["info"]["props"].text("node.name") != name) continue;
    const Json& pl = o["info"]["params"]["ProcessLatency"];
    if (pl.is_null() || pl.arr().empty()) return -1;
    const Json& rate = pl.arr()[0]["rate"];
    return rate.is_number() ? rate.num() : -1;
  }
  return -1;
}

/// The Latency entries of direction `latency_direction` ("Input" / "Output") on the ports of
/// node `name` that face `port_direction` ("input" / "output"), as (minRate, maxRate) frames.
std::vector<std::pair<double, double>> port_latency(const std::string& name,
                                                    const std::string& port_direction,
                                                    const std::string& latency_direction) {
  const Json dump = pw_dump();
  const Json node = find_node(dump, name);
  std::vector<std::pair<double, double>> found;
  if (node.is_null()) return found;
  const std::string id = node.text("id");
  for (const Json& o : dump.arr()) {
    if (o.text("type") != "PipeWire:Interface:Port" || o["info"]["props"].text("node.id") != id ||
        o["info"].text("direction") != port_direction)
      continue;
    const Json& params = o["info"]["params"]["Latency"];
    if (!params.is_array()) continue;
    for (const Json& l : params.arr())
      if (l.text("direction") == latency_direction)
        found.emplace_back(l["minRate"].num(), l["maxRate"].num());
  }
  return found;
}

/// True if all `ports` ports of `name` facing `port_direction` report `frames` (min = max) of
/// `latency_direction` latency.
bool ports_report(const std::string& name, const std::string& port_direction,
                  const std::string& latency_direction, double frames, std::size_t ports = 2) {
  const auto found = port_latency(name, port_direction, latency_direction);
  if (found.size() != ports) return false;
  for (const auto& [min, max] : found)
    if (min != frames || max != frames) return false;
  return true;
}

/// `pw-cli enum-params` of the node named `name` (`port_direction` empty) or of its first port
/// facing `port_direction`, for the param `what`.
std::string enum_params(const std::string& name, const std::string& port_direction, const std::string& what) {
  const Json dump = pw_dump();
  const Json node = find_node(dump, name);
  if (node.is_null()) return {};
  std::string id = node.text("id");
  if (!port_direction.empty()) {
    id.clear();
    for (const Json& o : dump.arr())
      if (id.empty() && o.text("type") == "PipeWire:Interface:Port" &&
          o["info"]["props"].text("node.id") == node.text("id") &&
          o["info"].text("direction") == port_direction)
        id = o.text("id");
  }
  return id.empty() ? std::string{} : run_command("pw-cli enum-params " + id + " " + what + " 2>&1").first;
}

/// Text for a failure message: the node's port latencies as pw-dump shows them.
std::string describe_ports(const std::string& name) {
  std::string text;
  for (const char* port_dir : {"input", "output"})
    for (const char* dir : {"Input", "Output"}) {
      text += std::string(port_dir) + " ports, " + dir + " latency:";
      for (const auto& [min, max] : port_latency(name, port_dir, dir))
        text += " " + std::to_string(static_cast<long>(min)) + ".." + std::to_string(static_cast<long>(max));
      text += "\n";
    }
  return text;
}

/// Writes a chain of one gain.py slot (× 0.5) pipelined over `blocks` and starts `sandpipe run`
/// (`mode`: the node's mode, "filter" or "sink").
pid_t start_node(const fs::path& work, const std::string& name, int blocks,
                 const std::string& mode = "filter") {
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  std::ofstream(work / (name + ".conf"))
      << "node.name = \"" << name << "\"\nmode = \"" << mode << "\"\nchannels = 2\nplugins = [\n"
      << "  { name = \"py\" path = \"" << plugin
      << "\" params = { gain = 0.5 } mode = \"pipelined\" blocks = " << blocks << " }\n]\n";
  return spawn({SANDPIPE_EXE, "run", (work / (name + ".conf")).string()}, work / (name + ".out"),
               work / (name + ".err"));
}

TEST(NodeLatency, PipelinedPythonSlotReportsTheDelayItAdds) {
  std::string session_error;
  const std::string session_dir =
      start_pw_session(PW_SESSION_SH, "--rate 48000 --quantum 512", session_error);
  ASSERT_FALSE(session_dir.empty()) << session_error;

  const fs::path work = fs::temp_directory_path() / ("sandpipe-sched-node-" + std::to_string(getpid()));
  fs::create_directories(work);
  const std::string name = "sandpipe-sched-latency";
  const pid_t node = start_node(work, name, 2);
  const fs::path node_err = work / (name + ".err");
  EXPECT_TRUE(poll_until([&] { return process_latency(name) >= 0; }, 30s)) << read_text(node_err);

  // A first probe run gets the node scheduled at the graph's quantum (512): the node then
  // re-reports L = 2 × 512. The second run measures.
  auto probe = [&](const std::string& frames) {
    const pid_t p = spawn({PW_PROBE_EXE, "--target", name, "--json", (work / "probe.json").string(), "--name",
                           "probe-sched", "--frames", frames, "--expect-gain", "0.5"},
                          work / "probe.out", work / "probe.err");
    EXPECT_EQ(wait_exit(p), 0) << read_text(work / "probe.err");
    return Json::parse(read_text(work / "probe.json"));
  };
  (void)probe("24000");
  EXPECT_TRUE(poll_until([&] { return process_latency(name) == 1024; }, 30s))
      << "ProcessLatency " << process_latency(name) << "\n"
      << read_text(node_err);
  const double reported = process_latency(name);
  const Json rep = probe("96000");
  std::printf(
      "pipelined Python slot (2 x 512): pw-dump ProcessLatency %.0f frames, probe delay %.0f frames "
      "(reliable %d), gain %.6f, dry cycles %.0f of %.0f\n",
      reported, rep["delay_frames"].num(), rep["delay_reliable"].boolean() ? 1 : 0, rep["gain"].num(),
      rep["dry_cycles"].num(), rep["cycles"].num());
  EXPECT_EQ(rep["delay_frames"].num(), reported);
  EXPECT_TRUE(rep["delay_reliable"].boolean());
  EXPECT_NEAR(rep["gain"].num(), 0.5, 1e-6);
  // The ports carry it too: outputs the latency from the sources (nothing before us: ours
  // alone), inputs the latency to the sinks (likewise).
  EXPECT_TRUE(poll_until([&] { return ports_report(name, "output", "Output", 1024); }, 30s))
      << describe_ports(name);
  EXPECT_TRUE(poll_until([&] { return ports_report(name, "input", "Input", 1024); }, 30s))
      << describe_ports(name);

  // A quantum change: L = 2 × 256, re-published on the node and its ports, and measured.
  auto [meta, meta_status] = run_command("pw-metadata -n settings 0 clock.force-quantum 256 2>&1");
  ASSERT_EQ(meta_status, 0) << meta;
  (void)probe("24000");
  EXPECT_TRUE(poll_until([&] { return process_latency(name) == 512; }, 30s))
      << "ProcessLatency " << process_latency(name) << "\n"
      << read_text(node_err);
  EXPECT_TRUE(poll_until([&] { return ports_report(name, "output", "Output", 512); }, 30s))
      << describe_ports(name);
  EXPECT_TRUE(poll_until([&] { return ports_report(name, "input", "Input", 512); }, 30s))
      << describe_ports(name);
  // The same through pw-cli (the Latency of an output port lists both directions: 0 and 512).
  const std::string cli_node = enum_params(name, "", "ProcessLatency");
  EXPECT_NE(cli_node.find("Int 512"), std::string::npos) << cli_node;
  const std::string cli_port = enum_params(name, "output", "Latency");
  EXPECT_NE(cli_port.find("Int 512"), std::string::npos) << cli_port;
  const Json rep256 = probe("96000");
  std::printf("after clock.force-quantum 256: pw-dump ProcessLatency %.0f frames, probe delay %.0f frames\n",
              process_latency(name), rep256["delay_frames"].num());
  EXPECT_EQ(rep256["delay_frames"].num(), 512);
  EXPECT_TRUE(rep256["delay_reliable"].boolean());

  kill(node, SIGTERM);
  EXPECT_EQ(wait_exit(node), 0) << read_text(node_err);
  run_command(std::string(PW_SESSION_SH) + " stop " + session_dir + " 2>&1");
  if (!HasFailure()) fs::remove_all(work);
}

TEST(NodeLatency, PortsAddTheLatencyOfTheNodesAroundThem) {
  // a (pipelined 2) → b (pipelined 1): b's outputs report a's latency + b's, a's inputs b's + a's.
  std::string log;
  const std::string session_dir = start_pw_session(PW_SESSION_SH, "--rate 48000 --quantum 512", log);
  ASSERT_FALSE(session_dir.empty()) << log;
  const fs::path work = fs::temp_directory_path() / ("sandpipe-sched-ports-" + std::to_string(getpid()));
  fs::create_directories(work);
  const pid_t a = start_node(work, "sandpipe-lat-a", 2);
  const pid_t b = start_node(work, "sandpipe-lat-b", 1);
  EXPECT_TRUE(poll_until(
      [&] { return process_latency("sandpipe-lat-a") > 0 && process_latency("sandpipe-lat-b") > 0; }, 30s))
      << read_text(work / "sandpipe-lat-a.err") << read_text(work / "sandpipe-lat-b.err");
  for (const char* ch : {"FL", "FR"}) {
    auto [out, status] = run_command(std::string("pw-link sandpipe-lat-a:output_") + ch +
                                     " sandpipe-lat-b:input_" + ch + " 2>&1");
    EXPECT_EQ(status, 0) << out;
  }
  double total = 0;
  EXPECT_TRUE(poll_until(
      [&] {
        total = process_latency("sandpipe-lat-a") + process_latency("sandpipe-lat-b");
        return ports_report("sandpipe-lat-b", "output", "Output", total) &&
               ports_report("sandpipe-lat-a", "input", "Input", total);
      },
      30s))
      << "a + b = " << total << "\na:\n"
      << describe_ports("sandpipe-lat-a") << "b:\n"
      << describe_ports("sandpipe-lat-b");
  std::printf("a (%.0f frames) -> b (%.0f frames): b's outputs and a's inputs report %.0f frames\n",
              process_latency("sandpipe-lat-a"), process_latency("sandpipe-lat-b"), total);
  EXPECT_GT(process_latency("sandpipe-lat-a"), 0);
  EXPECT_GT(process_latency("sandpipe-lat-b"), 0);

  for (const pid_t node : {a, b}) {
    kill(node, SIGTERM);
    EXPECT_EQ(wait_exit(node), 0);
  }
  run_command(std::string(PW_SESSION_SH) + " stop " + session_dir + " 2>&1");
  if (!HasFailure()) fs::remove_all(work);
}

TEST(NodeLatency, DeepeningWhileRunningIsRepublishedOnNodeAndPorts) {
  // An auto slot that calibrates sync (slow.py with no delay), then is made slower than its
  // share while audio runs (4.5 ms of sleep per 5.33 ms quantum of 256, share 4 ms): the
  // review deepens it, and node and ports report the new latency.
  std::string log;
  const std::string session_dir = start_pw_session(PW_SESSION_SH, "--rate 48000 --quantum 512", log);
  ASSERT_FALSE(session_dir.empty()) << log;
  auto [meta, meta_status] = run_command("pw-metadata -n settings 0 clock.force-quantum 256 2>&1");
  ASSERT_EQ(meta_status, 0) << meta;
  const fs::path work = fs::temp_directory_path() / ("sandpipe-sched-deepen-" + std::to_string(getpid()));
  fs::create_directories(work);
  const std::string name = "sandpipe-lat-deepen";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/slow.py";
  std::ofstream(work / "chain.conf") << "node.name = \"" << name << "\"\nchannels = 2\nplugins = [\n"
                                     << "  { name = \"slow\" path = \"" << plugin
                                     << "\" params = { delay_ms = 0 } mode = \"auto\" }\n]\n";
  const fs::path node_err = work / "node.err";
  const pid_t node =
      spawn({SANDPIPE_EXE, "run", (work / "chain.conf").string()}, work / "node.out", node_err);
  // Sync after calibration, unless this machine is very busy: then whatever it starts with.
  EXPECT_TRUE(poll_until([&] { return process_latency(name) >= 0; }, 30s)) << read_text(node_err);
  const pid_t probe = spawn({PW_PROBE_EXE, "--target", name, "--json", (work / "probe.json").string(),
                             "--name", "probe-deepen", "--frames", "0"},
                            work / "probe.out", work / "probe.err");
  // Once the probe runs the node is scheduled at 256: the latency it reports then.
  double initial = -1;
  EXPECT_TRUE(poll_until(
      [&] {
        initial = process_latency(name);
        return initial >= 0 && static_cast<long>(initial) % 256 == 0 &&
               ports_report(name, "output", "Output", initial);
      },
      30s))
      << describe_ports(name);
  auto [set, set_status] =
      run_command(std::string(SANDPIPE_EXE) + " set " + name + " slow:delay_ms 4.5 2>&1");
  EXPECT_EQ(set_status, 0) << set;
  double deepened = 0;
  EXPECT_TRUE(poll_until(
      [&] {
        deepened = process_latency(name);
        return deepened > initial && ports_report(name, "output", "Output", deepened) &&
               ports_report(name, "input", "Input", deepened);
      },
      60s))
      << "ProcessLatency " << deepened << "\n"
      << describe_ports(name) << read_text(node_err);
  std::printf("auto slot slowed down while running: ProcessLatency %.0f -> %.0f frames, ports follow\n",
              initial, deepened);
  EXPECT_EQ(static_cast<long>(deepened) % 256, 0) << "k whole quanta of 256";
  kill(probe, SIGTERM);
  (void)wait_exit(probe);
  kill(node, SIGTERM);
  EXPECT_EQ(wait_exit(node), 0) << read_text(node_err);
  run_command(std::string(PW_SESSION_SH) + " stop " + session_dir + " 2>&1");
  if (!HasFailure()) fs::remove_all(work);
}

TEST(NodeLatency, SinkModeAddsTheChainsLatencyOnBothStreams) {
  // mode = "sink": applications see the chain's latency on the sink's ports (towards the device),
  // the device side sees it on the playback stream's ports (from the applications). The sink's
  // chain is scheduled for PipeWire's default quantum: 2 × 1024.
  std::string log;
  const std::string session_dir = start_pw_session(PW_SESSION_SH, "--rate 48000 --quantum 512", log);
  ASSERT_FALSE(session_dir.empty()) << log;
  const fs::path work = fs::temp_directory_path() / ("sandpipe-sched-sink-" + std::to_string(getpid()));
  fs::create_directories(work);
  const std::string name = "sandpipe-lat-sink";
  const pid_t node = start_node(work, name, 2, "sink");
  EXPECT_TRUE(poll_until([&] { return ports_report(name, "input", "Input", 2048); }, 30s))
      << describe_ports(name) << read_text(work / (name + ".err"));
  EXPECT_TRUE(poll_until([&] { return ports_report(name + ".output", "output", "Output", 2048); }, 30s))
      << describe_ports(name + ".output") << read_text(work / (name + ".err"));
  kill(node, SIGTERM);
  EXPECT_EQ(wait_exit(node), 0) << read_text(work / (name + ".err"));
  run_command(std::string(PW_SESSION_SH) + " stop " + session_dir + " 2>&1");
  if (!HasFailure()) fs::remove_all(work);
}

}  // namespace
}  // namespace sandpipe::integration
