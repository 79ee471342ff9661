#include "sandbox/zygote-namespaces.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <utility>

#include "sandbox/confinement.h"

namespace sandpipe::sandbox {
namespace {

constexpr std::size_t stack_size = std::size_t{64} << 10;

/// The maker's answer to one request; the init's pidfd and the ready pipe's write end travel
/// beside it (SCM_RIGHTS) when both errors are 0.
struct MakerReply {
  int clone_errno = 0;
  int exec_errno = 0;
};

std::string errno_text(const std::string& what, int err) { return what + ": " + std::strerror(err); }

}  // namespace

bool may_make_pid_namespaces() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  return (data[CAP_SYS_ADMIN / 32].effective & (1U << (CAP_SYS_ADMIN % 32))) != 0;
}

std::optional<std::string> enter_own_user_namespace() {
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  // The machine's root without CAP_SYS_ADMIN may map only itself (uid 0), which needs
  // CAP_SETFCAP over the parent namespace the moment it is inside: it stays without.
  if (uid == 0) return std::string("root without CAP_SYS_ADMIN cannot map itself into a user namespace");
  if (::unshare(CLONE_NEWUSER) != 0) return errno_text("unshare(CLONE_NEWUSER)", errno);
  return map_own_ids(uid, uid, gid, gid);
}

PidNamespaces::PidNamespaces(std::filesystem::path init, pid_t host) : init_(std::move(init)), host_(host) {}

PidNamespaces::~PidNamespaces() {
  for (const int fd : {maker_fd_, host_pidfd_})
    if (fd >= 0) ::close(fd);  // the maker sees its socket close and exits
  if (stack_ != nullptr) ::munmap(stack_, stack_size);
}

std::optional<std::string> PidNamespaces::start() {
  if (::access(init_.c_str(), X_OK) != 0) return errno_text("no " + init_.string(), errno);
  host_pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, host_, 0));
  if (host_pidfd_ < 0) return errno_text("pidfd_open of the host", errno);
  void* stack =
      ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return errno_text("mmap", errno);
  stack_ = stack;
  // The maker and the inits are reaped as they exit (the sandboxes are the host's children).
  std::signal(SIGCHLD, SIG_IGN);
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return errno_text("socketpair", errno);
  const pid_t zygote = ::getpid();
  const pid_t maker = ::fork();
  if (maker < 0) {
    const int err = errno;
    ::close(sv[0]);
    ::close(sv[1]);
    return errno_text("fork of the namespace maker", err);
  }
  if (maker == 0) {
    ::close(sv[0]);
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != zygote) ::_exit(0);
    serve_as_maker(sv[1]);
  }
  ::close(sv[1]);
  maker_fd_ = sv[0];
  // A trial namespace, before any sandbox asks.
  Entered trial;
  if (auto problem = enter(trial)) return problem;
  leave(trial, false);
  return std::nullopt;
}

void PidNamespaces::serve_as_maker(int fd) {
  (void)::prctl(PR_SET_NAME, "sandpipe-maker");
  // Nothing of the zygote's but its socket to us and the host's pidfd (not its socket to the
  // host: the host must see the zygote's end close when the zygote dies).
  const int low = std::min(fd, host_pidfd_);
  const int high = std::max(fd, host_pidfd_);
  (void)::syscall(SYS_close_range, 3U, static_cast<unsigned>(low) - 1, 0U);
  (void)::syscall(SYS_close_range, static_cast<unsigned>(low) + 1, static_cast<unsigned>(high) - 1, 0U);
  (void)::syscall(SYS_close_range, static_cast<unsigned>(high) + 1, ~0U, 0U);
  for (;;) {
    char request = 0;
    const ssize_t n = ::recv(fd, &request, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) ::_exit(0);  // the zygote is gone
    MakerReply reply;
    int fds[2] = {-1, -1};
    reply.clone_errno = make_init(fds[0], fds[1]);
    reply.exec_errno = exec_error_;
    iovec iov{&reply, sizeof reply};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
    if (reply.clone_errno == 0 && reply.exec_errno == 0) {
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof fds);
      std::memcpy(CMSG_DATA(c), fds, sizeof fds);
    }
    (void)::sendmsg(fd, &msg, MSG_NOSIGNAL);
    for (const int f : fds)
      if (f >= 0) ::close(f);
  }
}

