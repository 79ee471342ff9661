#include "sandbox/zygote.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <utility>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "sandbox/confinement.h"
#include "sandbox/python-plugin.h"
#include "sandbox/sandbox-session.h"
#include "sandbox/zygote-namespaces.h"
#include "schemas/zygote-protocol.h"
#include "shm/segment.h"

namespace sandpipe::sandbox {
namespace {

using schema::ZygoteForkRequest;
using schema::ZygoteReply;

/// Where a child finds its descriptors, whatever numbers the zygote received them as.
constexpr int child_control_fd = 3;
constexpr int child_shm_fd = 4;
constexpr int child_input_edge_fd = 5;
constexpr int child_output_edge_fd = 6;

struct ZygoteArgs {
  int control_fd = -1;
  pid_t parent_pid = -1;
  std::filesystem::path python_dir;
};

bool parse(int argc, char** argv, ZygoteArgs& args) {
  for (int i = 0; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    const std::string_view value = argv[i + 1];
    long n = 0;
    const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    const bool number = ec == std::errc{} && end == value.data() + value.size();
    if (flag == "--control-fd" && number && n >= 3) {
      args.control_fd = static_cast<int>(n);
    } else if (flag == "--parent-pid" && number && n > 0) {
      args.parent_pid = static_cast<pid_t>(n);
    } else if (flag == "--python-dir") {
      args.python_dir = std::string(value);
    } else {
      return false;
    }
  }
  return argc % 2 == 0 && args.control_fd >= 0 && args.parent_pid > 0;
}

void reply(int fd, pid_t pid, const std::string& error) {
  ZygoteReply r;
  r.pid = static_cast<std::int32_t>(pid);
  std::snprintf(r.error, sizeof r.error, "%s", error.c_str());
  (void)::send(fd, &r, sizeof r, MSG_NOSIGNAL);
}

/// Threads of this process (the zygote must be single-threaded when it forks: a lock held by
/// another thread would stay held in the child for ever).
int thread_count() {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (const dirent* e = ::readdir(dir))
    if (e->d_name[0] != '.') ++n;
  ::closedir(dir);
  return n;
}

/// One request: its record and its descriptors (all -1 unless as many came as `edges` says).
struct Request {
  ZygoteForkRequest fork;
  int control_fd = -1;
  int shm_fd = -1;
  int input_edge_fd = -1;
  int output_edge_fd = -1;

