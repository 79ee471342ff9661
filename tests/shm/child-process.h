// Test support: a child process started with fork + exec that inherits one fd (the segment).
// RAII: the destructor SIGKILLs and reaps a child still running.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace sandpipe::shm::testing {

class ChildProcess {
 public:
  /// Starts `path` with `args` (argv[1..]). The `inherit_fds` stay open across exec under the same
  /// numbers (pass them on the command line). The child dies with us (PR_SET_PDEATHSIG).
  ChildProcess(const std::string& path, const std::vector<std::string>& args, const std::vector<int>& inherit_fds) {
    // Everything the child needs is built before fork: after it, only async-signal-safe calls.
    std::vector<std::string> strings;
    strings.reserve(args.size() + 1);
    strings.push_back(path);
    strings.insert(strings.end(), args.begin(), args.end());
    std::vector<char*> argv;
    argv.reserve(strings.size() + 1);
    for (std::string& s : strings) {
      argv.push_back(s.data());
    }
    argv.push_back(nullptr);
    const pid_t parent = ::getpid();

    pid_ = ::fork();
    if (pid_ < 0) {
      throw std::runtime_error("fork failed");
    }
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) {
        ::_exit(126);
      }
      for (const int fd : inherit_fds) {
        ::fcntl(fd, F_SETFD, 0);  // clear FD_CLOEXEC in the child only
      }
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }

  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ChildProcess(ChildProcess&&) = delete;
  ChildProcess& operator=(ChildProcess&&) = delete;

  ~ChildProcess() {
    if (!status_) {
      ::kill(pid_, SIGKILL);
      (void)wait();
    }
  }

  [[nodiscard]] pid_t pid() const noexcept { return pid_; }

  void kill(int signal) const noexcept { ::kill(pid_, signal); }

  /// The wait status if the child has ended, without blocking.
  std::optional<int> try_wait() {
    if (!status_) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        status_ = status;
      }
    }
    return status_;
  }

  /// Blocks until the child ends; returns its wait status.
  int wait() {
    while (!status_) {
      int status = 0;
      const pid_t r = ::waitpid(pid_, &status, 0);
      if (r == pid_) {
        status_ = status;
      } else if (r < 0 && errno != EINTR) {
        status_ = -1;
      }
    }
    return *status_;
  }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

}  // namespace sandpipe::shm::testing
