// One sandbox process and its control conversation, as the host's non-RT side holds it
// (SandboxProcessor::Control). Internal to host/: sandbox-client.cpp implements it,
// supervisor.cpp drives restarts with it. Every function is [main] (the supervisor thread
// counts as the main thread of the slots it supervises). Not copyable; the destructor shuts the
// sandbox down (bounded), kills it if need be and reaps it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <capnp/message.h>
#include <kj/io.h>

#include "host/sandbox-client.h"
#include "host/sandbox-link.h"
#include "schemas/control-channel.h"
#include "schemas/control.capnp.h"

namespace sandpipe::host {

namespace detail {

/// One message from a sandbox, decoded and validated; logs never become a Reply.
struct Reply {
  enum class Kind : std::uint8_t { hello, loaded, param_set, state, stats, error } kind = Kind::error;
  std::uint32_t request_id = 0;  ///< the request it answers (0: none)
  std::uint32_t protocol_version = 0;
  std::uint32_t shm_layout_version = 0;
  std::uint32_t shm_header_size = 0;
  std::string python_version;
  std::string numpy_version;
  PythonPluginInfo info;
  std::string key;
  std::uint32_t latency = 0;
  std::optional<ParamValue> read_back;  ///< paramSet: what get_parameter(key) answers now
  std::vector<std::byte> state;
  SandboxStats stats;
  schema::SandboxMessage::Phase phase = schema::SandboxMessage::Phase::HANDSHAKE;
  std::string message;
  std::string traceback;
};

}  // namespace detail

/// Everything needed to start (and restart) the sandbox of one slot.
struct SandboxLaunch {
  std::string name;
  std::filesystem::path file;
  std::filesystem::path executable;
  shm::Geometry geometry;
  double sample_rate = 48000.0;
  std::uint32_t memory_mb = 0;
  std::optional<std::uint64_t> host_spin_ns;
  SandboxLogFn log = log_to_stderr;
  std::chrono::milliseconds request_timeout{10'000};
  std::chrono::milliseconds shutdown_timeout{2'000};
  std::filesystem::path allow_writes{};  ///< PluginSpec::allow_writes: --allow-writes DIR for the sandbox
  int rt_priority = 0;                   ///< SandboxOptions::rt_priority
  std::uint32_t wake_lead_us = 0;        ///< PluginSpec::wake_lead_us: --wake-lead-us for the sandbox
  bool keep_denormals = false;           ///< PluginSpec::bit_exact: --keep-denormals (no FTZ/DAZ)
};

/// [any] The sandbox executable this binary uses: the build tree's when it runs from the build
/// tree, the installed one otherwise.
[[nodiscard]] std::filesystem::path default_sandbox_executable();

/// "exited with status 1", "killed by signal SIGSEGV", ...
[[nodiscard]] std::string describe_exit(int wait_status);

/// [main] A sandbox's scheduling: SCHED_FIFO at `priority` (> 0), or normal (0); never passed to
/// anything it spawns. Not permitted (no root, no rtkit): stays as it was.
void set_sandbox_priority(pid_t pid, int priority);

struct SandboxProcessor::Control {
  using Clock = std::chrono::steady_clock;

  /// hello sent → ready (hello answered: a spare) → loading (load sent) → loaded; failed: the
  /// sandbox answered with an error (the plugin did not load) or broke the handshake.
  enum class Phase : std::uint8_t { hello, ready, loading, loaded, failed };
  /// What may be asked of a loaded sandbox: set a parameter, get its state, get its counters.
  enum class Async : std::uint8_t { state, stats, param };

  /// Creates a segment and its link, spawns the sandbox with them and sends hello.
  /// Throws PluginError.
  static std::unique_ptr<Control> spawn(const SandboxLaunch& launch, std::uint64_t generation);

  Control() = default;
  ~Control();
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;
  Control(Control&&) = delete;
  Control& operator=(Control&&) = delete;

  SandboxLaunch launch;
  std::vector<ParamSetting> params;  ///< what a (re)load sends
  std::string name;                  ///< = launch.name
  std::filesystem::path file;
  SandboxLogFn log;
  std::chrono::milliseconds request_timeout{};
  std::chrono::milliseconds shutdown_timeout{};

  std::unique_ptr<schema::ControlChannel> channel;
  kj::AutoCloseFd pidfd;
  pid_t pid = -1;
  bool reaped = false;
  int exit_status = 0;
  /// The segment this sandbox was started with, until handed to the RT side; null for the
  /// first sandbox of a slot (the SandboxProcessor was built with it).
  std::unique_ptr<SandboxLink> link;

  Phase phase = Phase::hello;
  bool load_sent = false;
  std::uint64_t generation = 1;  ///< of its link (SandboxLink::generation)
  std::string failure;           ///< why the phase is `failed` (with the traceback)
  PythonPluginInfo info;
  std::string python_version;
  std::string numpy_version;

  std::deque<detail::Reply> replies;  ///< answers to the handshake and to request(), in arrival order
  bool eof = false;
  std::string protocol_error;  ///< set once the sandbox sent something unreadable
  std::uint32_t next_request_id = 1;
  std::uint32_t hello_id = 0;  ///< the hello's request id
  std::uint32_t load_id = 0;   ///< the load's request id (0: not sent)
  /// Requests whose answers are filed when they arrive (take_async_*), never waited for.
  struct Outstanding {
    std::uint32_t id = 0;
    Async kind = Async::state;
    ParamSetting setting;  ///< Async::param
  };
  std::deque<Outstanding> async_outstanding;
  std::optional<std::vector<std::byte>> async_state;
  std::optional<SandboxStats> async_stats;
  /// An answered setParam: accepted (no refusal) with what the plugin reads back, if anything,
  /// or the plugin's refusal.
  struct ParamResult {
    ParamSetting setting;
    std::optional<std::string> refusal;
    std::optional<ParamValue> read_back;
  };
  std::vector<ParamResult> param_results;
  std::uint64_t process_errors = 0;  ///< exceptions in process() reported (rate-limited by the sandbox)
  std::string last_process_error;    ///< the last one, with its traceback when it came with one
  std::string first_process_error;   ///< the first one, with its traceback

  void emit(SandboxLogLevel level, std::string_view text) const;
  /// Gives `message` the next request id and sends it, waiting at most until `deadline` for
  /// socket space. Returns the id, or 0 if it could not be sent.
  std::uint32_t send(capnp::MessageBuilder& message, Clock::time_point deadline);
  /// Sends a setParam (`setting`), getState or getStats; wakes the sandbox. The id, or 0.
  std::uint32_t send_request(Async kind, const ParamSetting* setting, Clock::time_point deadline);
  /// Reads what is there without blocking and decodes every complete message.
  void pump();
  void decode(schema::ReceivedMessage& message);
  /// Waits for the answer to request `id` (logs are delivered meanwhile, other answers dropped).
  /// nullopt: timeout, EOF, breach.
  std::optional<detail::Reply> wait_reply(std::uint32_t id, Clock::time_point deadline);
  /// send_request, then wait_reply: a synchronous request of a loaded sandbox. nullopt: not
  /// sent or not answered (gone_reason() says why).
  std::optional<detail::Reply> request(Async kind, const ParamSetting* setting, Clock::time_point deadline);
  /// [main] The control socket's fd (-1: none).
  [[nodiscard]] int control_fd() const noexcept { return channel ? channel->fd() : -1; }
  /// True while an asynchronous request of `kind` is unanswered.
  [[nodiscard]] bool awaiting(Async kind) const noexcept;
  /// True once the child has exited and was reaped (waits at most until `deadline`).
  bool wait_exit(Clock::time_point deadline);
  /// Non-blocking: true (and reaped) once the child has exited.
  bool poll_exit() { return wait_exit(Clock::now()); }
  void kill_and_reap();
  /// Why the sandbox stopped talking, for error messages (may wait up to 2 s for the exit).
  std::string gone_reason();
  /// EOF, a protocol breach, or the process is known to have exited.
  [[nodiscard]] bool gone() const noexcept { return eof || !protocol_error.empty() || reaped; }

  /// Asks the sandbox to import the plugin file now, ahead of the load (a spare); no answer. A
  /// failed send leaves the phase failed.
  void send_preload();
  /// Sends the load (params, `state`; `inspect`: describe only): phase loading. A failed send
  /// leaves the phase failed.
  void send_load(const std::vector<std::byte>& state, bool inspect = false);
  /// Non-blocking: pump, then move the phase on with what arrived; files async answers.
  void advance();
  /// Sends getState / getStats unless one is already outstanding.
  void request_async(Async kind);
  /// Sends a setParam whose answer lands in param_results. False if it could not be sent.
  bool request_set_param(const ParamSetting& setting);
  std::optional<std::vector<std::byte>> take_async_state() {
    return std::exchange(async_state, std::nullopt);
  }
  std::optional<SandboxStats> take_async_stats() { return std::exchange(async_stats, std::nullopt); }
  /// Where notify_control() goes: the link this sandbox was started with (or, for the first
  /// sandbox of a slot, the processor's).
  shm::HostEndpoint* notify_endpoint = nullptr;
  /// Runs without its real-time priority for now: busy in one block too long (Supervisor).
  bool demoted = false;
};

}  // namespace sandpipe::host