  void close_all() const {
    for (int fd : {control_fd, shm_fd, input_edge_fd, output_edge_fd}) {
      if (fd >= 0) ::close(fd);
    }
  }
};

/// Blocks for the next request. False once the host closed its end.
bool receive(int fd, Request& out, std::string& problem) {
  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
  iovec iov{&out.fork, sizeof out.fork};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = 0;
  do {
    n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n <= 0) return false;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    int fds[4] = {-1, -1, -1, -1};
    std::memcpy(fds, CMSG_DATA(c), (count < 4 ? count : 4) * sizeof(int));
    const std::uint32_t edges = out.fork.edges;
    const std::size_t expected = 2 + ((edges & schema::zygote_input_edge) != 0 ? 1 : 0) +
                                 ((edges & schema::zygote_output_edge) != 0 ? 1 : 0);
    constexpr std::uint32_t known =
        schema::zygote_input_edge | schema::zygote_output_edge | schema::zygote_output_to_host;
    if (count == expected && (edges & ~known) == 0) {
      out.control_fd = fds[0];
      out.shm_fd = fds[1];
      std::size_t next = 2;
      if ((edges & schema::zygote_input_edge) != 0) out.input_edge_fd = fds[next++];
      if ((edges & schema::zygote_output_edge) != 0) out.output_edge_fd = fds[next++];
    } else {
      for (std::size_t i = 0; i < count && i < 4; ++i) ::close(fds[i]);
    }
  }
  const ZygoteForkRequest& r = out.fork;
  if (static_cast<std::size_t>(n) != sizeof r || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    problem = "malformed request";
  } else if (r.magic != schema::zygote_magic) {
    problem = "request from a different build (magic mismatch)";
  } else if (out.control_fd < 0 || out.shm_fd < 0) {
    problem = "request without its descriptors";
  } else if (std::memchr(r.allow_writes, 0, sizeof r.allow_writes) == nullptr ||
             (r.allow_writes[0] != 0 && r.allow_writes[0] != '/') || r.keep_denormals > 1 ||
             r.wake_lead_us > 1'000'000) {
    problem = "request with invalid options";
  }
  return true;
}

/// pid of a zygote's child in the PID namespace made for it (as of a spawned sandbox: the
/// namespace's init is 1, the sandbox the next process).
constexpr pid_t child_pid_in_namespace = 2;

/// The allow-list programs compiled so far, one per key a child needs (sandbox/syscall-policy.cpp):
/// every child in its own PID namespace is pid 2, so the key is whether it may write.
class SyscallPrograms {
 public:
  /// The program for a child that will be `self` with `allow_writes`, compiled now if new
  /// (null if it cannot be: the child compiles the list itself and reports why).
  const SyscallProgram* get(pid_t self, bool allow_writes) {
    for (const SyscallProgram& p : programs_)
      if (p.self == self && p.allow_writes == allow_writes) return &p;
    if (!seccomp_available() || programs_.size() >= 4) return nullptr;
    auto compiled = compile_syscall_filter(self, allow_writes);
    if (std::holds_alternative<std::string>(compiled)) return nullptr;
    programs_.reserve(4);  // pointers handed to children stay valid in this process too
    programs_.push_back(std::get<SyscallProgram>(std::move(compiled)));
    return &programs_.back();
  }

 private:
  std::vector<SyscallProgram> programs_;
};

/// In the child, right after the fork: becomes what `sandpipe-sandbox --control-fd …` would be
/// after its own start-up, then runs the session. Never returns.
[[noreturn]] void become_sandbox(const Request& request, pid_t host, int host_pidfd,
                                 std::unique_ptr<PythonPlugin> python, const std::filesystem::path& self,
                                 const std::filesystem::path& sdk_dir, const SyscallProgram* program) {
  PythonPlugin::after_fork_child();
  // The death signal is not inherited: re-arm it, then make sure the host did not die before.
  // In its own PID namespace getppid() is 0 (the host is outside): the host's pidfd tells.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) std::_Exit(71);
  pollfd host_gone{host_pidfd, POLLIN, 0};
  const pid_t parent = ::getppid();
  if ((parent != 0 && parent != host) || (host_pidfd >= 0 && ::poll(&host_gone, 1, 0) != 0)) std::_Exit(71);
  (void)::prctl(PR_SET_TIMERSLACK, 1UL);
  (void)::prctl(PR_SET_NAME, "sandpipe-sandbox");  // the name a spawned one has (ps, top)
  (void)::setpgid(0, 0);  // as posix_spawn's POSIX_SPAWN_SETPGROUP: a Ctrl-C reaches the host only
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM})
    std::signal(sig, SIG_DFL);
  std::signal(SIGPIPE, SIG_IGN);
  // Only the descriptors of this sandbox survive (not the zygote's socket, nor another
  // request's): moved above any clash, then to 3 to 6.
  const std::pair<int, int> moves[] = {{request.control_fd, child_control_fd},
                                       {request.shm_fd, child_shm_fd},
                                       {request.input_edge_fd, child_input_edge_fd},
                                       {request.output_edge_fd, child_output_edge_fd}};
  int high[4] = {-1, -1, -1, -1};
  for (std::size_t i = 0; i < 4; ++i) {
    if (moves[i].first >= 0 && (high[i] = ::fcntl(moves[i].first, F_DUPFD, 100)) < 0) std::_Exit(70);
  }
  for (std::size_t i = 0; i < 4; ++i) {
    if (high[i] >= 0 && ::dup2(high[i], moves[i].second) < 0) std::_Exit(70);
    if (high[i] < 0) ::close(moves[i].second);
  }
  ::syscall(SYS_close_range, static_cast<unsigned>(child_output_edge_fd) + 1, ~0U, 0U);

  const auto limits_problem = apply_process_limits({request.fork.memory_mb});
  schema::ControlChannel control(kj::AutoCloseFd(child_control_fd), schema::ChannelLimits::from_host());
  auto attached = shm::Segment::attach(child_shm_fd);
  std::string problem;
  if (auto* why = std::get_if<std::string>(&attached)) problem = "shared memory: " + *why;
  std::optional<shm::Segment> edges[2];
  for (std::size_t i = 0; i < 2 && problem.empty(); ++i) {
    if (high[2 + i] < 0) continue;
    auto edge = shm::Segment::attach(moves[2 + i].second);
    if (auto* why = std::get_if<std::string>(&edge)) {
      problem = std::string("shared memory: ") + (i == 0 ? "input" : "output") + " edge: " + *why;
    } else {
      edges[i].emplace(std::move(std::get<shm::Segment>(edge)));
    }
  }
  if (problem.empty() && limits_problem) problem = "cannot confine the sandbox: " + *limits_problem;
  if (!problem.empty()) {
    Session::report_early_error(control, problem);
    std::_Exit(3);
  }
  int code = 0;
  {
    Session session(control, std::get<shm::Segment>(attached),
                    {self, sdk_dir, std::filesystem::path(request.fork.allow_writes),
                     std::uint64_t{request.fork.wake_lead_us} * 1000U, request.fork.keep_denormals != 0,
                     program, edges[0] ? &*edges[0] : nullptr, edges[1] ? &*edges[1] : nullptr,
                     (request.fork.edges & schema::zygote_output_to_host) != 0},
                    std::move(python));
    code = session.run();
  }
  // As a spawned sandbox: no interpreter finalisation, no static destructors (sandbox/main.cpp).
  std::fflush(nullptr);
  std::_Exit(code);
}

}  // namespace

