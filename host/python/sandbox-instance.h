// One sandbox process and its control conversation, as the host's non-RT side holds it
// (SandboxInstance). Internal to host/: sandbox-instance.cpp implements it, sandbox-client.cpp
// starts a chain's first instances with it, supervisor.cpp drives restarts and reloads with it.
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

#include "host/python/sandbox-client.h"
#include "host/python/sandbox-link.h"
#include "host/python/sandbox-process.h"
#include "schemas/control-channel.h"
#include "schemas/control.capnp.h"

namespace sandpipe::host {

namespace detail {

/// One message from a sandbox, decoded and validated; logs never become a Reply.
struct Reply {
  enum class Kind : std::uint8_t { hello, loaded, param_set, rate_set, state, stats, error } kind = Kind::error;
  std::uint32_t request_id = 0;  ///< the request it answers (0: none)
  std::uint32_t protocol_version = 0;
  std::uint32_t shm_layout_version = 0;
  std::uint32_t shm_header_size = 0;
  std::string python_version;
  std::string numpy_version;
  PythonPluginInfo info;
  std::string key;
  std::int32_t member = -1;   ///< paramSet, error: a group's member it concerns (-1: none)
  std::uint32_t latency = 0;  ///< paramSet, rateSet: the plugin's latency (frames) now
  std::optional<ParamValue> read_back;  ///< paramSet: what get_parameter(key) answers now
  std::vector<std::byte> state;
  SandboxStats stats;
  schema::SandboxMessage::Phase phase = schema::SandboxMessage::Phase::HANDSHAKE;
  std::string message;
  std::string traceback;
};

/// [any] Milliseconds from now to `deadline` for poll(): 0 once it passed, at most 1 000 000.
[[nodiscard]] int remaining_ms(std::chrono::steady_clock::time_point deadline) noexcept;

}  // namespace detail

/// One sandbox process, its shared segment until the RT side takes it, and its typed control
/// conversation. The only code that spawns a sandbox, says hello and loads a plugin. [main] (the
/// supervisor thread counts as the main thread of the slots it supervises). Not copyable; the
/// destructor shuts the sandbox down (a loaded one is asked to, bounded), kills it if need be
/// and reaps it.
class SandboxInstance {
 public:
  using Clock = std::chrono::steady_clock;

  /// hello sent → ready (hello answered: a spare) → loading (load sent) → loaded; failed: the
  /// sandbox answered with an error (the plugin did not load) or broke the handshake.
  enum class Phase : std::uint8_t { hello, ready, loading, loaded, failed };
  /// What may be asked of a loaded sandbox: set a parameter, get its state, get its counters,
  /// follow a new sample rate.
  enum class Request : std::uint8_t { state, stats, param, rate };
  /// An answered setParam: accepted (no refusal) with what the plugin reads back, if anything,
  /// or the plugin's refusal.
  struct ParamResult {
    ParamSetting setting;
    std::optional<std::string> refusal;
    std::optional<ParamValue> read_back;
  };
  /// An answered setRate: the plugin's latency at `rate`, or why it could not follow.
  struct RateResult {
    double rate = 0.0;
    std::optional<std::uint32_t> latency;
    std::string error;  ///< with the traceback (empty when it followed)
  };

  /// Creates a segment and its link, spawns the sandbox with them and sends hello.
  /// Throws PluginError.
  static std::unique_ptr<SandboxInstance> spawn(const SandboxLaunch& launch, std::uint64_t generation);

  ~SandboxInstance();
  SandboxInstance(const SandboxInstance&) = delete;
  SandboxInstance& operator=(const SandboxInstance&) = delete;
  SandboxInstance(SandboxInstance&&) = delete;
  SandboxInstance& operator=(SandboxInstance&&) = delete;

