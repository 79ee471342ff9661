#include "sandbox/confinement.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <ctime>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace sandpipe::sandbox {
namespace {

namespace fs = std::filesystem;

std::string errno_text(const std::string& what, int err) { return what + ": " + std::strerror(err); }

/// Empties the bounding set (needs CAP_SETPCAP: before the uid changes; EPERM once it is gone).
std::optional<std::string> drop_bounding_set() {
  for (int cap = 0; cap <= 63; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL && errno != EPERM)
      return errno_text("PR_CAPBSET_DROP", errno);
  }
  return std::nullopt;
}

/// Drops every capability (effective, permitted, inheritable) and the bounding set: as root
/// before the namespaces, and again inside them (a new user namespace starts with all of its
/// own).
std::optional<std::string> drop_capabilities() {
  if (auto problem = drop_bounding_set()) return problem;
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  header.pid = 0;
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capset, &header, data) != 0) return errno_text("capset", errno);
  return std::nullopt;
}

bool write_file(const char* path, std::string_view text) {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok;
}

// ---- Namespaces and the file-system view -------------------------------------------------------

/// The uid and gid the plugin has inside its user namespace: not root there either.
constexpr unsigned inside_id = 1000;

/// Builds the view under `root` (a fresh tmpfs) from the old root at `old`.
class View {
 public:
  View(std::string root, std::string old) : root_(std::move(root)), old_(std::move(old)) {}

  /// Shows host path `path` at the same place, read-only unless `writable`.
  std::optional<std::string> bind(const fs::path& path, bool writable = false, bool optional = false) {
    const std::string source = old_ + path.string();
    struct stat st {};
    if (::stat(source.c_str(), &st) != 0) {
      if (optional) return std::nullopt;
      return errno_text("cannot show " + path.string(), errno);
    }
    const std::string target = root_ + path.string();
    if (auto problem = make_parents(target)) return problem;
    if (S_ISDIR(st.st_mode)) {
      if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) return errno_text("mkdir " + target, errno);
    } else {
      const int fd = ::open(target.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      if (fd < 0) return errno_text("create " + target, errno);
      ::close(fd);
    }
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
      return errno_text("bind " + path.string(), errno);
    // Remount with our flags added to the ones the original mount has (a user namespace may not
    // clear those: they are locked).
    struct statvfs sv {};
    if (::statvfs(target.c_str(), &sv) != 0) return errno_text("statvfs " + target, errno);
    unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID;
    if (!writable) flags |= MS_RDONLY;
    if ((sv.f_flag & ST_NODEV) != 0 || S_ISDIR(st.st_mode)) flags |= MS_NODEV;
    if ((sv.f_flag & ST_NOEXEC) != 0) flags |= MS_NOEXEC;
    if ((sv.f_flag & ST_NOATIME) != 0) flags |= MS_NOATIME;
    if ((sv.f_flag & ST_NODIRATIME) != 0) flags |= MS_NODIRATIME;
    if ((sv.f_flag & ST_RELATIME) != 0) flags |= MS_RELATIME;
    if (::mount(nullptr, target.c_str(), nullptr, flags, nullptr) != 0)
      return errno_text("remount " + path.string() + (writable ? " read-write" : " read-only"), errno);
    return std::nullopt;
  }

  /// Copies the symlink at `path` (/lib → usr/lib on merged-/usr systems), or shows the directory.
  std::optional<std::string> link_or_bind(const fs::path& path) {
    std::error_code ec;
    const fs::path source = old_ + path.string();
    if (fs::is_symlink(source, ec)) {
      const fs::path to = fs::read_symlink(source, ec);
      if (ec) return "readlink " + path.string() + ": " + ec.message();
      if (::symlink(to.c_str(), (root_ + path.string()).c_str()) != 0)
        return errno_text("symlink " + path.string(), errno);
      return std::nullopt;
    }
    return bind(path, false, true);
  }

  std::optional<std::string> tmpfs(const fs::path& path, const char* options) {
    const std::string target = root_ + path.string();
    if (auto problem = make_parents(target)) return problem;
    if (::mkdir(target.c_str(), 0755) != 0 && errno != EEXIST) return errno_text("mkdir " + target, errno);
    if (::mount("tmpfs", target.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options) != 0)
      return errno_text("tmpfs on " + path.string(), errno);
    return std::nullopt;
  }

