// The zygote's namespaces (sandbox/zygote.cpp): a PID namespace of its own for each child, and,
// for a node run by a user, a user namespace for the zygote in which it may make them.
//
// Why a maker process: to put its next child in a new PID namespace, the zygote starts that
// namespace's sandpipe-pid-init (clone with CLONE_NEWPID) and then joins it for its children
// only (setns). A process that joined a namespace that way may not make another one until it is
// back in its own (clone refuses CLONE_NEWPID), and going back needs CAP_SYS_ADMIN over its own
// namespace, which a user's zygote never has. So a maker, forked once before the zygote joins any
// namespace, makes every init and hands the zygote the init's pidfd; the zygote only ever joins
// (always a child of its own namespace, which its user namespace's capabilities allow).
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>

namespace sandpipe::sandbox {

/// [zygote] True if this process may make PID namespaces where it is (CAP_SYS_ADMIN in its
/// user namespace).
[[nodiscard]] bool may_make_pid_namespaces();

/// [zygote] Moves this process into a user namespace of its own, where it holds every capability
/// (a user's node: the same uid and gid inside as outside; root without CAP_SYS_ADMIN: every id
/// mapped to itself, so that its children can still become nobody). Its children's confinement
/// then nests theirs inside it, as a spawned sandbox's does in the machine's. nullopt, or why not.
[[nodiscard]] std::optional<std::string> enter_own_user_namespace();

/// [zygote] A PID namespace per child, each under a sandpipe-pid-init as a spawned sandbox's.
class PidNamespaces {
 public:
  PidNamespaces(std::filesystem::path init, pid_t host);
  ~PidNamespaces();
  PidNamespaces(const PidNamespaces&) = delete;
  PidNamespaces& operator=(const PidNamespaces&) = delete;
  PidNamespaces(PidNamespaces&&) = delete;
  PidNamespaces& operator=(PidNamespaces&&) = delete;

  /// Once, before serving and before any fork of a sandbox: starts the maker and makes a trial
  /// namespace. nullopt, or what is missing.
  std::optional<std::string> start();

  /// One child's namespace, joined by this process for its next child only.
  struct Entered {
    int init_pidfd = -1;
    int ready_write = -1;
  };
  /// Has the maker start a sandpipe-pid-init in a new PID namespace and makes this process's
  /// next child that namespace's second process.
  std::optional<std::string> enter(Entered& entered);
  /// After the fork: tells the init whether its sandbox exists (it exits if not).
  void leave(Entered& entered, bool sandbox_started);

  [[nodiscard]] int host_pidfd() const noexcept { return host_pidfd_; }
  /// True once the maker is gone: no child can get a namespace any more.
  [[nodiscard]] bool maker_gone() const noexcept { return maker_gone_; }

 private:
  /// [maker] Serves the zygote's requests on `fd` until it closes it.
  [[noreturn]] void serve_as_maker(int fd);
  /// [maker] Starts one init; its pidfd and the ready pipe's write end, or errno (negative).
  int make_init(int& init_pidfd, int& ready_write);
  static int init_main(void* arg);

  std::filesystem::path init_;
  pid_t host_;
  int host_pidfd_ = -1;
  int maker_fd_ = -1;
  bool maker_gone_ = false;
  void* stack_ = nullptr;
  // What init_main reads and writes (prepared before the clone: it may not allocate).
  std::string init_s_;
  std::string host_s_;
  std::string ready_s_;
  char* argv_[4] = {};
  int ready_read_ = -1;
  int exec_error_ = 0;
};

}  // namespace sandpipe::sandbox
