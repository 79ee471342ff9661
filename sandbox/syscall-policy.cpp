// The sandbox's syscall allow-list: the one reviewed list of what a confined plugin may ask the
// kernel for. Everything not listed fails with EPERM; numbers newer than the kernel headers this
// list was reviewed against fail with ENOSYS, so libraries fall back to the older call they
// replace (clone3 → clone, openat2 → openat, fchmodat2 → fchmodat, futex_waitv → futex).
//
// The list was found by measurement, not guessed: strace of the sandbox from the filter's
// installation on, over the example plugins, the test fixtures (scipy, wave, struct, datetime,
// math, cryptography included) and the faults suite; see docs/reliability.md ("Measuring the
// list"). The filter goes in after the interpreter and numpy are initialised, so it covers what
// happens from the plugin's import on: imports (dlopen of extension modules), the processing,
// garbage collection, Python threads, the control socket and the block channel's futex waits.
//
// Each group below is one function with a comment saying why the plugin needs it. Argument rules
// narrow the dangerous ones (clone, kill, prctl, ioctl, fcntl, sendto, openat, prlimit64).
//
// One list, two ways in: a spawned sandbox compiles it and installs it at once
// (install_syscall_filter); a zygote compiles it once (compile_syscall_filter: libseccomp's
// rule building takes 50-130 ms) and each child it forks installs that program as it is
// (install_syscall_program: well under a millisecond). What differs per child is in the key of
// the program (SyscallProgram::self, ::allow_writes), and a child only takes a program whose
// key is its own.
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <string>
#include <variant>
#include <vector>

#include "sandbox/confinement.h"

#if SANDPIPE_HAVE_SECCOMP
#include <seccomp.h>
#endif

namespace sandpipe::sandbox {

#if SANDPIPE_HAVE_SECCOMP

bool seccomp_available() noexcept { return true; }

namespace {

// Decided per architecture at build time: the newest syscall the list was reviewed against, from
// the kernel headers the sandbox is built with. Every architecture Debian builds for shares the
// unified numbering from 403 on, and set_mempolicy_home_node (450) is the newest in Debian 12's
// headers. A number above it is a syscall this list has never seen: ENOSYS.
#if defined(__NR_set_mempolicy_home_node)
constexpr int newest_reviewed = __NR_set_mempolicy_home_node;
#else
#error "review sandbox/syscall-policy.cpp against this architecture's syscall table"
#endif
/// The ENOSYS range ends here (EPERM, like the rest, above it): 60 numbers past 6.18's newest
/// (467), years of new syscalls. Each number is one rule; libseccomp took ~10 ms more to build
/// the filter with the range running to 1024.
constexpr int unknown_range_end = 528;

/// Owns a libseccomp context whose default is EPERM; rules add what is allowed.
class AllowList {
 public:
  explicit AllowList(std::uint32_t default_action) : ctx_(seccomp_init(default_action)) {
    if (ctx_ == nullptr) {
      error_ = "seccomp_init failed";
      return;
    }
    // A syscall of another ABI (i386 int 0x80 on x86_64, x32) ends the process: the list is
    // native only.
    (void)seccomp_attr_set(ctx_, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    // Threads already running (none is expected) get the filter too.
    (void)seccomp_attr_set(ctx_, SCMP_FLTATR_CTL_TSYNC, 1);
  }
  ~AllowList() {
    if (ctx_ != nullptr) seccomp_release(ctx_);
  }
  AllowList(const AllowList&) = delete;
  AllowList& operator=(const AllowList&) = delete;
  AllowList(AllowList&&) = delete;
  AllowList& operator=(AllowList&&) = delete;

  [[nodiscard]] const std::string& error() const noexcept { return error_; }
  [[nodiscard]] scmp_filter_ctx get() const noexcept { return ctx_; }

  /// Allows each of `names` outright (a syscall this architecture lacks is skipped).
  void allow(std::initializer_list<const char*> names) {
    for (const char* name : names) add(name, SCMP_ACT_ALLOW, {});
  }
  /// Allows `name` when every comparison holds (one rule; several rules for one name are ORed).
  void allow_if(const char* name, std::initializer_list<scmp_arg_cmp> cmps) { add(name, SCMP_ACT_ALLOW, cmps); }
  /// Allows `name` when argument `arg` equals one of `values`.
  void allow_values(const char* name, unsigned arg, std::initializer_list<scmp_datum_t> values) {
    for (const scmp_datum_t v : values) {
      const scmp_arg_cmp cmp{arg, SCMP_CMP_EQ, v, 0};
      add(name, SCMP_ACT_ALLOW, {cmp});
    }
  }
  /// Fails `name` with `err` instead of the default EPERM.
  void fail(const char* name, int err) { add(name, SCMP_ACT_ERRNO(static_cast<std::uint32_t>(err)), {}); }
  /// Fails every number in [first, last) with ENOSYS.
  void unknown(int first, int last) {
    for (int nr = first; nr < last && error_.empty(); ++nr) {
      const int rc = seccomp_rule_add_exact(ctx_, SCMP_ACT_ERRNO(ENOSYS), nr, 0);
      if (rc != 0 && rc != -EEXIST) error_ = "seccomp rule for syscall " + std::to_string(nr) + ": " + std::strerror(-rc);
    }
  }

 private:
  void add(const char* name, std::uint32_t action, std::initializer_list<scmp_arg_cmp> cmps) {
    if (ctx_ == nullptr || !error_.empty()) return;
    const int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR) return;  // not on this architecture
    const int rc = seccomp_rule_add_array(ctx_, action, nr, static_cast<unsigned>(cmps.size()), cmps.begin());
    if (rc != 0) error_ = std::string("seccomp rule for ") + name + ": " + std::strerror(-rc);
  }