int PidNamespaces::make_init(int& init_pidfd, int& ready_write) {
  int ready[2];
  exec_error_ = 0;
  if (::pipe2(ready, O_CLOEXEC) != 0) return errno;
  host_s_ = std::to_string(host_pidfd_);
  ready_s_ = std::to_string(ready[0]);
  init_s_ = init_.string();
  argv_[0] = init_s_.data();
  argv_[1] = host_s_.data();
  argv_[2] = ready_s_.data();
  argv_[3] = nullptr;
  ready_read_ = ready[0];
  // CLONE_VM | CLONE_VFORK: no copy of the page tables for a process that execs at once; this
  // thread waits until it has.
  const pid_t init =
      ::clone(init_main, static_cast<char*>(stack_) + stack_size,
              CLONE_VM | CLONE_VFORK | CLONE_NEWPID | CLONE_PIDFD | SIGCHLD, this, &init_pidfd);
  const int clone_error = errno;
  ::close(ready[0]);
  if (init < 0 || exec_error_ != 0) {
    ::close(ready[1]);
    if (init >= 0) ::close(init_pidfd);
    init_pidfd = -1;
    return init < 0 ? clone_error : 0;
  }
  ready_write = ready[1];
  return 0;
}

std::optional<std::string> PidNamespaces::enter(Entered& entered) {
  const char request = 'n';
  if (::send(maker_fd_, &request, 1, MSG_NOSIGNAL) != 1) {
    maker_gone_ = true;
    return errno_text("the namespace maker is gone", errno);
  }
  MakerReply reply;
  iovec iov{&reply, sizeof reply};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  int fds[2] = {-1, -1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof fds)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = 0;
  do {
    n = ::recvmsg(maker_fd_, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n != static_cast<ssize_t>(sizeof reply)) {
    maker_gone_ = true;
    return std::string("the namespace maker is gone");
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof fds))
      std::memcpy(fds, CMSG_DATA(c), sizeof fds);
  if (reply.clone_errno != 0 || reply.exec_errno != 0 || fds[0] < 0 || fds[1] < 0) {
    for (const int f : fds)
      if (f >= 0) ::close(f);
    const int err = reply.clone_errno != 0 ? reply.clone_errno : reply.exec_errno;
    return std::string(reply.clone_errno != 0 ? "clone(CLONE_NEWPID): " : "exec sandpipe-pid-init: ") +
           std::strerror(err);
  }
  entered.init_pidfd = fds[0];
  entered.ready_write = fds[1];
  // For this process's children only; a namespace the maker made is always a child of this
  // process's own, so the next one can be joined from here without going back.
  if (::setns(entered.init_pidfd, CLONE_NEWPID) != 0) {
    const int err = errno;
    leave(entered, false);
    return errno_text("setns into the new PID namespace", err);
  }
  return std::nullopt;
}

void PidNamespaces::leave(Entered& entered, bool sandbox_started) {
  if (sandbox_started) (void)!::write(entered.ready_write, "s", 1);
  for (int* fd : {&entered.ready_write, &entered.init_pidfd}) {
    if (*fd >= 0) ::close(*fd);
    *fd = -1;
  }
}

// The init, sharing the maker's memory until its exec: raw calls only, no sanitizer bookkeeping
// on a stack that is reused.
__attribute__((no_sanitize("address", "undefined"))) int PidNamespaces::init_main(void* arg) {
  auto& self = *static_cast<PidNamespaces*>(arg);
  for (const int sig : {SIGCHLD, SIGPIPE}) {
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    (void)::sigaction(sig, &dfl, nullptr);
  }
  sigset_t none;
  sigemptyset(&none);
  (void)::sigprocmask(SIG_SETMASK, &none, nullptr);
  // Only its two descriptors: nothing else the maker holds.
  (void)::syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC);
  (void)::fcntl(self.host_pidfd_, F_SETFD, 0);
  (void)::fcntl(self.ready_read_, F_SETFD, 0);
  static char* const no_env[] = {nullptr};
  ::execve(self.argv_[0], self.argv_, no_env);
  self.exec_error_ = errno;
  ::_exit(127);
}

}  // namespace sandpipe::sandbox
