// sandpipe-sandbox: runs one Python plugin for a Sandpipe host.
//
//   sandpipe-sandbox --control-fd N --shm-fd M --parent-pid P [--python-dir DIR] [--memory-mb MB]
//   [--allow-writes DIR] [--wake-lead-us US] [--keep-denormals 0|1]
//
// Started by the host only (host/sandbox-client.cpp): N is this end of the control socketpair,
// M the memfd of the shared segment, P the host's pid (to notice a host that died before
// PR_SET_PDEATHSIG was armed), MB the address-space limit (0: none).
// Confinement (sandbox/confinement.h): limits at start; namespaces, Landlock and the syscall
// allow-list before the plugin is imported (Session::confine).
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <variant>

#include "sandbox/confinement.h"
#include "sandbox/sandbox-session.h"
#include "sandbox/zygote.h"
#include "shm/segment.h"

namespace {

struct Args {
  int control_fd = -1;
  int shm_fd = -1;
  long parent_pid = -1;
  long memory_mb = 0;
  std::filesystem::path writable;
  bool keep_denormals = false;
  std::uint64_t wake_lead_ns = sandpipe::shm::SandboxEndpoint::default_lead_ns;
  std::filesystem::path python_dir;
};

bool parse_int(std::string_view s, long& out) {
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size();
}

bool parse_args(int argc, char** argv, Args& args) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const std::string_view value = argv[i + 1];
    long n = 0;
    if (flag == "--control-fd" && parse_int(value, n) && n >= 3) {
      args.control_fd = static_cast<int>(n);
    } else if (flag == "--shm-fd" && parse_int(value, n) && n >= 3) {
      args.shm_fd = static_cast<int>(n);
    } else if (flag == "--parent-pid" && parse_int(value, n) && n > 0) {
      args.parent_pid = n;
    } else if (flag == "--memory-mb" && parse_int(value, n) && n >= 0) {
      args.memory_mb = n;
    } else if (flag == "--allow-writes" && value.starts_with('/')) {
      args.writable = std::string(value);
    } else if (flag == "--keep-denormals" && (value == "0" || value == "1")) {
      args.keep_denormals = value == "1";
    } else if (flag == "--wake-lead-us" && parse_int(value, n) && n >= 0 && n <= 1'000'000) {
      args.wake_lead_ns = static_cast<std::uint64_t>(n) * 1000U;
    } else if (flag == "--python-dir") {
      args.python_dir = std::string(value);
    } else {
      return false;
    }
  }
  return argc % 2 == 1 && args.control_fd >= 0 && args.shm_fd >= 0 && args.control_fd != args.shm_fd;
}

/// Closes every descriptor but 0-2 and the two this process was given: nothing else of the
/// host's leaks into Python.
void close_other_fds(int a, int b) {
  const int lo = std::min(a, b);
  const int hi = std::max(a, b);
  auto close_range = [](unsigned first, unsigned last) {
    if (first <= last) ::syscall(SYS_close_range, first, last, 0u);
  };
  close_range(3, static_cast<unsigned>(lo) - 1);
  close_range(static_cast<unsigned>(lo) + 1, static_cast<unsigned>(hi) - 1);
  close_range(static_cast<unsigned>(hi) + 1, ~0u);
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
  Args args;
  if (!parse_args(argc, argv, args)) {
    std::fprintf(stderr,
                 "usage: sandpipe-sandbox --control-fd N --shm-fd M --parent-pid P [--python-dir DIR] "
                 "[--memory-mb MB] [--allow-writes DIR] [--wake-lead-us US] [--keep-denormals 0|1]\n"
                 "(started by the sandpipe host; not meant to be run by hand)\n");
    return 64;
  }
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
  close_other_fds(args.control_fd, args.shm_fd);
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
  if (limits_problem) {
    sandpipe::sandbox::Session::report_early_error(control, "cannot confine the sandbox: " + *limits_problem);
    return 3;
  }
  int code = 0;
  {
    sandpipe::sandbox::Session session(
        control, segment,
        {self, args.python_dir.empty() ? default_python_dir(self) : args.python_dir, args.writable,
         args.wake_lead_ns, args.keep_denormals});
    code = session.run();
  }
  // NOTE: no interpreter finalisation and no static destructors: plugin threads or C
  // extensions could hang them, and the host only waits a bounded time before SIGKILL.
  std::fflush(nullptr);
  std::_Exit(code);
}
