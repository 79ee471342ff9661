#include "host/python/zygote.h"

#include <poll.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "host/python/sandbox-process.h"
#include "schemas/zygote-protocol.h"

namespace sandpipe::host {
namespace {

using schema::ZygoteForkRequest;
using schema::ZygoteReply;

/// The imports of a cold start on a busy machine (numpy alone is ~0.2 s of CPU).
constexpr std::chrono::milliseconds ready_timeout{60'000};
/// A fork of a ~40 MiB interpreter takes a few ms; this is for a zygote that hangs.
constexpr std::chrono::milliseconds reply_timeout{10'000};

/// Waits for `sock` to be readable or the process behind `pidfd` to exit. True: readable.
bool wait_readable(int sock, int pidfd, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    pollfd pfds[2] = {{sock, POLLIN, 0}, {pidfd, POLLIN, 0}};
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    const int ready = ::poll(pfds, pidfd >= 0 ? 2 : 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    // A readable socket first: the zygote may have answered and then died.
    return ready > 0 && (pfds[0].revents & (POLLIN | POLLHUP)) != 0;
  }
}

/// Reads one reply; false on EOF or a malformed record (`eof` tells which).
bool read_reply(int sock, ZygoteReply& out, bool& eof) {
  ssize_t n = 0;
  do {
    n = ::recv(sock, &out, sizeof out, 0);
  } while (n < 0 && errno == EINTR);
  eof = n <= 0;
  if (eof || static_cast<std::size_t>(n) != sizeof out || out.magic != schema::zygote_magic) return false;
  out.error[sizeof out.error - 1] = 0;
  return true;
}

}  // namespace

Zygote::Zygote(std::filesystem::path executable, LogFn log)
    : executable_(executable.empty() ? default_sandbox_executable() : std::move(executable)),
      log_(log ? std::move(log) : LogFn([](std::string_view line) {
        std::fprintf(stderr, "sandpipe: [zygote] %.*s\n", static_cast<int>(line.size()), line.data());
      })) {
  std::lock_guard lock(mutex_);
  start();
}

Zygote::~Zygote() {
  std::lock_guard lock(mutex_);
  stop(std::chrono::milliseconds(2000));
}

pid_t Zygote::pid() const {
  std::lock_guard lock(mutex_);
  return pid_;
}

bool Zygote::refused() const {
  std::lock_guard lock(mutex_);
  return refused_;
}

std::uint64_t Zygote::restarts() const {
  std::lock_guard lock(mutex_);
  return restarts_;
}

void Zygote::start() {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
    throw std::runtime_error(std::string("sandbox zygote: socketpair: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_adddup2(&actions, pair[1], pair[1]);  // clears FD_CLOEXEC in the child
  sigset_t none;
  sigset_t defaults;
  sigemptyset(&none);
  sigfillset(&defaults);
  sigdelset(&defaults, SIGKILL);
  sigdelset(&defaults, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);  // a Ctrl-C reaches the host, which closes the zygote
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);
  const std::string exe = executable_.string();
  const std::string fd = std::to_string(pair[1]);
  const std::string parent = std::to_string(::getpid());
  std::vector<char*> argv = {const_cast<char*>(exe.c_str()),
                             const_cast<char*>("--zygote"),
                             const_cast<char*>("--control-fd"),
                             const_cast<char*>(fd.c_str()),
                             const_cast<char*>("--parent-pid"),
                             const_cast<char*>(parent.c_str()),
                             nullptr};
  std::vector<std::string> env = sandbox_environment();
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  ::close(pair[1]);
  if (rc != 0) {
    ::close(pair[0]);
    throw std::runtime_error("sandbox zygote: cannot start " + exe + ": " + std::strerror(rc));
  }
  sock_ = kj::AutoCloseFd(pair[0]);
  pid_ = pid;
  pidfd_ = kj::AutoCloseFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ready_ = false;
}

bool Zygote::await_ready(std::string& error) {
  ZygoteReply r;
  bool eof = false;
  if (!wait_readable(sock_.get(), pidfd_.get(), ready_timeout) || !read_reply(sock_.get(), r, eof)) {
    error = eof ? "exited during its start-up" : "not ready in time";
    return false;
  }
  if (r.error[0] != 0) {
    // It cannot serve and exits: neither restarted nor asked again, said once.
    error = r.error;
    refused_ = true;
    log_(std::string("the sandbox zygote cannot serve (") + r.error + "): every sandbox is spawned on its own");
    stop(std::chrono::milliseconds(2000));
    return false;
  }
  ready_ = true;
  return true;
}

bool Zygote::dead() {
  if (pid_ <= 0) return true;
  if (pidfd_.get() >= 0) {
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    return ::poll(&pfd, 1, 0) > 0;
  }
  // NOTE: no pidfd (old kernel): asked without reaping (the caller reaps and reads the status).
  siginfo_t info{};
  return ::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
         info.si_pid == pid_;
}

void Zygote::stop(std::chrono::milliseconds grace) {
  if (pid_ <= 0) return;
  sock_ = kj::AutoCloseFd();  // closed: the zygote's recvmsg ends, it exits
  if (pidfd_.get() >= 0) {
    pollfd pfd{pidfd_.get(), POLLIN, 0};
    (void)::poll(&pfd, 1, static_cast<int>(grace.count()));
  }
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) {
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  pidfd_ = kj::AutoCloseFd();
  pid_ = -1;
  ready_ = false;
}

std::variant<pid_t, std::string> Zygote::request(const ZygoteForkOptions& options, const SandboxFds& fds,
                                                 bool& zygote_died) {
  ZygoteForkRequest request;
  std::array<int, 4> passed{fds.control, fds.shm, -1, -1};
  std::size_t count = 2;
  if (fds.input_edge >= 0) {
    request.edges |= schema::zygote_input_edge;
    passed[count++] = fds.input_edge;
  }
  if (fds.output_edge >= 0) {
    request.edges |= schema::zygote_output_edge;
    if (fds.output_to_host) request.edges |= schema::zygote_output_to_host;
    passed[count++] = fds.output_edge;
  }
  request.memory_mb = options.memory_mb;
  request.wake_lead_us = options.wake_lead_us;
  request.keep_denormals = options.keep_denormals ? 1 : 0;
  const std::string writable = options.allow_writes.string();
  if (writable.size() >= sizeof request.allow_writes) return std::string("allow-writes path too long");
  std::memcpy(request.allow_writes, writable.c_str(), writable.size() + 1);

  alignas(cmsghdr) char control[CMSG_SPACE(4 * sizeof(int))] = {};
  iovec iov{&request, sizeof request};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(count * sizeof(int));
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(count * sizeof(int));
  std::memcpy(CMSG_DATA(c), passed.data(), count * sizeof(int));
  ssize_t sent = 0;
  do {
    sent = ::sendmsg(sock_.get(), &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(sizeof request)) {
    zygote_died = errno == EPIPE || errno == ECONNRESET || dead();
    return std::string("sandbox zygote: send: ") + std::strerror(errno);
  }
  ZygoteReply reply;
  bool eof = false;
  if (!wait_readable(sock_.get(), pidfd_.get(), reply_timeout) || !read_reply(sock_.get(), reply, eof)) {
    // NOTE: a zygote that died between its fork and its answer leaves a child serving these
    // descriptors unknown to us; the retry hands the same ones to a second child. The first
    // is still our child (CLONE_PARENT) and dies with its socket's peer, so only its pid leaks
    // until the node exits.
    zygote_died = eof || dead();
    return std::string(zygote_died ? "sandbox zygote died" : "sandbox zygote did not answer in time");
  }
  if (reply.pid <= 0) return std::string("sandbox zygote: ") + reply.error;
  return static_cast<pid_t>(reply.pid);
}

std::variant<pid_t, std::string> Zygote::fork_sandbox(const ZygoteForkOptions& options, const SandboxFds& fds) {
  std::lock_guard lock(mutex_);
  if (refused_) return std::string("the sandbox zygote refused to serve");
  for (int attempt = 0;; ++attempt) {
    bool died = pid_ <= 0 || dead();
    std::variant<pid_t, std::string> result = std::string("no sandbox zygote");
    if (!died) {
      std::string error;
      if (!ready_ && !await_ready(error)) {
        if (refused_) return "sandbox zygote: " + error;
        died = dead();
        if (!died) return "sandbox zygote: " + error;
      } else {
        result = request(options, fds, died);
      }
    }
    if (!died) return result;
    int status = 0;
    const pid_t old = pid_;
    if (pid_ > 0) {
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
    stop(std::chrono::milliseconds(0));  // reaped already: closes what is left of it
    const std::string how = old > 0 ? describe_exit(status) : "is not running";
    if (attempt > 0) return "sandbox zygote (pid " + std::to_string(old) + ") " + how + " again";
    log_("the sandbox zygote (pid " + std::to_string(old) + ") " + how + ": starting a new one");
    try {
      start();
    } catch (const std::exception& e) {
      return std::string(e.what());
    }
    ++restarts_;
  }
}

pid_t fork_from_zygote(const SandboxLaunch& launch, const SandboxFds& fds) {
  const ZygoteForkOptions options{launch.memory_mb, launch.wake_lead_us, launch.keep_denormals,
                                  launch.allow_writes};
  auto forked = launch.zygote->fork_sandbox(options, fds);
  if (const auto* error = std::get_if<std::string>(&forked)) {
    // A refusal was said once, by the zygote's own log; not again for every sandbox.
    if (launch.log && !launch.zygote->refused())
      launch.log(launch.name, SandboxLogLevel::warning, *error + "; spawning the sandbox instead");
    return -1;
  }
  const pid_t pid = std::get<pid_t>(forked);
  // As for a spawned sandbox (sandbox-client.cpp): real-time scheduling below PipeWire's.
  if (launch.rt_priority > 0) set_sandbox_priority(pid, launch.rt_priority);
  return pid;
}

}  // namespace sandpipe::host