int run_zygote(int argc, char** argv, const std::filesystem::path& self,
               const std::filesystem::path& default_sdk_dir) {
  ZygoteArgs args;
  if (!parse(argc, argv, args)) {
    std::fprintf(stderr,
                 "usage: sandpipe-sandbox --zygote --control-fd N --parent-pid P [--python-dir DIR]\n");
    return 64;
  }
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != args.parent_pid) return 71;
  (void)::prctl(PR_SET_NAME, "sandpipe-zygote");
  ::dup2(STDERR_FILENO, STDOUT_FILENO);
  std::signal(SIGPIPE, SIG_IGN);
  const int fd = args.control_fd;
  ::syscall(SYS_close_range, 3U, static_cast<unsigned>(fd) - 1, 0U);
  ::syscall(SYS_close_range, static_cast<unsigned>(fd) + 1, ~0U, 0U);
  const std::filesystem::path sdk_dir = args.python_dir.empty() ? default_sdk_dir : args.python_dir;

  // What every sandbox needs before its plugin: the interpreter, numpy, the SDK. Not
  // base_plugin: a plugin folder may ship its own (sandpipe/_sandbox.py, _import_file), and
  // sys.modules must not hold Sandpipe's then. Output before a child takes the interpreter over
  // (an import warning) goes to the zygote's stderr.
  std::unique_ptr<PythonPlugin> python;
  try {
    python = std::make_unique<PythonPlugin>(self, sdk_dir, [](int, std::string_view line) {
      std::fprintf(stderr, "sandpipe-zygote: %.*s\n", static_cast<int>(line.size()), line.data());
    });
  } catch (const std::exception& e) {
    reply(fd, 0, e.what());
    return 3;
  }
  // What the imports left is collected and frozen: never scanned again, so children share those
  // pages copy-on-write instead of dirtying them on their first collection.
  python->freeze_heap();
  // NOTE: one thread only (OPENBLAS/OMP/MKL_NUM_THREADS=1 in the environment the host gives
  // every sandbox): checked once, as a fork with a second thread holding a lock would hang the
  // child. The host then falls back to spawning.
  if (const int threads = thread_count(); threads != 1) {
    reply(fd, 0, "the zygote is not single-threaded (" + std::to_string(threads) + " threads)");
    return 3;
  }
  // Each child in a PID namespace of its own, as a spawned sandbox is, unless turned off as for
  // those (SANDPIPE_CONFINE_NO_NAMESPACES / _NO_PID_NAMESPACE). A user's zygote first enters a
  // user namespace of its own, where it may make them (sandbox/zygote-namespaces.h). One that
  // cannot refuses to serve: the host then spawns every sandbox itself.
  const bool pid_namespaces = std::getenv("SANDPIPE_CONFINE_NO_NAMESPACES") == nullptr &&
                              std::getenv("SANDPIPE_CONFINE_NO_PID_NAMESPACE") == nullptr;
  PidNamespaces namespaces(self.parent_path() / "sandpipe-pid-init", args.parent_pid);
  if (pid_namespaces) {
    if (!may_make_pid_namespaces()) {
      if (auto problem = enter_own_user_namespace()) {
        reply(fd, 0, "cannot give sandboxes a PID namespace: " + *problem);
        return 3;
      }
      // A change of credentials may clear the death signal: armed again.
      if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != args.parent_pid) return 71;
    }
    if (auto problem = namespaces.start()) {
      reply(fd, 0, "cannot give sandboxes a PID namespace: " + *problem);
      return 3;
    }
  }
  // The allow-list compiled here once, not in every child (children in a namespace are pid 2;
  // without one a child's pid is not known before its fork, and it compiles the list itself).
  SyscallPrograms programs;
  if (pid_namespaces) (void)programs.get(child_pid_in_namespace, false);
  reply(fd, 0, {});  // ready

  for (;;) {
    Request request;
    std::string problem;
    if (!receive(fd, request, problem)) return 0;  // the host closed its end
    pid_t pid = 0;
    const SyscallProgram* program =
        pid_namespaces ? programs.get(child_pid_in_namespace, request.fork.allow_writes[0] != 0) : nullptr;
    PidNamespaces::Entered entered;
    if (problem.empty() && pid_namespaces) {
      if (auto why = namespaces.enter(entered)) {
        // Without its maker no child can get its namespace: stop unanswered, and the host
        // starts a new zygote (and says so) and asks it instead.
        if (namespaces.maker_gone()) {
          std::fprintf(stderr, "sandpipe-zygote: %s\n", why->c_str());
          return 4;
        }
        problem = *why;
      }
    }
    if (problem.empty()) {
      // CLONE_PARENT: the child is the host's child, not ours, exactly as if the host had
      // spawned it: the host's pidfd poll and waitpid reap it and read its exit status, its
      // SIGCHLD goes to the host, and a dead zygote takes no sandbox with it. (The zygote
      // reaping and relaying statuses would need a second channel in every wait of the host;
      // a subreaper host would adopt every orphan of the process tree.) After enter() it is the
      // second process of its own PID namespace, under that namespace's init.
      // NOTE: a raw clone runs no pthread_atfork handlers (the zygote has one thread and no
      // lock held; Python's own fork hooks run through PythonPlugin) and leaves glibc's cached
      // thread id of the child's main thread at the zygote's: only owner fields of recursive or
      // error-checking mutexes use it, consistently within the child.
      PythonPlugin::before_fork();
      pid = static_cast<pid_t>(
          ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
      if (pid == 0)
        become_sandbox(request, args.parent_pid, namespaces.host_pidfd(), std::move(python), self, sdk_dir,
                       program);
      const int error = errno;
      PythonPlugin::after_fork_parent();
      if (pid < 0) problem = std::string("fork: ") + std::strerror(error);
      if (pid_namespaces) namespaces.leave(entered, pid > 0);
    }
    request.close_all();
    reply(fd, pid > 0 ? pid : 0, problem);
  }
}

}  // namespace sandpipe::sandbox
