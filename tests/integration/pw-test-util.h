// Helpers shared by the suites that drive a real private PipeWire graph (integration, desktop,
// sources-sinks, scheduler): child processes, shell commands, polling a real condition, pw-dump.
//
// No timed assertions: every wait polls a condition with a generous limit that only bounds a
// failure.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

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
#include <utility>
#include <vector>

#include "json-lite.h"

namespace sandpipe::integration {

/// The whole file as text ("" if it cannot be read).
inline std::string read_text(const std::filesystem::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
inline bool poll_until(const std::function<bool()>& cond, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

/// Runs a shell command, returns its stdout and exit status (-1 if it did not exit normally).
inline std::pair<std::string, int> run_command(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return {"", -1};
  std::array<char, 4096> buf{};
  while (std::size_t n = std::fread(buf.data(), 1, buf.size(), p)) out.append(buf.data(), n);
  const int status = pclose(p);
  return {out, WIFEXITED(status) ? WEXITSTATUS(status) : -1};
}

/// A child process with stdout and stderr in files; SIGKILLed and reaped if still running at
/// destruction. `argv[0]` is a path or a name looked up in PATH.
class Child {
 public:
  Child(const std::vector<std::string>& argv, const std::filesystem::path& out,
        const std::filesystem::path& err) {
    pid_ = fork();
    if (pid_ == 0) {
      const int o = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int e = open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(o, STDOUT_FILENO);
      dup2(e, STDERR_FILENO);
      std::vector<char*> args;
      args.reserve(argv.size() + 1);
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      execvp(args[0], args.data());
      _exit(127);
    }
  }
  ~Child() {
    if (pid_ > 0 && !status_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&&) = delete;
  Child& operator=(Child&&) = delete;

  void signal(int sig) const { kill(pid_, sig); }

  /// False once the child has exited (its status is then kept).
  bool running() {
    if (status_) return false;
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) == pid_) {
      status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      return false;
    }
    return true;
  }

  /// The exit status (128+signal if killed by one), or nullopt if still running after `limit`.
  std::optional<int> wait_exit(std::chrono::milliseconds limit) {
    poll_until([&] { return !running(); }, limit);
    return status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

/// Starts a private session with `tests/pw-session.sh start ARGS --watch <this pid>` and puts its
/// `export` lines into this process's environment (call it before any thread is started).
/// Returns the session's directory, or "" with `error` set.
inline std::string start_pw_session(const std::string& script, const std::string& args, std::string& error) {
  auto [out, status] =
      run_command(script + " start " + args + " --watch " + std::to_string(getpid()) + " 2>&1");
  if (status != 0) {
    error = "pw-session.sh start failed (" + std::to_string(status) + "): " + out;
    return "";
  }
  std::string dir;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind("export ", 0) != 0) continue;
    const auto eq = line.find('=');
    const std::string key = line.substr(7, eq - 7);
    const std::string value = line.substr(eq + 1);
    setenv(key.c_str(), value.c_str(), 1);  // NOLINT(concurrency-mt-unsafe): before any thread
    if (key == "PW_SESSION_DIR") dir = value;
  }
  if (dir.empty()) error = "pw-session.sh printed no PW_SESSION_DIR: " + out;
  return dir;
}

/// A fresh scratch directory `<tmp>/PREFIX-<pid>-TEST` for one test.
inline std::filesystem::path make_test_dir(const std::string& prefix, const std::string& test) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / (prefix + "-" + std::to_string(getpid()) + "-" + test);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

/// Removes a test's scratch directory, or keeps it (and says where) when the test failed.
inline void finish_test_dir(const std::filesystem::path& dir, bool failed) {
  if (!failed) {
    std::filesystem::remove_all(dir);
  } else {
    std::fprintf(stderr, "logs kept in %s\n", dir.c_str());
  }
}

/// The status file `sandpipe run` keeps for node `node`: $XDG_RUNTIME_DIR/sandpipe/NODE.status.
inline std::filesystem::path node_status_file(const std::string& node) {
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");  // NOLINT(concurrency-mt-unsafe): set before threads
  return std::filesystem::path(runtime != nullptr ? runtime : "") / "sandpipe" / (node + ".status");
}

/// The entry of slot `slot` in a node's status file, or a null Json while the file is not
/// written yet or being replaced.
inline Json node_slot_status(const std::filesystem::path& status_file, const std::string& slot) {
  try {
    const Json status = Json::parse(read_text(status_file));
    for (const Json& s : status["slots"].arr())
      if (s.text("name") == slot) return s;
  } catch (const std::exception&) {
  }
  return {};
}

/// The graph as pw-dump sees it; an empty list if pw-dump failed or was caught mid-change (the
/// callers poll again).
inline Json pw_dump() {
  auto [out, status] = run_command("pw-dump 2>/dev/null");
  if (status != 0 || out.empty()) return Json::parse("[]");
  try {
    return Json::parse(out);
  } catch (const std::exception&) {
    return Json::parse("[]");
  }
}

/// The pw-dump entry of the node named `name`, or a null Json.
inline Json find_node(const Json& dump, const std::string& name) {
  for (const Json& o : dump.arr())
    if (o.text("type") == "PipeWire:Interface:Node" && o["info"]["props"].text("node.name") == name) return o;
  return {};
}

/// The id of the node named `name`, or -1.
inline double node_id(const Json& dump, const std::string& name) {
  for (const Json& o : dump.arr())
    if (o.text("type") == "PipeWire:Interface:Node" && o["info"]["props"].text("node.name") == name)
      return o["id"].num();
  return -1;
}

/// Number of links from node `from` to node `to` (by name).
/// The published value of the node's Props parameter `name` ("SLOT:PARAM"): a number, a
/// string (a text parameter) or a boolean; null if the node does not publish it.
inline Json props_param(const Json& node, const std::string& name) {
  const Json& props = node["info"]["params"]["Props"];
  if (!props.is_array()) return {};
  for (const Json& p : props.arr()) {
    const Json& params = p["params"];
    if (!params.is_array()) continue;
    const auto& list = params.arr();
    for (std::size_t i = 0; i + 1 < list.size(); i += 2)
      if (list[i].is_string() && list[i].str() == name) return list[i + 1];
  }
  return {};
}

inline int links_between(const Json& dump, const std::string& from, const std::string& to) {
  const double a = node_id(dump, from);
  const double b = node_id(dump, to);
  if (a < 0 || b < 0) return 0;
  int n = 0;
  for (const Json& o : dump.arr()) {
    if (o.text("type") != "PipeWire:Interface:Link") continue;
    const Json& info = o["info"];
    if (info["output-node-id"].is_number() && info["output-node-id"].num() == a &&
        info["input-node-id"].is_number() && info["input-node-id"].num() == b)
      ++n;
  }
  return n;
}

/// The Latency `direction` ("Input", "Output") minRate of the node's port `port`, or -1.
inline double port_latency(const Json& dump, double node_id, const std::string& port,
                           const std::string& direction) {
  for (const Json& o : dump.arr()) {
    const Json& props = o["info"]["props"];
    if (o.text("type") != "PipeWire:Interface:Port" || !props["node.id"].is_number() ||
        props["node.id"].num() != node_id || props.text("port.name") != port)
      continue;
    const Json& latency = o["info"]["params"]["Latency"];
    if (!latency.is_array()) return -1;
    for (const Json& l : latency.arr())
      if (l.text("direction") == direction && l["minRate"].is_number()) return l["minRate"].num();
  }
  return -1;
}

}  // namespace sandpipe::integration
