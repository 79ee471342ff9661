// Red team: one hostile plugin per escape (fixtures/), each run through `render_file` in this
// process, which is the host. Every attack runs on one marked block: the test checks that the
// attack failed where it would show (no file, no packet, no signal, no process, no changed mode)
// AND that the host went on untouched: the marked block comes out dry, every other block exactly
// halved, nothing shifted. Outliving the host is checked through the `sandpipe` binary, which the
// test SIGKILLs in the middle of a render.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sndfile.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <kj/io.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "../temp-dir.h"
#include "host/chain/render.h"
#include "host/config/config.h"

namespace sandpipe::host {
namespace {

namespace fs = std::filesystem;
using test_util::TempDir;

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t block = 256;
constexpr std::uint32_t blocks = 12;
constexpr std::uint32_t frames = block * blocks;
constexpr std::uint32_t attacked = 5;  // the marked block
constexpr float marker = 0.875F;       // hostile.py MARKER

fs::path fixtures() { return SANDPIPE_REDTEAM_FIXTURES; }

std::atomic<int> urg_received{0};
void on_urg(int /*sig*/) { urg_received.fetch_add(1); }

std::vector<float> make_input() {
  std::vector<float> x(std::size_t{frames} * channels);
  std::uint32_t state = 777;
  for (auto& v : x) {
    state = state * 1664525U + 1013904223U;
    v = (static_cast<float>(state >> 8) / 16777216.0F - 0.5F) * 0.8F;
  }
  x[std::size_t{attacked} * block * channels] = marker;
  return x;
}

void write_wav(const fs::path& path, const std::vector<float>& x) {
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(sf_writef_float(f, x.data(), static_cast<sf_count_t>(x.size() / channels)),
            static_cast<sf_count_t>(x.size() / channels));
  sf_close(f);
}

std::vector<float> read_wav(const fs::path& path) {
  SF_INFO info{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (f == nullptr) return {};
  std::vector<float> y(static_cast<std::size_t>(info.frames) * static_cast<std::size_t>(info.channels));
  sf_readf_float(f, y.data(), info.frames);
  sf_close(f);
  return y;
}

/// Processes left behind: this test is a subreaper, so anything a sandbox left running would
/// have become our child. What exited meanwhile (a sandbox's namespace init follows it within
/// moments) is reaped; what still runs after a second is returned.
std::vector<pid_t> our_children() {
  std::vector<pid_t> pids;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  do {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    pids.clear();
    for (const auto& task : fs::directory_iterator("/proc/self/task")) {
      std::ifstream in(task.path() / "children");
      pid_t pid = 0;
      while (in >> pid) pids.push_back(pid);
    }
    if (pids.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  } while (std::chrono::steady_clock::now() < until);
  return pids;
}

/// Every process below `root`, from /proc (pids as this test's namespace sees them).
std::set<pid_t> descendants(pid_t root) {
  std::map<pid_t, std::vector<pid_t>> children;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "stat");
    std::string stat;
    std::getline(in, stat);
    const auto close = stat.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    children[ppid].push_back(static_cast<pid_t>(std::stoi(name)));
  }
  std::set<pid_t> found;
  std::vector<pid_t> todo{root};
  while (!todo.empty()) {
    const pid_t p = todo.back();
    todo.pop_back();
    for (const pid_t c : children[p])
      if (found.insert(c).second) todo.push_back(c);
  }
  return found;
}

/// Starts the `sandpipe` binary rendering `dir`/in.wav with `conf` (as uid/gid 65534 when
/// `as_nobody`); its stdout and stderr go to the returned pipe's read end, `out`.
pid_t start_render(const fs::path& conf, const fs::path& dir, int& out, bool as_nobody = false) {
  int pipe[2];
  if (::pipe2(pipe, O_CLOEXEC) != 0) return -1;
  const pid_t host = ::fork();
  if (host == 0) {
    ::dup2(pipe[1], STDERR_FILENO);
    ::dup2(pipe[1], STDOUT_FILENO);
    if (as_nobody && (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
                      ::setresuid(65534, 65534, 65534) != 0))
      ::_exit(126);
    ::execl(SANDPIPE_EXE, SANDPIPE_EXE, "render", conf.c_str(), (dir / "in.wav").c_str(),
            (dir / "out.wav").c_str(), "--block", "256", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipe[1]);
  out = pipe[0];
  return host;
}

class RedTeam : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
    struct sigaction sa {};
    sa.sa_handler = on_urg;
    ::sigaction(SIGURG, &sa, nullptr);
  }

