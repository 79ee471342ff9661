#include "sandbox/confinement.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>

#if SANDPIPE_HAVE_SECCOMP
#include <seccomp.h>
#endif

namespace sandpipe::sandbox {
namespace {

std::string errno_text(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

/// Drops every capability (effective, permitted, inheritable) and the bounding set. Only
/// matters when the host runs as root: a root sandbox could otherwise kill any process or
/// override file permissions.
std::optional<std::string> drop_capabilities() {
  if (::geteuid() != 0) return std::nullopt;
  for (int cap = 0; cap <= 63; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return errno_text("PR_CAPBSET_DROP", errno);
  }
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capset, &header, data) != 0) return errno_text("capset", errno);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> apply_process_limits(const Limits& limits) {
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return errno_text("PR_SET_NO_NEW_PRIVS", errno);
  const rlimit no_core{0, 0};
  if (::setrlimit(RLIMIT_CORE, &no_core) != 0) return errno_text("RLIMIT_CORE", errno);
#if defined(__SANITIZE_ADDRESS__)
  const bool limit_memory = false;  // ASan reserves terabytes of shadow address space
#else
  const bool limit_memory = limits.memory_mb > 0;
#endif
  if (limit_memory) {
    const rlim_t bytes = static_cast<rlim_t>(limits.memory_mb) << 20;
    const rlimit as{bytes, bytes};
    if (::setrlimit(RLIMIT_AS, &as) != 0) return errno_text("RLIMIT_AS", errno);
  }
  return drop_capabilities();
}

#if SANDPIPE_HAVE_SECCOMP

bool seccomp_available() noexcept { return true; }

namespace {

/// Owns a libseccomp context.
class Filter {
 public:
  Filter() : ctx_(seccomp_init(SCMP_ACT_ALLOW)) {}
  ~Filter() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;
  Filter(Filter&&) = delete;
  Filter& operator=(Filter&&) = delete;

  [[nodiscard]] bool ok() const noexcept { return ctx_ != nullptr && error_.empty(); }
  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] scmp_filter_ctx get() const noexcept { return ctx_; }

  /// Refuses `name` outright with `err` (a syscall this architecture lacks is skipped).
  void deny(const char* name, int err) { add(name, err, 0, nullptr); }
  /// Refuses `name` when every comparison holds.
  void deny_if(const char* name, int err, std::initializer_list<scmp_arg_cmp> cmps) {
    add(name, err, static_cast<unsigned>(cmps.size()), cmps.begin());
  }

 private:
  void add(const char* name, int err, unsigned count, const scmp_arg_cmp* cmps) {
    if (ctx_ == nullptr || !error_.empty()) return;
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;  // not on this architecture
    const int rc = seccomp_rule_add_array(ctx_, SCMP_ACT_ERRNO(static_cast<std::uint32_t>(err)), nr, count, cmps);
    if (rc != 0) error_ = std::string("seccomp rule for ") + name + ": " + std::strerror(-rc);
  }

  scmp_filter_ctx ctx_;
  std::string error_;
};

}  // namespace

std::optional<std::string> install_syscall_filter(pid_t self, bool allow_writes) {
  Filter f;
  if (f.get() == nullptr) return "seccomp_init failed";
  const auto pid = static_cast<scmp_datum_t>(self);

  // New processes and programs: none. Threads (clone with CLONE_THREAD) stay allowed: CPython,
  // numpy and plugin threads need them. clone3 hides its flags in memory the filter cannot
  // read: ENOSYS makes glibc fall back to clone, which is checked.
  f.deny("fork", EPERM);
  f.deny("vfork", EPERM);
  f.deny_if("clone", EPERM, {SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0)});
  f.deny("clone3", ENOSYS);
  f.deny("execve", EACCES);
  f.deny("execveat", EACCES);

  // Network: no socket but AF_UNIX, and no connecting, binding or listening with any.
  f.deny_if("socket", EACCES, {SCMP_A0(SCMP_CMP_NE, AF_UNIX)});
  f.deny_if("socketpair", EACCES, {SCMP_A0(SCMP_CMP_NE, AF_UNIX)});
  for (const char* name : {"connect", "bind", "listen", "accept", "accept4"}) f.deny(name, EACCES);

  // Files: read-only (unless allow-writes). No open for writing or creating, nothing that
  // changes the file system.
  if (!allow_writes) {
    for (const int flag : {O_WRONLY, O_RDWR, O_CREAT, O_TRUNC}) {
      const auto bit = static_cast<scmp_datum_t>(flag);
      f.deny_if("open", EACCES, {SCMP_A1(SCMP_CMP_MASKED_EQ, bit, bit)});
      f.deny_if("openat", EACCES, {SCMP_A2(SCMP_CMP_MASKED_EQ, bit, bit)});
    }
    f.deny("openat2", ENOSYS);  // flags in memory; glibc and CPython fall back to openat
    for (const char* name : {"creat", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat",
                             "rmdir", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod", "fchmodat",
                             "chown", "fchown", "lchown", "fchownat", "truncate", "ftruncate", "fallocate",
                             "mknod", "mknodat", "utime", "utimes", "utimensat", "futimesat", "setxattr",
                             "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
                             "open_by_handle_at", "name_to_handle_at"}) {
      f.deny(name, EACCES);
    }
  }

  // Other processes: no signals but to itself, no tracing, no reading their memory.
  f.deny_if("kill", EPERM, {SCMP_A0(SCMP_CMP_NE, pid)});
  f.deny_if("tgkill", EPERM, {SCMP_A0(SCMP_CMP_NE, pid)});
  f.deny_if("rt_sigqueueinfo", EPERM, {SCMP_A0(SCMP_CMP_NE, pid)});
  f.deny_if("rt_tgsigqueueinfo", EPERM, {SCMP_A0(SCMP_CMP_NE, pid)});
  for (const char* name : {"tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd", "ptrace",
                           "process_vm_readv", "process_vm_writev", "kcmp"}) {
    f.deny(name, EPERM);
  }

  // Limits stay as set (reading them is fine: prlimit64 with no new limit).
  f.deny("setrlimit", EPERM);
  f.deny_if("prlimit64", EPERM, {SCMP_A2(SCMP_CMP_NE, 0)});

  // The terminal the host may share through stderr: no faking input on it.
  f.deny_if("ioctl", EPERM, {SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(TIOCSTI))});
  f.deny_if("ioctl", EPERM, {SCMP_A1(SCMP_CMP_EQ, static_cast<scmp_datum_t>(TIOCLINUX))});

  // The system: nothing an audio plugin has any business doing.
  for (const char* name : {"mount", "umount2", "pivot_root", "chroot", "setns", "unshare", "bpf", "perf_event_open",
                           "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
                           "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "quotactl",
                           "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "userfaultfd", "iopl",
                           "ioperm", "fanotify_init", "lookup_dcookie", "personality", "syslog", "vhangup",
                           "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
                           "setfsuid", "setfsgid", "capset"}) {
    f.deny(name, EPERM);
  }

  if (!f.ok()) return f.error();
  // NO_NEW_PRIVS was set at start; libseccomp sets it again (harmless) when loading.
  if (const int rc = seccomp_load(f.get()); rc != 0) return std::string("seccomp_load: ") + std::strerror(-rc);
  return std::nullopt;
}

#else

bool seccomp_available() noexcept { return false; }

std::optional<std::string> install_syscall_filter(pid_t /*self*/, bool /*allow_writes*/) { return std::nullopt; }

#endif

}  // namespace sandpipe::sandbox
