// What a sandbox may do: its own PID namespace from its start (made by the host:
// host/python/pid-namespace-spawn.h), resource limits at start, then, before the plugin loads, the
// walls applied by confine(): namespaces (user, mount, network, IPC, UTS) with a file-system
// view of only what the plugin needs, nobody's uid instead of root's, Landlock, and the seccomp
// allow-list (syscall-policy.cpp).
// The plugin file is the untrusted part: every wall is in place before it is imported.
// docs/reliability.md has the threat model, layer by layer.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace sandpipe::sandbox {

struct Limits {
  /// RLIMIT_AS in MiB (0: none). numpy + scipy reserve ~110 MiB of address space here.
  std::uint64_t memory_mb = 0;
};

/// At process start, before the interpreter: PR_SET_NO_NEW_PRIVS, no core dumps, RLIMIT_AS,
/// and (when running as root) every capability dropped. Returns what failed, if anything.
[[nodiscard]] std::optional<std::string> apply_process_limits(const Limits& limits);

/// The seccomp allow-list (syscall-policy.cpp) compiled to the kernel's BPF program for one
/// key: the pid the plugin may signal and whether it may write. Built once in a zygote, copied
/// into each child by its fork.
struct SyscallProgram {
  pid_t self = 0;
  bool allow_writes = false;
  std::vector<sock_filter> code;
};

/// What one sandbox's walls let through.
struct ConfinementPolicy {
  pid_t self = 0;  ///< this process's pid: signals only to itself
  /// Folders shown read-only (the plugin's, the SDK's; the system's libraries and Python are
  /// always shown). Paths stay the same inside.
  std::vector<std::filesystem::path> read_only;
  /// `allow-writes`: the one directory the plugin may write in (empty: none).
  std::filesystem::path writable;
  /// The plugin's files (a sandbox group's: every member's): a root sandbox runs as nobody only
  /// if nobody can read each of them (and the folders).
  std::vector<std::filesystem::path> plugins;
  /// The allow-list compiled ahead (by a zygote). Used only when its key is this policy's
  /// (`self`, `writable` set or not); otherwise, or null, confine() compiles the list itself.
  const SyscallProgram* syscall_program = nullptr;
};

/// The layers in force after confine(), and what could not be had (with why).
struct ConfinementReport {
  bool seccomp = false;
  bool namespaces = false;
  bool landlock = false;
  bool pid_namespace = false;        ///< started in its own PID namespace (by the host, or a zygote)
  bool unprivileged = false;         ///< not the machine's root: nobody (65534), or a user's own uid
  bool seccomp_precompiled = false;  ///< the zygote's program installed as it was
  std::uint64_t seccomp_ns = 0;      ///< what compiling (if done here) and installing the filter took
  std::vector<std::string> missing;  ///< "landlock: not in this kernel" ...
};

/// Applies every wall to the calling process, in order: namespaces and the private file-system
/// view, the machine's root becoming nobody (65534), every capability dropped, Landlock, the
/// seccomp allow-list. The PID namespace cannot be entered here (a process only puts its
/// children in a new one): whoever starts the sandbox makes it (host/python/pid-namespace-spawn.h; a
/// zygote forks its children the same way) and this only reports it. Meant for a
/// single-threaded process that has not run plugin code: the sandbox after its interpreter
/// start, or a zygote's child right after fork. A layer the kernel does not offer is reported in
/// `missing` and the rest still apply; a layer that is offered but fails to apply is an error
/// (returned as the string; the plugin must not load then).
[[nodiscard]] std::optional<std::string> confine(const ConfinementPolicy& policy, ConfinementReport& report);

/// The seccomp allow-list alone (syscall-policy.cpp): EPERM for every syscall not listed,
/// ENOSYS for numbers newer than the list. Returns what failed, if anything; nullopt also when
/// built without libseccomp (see seccomp_available()).
[[nodiscard]] std::optional<std::string> install_syscall_filter(pid_t self, bool allow_writes = false);

/// Compiles the allow-list for `self` and `allow_writes` without installing it (a zygote, before
/// it forks). Returns the program or what failed (also when built without libseccomp).
[[nodiscard]] std::variant<SyscallProgram, std::string> compile_syscall_filter(pid_t self, bool allow_writes);

/// Installs a compiled program on the calling process (every thread): PR_SET_NO_NEW_PRIVS, then
/// seccomp(SECCOMP_SET_MODE_FILTER, TSYNC). Returns what failed, if anything.
[[nodiscard]] std::optional<std::string> install_syscall_program(const SyscallProgram& program);

/// Right after unshare(CLONE_NEWUSER) by an unprivileged process: denies setgroups and maps one
/// uid and one gid, `inside_*` in the new namespace to `outside_*` (this process's own ids before
/// the unshare), as such a process may. Used by confine() (1000 inside) and by a user's zygote
/// (its own ids inside). Returns what failed, if anything.
[[nodiscard]] std::optional<std::string> map_own_ids(uid_t inside_uid, uid_t outside_uid, gid_t inside_gid,
                                                     gid_t outside_gid);

/// False when this sandbox was built without libseccomp (the host logs a warning).
[[nodiscard]] bool seccomp_available() noexcept;

}  // namespace sandpipe::sandbox