 private:
  static std::optional<std::string> make_parents(const std::string& target) {
    std::error_code ec;
    fs::create_directories(fs::path(target).parent_path(), ec);
    if (ec) return "mkdir " + fs::path(target).parent_path().string() + ": " + ec.message();
    return std::nullopt;
  }

  std::string root_;
  std::string old_;
};

/// Replaces the root with a tmpfs showing only what the plugin needs (same paths as outside):
/// /usr (Python's standard library and dist-packages, the shared libraries), the few files of
/// /etc the dynamic loader reads, the plugin's and the SDK's folders, /dev/null, /dev/zero,
/// /dev/urandom, its own /proc/self, a private /tmp, and the allow-writes directory read-write.
/// No /home, /root, /etc/shadow, /run, /var, /sys, nor any other process in /proc.
std::optional<std::string> build_file_system_view(const ConfinementPolicy& policy) {
  // Keep our mounts to ourselves, then stage on a tmpfs over /tmp: pivoting into it leaves the
  // old root reachable at /oldroot (sources for the binds) until the final pivot drops it.
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return errno_text("make / private", errno);
  if (::mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0)
    return errno_text("tmpfs for the new root", errno);
  if (::mkdir("/tmp/newroot", 0755) != 0 || ::mkdir("/tmp/oldroot", 0755) != 0)
    return errno_text("mkdir in the staging tmpfs", errno);
  if (::syscall(SYS_pivot_root, "/tmp", "/tmp/oldroot") != 0)
    return errno_text("pivot_root (staging)", errno);
  if (::chdir("/") != 0) return errno_text("chdir /", errno);
  if (::mount("tmpfs", "/newroot", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0)
    return errno_text("tmpfs for the new root", errno);

  View view("/newroot", "/oldroot");
  std::optional<std::string> problem;
  auto step = [&problem](std::optional<std::string> p) {
    if (!problem && p) problem = std::move(p);
  };
  step(view.bind("/usr"));
  for (const char* top : {"/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"})
    step(view.link_or_bind(top));
  for (const char* file : {"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime", "/etc/alternatives"})
    step(view.bind(file, false, true));
  step(view.bind("/dev/null", true));
  step(view.bind("/dev/zero"));
  step(view.bind("/dev/urandom"));
  step(view.bind("/dev/random"));
  // Its own process directory only (/proc/self resolves to it in the old root).
  step(view.bind("/proc/self"));
  // The private /tmp before the folders: a plugin kept under /tmp stays visible on top of it.
  step(view.tmpfs("/tmp", "mode=1777,size=16m"));
  for (const fs::path& dir : policy.read_only) step(view.bind(dir));
  if (!policy.writable.empty()) step(view.bind(policy.writable, true));
  if (problem) return problem;

  // The old root goes; the new one becomes / and is itself read-only.
  if (::umount2("/oldroot", MNT_DETACH) != 0) return errno_text("detach the old root", errno);
  if (::chdir("/newroot") != 0) return errno_text("chdir /newroot", errno);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return errno_text("pivot_root", errno);
  if (::umount2(".", MNT_DETACH) != 0) return errno_text("detach the staging root", errno);
  if (::chdir("/") != 0) return errno_text("chdir /", errno);
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0)
    return errno_text("remount / read-only", errno);
  return std::nullopt;
}

/// New mount, network (loopback only, down), IPC and UTS namespaces and the file-system
/// view. A user's sandbox gets a user namespace too, with an unprivileged id inside (1000) that is
/// the user's outside. A root sandbox makes them with its own capabilities instead (mapping root
/// into a user namespace needs CAP_SETFCAP in the parent, which the namespace's own process no
/// longer has) and then drops every capability: uid 0 without any, in the same view. False in
/// `available` when the kernel refuses (then nothing was changed).
std::optional<std::string> enter_namespaces(const ConfinementPolicy& policy, bool& available) {
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  const bool as_root = uid == 0;
  // NOTE: no PID namespace: unshare(CLONE_NEWPID) leaves this process outside it, and the
  // kernel then refuses its threads (clone with CLONE_THREAD: EINVAL), which CPython and plugins
  // need. A sandbox that lives inside its own PID namespace needs its parent to make it (the host
  // or a zygote cloning with CLONE_NEWPID); until then seccomp (no fork, no clearing the death
  // signal) is what keeps anything from outliving the host.
  // A network namespace (only `lo`, down) behind the seccomp filter that refuses every socket:
  // a second wall if the filter ever lets one through. Its kernel clean-up when a sandbox ends
  // (cleanup_net) once showed as deadline misses beside it (ChainSchedule.
  // TwoPipelinedSlotsRunInParallel, 270 for a bound of 42, 2026-12-04); re-measured on
  // 2026-12-05 it passed twice in a row with it (pipelined: 0 misses of 600 blocks sleeping).
  const int network = CLONE_NEWNET;
  const int flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | network | (as_root ? 0 : CLONE_NEWUSER);
  if (::unshare(flags) != 0) {
    available = false;
    return errno_text("unshare", errno);
  }
  available = true;
  if (!as_root) {
    if (auto problem = map_own_ids(inside_id, uid, inside_id, gid)) return problem;
  }
  if (auto problem = build_file_system_view(policy)) return problem;
  (void)::sethostname("sandpipe", 8);
  return std::nullopt;
}