  // --- What it is -------------------------------------------------------------------------
  [[nodiscard]] const SandboxLaunch& launch() const noexcept { return launch_; }
  [[nodiscard]] const std::filesystem::path& file() const noexcept { return launch_.file; }
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  /// The control socket's fd (-1: none) and the pidfd (-1: none), to poll.
  [[nodiscard]] int control_fd() const noexcept { return channel_ ? channel_->fd() : -1; }
  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
  [[nodiscard]] std::uint64_t generation() const noexcept { return generation_; }  ///< of its link
  [[nodiscard]] Phase phase() const noexcept { return phase_; }
  /// Why the phase is `failed` (with the traceback).
  [[nodiscard]] const std::string& failure() const noexcept { return failure_; }
  [[nodiscard]] const PythonPluginInfo& info() const noexcept { return info_; }
  [[nodiscard]] const std::string& python_version() const noexcept { return python_version_; }
  [[nodiscard]] const std::string& numpy_version() const noexcept { return numpy_version_; }
  /// What a (re)load sends.
  [[nodiscard]] const std::vector<ParamSetting>& params() const noexcept { return params_; }
  void set_params(std::vector<ParamSetting> params) { params_ = std::move(params); }
  /// The rate a load sends (a spare started before the graph's rate changed). Before send_load().
  void set_sample_rate(double rate) noexcept { launch_.sample_rate = rate; }
  /// The segment this sandbox was started with, for the RT side (null once taken).
  [[nodiscard]] std::unique_ptr<SandboxLink> take_link() noexcept { return std::move(link_); }
  /// Where notify_control() goes: the link this sandbox was started with (or, once that link is
  /// someone else's, theirs; null: nowhere).
  [[nodiscard]] shm::HostEndpoint* notify_endpoint() const noexcept { return notify_endpoint_; }
  void set_notify_endpoint(shm::HostEndpoint* endpoint) noexcept { notify_endpoint_ = endpoint; }
  /// Runs without its real-time priority for now: busy in one block too long (Supervisor).
  [[nodiscard]] bool demoted() const noexcept { return demoted_; }
  void set_demoted(bool demoted) noexcept { demoted_ = demoted; }

  // --- How it is --------------------------------------------------------------------------
  [[nodiscard]] bool eof() const noexcept { return eof_; }
  /// Set once the sandbox sent something unreadable.
  [[nodiscard]] const std::string& protocol_error() const noexcept { return protocol_error_; }
  [[nodiscard]] bool reaped() const noexcept { return reaped_; }
  [[nodiscard]] int exit_status() const noexcept { return exit_status_; }
  /// EOF, a protocol breach, or the process is known to have exited.
  [[nodiscard]] bool gone() const noexcept { return eof_ || !protocol_error_.empty() || reaped_; }
  /// Why the sandbox stopped talking, for error messages (may wait up to 2 s for the exit).
  std::string gone_reason();
  /// Exceptions in process() reported (rate-limited by the sandbox), the last and the first one
  /// (with their tracebacks).
  [[nodiscard]] std::uint64_t process_errors() const noexcept { return process_errors_; }
  [[nodiscard]] const std::string& last_process_error() const noexcept { return last_process_error_; }
  [[nodiscard]] const std::string& first_process_error() const noexcept { return first_process_error_; }
  /// A group's: each member's last exception in process() (empty: none so far, or one plugin).
  [[nodiscard]] const std::vector<std::string>& member_process_errors() const noexcept {
    return member_process_errors_;
  }

  // --- What it is asked -------------------------------------------------------------------
  /// Asks the sandbox to import the plugin file now, ahead of the load (a spare); no answer. A
  /// failed send leaves the phase failed.
  void send_preload();
  /// Sends the load (params, `state`; `inspect`: describe only): phase loading. A failed send
  /// leaves the phase failed.
  void send_load(const std::vector<std::byte>& state, bool inspect = false);
  /// Waits for the load's answer at most until `deadline`; empty once loaded, else why not.
  std::string wait_loaded(Clock::time_point deadline);
  /// Non-blocking: pump, then move the phase on with what arrived; files async answers.
  void advance();
  /// The handshake failed for a reason found outside it (no answer in time, a refused chain).
  void fail(std::string why);
  /// Reads what is there without blocking: log lines are delivered, answers filed.
  void pump();
  /// Drops answers nobody waits for (an unsupervised slot's main loop).
  void discard_replies() noexcept { replies_.clear(); }
  /// A synchronous request of a loaded sandbox (setParam with `setting`, getState, getStats):
  /// sent, then its answer waited for until `deadline` (logs are delivered meanwhile). nullopt:
  /// not sent or not answered (gone_reason() says why).
  std::optional<detail::Reply> request(Request kind, const ParamSetting* setting, Clock::time_point deadline);
  /// Synchronous requests of a loaded sandbox (tests and tools; a supervised one is the
  /// supervisor thread's, which never waits): each waits for its answer until the launch's
  /// request_timeout and throws PluginError if none comes. set_param returns the plugin's
  /// refusal (with its traceback), nothing once accepted.
  [[nodiscard]] std::optional<std::string> set_param(const ParamSetting& setting);
  [[nodiscard]] std::vector<std::byte> get_state();
  [[nodiscard]] SandboxStats stats();
  /// Sends getState / getStats unless one is already outstanding; the answer is filed.
  void request_async(Request kind);
  /// Sends a setParam whose answer lands in take_param_results(). False if it could not be sent.
  bool request_set_param(const ParamSetting& setting);
  /// Sends a setRate whose answer lands in take_rate_result(). False if it could not be sent.
  bool request_set_rate(double rate);
  /// True while an asynchronous request of `kind` is unanswered.
  [[nodiscard]] bool awaiting(Request kind) const noexcept;
  std::optional<std::vector<std::byte>> take_async_state() {
    return std::exchange(async_state_, std::nullopt);
  }
  std::optional<SandboxStats> take_async_stats() { return std::exchange(async_stats_, std::nullopt); }
  std::vector<ParamResult> take_param_results() { return std::exchange(param_results_, {}); }
  std::optional<RateResult> take_rate_result() { return std::exchange(rate_result_, std::nullopt); }
  /// Delivers `text` to the log sink, one call per line.
  void emit(SandboxLogLevel level, std::string_view text) const;

