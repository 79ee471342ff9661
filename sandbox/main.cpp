// sandpipe-sandbox: runs one Python plugin for a Sandpipe host.
//
//   sandpipe-sandbox --control-fd N --shm-fd M --parent-pid P [--python-dir DIR] [--memory-mb MB]
//   [--allow-writes DIR] [--wake-lead-us US] [--keep-denormals 0|1]
//   [--input-edge-fd I] [--output-edge-fd O [--output-to-host 1]]
//
// Started by the host only (host/python/sandbox-client.cpp): N is this end of the control socketpair,
// M the memfd of the shared segment, P the host's pid (to notice a host that died before
// PR_SET_PDEATHSIG was armed), MB the address-space limit (0: none). I and O make it one of a
// relay of sandboxes (direct hand-off, shm/block-channel.h): I the memfd of the edge its jobs
// come from (the host or the sandbox before it fills it), O the memfd of the edge it passes its
// blocks on to (to the host: the relay's last sandbox).
// Confinement (sandbox/confinement.h): limits at start; namespaces, Landlock and the syscall
// allow-list before the plugin is imported (Session::confine).
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "sandbox/confinement.h"
#include "sandbox/sandbox-session.h"
#include "sandbox/zygote.h"
#include "shm/segment.h"

namespace {

struct Args {
  int control_fd = -1;
  int shm_fd = -1;
  int input_edge_fd = -1;
  int output_edge_fd = -1;
  bool output_to_host = false;
  long parent_pid = -1;
  long memory_mb = 0;
  std::filesystem::path writable;
  bool keep_denormals = false;
  std::uint64_t wake_lead_ns = sandpipe::shm::SandboxEndpoint::default_lead_ns;
  std::filesystem::path python_dir;
};

/// The host's arguments, checked by CLI11; nullopt (the reason printed on stderr) if they are
/// not what the host passes. `--help` prints the usage and exits 0.
std::optional<Args> parse_args(int argc, char** argv) {
  Args args;
  int keep_denormals = 0;
  long wake_lead_us = static_cast<long>(args.wake_lead_ns / 1000U);
  CLI::App app(
      "Runs one Python plugin for a Sandpipe host (started by the sandpipe host; not meant to be run by "
      "hand)",
      "sandpipe-sandbox");
  app.add_option("--control-fd", args.control_fd, "This end of the control socketpair")
      ->required()
      ->check(CLI::Range(3, std::numeric_limits<int>::max()));
  app.add_option("--shm-fd", args.shm_fd, "The memfd of the shared segment")
      ->required()
      ->check(CLI::Range(3, std::numeric_limits<int>::max()));
  app.add_option("--input-edge-fd", args.input_edge_fd, "The memfd of the edge this sandbox's jobs come from")
      ->check(CLI::Range(3, std::numeric_limits<int>::max()));
  app.add_option("--output-edge-fd", args.output_edge_fd, "The memfd of the edge it passes its blocks on to")
      ->check(CLI::Range(3, std::numeric_limits<int>::max()));
  int output_to_host = 0;
  app.add_option("--output-to-host", output_to_host, "1: the output edge goes back to the host")
      ->check(CLI::Range(0, 1));
  app.add_option("--parent-pid", args.parent_pid, "The host's pid")->check(CLI::PositiveNumber);
  app.add_option("--python-dir", args.python_dir, "The Sandpipe Python SDK");
  app.add_option("--memory-mb", args.memory_mb, "Address-space limit in MB (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--allow-writes", args.writable, "An absolute directory the plugin may write to")
      ->check(CLI::Validator(
          [](const std::string& s) {
            return s.starts_with('/') ? std::string() : "not an absolute path: " + s;
          },
          "ABSOLUTE DIR"));
  app.add_option("--wake-lead-us", wake_lead_us, "How early the sandbox wakes before a job is due")
      ->check(CLI::Range(0L, 1'000'000L));
  app.add_option("--keep-denormals", keep_denormals, "1: leave denormal floats on")->check(CLI::Range(0, 1));
  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    std::_Exit(app.exit(e));
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "sandpipe-sandbox: %s\n%s", e.what(), app.help().c_str());
    return std::nullopt;
  }
  std::vector<int> fds = {args.control_fd, args.shm_fd};
  for (int fd : {args.input_edge_fd, args.output_edge_fd}) {
    if (fd >= 0) fds.push_back(fd);
  }
  std::sort(fds.begin(), fds.end());
  if (std::adjacent_find(fds.begin(), fds.end()) != fds.end()) {
    std::fprintf(stderr, "sandpipe-sandbox: the descriptors given must all differ\n");
    return std::nullopt;
  }
  args.keep_denormals = keep_denormals == 1;
  args.output_to_host = output_to_host == 1;
  args.wake_lead_ns = static_cast<std::uint64_t>(wake_lead_us) * 1000U;
  return args;
}