// ---- Identity ---------------------------------------------------------------------------------

/// The plugin's uid and gid when the host runs as the machine's root.
constexpr uid_t nobody = 65534;

/// True for the machine's root (uid 0 of the initial user namespace); false for a user, and
/// for uid 0 of a user namespace mapped to a user, who is that user outside.
bool machine_root() {
  if (::geteuid() != 0) return false;
  const int fd = ::open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return true;
  char text[128] = {};
  const ssize_t n = ::read(fd, text, sizeof text - 1);
  ::close(fd);
  unsigned long inside = 1;
  unsigned long outside = 1;
  return n <= 0 || (std::sscanf(text, "%lu %lu", &inside, &outside) == 2 && inside == 0 && outside == 0);
}

/// The machine's root becomes nobody (65534, no supplementary groups) once the mounts are made,
/// so that even without the mount namespace nothing of root's (/etc/shadow) is readable. Only if
/// nobody can read the plugin, its folders and (read-write) the allow-writes directory: a folder
/// made by root with mode 0700 (mkdtemp) would hide the plugin from it. Then `why_not` says so
/// and the sandbox stays uid 0 without capabilities. Checked with the file-system ids alone,
/// which go back to 0 after the check.
std::optional<std::string> become_nobody(const ConfinementPolicy& policy, std::string& why_not) {
  if (::setgroups(0, nullptr) != 0) return errno_text("setgroups", errno);
  (void)::setfsgid(nobody);
  (void)::setfsuid(nobody);
  auto denied = [](const fs::path& path, int mode) {
    return !path.empty() && ::faccessat(AT_FDCWD, path.c_str(), mode, AT_EACCESS) != 0;
  };
  std::string unreadable;
  for (const fs::path& dir : policy.read_only)
    if (unreadable.empty() && denied(dir, R_OK | X_OK)) unreadable = dir.string();
  for (const fs::path& plugin : policy.plugins)
    if (unreadable.empty() && denied(plugin, R_OK)) unreadable = plugin.string();
  if (unreadable.empty() && denied(policy.writable, R_OK | W_OK | X_OK))
    unreadable = policy.writable.string() + " (allow-writes)";
  (void)::setfsuid(0);
  (void)::setfsgid(0);
  if (!unreadable.empty()) {
    why_not = "unprivileged uid: nobody (65534) cannot use " + unreadable +
              "; running as uid 0 without capabilities";
    return std::nullopt;
  }
  if (::setresgid(nobody, nobody, nobody) != 0) return errno_text("setresgid", errno);
  if (::setresuid(nobody, nobody, nobody) != 0) return errno_text("setresuid", errno);
  // A uid change leaves the process not dumpable, which makes its /proc/self root's: the plugin
  // could no longer list its own descriptors. Dumpable again: only another process of nobody's
  // could then ptrace it, and none inside a sandbox can (seccomp, PID namespace).
  (void)::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  return std::nullopt;
}

// ---- Landlock ---------------------------------------------------------------------------------

