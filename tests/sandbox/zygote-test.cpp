// The sandbox zygote (host/python/zygote.h, sandbox/zygote.h) through real renders: real zygote,
// real forked sandboxes, real shared memory. zygote_probe.py says at its load what a plugin can
// tell about its process and interpreter; faults are a block marked with its MARKER (it waits to
// be killed) and SIGKILLs from here. A sandbox lives in its own PID namespace: the pid it reports
// is 2 (kthreadd's number out here), so every kill goes to the pid this process sees, found by the
// name the probe gives itself (host_pid_named).
#include <dirent.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sndfile.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "../temp-dir.h"
#include "host/config/config.h"
#include "host/chain/render.h"

namespace sandpipe::host {
namespace {

using test_util::TempDir;

constexpr std::uint32_t channels = 2;
constexpr std::uint32_t block = 256;
constexpr std::uint32_t blocks = 16;
constexpr float marker = 0.875F;  // zygote_probe.py MARKER

std::filesystem::path probe() {
  return std::filesystem::path(SANDPIPE_SANDBOX_FIXTURES) / "misc/zygote_probe.py";
}
std::filesystem::path gain() {
  return std::filesystem::path(SANDPIPE_SOURCE_ROOT) / "plugins-py/examples/gain.py";
}

/// Log lines from the supervisor thread; `on_line` sees each as it arrives.
struct Log {
  std::mutex mutex;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> on_line;
  [[nodiscard]] std::vector<std::string> matching(const std::string& needle) {
    std::lock_guard lock(mutex);
    std::vector<std::string> out;
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos) out.push_back(l);
    return out;
  }
  [[nodiscard]] std::string all() {
    std::lock_guard lock(mutex);
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
};

struct RenderRun {
  RenderReport report;
  std::vector<float> in;
  std::vector<float> out;
};

/// "key=VALUE" from a log line ("" if absent).
std::string field(const std::string& line, const std::string& key) {
  const auto at = line.find(key + "=");
  if (at == std::string::npos) return {};
  const auto start = at + key.size() + 1;
  return line.substr(start, line.find(' ', start) - start);
}

std::string cmdline(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  for (char& c : s)
    if (c == '\0') c = ' ';
  return s;
}

/// This process's live children whose /proc/PID/comm is `name` (the zygote's children, the
/// sandboxes, keep its command line but set their own name).
std::vector<pid_t> our_children_named(const std::string& name) {
  std::vector<pid_t> out;
  DIR* dir = ::opendir("/proc");
  while (const dirent* e = dir != nullptr ? ::readdir(dir) : nullptr) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    std::ifstream comm("/proc/" + std::to_string(pid) + "/comm");
    std::string comm_name;
    std::getline(comm, comm_name);
    if (ppid == ::getpid() && state != 'Z' && comm_name == name) out.push_back(pid);
  }
  if (dir != nullptr) ::closedir(dir);
  return out;
}

/// The host-visible pid of the probe that named itself `name` (-1: no such child of this
/// process after a few tries).
pid_t host_pid_named(const std::string& name) {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const auto found = our_children_named(name);
    if (found.size() == 1) return found[0];
    ::usleep(10'000);
  }
  return -1;
}

/// The one zygote running now (-1: none). A child forked a moment ago still has the zygote's
/// name until its first lines run: asked again then.
pid_t the_zygote() {
  for (int attempt = 0; attempt < 100; ++attempt) {
    const auto running = our_children_named("sandpipe-zygote");
    if (running.size() == 1) return running[0];
    ::usleep(10'000);
  }
  return -1;
}

RenderRun render(const std::string& conf, const std::set<std::uint32_t>& marked, Log& log) {
  TempDir dir("zygote");
  RenderRun run;
  run.in.resize(std::size_t{block} * blocks * channels);
  std::uint32_t state = 777;
  for (auto& v : run.in) {
    state = state * 1664525U + 1013904223U;
    v = (static_cast<float>(state >> 8) / 16777216.0F - 0.5F) * 0.8F;
  }
  for (const std::uint32_t b : marked) run.in[std::size_t{b} * block * channels] = marker;
  SF_INFO info{};
  info.samplerate = 48000;
  info.channels = channels;
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open((dir.path() / "in.wav").c_str(), SFM_WRITE, &info);
  EXPECT_NE(f, nullptr);
  sf_writef_float(f, run.in.data(), sf_count_t{block} * blocks);
  sf_close(f);
  RenderOptions options;
  options.block_frames = block;
  options.crossfade_frames = 0;
  options.timeout_ms = 60'000.0;
  options.log = [&log](std::string_view plugin, SandboxLogLevel, std::string_view line) {
    std::string text = "[" + std::string(plugin) + "] " + std::string(line);
    {
      std::lock_guard lock(log.mutex);
      log.lines.push_back(text);
    }
    if (log.on_line) log.on_line(text);
  };
  std::ostringstream summary;
  run.report = render_file(parse_config(conf, "zygote.conf", SANDPIPE_SANDBOX_FIXTURES),
                           dir.path() / "in.wav", dir.path() / "out.wav", options, summary);
  SF_INFO out_info{};
  SNDFILE* o = sf_open((dir.path() / "out.wav").c_str(), SFM_READ, &out_info);
  EXPECT_NE(o, nullptr);
  run.out.resize(static_cast<std::size_t>(out_info.frames) * channels);
  sf_readf_float(o, run.out.data(), out_info.frames);
  sf_close(o);
  return run;
}

std::string chain(const std::filesystem::path& file, int n, bool zygote, const std::string& params = "") {
  std::string conf = std::string("sandbox.zygote = ") + (zygote ? "true" : "false") + "\nplugins = [\n";
  for (int i = 0; i < n; ++i)
    conf += "  { name = \"p" + std::to_string(i) + "\" mode = \"sync\" path = \"" + file.string() + "\" " +
            params + " }\n";
  return conf + "]\n";
}

TEST(ZygoteRender, EightGainPluginsProcessExactlyAsWithout) {
  Log with_log;
  Log without_log;
  const RenderRun with = render(chain(gain(), 8, true, "params = { gain = 0.5 }"), {}, with_log);
  const RenderRun without = render(chain(gain(), 8, false, "params = { gain = 0.5 }"), {}, without_log);
  ASSERT_EQ(with.out.size(), with.in.size());
  ASSERT_EQ(with.out, without.out);
  for (std::size_t i = 0; i < with.in.size(); ++i)
    ASSERT_EQ(with.out[i], with.in[i] / 256.0F) << "sample " << i;  // 8 × 0.5, exact
  for (const SlotStatus& s : with.report.slots) EXPECT_EQ(blocks_not_processed(s), 0U) << with_log.all();
  EXPECT_TRUE(with_log.matching("starting a new one").empty()) << with_log.all();
}

TEST(ZygoteRender, EachSandboxIsAFreshInterpreterInAProcessOfItsOwn) {
  Log log;
  std::set<pid_t> zygote_pids;
  std::set<pid_t> host_pids;
  std::mutex mutex;
  log.on_line = [&](const std::string& line) {
    if (line.find("probe pid=") == std::string::npos) return;
    const pid_t zygote = the_zygote();
    const pid_t sandbox = host_pid_named(field(line, "name"));  // alive: it is loading
    std::lock_guard lock(mutex);
    zygote_pids.insert(zygote);
    host_pids.insert(sandbox);
  };
  const RenderRun run = render(chain(probe(), 4, true), {}, log);
  const auto loads = log.matching("probe pid=");
  ASSERT_EQ(loads.size(), 4U) << log.all();
  ASSERT_EQ(zygote_pids.size(), 1U) << "one zygote while the chain ran\n" << log.all();
  const pid_t zygote = *zygote_pids.begin();
  std::set<std::string> draws;
  for (const auto& line : loads) {
    draws.insert(field(line, "random"));
    // Its own PID namespace, as a spawned sandbox has: pid 2 under the namespace's init, and
    // its parent (the host, CLONE_PARENT) outside it.
    EXPECT_EQ(field(line, "pid"), "2") << line;
    EXPECT_EQ(field(line, "ppid"), "0") << line;
    EXPECT_EQ(field(line, "instances"), "1") << line;
    EXPECT_EQ(field(line, "others"), "-") << line;
  }
  // Four processes, each the host's child (host_pid_named looks among this process's children
  // only), none of them the zygote.
  EXPECT_EQ(host_pids.size(), 4U) << log.all();
  EXPECT_EQ(host_pids.count(-1), 0U) << "a sandbox that is not this process's child\n" << log.all();
  EXPECT_EQ(host_pids.count(zygote), 0U) << log.all();
  EXPECT_EQ(draws.size(), 4U) << "numpy's global random state repeats across sandboxes\n" << log.all();
  // The module's top level ran once in each sandbox and never in the zygote (which is not in a
  // PID namespace of its own: it would say its own pid, not 2).
  // A preloaded spare imports the module too (and may get that far before the run ends): count
  // the imports per process name, and only the four that loaded.
  std::map<std::string, int> imports;
  for (const auto& line : log.matching("probe imported name=")) {
    ++imports[field(line, "name")];
    EXPECT_EQ(line.substr(line.rfind(' ') + 1), "2") << line;
  }
  for (const auto& line : loads) EXPECT_EQ(imports[field(line, "name")], 1) << line << "\n" << log.all();
  for (const SlotStatus& s : run.report.slots) EXPECT_EQ(blocks_not_processed(s), 0U) << log.all();
}

TEST(ZygoteRender, AKilledSandboxRestartsFromTheZygoteWithItsState) {
  Log log;
  std::string restarted_cmdline;
  log.on_line = [&](const std::string& line) {
    if (line.find("waiting-for-kill name=") != std::string::npos) {
      const pid_t sandbox = host_pid_named(field(line, "name"));
      if (sandbox > 0) ::kill(sandbox, SIGKILL);
    }
    if (const auto at = line.find("restarted (pid "); at != std::string::npos)
      restarted_cmdline = cmdline(std::stoi(line.substr(at + 15)));
  };
  // Paced so that the supervisor polled the state (once a second) before the kill at block 13.
  const RenderRun run = render(chain(probe(), 1, true, "params = { pace = 0.1 }"), {13}, log);
  ASSERT_EQ(run.out.size(), run.in.size());
  EXPECT_EQ(run.report.slots.at(0).restarts, 1U) << log.all();
  EXPECT_NE(run.report.slots.at(0).last_error.find("SIGKILL"), std::string::npos);
  // Forked, not spawned: the child keeps the zygote's command line.
  EXPECT_NE(restarted_cmdline.find("--zygote"), std::string::npos) << restarted_cmdline << "\n" << log.all();
  const auto restored = log.matching("probe restored blocks=");
  ASSERT_FALSE(restored.empty()) << log.all();
  EXPECT_GE(std::stoi(field(restored.back(), "blocks")), 1) << log.all();
  for (std::uint32_t b = 0; b < blocks; ++b) {
    const std::size_t at = std::size_t{b} * block * channels;
    const float expect = b == 13 ? run.in[at + 1] : run.in[at + 1] * 0.5F;
    EXPECT_EQ(run.out[at + 1], expect) << "block " << b;
  }
}

TEST(ZygoteRender, AKilledZygoteIsReplacedAndRunningSandboxesKeepRunning) {
  Log log;
  pid_t killed_zygote = -1;
  std::string gain_pid_before;
  log.on_line = [&](const std::string& line) {
    if (line.find("waiting-for-kill name=") != std::string::npos) {
      const pid_t zygote = the_zygote();
      if (zygote > 0 && ::kill(zygote, SIGKILL) == 0) killed_zygote = zygote;
      ::usleep(100'000);  // dead before the restart forks a new spare
      const pid_t sandbox = host_pid_named(field(line, "name"));
      if (sandbox > 0) ::kill(sandbox, SIGKILL);
    }
  };
  // A gain of 1 (runs on, must not notice) before the probe, which is killed at block 7.
  const std::string conf = "sandbox.zygote = true\nplugins = [\n  { name = \"g\" mode = \"sync\" path = \"" + gain().string() +
                           "\" params = { gain = 1.0 } }\n  { name = \"p\" mode = \"sync\" path = \"" +
                           probe().string() + "\" }\n]\n";
  const RenderRun run = render(conf, {7}, log);
  ASSERT_GT(killed_zygote, 0) << log.all();
  const SlotStatus& g = run.report.slots.at(0);
  const SlotStatus& p = run.report.slots.at(1);
  EXPECT_EQ(g.restarts, 0U) << "a running sandbox died with its zygote\n" << log.all();
  EXPECT_EQ(blocks_not_processed(g), 0U) << log.all();
  EXPECT_EQ(p.restarts, 1U) << log.all();
  EXPECT_EQ(log.matching("the sandbox zygote (pid " + std::to_string(killed_zygote) +
                         ") killed by signal SIGKILL: starting a new one")
                .size(),
            1U)
      << log.all();
  for (std::uint32_t b = 0; b < blocks; ++b) {
    const std::size_t at = std::size_t{b} * block * channels;
    const float expect = b == 7 ? run.in[at + 1] : run.in[at + 1] * 0.5F;
    EXPECT_EQ(run.out[at + 1], expect) << "block " << b;
  }
}

/// The zygote's children named `name` (its namespace maker).
std::vector<pid_t> children_of(pid_t parent, const std::string& name) {
  std::vector<pid_t> out;
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return out;
  while (const dirent* e = ::readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    const auto open = text.find('(');
    const auto close = text.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::istringstream rest(text.substr(close + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent && text.substr(open + 1, close - open - 1) == name) out.push_back(pid);
  }
  ::closedir(proc);
  return out;
}

TEST(ZygoteRender, AZygoteWhoseNamespaceMakerDiedIsReplacedAtItsNextFork) {
  // The maker (which starts each child's PID namespace init) is SIGKILLed, then the probe's
  // sandbox: its restart takes the spare, and the next fork finds the zygote unable to give a
  // child its namespace. The zygote stops unanswered; the host starts a new one and forks there.
  Log log;
  int makers_killed = 0;
  log.on_line = [&](const std::string& line) {
    if (line.find("waiting-for-kill name=") == std::string::npos) return;
    for (const pid_t maker : children_of(the_zygote(), "sandpipe-maker"))
      if (::kill(maker, SIGKILL) == 0) ++makers_killed;
    ::usleep(100'000);
    const pid_t sandbox = host_pid_named(field(line, "name"));
    if (sandbox > 0) ::kill(sandbox, SIGKILL);
  };
  const RenderRun run = render(chain(probe(), 1, true), {7}, log);
  ASSERT_EQ(makers_killed, 1) << log.all();
  EXPECT_EQ(run.report.slots.at(0).restarts, 1U) << log.all();
  EXPECT_EQ(log.matching("exited with status 4: starting a new one").size(), 1U) << log.all();
  EXPECT_TRUE(log.matching("spawning the sandbox instead").empty()) << log.all();
  for (std::uint32_t b = 0; b < blocks; ++b) {
    const std::size_t at = std::size_t{b} * block * channels;
    const float expect = b == 7 ? run.in[at + 1] : run.in[at + 1] * 0.5F;
    EXPECT_EQ(run.out[at + 1], expect) << "block " << b;
  }
}

/// Root without CAP_SYS_ADMIN (dropped in a child process of the test): its zygote can neither
/// make PID namespaces nor map root into a user namespace of its own, so it refuses to serve,
/// the log says so once, and every sandbox is spawned and processes as usual.
TEST(ZygoteRenderDeathTest, AZygoteWithoutCapSysAdminRefusesOnceAndEverySandboxIsSpawned) {
  if (::geteuid() != 0) GTEST_SKIP() << "a user's zygote refuses anyway; this drops root's capability";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        // Out of the bounding set too: the zygote (exec'd by root) would get it back otherwise.
        if (::prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) != 0) std::_Exit(10);
        Log log;
        const RenderRun run = render(chain(gain(), 3, true, "params = { gain = 0.5 }"), {}, log);
        bool ok = run.out.size() == run.in.size();
        for (std::size_t i = 0; ok && i < run.in.size(); ++i) ok = run.out[i] == run.in[i] * 0.125F;
        for (const SlotStatus& s : run.report.slots) ok = ok && blocks_not_processed(s) == 0 && s.restarts == 0;
        ok = ok && log.matching("the sandbox zygote cannot serve (").size() == 1;
        ok = ok && log.matching("spawning the sandbox instead").empty();
        ok = ok && log.matching("starting a new one").empty();
        if (!ok) std::fprintf(stderr, "%s", log.all().c_str());
        std::fflush(nullptr);
        std::_Exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

/// A node run by a user (here: this test's child, become nobody): its zygote enters a user
/// namespace of its own, where it may make PID namespaces, and serves: every sandbox is forked
/// (it keeps the zygote's command line), pid 2 of its own PID namespace, and processes exactly.
TEST(ZygoteRenderDeathTest, AUsersZygoteServesFromAUserNamespaceOfItsOwn) {
  if (::geteuid() != 0) GTEST_SKIP() << "becomes nobody: needs root to start from";
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        constexpr uid_t nobody = 65534;
        if (::setgroups(0, nullptr) != 0 || ::setresgid(nobody, nobody, nobody) != 0 ||
            ::setresuid(nobody, nobody, nobody) != 0)
          std::_Exit(10);
        Log log;
        std::mutex mutex;
        std::vector<std::string> cmdlines;
        log.on_line = [&](const std::string& line) {
          if (line.find("probe pid=") == std::string::npos) return;
          std::string forked = cmdline(host_pid_named(field(line, "name")));  // alive: it is loading
          std::lock_guard lock(mutex);
          cmdlines.push_back(std::move(forked));
        };
        const RenderRun run = render(chain(probe(), 2, true), {}, log);
        bool ok = run.out.size() == run.in.size();
        for (std::size_t i = 0; ok && i < run.in.size(); ++i) ok = run.out[i] == run.in[i] * 0.25F;
        const auto loads = log.matching("probe pid=");
        ok = ok && loads.size() == 2 && cmdlines.size() == 2 && log.matching("cannot serve").empty();
        for (const auto& line : loads) ok = ok && field(line, "pid") == "2";
        for (const auto& forked : cmdlines) ok = ok && forked.find("--zygote") != std::string::npos;
        for (const SlotStatus& s : run.report.slots) ok = ok && blocks_not_processed(s) == 0;
        if (!ok) {
          std::fprintf(stderr, "%s", log.all().c_str());
          for (const auto& forked : cmdlines)
            std::fprintf(stderr, "sandbox command line: %s\n", forked.c_str());
        }
        std::fflush(nullptr);
        std::_Exit(ok ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "");
}

}  // namespace
}  // namespace sandpipe::host