/// Closes every descriptor but 0-2 and those this process was given (`keep`, -1 for none):
/// nothing else of the host's leaks into Python.
void close_other_fds(std::vector<int> keep) {
  std::erase(keep, -1);
  std::sort(keep.begin(), keep.end());
  unsigned next = 3;
  for (int fd : keep) {
    if (static_cast<unsigned>(fd) > next) ::syscall(SYS_close_range, next, static_cast<unsigned>(fd) - 1, 0u);
    next = static_cast<unsigned>(fd) + 1;
  }
  ::syscall(SYS_close_range, next, ~0u, 0u);
}

/// The edge behind `fd` (-1: none), attached; a message naming it if it does not attach.
std::optional<std::string> attach_edge(int fd, const char* which, std::optional<sandpipe::shm::Segment>& out) {
  if (fd < 0) return std::nullopt;
  auto attached = sandpipe::shm::Segment::attach(fd);
  if (auto* problem = std::get_if<std::string>(&attached)) return std::string(which) + " edge: " + *problem;
  out.emplace(std::move(std::get<sandpipe::shm::Segment>(attached)));
  return std::nullopt;
}

std::filesystem::path self_path() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::path("sandpipe-sandbox") : p;
}

/// The SDK next to the sources when this binary runs from the build tree, else the installed one.
std::filesystem::path default_python_dir(const std::filesystem::path& self) {
  const std::string build_root = SANDPIPE_BUILD_ROOT;
  const std::string me = self.string();
  if (me.size() > build_root.size() && me.compare(0, build_root.size(), build_root) == 0 &&
      me[build_root.size()] == '/') {
    return SANDPIPE_PYTHON_SOURCE_DIR;
  }
  return SANDPIPE_PYTHON_INSTALL_DIR;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "--zygote") {  // sandbox/zygote.h
    const std::filesystem::path self = self_path();
    return sandpipe::sandbox::run_zygote(argc - 2, argv + 2, self, default_python_dir(self));
  }
  const std::optional<Args> parsed = parse_args(argc, argv);
  if (!parsed) return 64;  // EX_USAGE: status 2 and 3 tell the host a load or handshake failed
  const Args& args = *parsed;
  // Die with the host, and do not miss a host that died before this was armed.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return 70;
  // Timed waits end on time: the default 50 µs slack would swallow the anticipation's lead
  // (SandboxEndpoint). Real-time threads have none anyway; this is for a sandbox that is not.
  (void)::prctl(PR_SET_TIMERSLACK, 1UL);
  // getppid() is 0 in the sandbox's own PID namespace (the host is outside it); there the
  // namespace's init watches the host through a pidfd instead (sandbox/pid-init.cpp).
  const pid_t parent = ::getppid();
  if (args.parent_pid > 0 && parent != 0 && parent != static_cast<pid_t>(args.parent_pid)) return 71;
  // Whatever C code writes to fd 1 goes to stderr: the host's stdout may carry audio.
  ::dup2(STDERR_FILENO, STDOUT_FILENO);
  close_other_fds({args.control_fd, args.shm_fd, args.input_edge_fd, args.output_edge_fd});
  // A host that closes the socket must not kill us with SIGPIPE (sends use MSG_NOSIGNAL too).
  std::signal(SIGPIPE, SIG_IGN);
  const auto limits_problem =
      sandpipe::sandbox::apply_process_limits({static_cast<std::uint64_t>(args.memory_mb)});

  const std::filesystem::path self = self_path();
  sandpipe::schema::ControlChannel control(kj::AutoCloseFd(args.control_fd),
                                           sandpipe::schema::ChannelLimits::from_host());
  auto attached = sandpipe::shm::Segment::attach(args.shm_fd);
  if (auto* problem = std::get_if<std::string>(&attached)) {
    sandpipe::sandbox::Session::report_early_error(control, "shared memory: " + *problem);
    return 3;
  }
  auto& segment = std::get<sandpipe::shm::Segment>(attached);
  std::optional<sandpipe::shm::Segment> input_edge;
  std::optional<sandpipe::shm::Segment> output_edge;
  for (auto problem : {attach_edge(args.input_edge_fd, "input", input_edge),
                       attach_edge(args.output_edge_fd, "output", output_edge)}) {
    if (problem) {
      sandpipe::sandbox::Session::report_early_error(control, "shared memory: " + *problem);
      return 3;
    }
  }
  if (limits_problem) {
    sandpipe::sandbox::Session::report_early_error(control, "cannot confine the sandbox: " + *limits_problem);
    return 3;
  }
  int code = 0;
  {
    sandpipe::sandbox::Session session(
        control, segment,
        {self, args.python_dir.empty() ? default_python_dir(self) : args.python_dir, args.writable,
         args.wake_lead_ns, args.keep_denormals, nullptr, input_edge ? &*input_edge : nullptr,
         output_edge ? &*output_edge : nullptr, args.output_to_host});
    code = session.run();
  }
  // NOTE: no interpreter finalisation and no static destructors: plugin threads or C
  // extensions could hang them, and the host only waits a bounded time before SIGKILL.
  std::fflush(nullptr);
  std::_Exit(code);
}
