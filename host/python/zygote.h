// The host's end of a sandbox zygote (sandbox/zygote.h): one pre-initialised sandbox process
// per node (CPython, numpy and the SDK imported, its heap frozen) that forks every sandbox of
// that node, its restarts and its spares, instead of each one exec'ing sandpipe-sandbox and
// importing everything again (~0.25 s of CPU each). The forked sandbox is the host's child
// (CLONE_PARENT), so it is watched and reaped as a spawned one is; it then talks the same
// handshake on its control socket.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <kj/io.h>

namespace sandpipe::host {

namespace detail {
/// The whole environment of a sandbox (host/python/sandbox-client.cpp): the zygote gets it, and its
/// children inherit it.
[[nodiscard]] std::vector<std::string> sandbox_environment();
/// The sandbox binary of this build (the build tree's, or the installed one).
[[nodiscard]] std::filesystem::path default_sandbox_executable();
}  // namespace detail

struct SandboxLaunch;

/// The descriptors a new sandbox serves, all ours and left open: its end of the control
/// socketpair, its segment's memfd, and in a relay of sandboxes the edges' (-1: none).
struct SandboxFds {
  int control = -1;
  int shm = -1;
  int input_edge = -1;   ///< --input-edge-fd: where its jobs come from
  int output_edge = -1;  ///< --output-edge-fd: where its blocks go on to
  bool output_to_host = false;  ///< --output-to-host: the output edge is the relay's tail
};

/// [any] Forks `launch`'s sandbox from `launch.zygote` for host/python/sandbox-client.cpp, with its
/// real-time priority; -1 after logging why not (the caller spawns it instead).
[[nodiscard]] pid_t fork_from_zygote(const SandboxLaunch& launch, const SandboxFds& fds);

/// One sandbox's start-up options, as its command line would carry them.
struct ZygoteForkOptions {
  std::uint32_t memory_mb = 0;
  std::uint32_t wake_lead_us = 0;
  bool keep_denormals = false;
  std::filesystem::path allow_writes;  ///< empty: none
};

/// Owns the zygote process. Not copyable. Thread-safe: the supervisor's thread and the main
/// thread may fork through it at once (one request at a time). The zygote dies with the thread
/// that created this object or restarted the zygote (PR_SET_PDEATHSIG follows the thread), and
/// so do the sandboxes it forked: create it on the main thread.
class Zygote {
 public:
  using LogFn = std::function<void(std::string_view line)>;

  /// [main] Starts the zygote (`executable --zygote`); returns at once, the interpreter's
  /// imports run meanwhile. Empty `executable`: the sandbox binary the host would spawn. Empty
  /// `log`: "sandpipe: [zygote] …" on stderr. Throws std::runtime_error if it cannot be spawned.
  explicit Zygote(std::filesystem::path executable = {}, LogFn log = {});
  /// [main] Closes the socket (the zygote exits), waits a bounded time, kills, reaps. Sandboxes
  /// it forked are not affected.
  ~Zygote();
  Zygote(const Zygote&) = delete;
  Zygote& operator=(const Zygote&) = delete;
  Zygote(Zygote&&) = delete;
  Zygote& operator=(Zygote&&) = delete;

  /// [any] Forks a sandbox serving `fds`, which stay open here. Returns its pid (a child of this
  /// process: the caller opens a pidfd on it and reaps it), or why not. A zygote found dead is
  /// restarted once per call, and the log says so.
  [[nodiscard]] std::variant<pid_t, std::string> fork_sandbox(const ZygoteForkOptions& options,
                                                              const SandboxFds& fds);

  /// [any] The zygote's pid now (-1: none running); tests kill it.
  [[nodiscard]] pid_t pid() const;
  /// [any] How often a dead zygote was replaced.
  [[nodiscard]] std::uint64_t restarts() const;
  /// [any] True once the zygote said it cannot serve (it can make no PID namespace for its
  /// children: root without CAP_SYS_ADMIN, or no user namespaces). Logged once; fork_sandbox then
  /// fails at once, and the caller spawns every sandbox itself.
  [[nodiscard]] bool refused() const;

 private:
  void start();
  /// Waits for the ready record after a start; false (and `error`) if the zygote cannot serve.
  bool await_ready(std::string& error);
  bool dead();
  void stop(std::chrono::milliseconds grace);
  std::variant<pid_t, std::string> request(const ZygoteForkOptions& options, const SandboxFds& fds,
                                           bool& zygote_died);

  std::filesystem::path executable_;
  LogFn log_;
  mutable std::mutex mutex_;
  kj::AutoCloseFd sock_;
  kj::AutoCloseFd pidfd_;
  pid_t pid_ = -1;
  bool ready_ = false;
  bool refused_ = false;
  std::uint64_t restarts_ = 0;
};

}  // namespace sandpipe::host
