// sandpipe-pid-init: PID 1 of one sandbox's PID namespace. Runs no plugin code: it only waits.
//
//   sandpipe-pid-init HOST_PIDFD READY_FD
//
// Started by the host (host/python/pid-namespace-spawn.cpp) before the sandbox, which joins this
// namespace as its pid 2 while staying the host's own child. HOST_PIDFD is a pidfd of the host
// process; READY_FD the read end of a pipe whose writer sends one byte once the sandbox exists
// (and closes it unsent if starting it failed). This process exits when the host or the sandbox
// is gone, and the kernel then kills whatever else lives in the namespace: nothing a plugin
// started outlives the host, even one that cleared its death signal and ignores every signal a
// process may ignore. A pidfd rather than a death signal: a death signal follows the *thread*
// that spawned, and this process's parent (the short-lived spawner) is gone at once.
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <string_view>

namespace {

bool parse_fd(const char* text, int& fd) {
  const std::string_view s(text);
  return std::from_chars(s.data(), s.data() + s.size(), fd).ec == std::errc{} && fd >= 0;
}

/// Waits until one of `fds` is readable or hung up (EINTR retried).
void wait_any(pollfd* fds, nfds_t count) {
  while (::poll(fds, count, -1) < 0 && errno == EINTR) {
  }
}

}  // namespace

int main(int argc, char** argv) {
  int host = -1;
  int ready = -1;
  if (argc != 3 || !parse_fd(argv[1], host) || !parse_fd(argv[2], ready)) return 64;
  // The sandbox is the first process after this one in the namespace.
  constexpr pid_t sandbox_pid = 2;
  pollfd start[2] = {{host, POLLIN, 0}, {ready, POLLIN, 0}};
  wait_any(start, 2);
  char byte = 0;
  if ((start[0].revents & POLLIN) != 0 || ::read(ready, &byte, 1) != 1) return 0;  // no host, or no sandbox
  ::close(ready);
  const int sandbox = static_cast<int>(::syscall(SYS_pidfd_open, sandbox_pid, 0));
  if (sandbox < 0) return 0;  // already gone
  pollfd watch[2] = {{host, POLLIN, 0}, {sandbox, POLLIN, 0}};
  wait_any(watch, 2);
  return 0;  // as PID 1 this exit takes the whole namespace with it
}
