// How a sandbox process is made (host/python/sandbox-process.h).
#include "host/python/sandbox-process.h"

#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "host/config/config.h"
#include "host/python/pid-namespace-spawn.h"
#include "host/python/zygote.h"

extern char** environ;  // NOLINT: POSIX

namespace sandpipe::host {

std::string describe_exit(int status) {
  if (WIFEXITED(status)) {
    switch (WEXITSTATUS(status)) {
      case 2:
        return "exited after failing to load (status 2)";
      case 3:
        return "exited after a failed handshake (status 3)";
      case 71:
        return "exited: its parent was gone before it started (status 71)";
      default:
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }
  }
  if (WIFSIGNALED(status)) {
    const char* sig = ::sigabbrev_np(WTERMSIG(status));
    return std::string("killed by signal SIG") +
           (sig != nullptr ? sig : std::to_string(WTERMSIG(status)).c_str());
  }
  return "stopped";
}

void set_sandbox_priority(pid_t pid, int priority) {
  if (pid <= 0) return;
  sched_param param{};
  param.sched_priority = priority > 0 ? priority : 0;
  (void)::sched_setscheduler(pid, (priority > 0 ? SCHED_FIFO : SCHED_OTHER) | SCHED_RESET_ON_FORK, &param);
}

/// The sandbox's whole environment: nothing of the host's (tokens, session addresses, paths)
/// leaks into the plugin, but SANDPIPE_* (test doubles, debugging) and the sanitizers' options.
/// One BLAS thread: a plugin shares the machine with the audio thread.
std::vector<std::string> sandbox_environment() {
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "OPENBLAS_NUM_THREADS=1",
                                  "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view var(*e);
    if (var.starts_with("SANDPIPE_") || var.starts_with("ASAN_OPTIONS=") ||
        var.starts_with("UBSAN_OPTIONS=") || var.starts_with("LSAN_OPTIONS=")) {
      env.emplace_back(var);
    }
  }
  return env;
}

pid_t spawn_sandbox_process(const SandboxLaunch& launch, const SandboxFds& fds) {
  // Forked by the node's zygote when it has one (host/python/zygote.h); if that fails, spawned.
  if (launch.zygote != nullptr) {
    if (const pid_t pid = fork_from_zygote(launch, fds); pid > 0) return pid;
  }
  const int sock = fds.control;
  const int shm = fds.shm;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  // dup2 of an fd onto itself clears FD_CLOEXEC in the child only (glibc >= 2.29).
  posix_spawn_file_actions_adddup2(&actions, sock, sock);
  posix_spawn_file_actions_adddup2(&actions, shm, shm);
  for (int edge : {fds.input_edge, fds.output_edge}) {
    if (edge >= 0) posix_spawn_file_actions_adddup2(&actions, edge, edge);
  }
  sigset_t none;
  sigset_t defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  const std::string exe_s = launch.executable.string();
  const std::string sock_s = std::to_string(sock);
  const std::string shm_s = std::to_string(shm);
  const std::string parent_s = std::to_string(::getpid());
  const std::string memory_s = std::to_string(launch.memory_mb);
  const std::string lead_s = std::to_string(launch.wake_lead_us);
  std::vector<char*> argv = {const_cast<char*>(exe_s.c_str()),    const_cast<char*>("--control-fd"),
                             const_cast<char*>(sock_s.c_str()),   const_cast<char*>("--shm-fd"),
                             const_cast<char*>(shm_s.c_str()),    const_cast<char*>("--parent-pid"),
                             const_cast<char*>(parent_s.c_str()), const_cast<char*>("--memory-mb"),
                             const_cast<char*>(memory_s.c_str()), const_cast<char*>("--wake-lead-us"),
                             const_cast<char*>(lead_s.c_str()),   nullptr};
  const std::string writable_s = launch.allow_writes.string();
  if (!launch.allow_writes.empty())
    argv.insert(argv.end() - 1, {const_cast<char*>("--allow-writes"), const_cast<char*>(writable_s.c_str())});
  if (launch.keep_denormals)
    argv.insert(argv.end() - 1, {const_cast<char*>("--keep-denormals"), const_cast<char*>("1")});
  const std::string input_s = std::to_string(fds.input_edge);
  const std::string output_s = std::to_string(fds.output_edge);
  if (fds.input_edge >= 0)
    argv.insert(argv.end() - 1, {const_cast<char*>("--input-edge-fd"), const_cast<char*>(input_s.c_str())});
  if (fds.output_edge >= 0)
    argv.insert(argv.end() - 1, {const_cast<char*>("--output-edge-fd"), const_cast<char*>(output_s.c_str())});
  if (fds.output_edge >= 0 && fds.output_to_host)
    argv.insert(argv.end() - 1, {const_cast<char*>("--output-to-host"), const_cast<char*>("1")});
  pid_t pid = -1;
  std::vector<std::string> env_strings = sandbox_environment();
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  // In its own PID namespace where the kernel allows (host/python/pid-namespace-spawn.h), else as before.
  std::vector<int> keep = {sock, shm};
  for (int edge : {fds.input_edge, fds.output_edge}) {
    if (edge >= 0) keep.push_back(edge);
  }
  int rc = 0;
  const PidNamespaceSpawn in_namespace{exe_s.c_str(), argv.data(), envp.data(), keep,
                                       (launch.executable.parent_path() / "sandpipe-pid-init").string()};
  if (spawn_in_pid_namespace(in_namespace, pid, rc) == PidNamespaceResult::unavailable)
    rc = ::posix_spawn(&pid, exe_s.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw PluginError("cannot start " + exe_s + ": " + std::strerror(rc));
  // The sandbox computes what the RT thread waits for: give it real-time scheduling too, below
  // PipeWire's data threads. A runaway plugin loses it (Supervisor) and is killed by the hang
  // watchdog.
  if (launch.rt_priority > 0) set_sandbox_priority(pid, launch.rt_priority);
  return pid;
}

std::filesystem::path default_sandbox_executable() {
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  const std::string root = SANDPIPE_BUILD_ROOT;
  if (!ec && self.size() > root.size() && self.compare(0, root.size(), root) == 0 &&
      self[root.size()] == '/') {
    return SANDPIPE_SANDBOX_BUILD_PATH;
  }
  return SANDPIPE_SANDBOX_INSTALL_PATH;
}

}  // namespace sandpipe::host
