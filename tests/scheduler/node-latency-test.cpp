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

TEST(NodeLatency, PipelinedPythonSlotReportsTheDelayItAdds) {
  std::string session_error;
  const std::string session_dir = start_pw_session(PW_SESSION_SH, "--rate 48000 --quantum 512", session_error);
  ASSERT_FALSE(session_dir.empty()) << session_error;

  const fs::path work = fs::temp_directory_path() / ("sandpipe-sched-node-" + std::to_string(getpid()));
  fs::create_directories(work);
  const std::string name = "sandpipe-sched-latency";
  const std::string plugin = std::string(SANDPIPE_SOURCE_ROOT) + "/plugins-py/examples/gain.py";
  std::ofstream(work / "chain.conf") << "node.name = \"" << name << "\"\nchannels = 2\nplugins = [\n"
                                     << "  { name = \"py\" path = \"" << plugin
                                     << "\" params = { gain = 0.5 } mode = \"pipelined\" blocks = 2 }\n]\n";
  const pid_t node = spawn({SANDPIPE_EXE, "run", (work / "chain.conf").string()}, work / "node.out", work / "node.err");
  EXPECT_TRUE(poll_until([&] { return process_latency(name) >= 0; }, 30s)) << read_text(work / "node.err");

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
      << "ProcessLatency " << process_latency(name) << "\n" << read_text(work / "node.err");
  const double reported = process_latency(name);
  const Json rep = probe("96000");
  std::printf("pipelined Python slot (2 x 512): pw-dump ProcessLatency %.0f frames, probe delay %.0f frames "
              "(reliable %d), gain %.6f, dry cycles %.0f of %.0f\n",
              reported, rep["delay_frames"].num(), rep["delay_reliable"].boolean() ? 1 : 0, rep["gain"].num(),
              rep["dry_cycles"].num(), rep["cycles"].num());
  EXPECT_EQ(rep["delay_frames"].num(), reported);
  EXPECT_TRUE(rep["delay_reliable"].boolean());
  EXPECT_NEAR(rep["gain"].num(), 0.5, 1e-6);

  kill(node, SIGTERM);
  EXPECT_EQ(wait_exit(node), 0) << read_text(work / "node.err");
  run_command(std::string(PW_SESSION_SH) + " stop " + session_dir + " 2>&1");
  if (!HasFailure()) fs::remove_all(work);
}

}  // namespace
}  // namespace sandpipe::integration