// Raw Landlock ABI (Debian 12's headers know ABI 2 only; the numbers are stable kernel ABI).
constexpr std::uint64_t ll_execute = 1ULL << 0;
constexpr std::uint64_t ll_write_file = 1ULL << 1;
constexpr std::uint64_t ll_read_file = 1ULL << 2;
constexpr std::uint64_t ll_read_dir = 1ULL << 3;
constexpr std::uint64_t ll_fs_abi1 = (1ULL << 13) - 1;  // execute … make_sym
constexpr std::uint64_t ll_refer = 1ULL << 13;          // ABI 2
constexpr std::uint64_t ll_truncate = 1ULL << 14;       // ABI 3
constexpr std::uint64_t ll_ioctl_dev = 1ULL << 15;      // ABI 5
constexpr std::uint64_t ll_net_bind_tcp = 1ULL << 0;    // ABI 4
constexpr std::uint64_t ll_net_connect_tcp = 1ULL << 1;
constexpr std::uint64_t ll_scope_abstract_unix = 1ULL << 0;  // ABI 6
constexpr std::uint64_t ll_scope_signal = 1ULL << 1;
constexpr unsigned ll_create_ruleset_version = 1U << 0;
constexpr int ll_rule_path_beneath = 1;

struct LandlockRulesetAttr {
  std::uint64_t handled_access_fs = 0;
  std::uint64_t handled_access_net = 0;
  std::uint64_t scoped = 0;
};

struct __attribute__((packed)) LandlockPathBeneathAttr {
  std::uint64_t allowed_access = 0;
  std::int32_t parent_fd = -1;
};

/// Landlock as a second wall behind the mount namespace: reads only beneath the folders shown,
/// writes only in the allow-writes directory and /dev/null, no TCP at all, no signal and no
/// abstract Unix socket outside the sandbox. `available` false: the kernel has no Landlock.
std::optional<std::string> restrict_with_landlock(const ConfinementPolicy& policy, bool private_tmp,
                                                  bool& available) {
  const long abi = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, ll_create_ruleset_version);
  if (abi < 1) {
    available = false;
    return errno_text("landlock", errno);
  }
  available = true;
  std::uint64_t all_fs = ll_fs_abi1;
  if (abi >= 2) all_fs |= ll_refer;
  if (abi >= 3) all_fs |= ll_truncate;
  if (abi >= 5) all_fs |= ll_ioctl_dev;
  LandlockRulesetAttr attr;
  attr.handled_access_fs = all_fs;
  std::size_t attr_size = sizeof attr.handled_access_fs;
  if (abi >= 4) {
    attr.handled_access_net = ll_net_bind_tcp | ll_net_connect_tcp;
    attr_size += sizeof attr.handled_access_net;
  }
  if (abi >= 6) {
    attr.scoped = ll_scope_abstract_unix | ll_scope_signal;
    attr_size += sizeof attr.scoped;
  }
  const int ruleset = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, attr_size, 0));
  if (ruleset < 0) return errno_text("landlock_create_ruleset", errno);
  std::optional<std::string> problem;
  auto allow = [&](const fs::path& path, std::uint64_t access, bool optional) {
    if (problem) return;
    const int fd = ::open(path.c_str(), O_PATH | O_CLOEXEC);
    if (fd < 0) {
      if (!optional) problem = errno_text("landlock: open " + path.string(), errno);
      return;
    }
    struct stat st {};
    if (::fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))
      access &= ll_execute | ll_write_file | ll_read_file | ll_truncate | ll_ioctl_dev;
    LandlockPathBeneathAttr rule;
    rule.allowed_access = access & all_fs;
    rule.parent_fd = fd;
    if (::syscall(SYS_landlock_add_rule, ruleset, ll_rule_path_beneath, &rule, 0) != 0)
      problem = errno_text("landlock_add_rule " + path.string(), errno);
    ::close(fd);
  };
  const std::uint64_t read = ll_execute | ll_read_file | ll_read_dir;
  for (const char* path : {"/usr", "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime",
                           "/etc/alternatives", "/proc/self", "/dev/zero", "/dev/urandom", "/dev/random"})
    allow(path, read, true);
  allow("/dev/null", ll_read_file | ll_write_file | ll_truncate, true);
  for (const fs::path& dir : policy.read_only) allow(dir, read, false);
  // The private /tmp only: without the mount namespace /tmp is the machine's.
  if (private_tmp) allow("/tmp", all_fs, true);
  if (!policy.writable.empty()) allow(policy.writable, all_fs, false);
  if (!problem && ::syscall(SYS_landlock_restrict_self, ruleset, 0) != 0)
    problem = errno_text("landlock_restrict_self", errno);
  ::close(ruleset);
  return problem;
}