  void SetUp() override {
#if !defined(__x86_64__)
    GTEST_SKIP() << "the fixtures' raw syscall numbers are x86_64's";
#endif
    urg_received = 0;
  }

  /// Renders with `fixture` in one sync slot and checks that the host went on untouched: block
  /// `attacked` dry (the attack raised), every other block exactly halved, no block moved.
  void render_attack(const std::string& fixture, const std::string& target = "", int port = 0,
                     double timeout_ms = 5000.0, const std::string& keys = "") {
    SCOPED_TRACE(fixture);
    const std::vector<float> in = make_input();
    write_wav(dir_.path() / "in.wav", in);
    const std::string conf = "plugins = [ { name = \"h\" mode = \"sync\" path = \"" +
                             (fixtures() / fixture).string() + "\" " + keys + " params = { target = \"" +
                             target + "\" port = " + std::to_string(port) + " } } ]\n";
    const ChainConfig config = parse_config(conf, "redteam.conf", fixtures());
    RenderOptions options;
    options.block_frames = block;
    options.crossfade_frames = 0;
    options.timeout_ms = timeout_ms;
    options.log = [this](std::string_view, SandboxLogLevel, std::string_view line) {
      log_ += std::string(line) + "\n";
    };
    std::ostringstream summary;
    (void)render_file(config, dir_.path() / "in.wav", dir_.path() / "out.wav", options, summary);
    const std::vector<float> out = read_wav(dir_.path() / "out.wav");
    ASSERT_EQ(out.size(), in.size()) << summary.str() << log_;
    for (std::uint32_t b = 0; b < blocks; ++b) {
      const std::size_t at = std::size_t{b} * block * channels;
      bool exact = true;
      for (std::size_t i = at; i < at + std::size_t{block} * channels; ++i) {
        const float want = b == attacked ? in[i] : in[i] * 0.5F;
        exact = exact && out[i] == want;
      }
      EXPECT_TRUE(exact) << "block " << b
                         << (b == attacked ? " (attacked) is not dry: the attack got through"
                                           : " is not exactly halved")
                         << "\n"
                         << summary.str() << log_;
    }
    EXPECT_EQ(urg_received.load(), 0) << "a signal reached the host";
    EXPECT_EQ(our_children(), std::vector<pid_t>{}) << "a process outlived its sandbox";
  }

  TempDir dir_{"redteam"};
  std::string log_;
};

/// A TCP listener on 127.0.0.1 (any port) that reports whether anyone connected.
class TcpListener {
 public:
  TcpListener() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_.get(), 4) != 0 ||
        ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
      throw std::runtime_error("tcp listener");
    port_ = ntohs(addr.sin_port);
  }
  [[nodiscard]] int port() const { return port_; }
  [[nodiscard]] bool connected() const {
    const kj::AutoCloseFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    return c.get() >= 0;
  }

 private:
  kj::AutoCloseFd fd_;
  int port_ = 0;
};

/// An AF_UNIX datagram socket bound at `path` that reports whether anything arrived.
class UnixListener {
 public:
  explicit UnixListener(const fs::path& path)
      : fd_(::socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::bind(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("unix listener");
    ::chmod(path.c_str(), 0777);
  }
  [[nodiscard]] bool received() const {
    char buf[64];
    return ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT) >= 0;
  }

 private:
  kj::AutoCloseFd fd_;
};

TEST_F(RedTeam, IoUringOpensWritesNothing) {
  const fs::path file = dir_.path() / "uring-created";
  render_attack("io_uring.py", "openat:" + file.string());
  EXPECT_FALSE(fs::exists(file));
  render_attack("io_uring.py", "write:");
}

TEST_F(RedTeam, IoUringUnlinksNothing) {
  const fs::path file = dir_.path() / "keep-me";
  std::ofstream(file) << "x";
  render_attack("io_uring.py", "unlinkat:" + file.string());
  EXPECT_TRUE(fs::exists(file));
}

TEST_F(RedTeam, IoUringReachesNoListener) {
  const TcpListener listener;
  for (const char* op : {"socket:", "connect:", "send:"}) render_attack("io_uring.py", op, listener.port());
  EXPECT_FALSE(listener.connected());
}

