// Starting a sandbox in its own PID namespace, as the caller's own child.
//
// The namespace's init is sandpipe-pid-init (sandbox/pid-init.cpp), a tiny program that runs
// no plugin code and exits when the host or the sandbox is gone; the kernel then kills
// everything else in the namespace. The sandbox joins the namespace as its pid 2 and is still
// the calling thread's child, so waitpid, pidfd_open, kill, sched_setscheduler and the death
// signal act on the sandbox itself, exactly as for a posix_spawn'd one; inside, it is not PID 1,
// so a plugin's own signals (os.kill(os.getpid(), SIGKILL), abort()) keep their usual meaning.
//
// Why not simpler: a sandbox made with clone(CLONE_NEWPID) would be PID 1 itself (self-sent
// signals ignored, abort() turned into SIGSEGV, and only seccomp keeping its death signal);
// unshare(CLONE_NEWPID) inside the sandbox breaks its threads (CLONE_THREAD needs the same
// pid_ns_for_children, e85b0c7); an outer process forwarding exit status, signals and the
// real-time priority to a grandchild changes what the host's pid means.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <string>

namespace sandpipe::host {

struct PidNamespaceSpawn {
  const char* executable = nullptr;  ///< the sandbox
  char* const* argv = nullptr;
  char* const* envp = nullptr;
  std::span<const int> keep_fds;  ///< inherited by the sandbox (everything else is CLOEXEC)
  std::string init_executable;    ///< sandpipe-pid-init
};

/// What spawn_in_pid_namespace did.
enum class PidNamespaceResult : std::uint8_t {
  started,      ///< `pid` is the sandbox
  unavailable,  ///< the kernel (or SANDPIPE_CONFINE_NO_NAMESPACES / _NO_PID_NAMESPACE) refused:
                ///< nothing was started, the caller starts it without the namespace
  failed,       ///< the sandbox could not be started (`error` is an errno value)
};

/// [main] Starts `spawn.executable` as a child of the calling thread, in a new PID namespace
/// (and, when not root, a user namespace owning it, where the caller's ids are 1000), in its own
/// process group, with default signal handling and an empty signal mask. Async-signal-safe
/// between the clones (no allocation, no lock).
[[nodiscard]] PidNamespaceResult spawn_in_pid_namespace(const PidNamespaceSpawn& spawn, pid_t& pid,
                                                        int& error);

}  // namespace sandpipe::host