  scmp_filter_ctx ctx_;
  std::string error_;
};

/// Memory: the allocator, numpy's buffers, dlopen of extension modules (PROT_EXEC mappings of
/// library files), Python's arenas. memfd_create is not here: an anonymous executable file is
/// the first step of running a program without execve.
void memory(AllowList& f) {
  f.allow({"brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore", "get_mempolicy",
           "membarrier"});
}

/// Reading files: imports, data files a plugin ships, /proc/self (its own maps and fds). Opening
/// for writing is allowed only with allow-writes, and then the mount namespace and Landlock
/// leave one directory writable; without allow-writes no open for writing gets past this list
/// (openat2 hides its flags in memory: ENOSYS, and libc falls back to openat).
void read_files(AllowList& f, bool allow_writes) {
  f.allow({"read", "readv", "pread64", "preadv", "preadv2", "lseek", "close", "fstat", "stat", "lstat",
           "newfstatat", "statx", "fstatfs", "statfs", "getdents", "getdents64", "readlink", "readlinkat",
           "access", "faccessat", "faccessat2", "getcwd", "chdir", "fchdir", "fadvise64", "readahead",
           "flock", "umask", "dup", "dup2", "dup3", "pipe", "pipe2", "fsync", "fdatasync"});
  f.fail("openat2", ENOSYS);
  if (allow_writes) {
    f.allow({"open", "openat", "creat", "write", "writev", "pwrite64", "pwritev", "pwritev2", "ftruncate",
             "fallocate", "unlink", "unlinkat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir"});
    return;
  }
  constexpr auto writing = static_cast<scmp_datum_t>(O_WRONLY | O_RDWR | O_CREAT | O_TRUNC);
  f.allow_if("open", {SCMP_A1(SCMP_CMP_MASKED_EQ, writing, 0)});
  f.allow_if("openat", {SCMP_A2(SCMP_CMP_MASKED_EQ, writing, 0)});
  // Writing to descriptors it already has: stderr (the host's log) and a pipe.
  f.allow({"write", "writev", "pwrite64"});
}

/// Descriptor flags and locks. Not F_SETOWN/F_SETSIG (SIGIO sent to another process), not
/// leases or directory notifications.
void descriptors(AllowList& f) {
  f.allow_values("fcntl", 1,
                 {F_DUPFD, F_DUPFD_CLOEXEC, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_GETLK, F_SETLK, F_SETLKW,
                  F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_GET_SEALS});
  // isatty() and non-blocking mode; nothing that fakes terminal input (TIOCSTI) or reaches a
  // device driver.
  f.allow_values("ioctl", 1, {TCGETS, TIOCGWINSZ, FIONBIO, FIOCLEX, FIONCLEX, FIONREAD});
}

/// Time and sleeping: time.sleep, timeouts, the GC's idle clock (the vDSO serves most reads).
void time_and_sleep(AllowList& f) {
  f.allow({"clock_gettime", "clock_getres", "gettimeofday", "time", "nanosleep", "clock_nanosleep", "times",
           "getrusage", "sched_yield"});
}

/// Threads and their synchronisation: Python threads, the block channel's futex wait, glibc's
/// per-thread set-up. clone only as pthread_create calls it (a thread of this process sharing
/// its memory, no new namespace); clone3 hides its flags in memory: ENOSYS, and glibc falls
/// back to clone. No fork, vfork or execve*: no new process and no new program.
void threads(AllowList& f) {
  f.allow({"futex", "set_robust_list", "get_robust_list", "rseq", "set_tid_address", "gettid", "exit",
           "exit_group", "restart_syscall", "sched_getaffinity", "sched_getparam", "sched_getscheduler",
           "sched_get_priority_min", "sched_get_priority_max", "getcpu", "arch_prctl"});
  constexpr scmp_datum_t thread = CLONE_THREAD | CLONE_VM | CLONE_SIGHAND;
  constexpr scmp_datum_t namespaces = CLONE_NEWNS | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC |
                                      CLONE_NEWUTS | CLONE_NEWCGROUP;
  f.allow_if("clone", {SCMP_A0(SCMP_CMP_MASKED_EQ, thread | namespaces, thread)});
  f.fail("clone3", ENOSYS);
}

/// Signals: handlers, masks, alternate stacks (CPython's faulthandler), and signals to itself
/// only (os.kill(os.getpid(), ...), raise(), pthread_kill of its own threads). Not tkill, which
/// names a thread of any process.
void signals(AllowList& f, pid_t self) {
  f.allow({"rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "rt_sigpending", "rt_sigsuspend",
           "rt_sigtimedwait"});
  const auto me = static_cast<scmp_datum_t>(self);
  f.allow_if("kill", {SCMP_A0(SCMP_CMP_EQ, me)});
  f.allow_if("tgkill", {SCMP_A0(SCMP_CMP_EQ, me)});
}

/// Waiting for descriptors (the session's socket, select/asyncio in a plugin) and the sockets it
/// already has: the control socket is inherited, so no socket, socketpair, connect, bind or
/// accept. sendto only without an address (send() on a connected socket); sendmsg can hide an
/// address in memory, so it is not here.
void io_and_sockets(AllowList& f) {
  f.allow({"poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
           "epoll_pwait", "epoll_pwait2", "eventfd2", "recvfrom", "recvmsg", "shutdown", "getsockname",
           "getpeername", "getsockopt"});
  f.allow_if("sendto", {SCMP_A4(SCMP_CMP_EQ, 0)});
}

/// Reading who and where it is: ids, limits (prlimit64 only to read), the system's name and
/// size, randomness (os.urandom, hash seeds), its capabilities (none).
void identity(AllowList& f) {
  f.allow({"getpid", "getppid", "getuid", "geteuid", "getgid", "getegid", "getresuid", "getresgid",
           "getgroups", "getpgrp", "getpgid", "getsid", "uname", "sysinfo", "getrlimit", "getpriority",
           "getrandom", "capget"});
  f.allow_if("prlimit64", {SCMP_A2(SCMP_CMP_EQ, 0)});
}

/// prctl: naming threads and mappings, and reading. Never PR_SET_PDEATHSIG (it would outlive
/// the host), PR_SET_DUMPABLE (its memory readable by others), PR_SET_SECCOMP,
/// PR_SET_NO_NEW_PRIVS or the capability and securebits calls.
void process_control(AllowList& f) {
  f.allow_values("prctl", 0,
                 {PR_SET_NAME, PR_GET_NAME, PR_GET_DUMPABLE, PR_GET_PDEATHSIG, PR_GET_TIMERSLACK,
                  PR_GET_NO_NEW_PRIVS, PR_GET_SECCOMP, PR_CAPBSET_READ, PR_SET_VMA});
}

/// Reads what seccomp_export_bpf wrote: the kernel's sock_filter array, as loaded by seccomp_load.
std::optional<std::string> export_program(scmp_filter_ctx ctx, std::vector<sock_filter>& code) {
  // NOTE: libseccomp 2.5 (Debian 12) exports to a descriptor only; a memfd keeps it off disk.
  const int fd = ::memfd_create("sandpipe-seccomp", MFD_CLOEXEC);
  if (fd < 0) return std::string("memfd_create: ") + std::strerror(errno);
  std::optional<std::string> problem;
  if (const int rc = seccomp_export_bpf(ctx, fd); rc != 0) {
    problem = std::string("seccomp_export_bpf: ") + std::strerror(-rc);
  } else if (const off_t size = ::lseek(fd, 0, SEEK_END);
             size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0 ||
             size > static_cast<off_t>(BPF_MAXINSNS * sizeof(sock_filter))) {
    problem = "seccomp_export_bpf: unexpected program size " + std::to_string(size);
  } else {
    code.resize(static_cast<std::size_t>(size) / sizeof(sock_filter));
    if (::pread(fd, code.data(), static_cast<std::size_t>(size), 0) != size)
      problem = std::string("reading the exported program: ") + std::strerror(errno);
  }
  ::close(fd);
  return problem;
}

}  // namespace

std::variant<SyscallProgram, std::string> compile_syscall_filter(pid_t self, bool allow_writes) {
  // SANDPIPE_SECCOMP_LOG=1 (measuring the list): what is not allowed is logged by the kernel
  // (audit) and allowed, instead of failing.
  const char* log = std::getenv("SANDPIPE_SECCOMP_LOG");
  AllowList f(log != nullptr && std::strcmp(log, "1") == 0 ? SCMP_ACT_LOG : SCMP_ACT_ERRNO(EPERM));
  memory(f);
  read_files(f, allow_writes);
  descriptors(f);
  time_and_sleep(f);
  threads(f);
  signals(f, self);
  io_and_sockets(f);
  identity(f);
  process_control(f);
  f.unknown(newest_reviewed + 1, unknown_range_end);
  if (!f.error().empty()) return f.error();
  SyscallProgram program;
  program.self = self;
  program.allow_writes = allow_writes;
  if (auto problem = export_program(f.get(), program.code)) return *std::move(problem);
  return program;
}

std::optional<std::string> install_syscall_program(const SyscallProgram& program) {
  if (program.code.empty()) return std::string("empty program");
  // What seccomp_load does with the attributes AllowList sets: no new privileges (needed once
  // the capabilities are gone), then the filter on every thread of the process (TSYNC).
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return std::string("PR_SET_NO_NEW_PRIVS: ") + std::strerror(errno);
  sock_fprog prog{};
  prog.len = static_cast<unsigned short>(program.code.size());
  prog.filter = const_cast<sock_filter*>(program.code.data());  // NOLINT: the kernel only reads it
  const long rc = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
  if (rc < 0) return std::string("seccomp(SECCOMP_SET_MODE_FILTER): ") + std::strerror(errno);
  if (rc > 0) return "seccomp(SECCOMP_SET_MODE_FILTER): thread " + std::to_string(rc) + " could not be synchronised";
  return std::nullopt;
}

std::optional<std::string> install_syscall_filter(pid_t self, bool allow_writes) {
  auto compiled = compile_syscall_filter(self, allow_writes);
  if (auto* problem = std::get_if<std::string>(&compiled)) return *problem;
  return install_syscall_program(std::get<SyscallProgram>(compiled));
}

#else

bool seccomp_available() noexcept { return false; }

std::variant<SyscallProgram, std::string> compile_syscall_filter(pid_t /*self*/, bool /*allow_writes*/) {
  return std::string("built without libseccomp");
}

std::optional<std::string> install_syscall_program(const SyscallProgram& /*program*/) {
  return std::string("built without libseccomp");
}

std::optional<std::string> install_syscall_filter(pid_t /*self*/, bool /*allow_writes*/) { return std::nullopt; }

#endif

}  // namespace sandpipe::sandbox