TEST_F(RedTeam, Fchmodat2ChangesNoMode) {
  const fs::path file = dir_.path() / "private";
  std::ofstream(file) << "x";
  fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
  render_attack("fchmodat2.py", file.string());
  EXPECT_EQ(fs::status(file).permissions(), fs::perms::owner_read | fs::perms::owner_write);
}

TEST_F(RedTeam, UnixDatagramReachesNoListener) {
  const fs::path path = dir_.path() / "listener.sock";
  const UnixListener listener(path);
  render_attack("unix_sendto.py", path.string());
  render_attack("control_sendto.py", path.string());
  EXPECT_FALSE(listener.received());
}

TEST_F(RedTeam, TcpConnectReachesNoListener) {
  const TcpListener listener;
  render_attack("net_connect.py", "", listener.port());
  EXPECT_FALSE(listener.connected());
}

TEST_F(RedTeam, SecretsAreNotReadable) {
  ASSERT_TRUE(fs::exists("/etc/shadow"));
  render_attack("read_shadow.py");
  // A file of the user's, outside anything the sandbox is shown.
  const fs::path secret = dir_.path() / "home" / "secret";
  fs::create_directories(secret.parent_path());
  std::ofstream(secret) << "secret";
  render_attack("read_home.py", secret.string());
  if (const char* home = std::getenv("HOME"); home != nullptr) {
    for (const auto& e : fs::directory_iterator(home, fs::directory_options::skip_permission_denied)) {
      std::error_code ec;
      if (e.is_regular_file(ec)) {
        render_attack("read_home.py", e.path().string());
        break;
      }
    }
  }
}

TEST_F(RedTeam, AllowWritesOpensOneDirectoryOnly) {
  const fs::path allowed = dir_.path() / "allowed";
  fs::create_directories(allowed);
  const fs::path outside = fixtures() / "written-by-plugin";
  render_attack("write_outside.py", allowed.string(), 0, 5000.0,
                "allow-writes = \"" + allowed.string() + "\"");
  EXPECT_TRUE(fs::exists(allowed / "inside"));
  EXPECT_FALSE(fs::exists(outside));
  fs::remove(outside);
}

TEST_F(RedTeam, NoNewProcessOrProgram) {
  const fs::path touched = dir_.path() / "exec-touched";
  render_attack("fork.py");
  render_attack("exec.py", touched.string());
  render_attack("memfd_exec.py");
  EXPECT_FALSE(fs::exists(touched));
}

TEST_F(RedTeam, NoSignalReachesTheHostOrAnyoneElse) {
  render_attack("kill_host.py", std::to_string(::getpid()));
  render_attack("kill_all.py");
}

/// A root host's plugin runs as nobody: not uid or gid 0, /etc/shadow unreadable, also with the
/// namespaces and Landlock turned off (only the uid stands in the way then).
TEST_F(RedTeam, PluginRunsAsAnUnprivilegedUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "the host is not root: the sandbox has the user's uid";
  render_attack("identity.py");
  EXPECT_NE(log_.find("identity uid=65534 euid=65534 gid=65534 egid=65534 groups=[]"), std::string::npos)
      << log_;
  log_.clear();
  ::setenv("SANDPIPE_CONFINE_NO_NAMESPACES", "1", 1);
  ::setenv("SANDPIPE_CONFINE_NO_LANDLOCK", "1", 1);
  render_attack("identity.py");
  ::unsetenv("SANDPIPE_CONFINE_NO_NAMESPACES");
  ::unsetenv("SANDPIPE_CONFINE_NO_LANDLOCK");
  EXPECT_NE(log_.find("identity uid=65534"), std::string::npos) << log_;
  EXPECT_NE(log_.find("Permission denied"), std::string::npos) << log_;
}

/// In its own network namespace: the plugin sees the loopback interface only, none of the
/// machine's (the seccomp filter refuses every socket besides; this is the wall behind it).
TEST_F(RedTeam, PluginSeesOnlyLoopback) {
  render_attack("net_interfaces.py");
  EXPECT_NE(log_.find("interfaces lo\n"), std::string::npos) << log_;
}

