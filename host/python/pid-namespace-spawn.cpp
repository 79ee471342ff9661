#include "host/python/pid-namespace-spawn.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <string>

// NOTE: everything between the first clone and the execs runs in children that share this
// process's memory (CLONE_VM, like posix_spawn's): raw system calls only, no allocation, no
// lock, no sanitizer bookkeeping on stacks that are unmapped afterwards.
#define SANDPIPE_CHILD_CODE __attribute__((no_sanitize("address", "undefined")))

namespace sandpipe::host {
namespace {

constexpr std::size_t stack_size = std::size_t{64} << 10;

/// What the parent prepares and the children report, in the memory they all share.
struct Shared {
  const PidNamespaceSpawn* spawn = nullptr;
  bool user_namespace = false;
  uid_t uid = 0;
  gid_t gid = 0;
  int host_pidfd = -1;
  int ready_read = -1;
  int ready_write = -1;
  char* const* init_argv = nullptr;
  char* init_stack_top = nullptr;
  char* sandbox_stack_top = nullptr;
  // Written by the children:
  pid_t sandbox_pid = -1;
  int error = 0;
  bool unavailable = false;
};

SANDPIPE_CHILD_CODE char* format_unsigned(char* end, unsigned long value) {
  *--end = '\0';
  do {
    *--end = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value != 0);
  return end;
}

/// Writes "0 <id> 1" (or `text`) to /proc/<pid>/<file>.
SANDPIPE_CHILD_CODE bool write_proc(pid_t pid, const char* file, const char* text) {
  char path[64] = "/proc/";
  char digits[24];
  const char* p = format_unsigned(digits + sizeof digits, static_cast<unsigned long>(pid));
  std::size_t at = 6;
  while (*p != '\0') path[at++] = *p++;
  path[at++] = '/';
  for (const char* f = file; *f != '\0';) path[at++] = *f++;
  path[at] = '\0';
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  std::size_t len = 0;
  while (text[len] != '\0') ++len;
  const bool ok = ::write(fd, text, len) == static_cast<ssize_t>(len);
  ::close(fd);
  return ok;
}

/// Writes "1000 <outside> 1": the caller's id is 1000 in the new user namespace, as in the one
/// a user's sandbox makes for itself (sandbox/confinement.cpp), where it maps 1000 to 1000.
SANDPIPE_CHILD_CODE bool write_id_map(pid_t pid, const char* file, unsigned long outside) {
  char line[48];
  char* text = format_unsigned(line + sizeof line - 2, outside);  // room for " 1"
  line[sizeof line - 3] = ' ';
  line[sizeof line - 2] = '1';
  line[sizeof line - 1] = '\0';
  *--text = ' ';
  for (const char digit : {'0', '0', '0', '1'}) *--text = digit;
  return write_proc(pid, file, text);
}

/// Default handling of every signal (no handler of the host may run in its memory here), an
/// empty mask, its own process group: then the program.
SANDPIPE_CHILD_CODE void exec_clean(const char* path, char* const* argv, char* const* envp, int& error) {
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    (void)::sigaction(sig, &dfl, nullptr);
  }
  (void)::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  (void)::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(path, argv, envp);
  error = errno;
  ::_exit(127);
}

/// The namespace's init: keeps the host's pidfd and the pipe's read end, becomes sandpipe-pid-init.
SANDPIPE_CHILD_CODE int init_main(void* arg) {
  auto& shared = *static_cast<Shared*>(arg);
  (void)::fcntl(shared.host_pidfd, F_SETFD, 0);
  (void)::fcntl(shared.ready_read, F_SETFD, 0);
  static char* const no_env[] = {nullptr};
  exec_clean(shared.spawn->init_executable.c_str(), shared.init_argv, no_env, shared.error);
  return 127;
}

/// The sandbox, as pid 2 of the namespace.
SANDPIPE_CHILD_CODE int sandbox_main(void* arg) {
  auto& shared = *static_cast<Shared*>(arg);
  for (const int fd : shared.spawn->keep_fds) (void)::fcntl(fd, F_SETFD, 0);
  exec_clean(shared.spawn->executable, shared.spawn->argv, shared.spawn->envp, shared.error);
  return 127;
}

/// The spawner: makes the init (in a new PID namespace, and a user namespace owning it when
/// not root: the sandbox is uid 1000 there, without capabilities after its exec, and makes its
/// own user namespace inside for its mounts, as it does without this one),
/// joins its namespaces for its next child, makes the sandbox there as a child of the host's
/// thread (CLONE_PARENT), tells the init, and exits, leaving the init to whoever reaps orphans.
SANDPIPE_CHILD_CODE int spawner_main(void* arg) {
  auto& shared = *static_cast<Shared*>(arg);
  int init_pidfd = -1;
  const int ns = CLONE_NEWPID | (shared.user_namespace ? CLONE_NEWUSER : 0);
  const pid_t init = ::clone(init_main, shared.init_stack_top,
                             CLONE_VM | CLONE_VFORK | CLONE_PIDFD | ns | SIGCHLD, &shared, &init_pidfd);
  if (init < 0 || shared.error != 0) {
    if (init < 0) shared.error = errno;
    shared.unavailable = true;
    ::_exit(1);
  }
  if (shared.user_namespace &&
      (!write_proc(init, "setgroups", "deny") || !write_id_map(init, "uid_map", shared.uid) ||
       !write_id_map(init, "gid_map", shared.gid))) {
    shared.error = errno;
    shared.unavailable = true;
    ::_exit(1);
  }
  if (::setns(init_pidfd, ns) != 0) {
    shared.error = errno;
    shared.unavailable = true;
    ::_exit(1);
  }
  const pid_t sandbox =
      ::clone(sandbox_main, shared.sandbox_stack_top, CLONE_VM | CLONE_VFORK | CLONE_PARENT, &shared);
  if (sandbox < 0) {
    shared.error = errno;
    ::_exit(1);
  }
  shared.sandbox_pid = sandbox;
  if (shared.error == 0) (void)!::write(shared.ready_write, "s", 1);
  ::_exit(0);
}

}  // namespace