/// The zygote's precompiled program when it was made for this very policy, else the list
/// compiled here: one list either way.
std::optional<std::string> install_seccomp(const ConfinementPolicy& policy, ConfinementReport& report) {
  const bool writes = !policy.writable.empty();
  const SyscallProgram* ready = policy.syscall_program;
  report.seccomp_precompiled = ready != nullptr && ready->self == policy.self && ready->allow_writes == writes;
  timespec t0{};
  timespec t1{};
  ::clock_gettime(CLOCK_MONOTONIC, &t0);
  auto problem =
      report.seccomp_precompiled ? install_syscall_program(*ready) : install_syscall_filter(policy.self, writes);
  ::clock_gettime(CLOCK_MONOTONIC, &t1);
  report.seccomp_ns = static_cast<std::uint64_t>((t1.tv_sec - t0.tv_sec) * 1'000'000'000L + (t1.tv_nsec - t0.tv_nsec));
  return problem;
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
  // A root sandbox keeps its capabilities until confine() has made the namespaces with them
  // (before any plugin code runs); confine() drops every one.
  return std::nullopt;
}

std::optional<std::string> map_own_ids(uid_t inside_uid, uid_t outside_uid, gid_t inside_gid, gid_t outside_gid) {
  if (!write_file("/proc/self/setgroups", "deny")) return errno_text("setgroups deny", errno);
  if (!write_file("/proc/self/uid_map", std::to_string(inside_uid) + " " + std::to_string(outside_uid) + " 1"))
    return errno_text("uid_map", errno);
  if (!write_file("/proc/self/gid_map", std::to_string(inside_gid) + " " + std::to_string(outside_gid) + " 1"))
    return errno_text("gid_map", errno);
  return std::nullopt;
}

std::optional<std::string> confine(const ConfinementPolicy& policy, ConfinementReport& report) {
  report = {};
  // SANDPIPE_CONFINE_NO_NAMESPACES / _NO_LANDLOCK: behave as a kernel without them (tests of the
  // "layer missing" path, and a way out on systems where they misbehave).
  const bool skip_ns = std::getenv("SANDPIPE_CONFINE_NO_NAMESPACES") != nullptr;
  const bool skip_landlock = std::getenv("SANDPIPE_CONFINE_NO_LANDLOCK") != nullptr;
  const bool root = machine_root();  // asked before the view hides /proc/self/uid_map's meaning
  bool available = false;
  if (skip_ns) {
    report.missing.emplace_back("namespaces: turned off (SANDPIPE_CONFINE_NO_NAMESPACES)");
  } else if (auto problem = enter_namespaces(policy, available)) {
    if (available) return "namespaces: " + *problem;
    report.missing.push_back("namespaces: " + *problem);
  } else {
    report.namespaces = true;
  }
  // The host makes the PID namespace (a process cannot enter one itself); getppid() is 0 when
  // the parent is outside this process's namespace.
  if (::getppid() == 0) {
    report.pid_namespace = true;
  } else {
    report.missing.emplace_back(
        "pid namespace: not started in one (the kernel refused it, or it was turned off)");
  }
  if (root) {
    if (auto problem = drop_bounding_set()) return problem;
    std::string why_not;
    if (auto problem = become_nobody(policy, why_not)) return "identity: " + *problem;
    report.unprivileged = why_not.empty();
    if (!why_not.empty()) report.missing.push_back(std::move(why_not));
  } else {
    report.unprivileged = true;
  }
  // Root's capabilities, or the user namespace's own: none from here on.
  if (report.namespaces || ::geteuid() == 0 || root) {
    if (auto problem = drop_capabilities()) return problem;
  }
  if (skip_landlock) {
    report.missing.emplace_back("landlock: turned off (SANDPIPE_CONFINE_NO_LANDLOCK)");
  } else if (auto problem = restrict_with_landlock(policy, report.namespaces, available)) {
    if (available) return *problem;
    report.missing.push_back(*problem);
  } else {
    report.landlock = true;
  }
  if (!seccomp_available()) {
    report.missing.emplace_back("seccomp: sandpipe-sandbox was built without libseccomp");
  } else if (auto problem = install_seccomp(policy, report)) {
    return "seccomp: " + *problem;
  } else {
    report.seccomp = true;
  }
  return std::nullopt;
}

}  // namespace sandpipe::sandbox