/// A plugin whose folder nobody cannot read (mkdtemp's 0700, as root) still runs, as uid 0
/// without capabilities, and the log says that layer is missing.
TEST_F(RedTeam, AnUnreadableFolderKeepsUidZeroAndSaysSo) {
  if (::geteuid() != 0) GTEST_SKIP() << "the host is not root";
  const TempDir folder("redteam-private");
  ASSERT_EQ(fs::status(folder.path()).permissions() & fs::perms::others_exec, fs::perms::none);
  for (const char* file : {"hostile.py", "identity.py"})
    fs::copy_file(fixtures() / file, folder.path() / file);
  const std::vector<float> in = make_input();
  write_wav(dir_.path() / "in.wav", in);
  const ChainConfig config = parse_config("plugins = [ { name = \"h\" mode = \"sync\" path = \"" +
                                              (folder.path() / "identity.py").string() + "\" } ]\n",
                                          "redteam.conf", folder.path());
  RenderOptions options;
  options.block_frames = block;
  options.crossfade_frames = 0;
  options.log = [this](std::string_view, SandboxLogLevel, std::string_view line) {
    log_ += std::string(line) + "\n";
  };
  std::ostringstream summary;
  (void)render_file(config, dir_.path() / "in.wav", dir_.path() / "out.wav", options, summary);
  EXPECT_EQ(read_wav(dir_.path() / "out.wav").size(), in.size()) << summary.str() << log_;
  EXPECT_NE(log_.find("identity uid=0"), std::string::npos) << log_;
  EXPECT_NE(log_.find("unprivileged uid: nobody (65534) cannot use " + folder.path().string()),
            std::string::npos)
      << log_;
}

/// In its own PID namespace: the plugin is pid 2 there, its parent (the host) is out of sight,
/// and no signal reaches the host or everyone (-1).
TEST_F(RedTeam, PluginSeesNoHostProcess) {
  render_attack("see_host.py", std::to_string(::getpid()));
  EXPECT_NE(log_.find("namespace pid=2 ppid=0"), std::string::npos) << log_;
}

/// A user's node (the `sandpipe` binary run as uid 65534 here) gets the PID namespace too: the
/// host makes it inside a user namespace of its own, and the plugin is pid 2 there, uid 1000.
TEST_F(RedTeam, AUsersSandboxHasItsOwnPidNamespaceToo) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to start the node as another user";
  std::ifstream max_ns("/proc/sys/user/max_user_namespaces");
  int max = 0;
  if (!(max_ns >> max) || max == 0) GTEST_SKIP() << "no user namespaces in this kernel";
  fs::permissions(dir_.path(), fs::perms::all);
  write_wav(dir_.path() / "in.wav", make_input());
  const fs::path conf = dir_.path() / "user.conf";
  std::ofstream(conf) << "plugins = [ { name = \"h\" mode = \"sync\" path = \""
                      << (fixtures() / "see_host.py").string() << "\" params = { target = \"" << ::getpid()
                      << "\" } } ]\n";
  int out = -1;
  const pid_t host = start_render(conf, dir_.path(), out, true);
  ASSERT_GT(host, 0);
  std::string output;
  char buf[4096];
  for (ssize_t n; (n = ::read(out, buf, sizeof buf)) > 0;) output.append(buf, static_cast<std::size_t>(n));
  ::close(out);
  int status = 0;
  ::waitpid(host, &status, 0);
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {  // the namespace's init came to us (subreaper)
  }
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 126 && WEXITSTATUS(status) != 127) << output;
  EXPECT_NE(output.find("rendered"), std::string::npos) << output;
  EXPECT_NE(output.find("namespace pid=2 ppid=0"), std::string::npos) << output;
  EXPECT_EQ(output.find("layer missing"), std::string::npos) << output;
  EXPECT_EQ(urg_received.load(), 0);
}

TEST_F(RedTeam, HostMemoryIsOutOfReach) {
  render_attack("ptrace_host.py", std::to_string(::getpid()));
  render_attack("proc_mem.py", std::to_string(::getpid()));
  render_attack("process_vm_writev.py", std::to_string(::getpid()));
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.starts_with("TracerPid:")) {
      EXPECT_EQ(line, "TracerPid:\t0");
    }
}

TEST_F(RedTeam, KernelInterfacesAreClosed) {
  for (const char* fixture :
       {"mount.py", "unshare.py", "bpf.py", "perf_event_open.py", "userfaultfd.py", "keyctl.py", "prctl.py"})
    render_attack(fixture);
}