  // --- Its end ----------------------------------------------------------------------------
  /// True once the child has exited and was reaped (waits at most until `deadline`).
  bool wait_exit(Clock::time_point deadline);
  /// Non-blocking: true (and reaped) once the child has exited.
  bool poll_exit() { return wait_exit(Clock::now()); }
  void kill_and_reap();

 private:
  SandboxInstance() = default;

  /// Tells the sandbox a control message waits (its notify endpoint, and in a relay the edge it
  /// sleeps on once serving).
  void notify() noexcept {
    if (notify_endpoint_ != nullptr) notify_endpoint_->notify_control();
    if (bell_) bell_->ring();
  }
  /// Gives `message` the next request id and sends it, waiting at most until `deadline` for
  /// socket space. Returns the id, or 0 if it could not be sent.
  std::uint32_t send(capnp::MessageBuilder& message, Clock::time_point deadline);
  /// Sends a setParam (`setting`), getState or getStats; wakes the sandbox. The id, or 0.
  std::uint32_t send_request(Request kind, const ParamSetting* setting, Clock::time_point deadline);
  void decode(schema::ReceivedMessage& message);
  /// Waits for the answer to request `id` (other answers are dropped). nullopt: timeout, EOF,
  /// breach.
  std::optional<detail::Reply> wait_reply(std::uint32_t id, Clock::time_point deadline);

  SandboxLaunch launch_;
  std::vector<ParamSetting> params_;
  SandboxLogFn log_;

  std::unique_ptr<schema::ControlChannel> channel_;
  kj::AutoCloseFd pidfd_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int exit_status_ = 0;
  std::unique_ptr<SandboxLink> link_;
  shm::HostEndpoint* notify_endpoint_ = nullptr;
  std::optional<shm::ControlBell> bell_;  ///< a relay's sandbox: rings the edge it sleeps on

  Phase phase_ = Phase::hello;
  bool load_sent_ = false;
  std::uint64_t generation_ = 1;
  std::string failure_;
  PythonPluginInfo info_;
  std::string python_version_;
  std::string numpy_version_;
  bool demoted_ = false;

  std::deque<detail::Reply> replies_;  ///< answers to the handshake and to request(), as they came
  bool eof_ = false;
  std::string protocol_error_;
  std::uint32_t next_request_id_ = 1;
  std::uint32_t hello_id_ = 0;  ///< the hello's request id
  std::uint32_t load_id_ = 0;   ///< the load's request id (0: not sent)
  /// Requests whose answers are filed when they arrive (take_async_*), never waited for.
  struct Outstanding {
    std::uint32_t id = 0;
    Request kind = Request::state;
    ParamSetting setting;  ///< Request::param
    double rate = 0.0;     ///< Request::rate
  };
  std::deque<Outstanding> async_outstanding_;
  std::optional<std::vector<std::byte>> async_state_;
  std::optional<SandboxStats> async_stats_;
  std::vector<ParamResult> param_results_;
  std::optional<RateResult> rate_result_;
  std::uint64_t process_errors_ = 0;
  std::string last_process_error_;
  std::string first_process_error_;
  std::vector<std::string> member_process_errors_;
};

}  // namespace sandpipe::host