PidNamespaceResult spawn_in_pid_namespace(const PidNamespaceSpawn& spawn, pid_t& pid, int& error) {
  pid = -1;
  error = 0;
  if (std::getenv("SANDPIPE_CONFINE_NO_NAMESPACES") != nullptr ||
      std::getenv("SANDPIPE_CONFINE_NO_PID_NAMESPACE") != nullptr || spawn.init_executable.empty() ||
      ::access(spawn.init_executable.c_str(), X_OK) != 0)
    return PidNamespaceResult::unavailable;
  Shared shared;
  shared.spawn = &spawn;
  shared.uid = ::geteuid();
  shared.gid = ::getegid();
  shared.user_namespace = shared.uid != 0;
  shared.host_pidfd = static_cast<int>(::syscall(SYS_pidfd_open, ::getpid(), 0));  // close-on-exec
  if (shared.host_pidfd < 0) return PidNamespaceResult::unavailable;
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) {
    error = errno;
    ::close(shared.host_pidfd);
    return PidNamespaceResult::failed;
  }
  shared.ready_read = ready[0];
  shared.ready_write = ready[1];
  std::string host_s = std::to_string(shared.host_pidfd);
  std::string ready_s = std::to_string(ready[0]);
  std::string init_s = spawn.init_executable;
  char* init_argv[] = {init_s.data(), host_s.data(), ready_s.data(), nullptr};
  shared.init_argv = init_argv;
  void* stacks =
      ::mmap(nullptr, 3 * stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  pid_t spawner = -1;
  int spawner_error = 0;
  if (stacks != MAP_FAILED) {
    char* base = static_cast<char*>(stacks);
    shared.init_stack_top = base + stack_size;
    shared.sandbox_stack_top = base + 2 * stack_size;
    // No signal handler of ours may run in the children while they share our memory.
    sigset_t all;
    sigset_t old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    spawner = ::clone(spawner_main, base + 3 * stack_size, CLONE_VM | CLONE_VFORK | SIGCHLD, &shared);
    spawner_error = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (spawner > 0) {
      while (::waitpid(spawner, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    ::munmap(stacks, 3 * stack_size);
  } else {
    spawner_error = errno;
  }
  ::close(shared.host_pidfd);
  ::close(ready[0]);
  ::close(ready[1]);  // the init sees EOF if no sandbox was announced
  if (spawner < 0) {
    error = spawner_error;
    return PidNamespaceResult::failed;
  }
  if (shared.sandbox_pid > 0 && shared.error != 0) {  // the sandbox's exec failed: reap it
    while (::waitpid(shared.sandbox_pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    error = shared.error;
    return PidNamespaceResult::failed;
  }
  if (shared.sandbox_pid <= 0) {
    error = shared.error;
    return shared.unavailable ? PidNamespaceResult::unavailable : PidNamespaceResult::failed;
  }
  pid = shared.sandbox_pid;
  return PidNamespaceResult::started;
}

}  // namespace sandpipe::host