TEST_F(RedTeam, SyscallsNewerThanTheListFailWithEnosys) { render_attack("new_syscalls.py"); }

/// A sandbox scribbling over its ring indices for 30 s is ended within its 1 s timeout (here the
/// RT side sees the corrupt ring first; the watchdog, which now checks the indices against the
/// host's own submit count, is the backstop), so the render ends long before the scribbling would.
TEST_F(RedTeam, ScribbledIndicesDoNotDelayTheWatchdog) {
  const auto t0 = std::chrono::steady_clock::now();
  render_attack("scribble_rings.py", "", 30, 1000.0);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("[ redteam ] render with a 30 s scribbler and timeout-ms 1000 took %.1f s\n", s);
  EXPECT_LT(s, 15.0) << log_;
  EXPECT_NE(log_.find("restart"), std::string::npos) << log_;
}

/// The `sandpipe` binary renders with outlive_host.py (death signal cleared, SIGTERM ignored, a
/// fork tried, then hung in process() under a 10 s timeout): SIGKILL the host while it hangs;
/// every process of the sandbox is gone within a second. Without the PID namespace and with the
/// sandbox's own death signal removed (main.cpp), the hung plugin outlives the host: this fails.
TEST_F(RedTeam, NothingOutlivesAKilledHost) {
  std::vector<float> in(std::size_t{48000} * 30 * channels, 0.1F);  // ~1900 blocks of 10 ms each
  write_wav(dir_.path() / "in.wav", in);
  const fs::path conf = dir_.path() / "outlive.conf";
  std::ofstream(conf) << "plugins = [ { name = \"h\" mode = \"sync\" path = \""
                      << (fixtures() / "outlive_host.py").string() << "\" timeout-ms = 10000 } ]\n";
  int err = -1;
  const pid_t host = start_render(conf, dir_.path(), err);
  ASSERT_GT(host, 0);
  std::set<pid_t> printed;  // what the plugin said (inside a PID namespace: its own numbering)
  std::string output;
  const std::regex pid_line("outlive pid=([0-9]+)\n");
  // Reads what the host and the plugin wrote until the plugin hangs (a forked child would have
  // printed its pid by then).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline && output.find("outlive hanging") == std::string::npos) {
    pollfd pfd{err, POLLIN, 0};
    if (::poll(&pfd, 1, 50) < 0) break;
    if ((pfd.revents & (POLLIN | POLLHUP)) == 0) continue;
    char buf[4096];
    const ssize_t n = ::read(err, buf, sizeof buf);
    if (n <= 0) break;
    output.append(buf, static_cast<std::size_t>(n));
    for (std::sregex_iterator it(output.begin(), output.end(), pid_line), end; it != end; ++it)
      printed.insert(static_cast<pid_t>(std::stoi((*it)[1].str())));
  }
  ASSERT_FALSE(printed.empty()) << output;
  ASSERT_NE(output.find("outlive hanging"), std::string::npos) << output;
  // The pids a plugin prints inside a PID namespace are not ours: watch every descendant of
  // the host as this test sees them (the sandbox, its namespace's init, whatever it forked).
  const std::set<pid_t> pids = descendants(host);
  ASSERT_FALSE(pids.empty());
  ::kill(host, SIGKILL);
  int status = 0;
  ::waitpid(host, &status, 0);
  const auto killed_at = std::chrono::steady_clock::now();
  std::set<pid_t> alive = pids;
  while (!alive.empty() && std::chrono::steady_clock::now() - killed_at < std::chrono::seconds(1)) {
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {  // orphans came to us (subreaper): reap them
    }
    for (auto it = alive.begin(); it != alive.end();)
      it = ::kill(*it, 0) != 0 ? alive.erase(it) : std::next(it);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - killed_at).count();
  std::printf("[ redteam ] %zu sandbox process(es) gone %.0f ms after the host's SIGKILL\n", pids.size(), ms);
  EXPECT_TRUE(alive.empty()) << "still running 1 s after the host died: " << *alive.begin() << "\n" << output;
  for (const pid_t pid : alive) ::kill(pid, SIGKILL);
  ::close(err);
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

}  // namespace
}  // namespace sandpipe::host
