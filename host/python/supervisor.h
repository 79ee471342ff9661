// Fault isolation and recovery for the Python slots of one chain (issue #8).
//
// One supervisor thread per chain watches every sandbox: its pidfd (exit, crash, SIGKILL), its
// control socket (EOF, a protocol breach, log lines and errors, which it delivers), the RT side's
// view of the shared segment (a corrupt completion) and a hang watchdog (the age of the oldest
// block the sandbox has not finished). A dead or hung sandbox is killed, reaped and replaced:
// a pre-started spare (interpreter and numpy already imported) is loaded with the slot's current
// params and the last state the plugin returned from get_state() (polled while idle), and its
// link is handed to the RT side (PythonSlot::replace_link), which fades from dry to wet.
// Too many crashes in a window and the slot is given up on: it stays bypassed (or muted).
// A hot reload (`reload = true`, or `sandpipe reload` over the request socket) loads the new
// version beside the running one and hands over with LinkSwap::reload (a wet → wet crossfade).
//
// The thread is the supervisor's own, so the same code serves `sandpipe run` (PipeWire's main
// loop never sees a sandbox fd) and `sandpipe render` (no loop at all). The supervisor thread is
// the one "[main]" user of each PythonSlot's link operations and the only one to touch a
// sandbox; other threads queue requests (set_param, refresh) and copy the status snapshot the
// thread publishes once per round, under a lock that is never held across process work.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <kj/io.h>

#include "host/config/config.h"
#include "host/python/node-requests.h"
#include "host/python/python-slot.h"
#include "host/python/sandbox-client.h"
#include "host/slot/processor.h"

namespace sandpipe::host {

/// Life cycle of a slot as the status shows it.
enum class SlotState : std::uint8_t {
  starting,    ///< the first sandbox is loading
  running,     ///< processing (native slots are always running)
  restarting,  ///< the sandbox died or hung; a new one is loading, blocks go dry meanwhile
  failed,      ///< the plugin could not be loaded at start: bypassed for good
  bypassed,    ///< crashed or hung too often (restart.max in restart.window-s): given up on
};

[[nodiscard]] std::string_view to_string(SlotState state) noexcept;

/// One plugin of a sandbox group's slot, as the status shows it (the slot's state, pid, restarts
/// and counters are the whole group's: one process, one hop).
struct MemberStatus {
  std::string name;
  OnFailure on_failure = OnFailure::bypass;  ///< what its part of the block becomes when it raises
  std::uint64_t exceptions = 0;              ///< raised in its process(), over every sandbox of the group
  std::uint64_t process_ns = 0;              ///< time in its process(), the running sandbox's
  std::uint32_t latency_frames = 0;          ///< its own latency (the slot's is the sum, plus the pipeline's)
  std::string last_error;                    ///< its last exception in process(), with the traceback
};

/// What the status file, `sandpipe status` and the render summary show for one slot.
struct SlotStatus {
  std::string name;
  std::string kind;  ///< "python" or "native"
  SlotState state = SlotState::running;
  OnFailure on_failure = OnFailure::bypass;
  SlotCounters counters;         ///< the RT side's (blocks, deadline misses, bypassed, sanitized)
  std::uint64_t exceptions = 0;  ///< exceptions raised in process(), over every sandbox of the slot
  std::uint64_t restarts = 0;    ///< sandboxes that replaced a dead or hung one
  std::uint64_t reloads = 0;     ///< new versions of the plugin file swapped in (`reload`)
  std::uint64_t crashes = 0;     ///< sandboxes that died (exit, signal, EOF, protocol breach)
  std::uint64_t hangs = 0;       ///< sandboxes killed by the hang watchdog
  /// Times its sandbox lost real-time priority for being busy in one block too long (and
  /// whether it is without it now).
  std::uint64_t demotions = 0;
  bool demoted = false;
  std::string last_error;        ///< the last failure, with a traceback when there was one
  std::string first_error;       ///< the first failure, with a traceback when there was one
  pid_t pid = -1;                ///< the sandbox running now (-1: none)
  double last_restart_ms = 0.0;  ///< death noticed → new sandbox handed to the RT side
  double max_restart_ms = 0.0;
  // The scheduler's view (Chain::schedules()), Python slots only.
  std::string mode;                   ///< as configured: "auto", "sync", "pipelined" ("": native)
  std::uint32_t pipeline_blocks = 0;  ///< the pipeline depth now (0: sync)
  std::uint32_t latency_frames = 0;   ///< the slot's latency now (its own + the pipeline's)
  bool schedule_fits = true;          ///< false: no pipeline within latency.max-ms absorbs its p99.9
  std::string schedule;               ///< the last scheduling decision, in words
  std::string group;                  ///< a sandbox group's slot: the group ("" otherwise)
  std::vector<MemberStatus> members;  ///< a sandbox group's slot: its plugins, in order
  /// A relay's plugin (each has an entry of its own, in its own sandbox): the relay's slot
  /// ("" otherwise) and its place in it. The relay's counters, mode and latency are shown on
  /// its first plugin's entry only (the others' are zero): they are the slot's, not each one's.
  std::string relay;
  std::uint32_t relay_stage = 0;
};

struct SupervisorOptions {
  /// Offline (render): no deadline pressure, wait_settled() between blocks.
  bool offline = false;
  /// The hang watchdog for slots without `timeout-ms`: a sandbox that has not finished a block
  /// for this long is killed and restarted.
  std::chrono::milliseconds default_hang_timeout{200};
  /// restart.max / restart.window-s (0 restarts: the first crash gives up).
  std::uint32_t max_restarts = 5;
  std::chrono::milliseconds restart_window{60'000};
  /// How often an idle sandbox is asked for its state (the state restored on restart).
  std::chrono::milliseconds state_poll{1'000};
  /// How often the watchdog and the RT side's link state are looked at.
  std::chrono::milliseconds tick{10};
  /// Keep one loaded-interpreter spare per slot, so a restart only imports the plugin.
  bool keep_spare = true;
  /// Written (atomically, JSON) once a second and on every state change; removed at the end.
  /// Empty: none.
  std::filesystem::path status_file;
  /// The socket `sandpipe reload` talks to (host/python/node-requests.h). Empty: none.
  std::filesystem::path request_socket;
  std::string node_name;
  SandboxLogFn log = log_to_stderr;
};

/// One slot of the chain as the supervisor sees it.
struct SupervisedSlot {
  Processor* processor = nullptr;       ///< every slot (native ones only report counters)
  PythonSlot* sandbox = nullptr;  ///< Python slots
  OnFailure on_failure = OnFailure::bypass;
  double timeout_ms = 0.0;  ///< the plugin's `timeout-ms` (0: the default)
  bool reload = false;      ///< the plugin's `reload`: follow changes of its file
  std::string group;        ///< a sandbox group's slot: the group (PluginSpec::sandbox)
  /// A sandbox group's slot: its members' names and effective on-failure, in order.
  std::vector<std::pair<std::string, OnFailure>> members;
  /// A relay's slot: each stage's name, effective on-failure and `timeout-ms`, in order, and a
  /// sandbox group's `group` and `members` as above. Each stage gets a watch of its own (its own
  /// sandbox, restarts and status entry) over the one slot.
  struct Stage {
    std::string name;
    OnFailure on_failure = OnFailure::bypass;
    double timeout_ms = 0.0;
    std::string group;
    std::vector<std::pair<std::string, OnFailure>> members;
  };
  std::vector<Stage> stages;
};

/// Not copyable. Created [main] after the chain's slots, destroyed before them.
class Supervisor {
 public:
  /// [main] Takes over `instances` (one list per slot, as start_sandboxes() started them: empty
  /// for a native slot, the sandbox behind a Python slot's first link, a relay's sandboxes in
  /// order) and starts the supervisor thread (only if some slot is a Python one).
  Supervisor(std::vector<SupervisedSlot> slots, std::vector<std::vector<std::unique_ptr<SandboxInstance>>> instances,
             SupervisorOptions options);
  /// [main] Stops and joins the thread; removes the status file.
  ~Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  Supervisor(Supervisor&&) = delete;
  Supervisor& operator=(Supervisor&&) = delete;

  /// [any] A snapshot of every slot.
  [[nodiscard]] std::vector<SlotStatus> status() const;
  /// [any] The snapshot as the JSON the status file holds.
  [[nodiscard]] std::string status_json() const;

  /// [main] Offline: returns once no Python slot is starting or restarting and none has a dead
  /// link the supervisor has not dealt with yet, so the next block runs on a live sandbox (or
  /// on a slot given up on). Bounded by `timeout`; false if it ran out.
  bool wait_settled(std::chrono::milliseconds timeout = std::chrono::minutes(5));

  /// [main] A live parameter change of a supervised Python slot: queued for the supervisor
  /// thread, which sends it to the running sandbox (its answer arrives later; a refusal is
  /// logged) and, once accepted, keeps it for restarts. Takes only a short lock: never waits
  /// for process work. Returns an error only when the slot is not running a plugin (failed to
  /// load, or given up on).
  std::optional<std::string> set_param(const PythonSlot& slot, const ParamSetting& setting);

  /// What an earlier-API plugin's get_parameter(key) answered after a live change of `key`
  /// was accepted: the value the node publishes for SLOT:KEY (it may differ from the one sent).
  struct ReadBack {
    const PythonSlot* slot = nullptr;
    std::string key;
    ParamValue value;
    std::uint32_t member = 0;  ///< a sandbox group's slot: whose parameter
  };
  /// [any] The read-backs that arrived since the last call, oldest first.
  [[nodiscard]] std::vector<ReadBack> take_read_backs();
  /// [main] `fn` is called on the supervisor's thread whenever a read-back arrives; it must only
  /// wake the node's main loop (which then calls take_read_backs()). Empty: none.
  void set_read_back_listener(std::function<void()> fn);

  /// [main] The graph's rate changed (Chain's rate-change constructor): every running sandbox is
  /// told, between two blocks, to prepare its plugin for `rate` with its params and state (the
  /// same process: no spawn, no import); restarts, spares and reloads load at `rate` from now
  /// on. A plugin that cannot follow is restarted at the new rate (with its state), as after a
  /// crash. Queued like set_param(): never waits for process work.
  void set_sample_rate(double rate);
  /// [main] A new chain took the slots over (a rate change): the native slots whose counters the
  /// status shows are `slots`' now; the Python ones must be the same objects as before. Under
  /// the short lock, so the old chain may be freed once this returns.
  void rebind_slots(const std::vector<std::shared_ptr<Processor>>& slots);

  /// [main] What the scheduler decided for `slot` (Chain calls it after every decision), for
  /// the status: its configured mode, whether it fits latency.max-ms, and why.
  void set_schedule(const PythonSlot& slot, std::string_view mode, bool fits, std::string why);

  /// [main] Asks every running sandbox for its counters and waits (at most `timeout`) until
  /// they answered, so status() is exact (render's summary). False if some did not answer.
  bool refresh(std::chrono::milliseconds timeout = std::chrono::seconds(5));

  /// [any] Restart times (ms) of every restart so far, in order (benchmarks, docs).
  [[nodiscard]] std::vector<double> restart_times_ms() const;

  /// [main] What the node adds to the status: `fn` returns JSON members (`"key":value,...`),
  /// published as the status's "timing" object; called on the supervisor's thread.
  void set_node_status(std::function<std::string()> fn);

 private:
  struct Watch;
  /// A set_param() change on its way to the supervisor thread.
  struct ParamRequest {
    const PythonSlot* slot = nullptr;
    ParamSetting setting;
  };
  /// What other threads asked for since the last round: taken by the supervisor thread at the
  /// start of each round, under a short lock.
  struct Inbox {
    bool stop = false;
    std::vector<ParamRequest> params;
    std::uint64_t refresh_wanted = 0;
    double sample_rate = 0.0;  ///< set_sample_rate()'s, 0: none since the last round
  };
  /// What the scheduler said of a slot (set_schedule): the main thread's knowledge, kept beside
  /// the snapshot (the supervisor thread never needs it).
  struct Schedule {
    std::string mode;
    bool fits = true;
    std::string why;
  };

  // supervisor.cpp: the thread and its rounds.
  /// [main] The constructor's part for one watch: takes `instance` over (null: the plugin did
  /// not start); true for a Python slot's watch.
  bool adopt(Watch& w, double timeout_ms, std::unique_ptr<SandboxInstance> instance);
  /// [main] The constructor's end: the confinement probe, the request socket, the thread.
  void start(bool any_python);
  /// [any] True if `w` watches `slot` and is the one a parameter for `member` goes to (a
  /// relay's parameters go to the plugin they belong to, each in its own sandbox).
  static bool takes_param(const Watch& w, const PythonSlot* slot, std::uint32_t member) noexcept;
  /// [supervisor thread] poll, take the inbox, run every slot's transition, publish, repeat.
  void run();
  /// [supervisor thread] Moves what the main thread queued out from under the lock.
  Inbox take_inbox();
  /// [supervisor thread] Sends (or keeps for the next sandbox) the queued set_param() changes.
  void apply_params(const std::vector<ParamRequest>& params);
  /// [supervisor thread] A set_sample_rate(): every slot's next sandboxes start at `rate`;
  /// on_running() tells the running ones (follow_rate()).
  void apply_rate(double rate);
  /// [supervisor thread] Stops every sandbox (they die with this thread) and publishes the end.
  void shut_down();
  /// [any] Wakes the supervisor thread's poll.
  void wake() const noexcept;
  /// [any, mutex_ held] No Python slot starting or restarting, none with a dead link unseen.
  [[nodiscard]] bool settled_locked() const;

  // supervisor-states.cpp: one transition per slot state, each [supervisor thread], no lock.
  /// Runs every slot's transition; true when some slot changed state.
  bool tick(std::chrono::steady_clock::time_point now);
  /// The first sandbox is still loading.
  void on_starting(Watch& w, bool& state_changed);
  /// Watches the sandbox in use: answers, errors, the watchdog; a death goes to on_death().
  void on_running(Watch& w, std::chrono::steady_clock::time_point now, bool& state_changed);
  /// Brings the running sandbox to the slot's rate (set_sample_rate()): asks it, and deals with
  /// its answer. Returns why it could not follow (then it is restarted), empty otherwise.
  std::string follow_rate(Watch& w, SandboxInstance& c);
  /// The sandbox in use died or hung: publish, tell the RT side, kill, restart or give up.
  void on_death(Watch& w, const std::string& reason, bool hang, std::chrono::steady_clock::time_point now);
  /// Brings a new sandbox up and hands its link to the RT side.
  void on_restarting(Watch& w, std::chrono::steady_clock::time_point now, bool& state_changed);
  /// Failed at start or given up on: nothing runs, no spare is kept.
  void on_given_up(Watch& w);
  /// Keeps one loaded-interpreter spare for a slot that may need it.
  void keep_spare(Watch& w, std::chrono::steady_clock::time_point now);
  /// Takes the real-time priority of `w`'s sandbox `c` away while it is busy in one block too
  /// long (`age_ns`: the oldest block it owes), and gives it back once it answers.
  void demote_while_stuck(Watch& w, SandboxInstance& c, std::uint64_t age_ns,
                          std::chrono::steady_clock::time_point now, bool& state_changed);
  /// Asks the running sandboxes for their stats for refresh(); notes when all answered.
  void track_refresh(std::uint64_t wanted);

  // supervisor-reload.cpp: hot reload, each [supervisor thread], no lock.
  /// One slot's hot reload (`reload = true`, or a `sandpipe reload` request): watch the file,
  /// load a new version beside the running one with its state, hand over to it (a wet → wet
  /// crossfade), or keep the old one if the new one fails; answer the requests waiting for it.
  void reload_tick(Watch& w, std::chrono::steady_clock::time_point now, bool& state_changed);
  /// Offers the loaded new version's link to the RT side and, once taken, makes it current.
  void switch_to_reloaded(Watch& w, std::chrono::steady_clock::time_point now, bool& state_changed);
  /// Starts a reload of `w` now: asks the running version for its state first.
  void begin_reload(Watch& w, std::chrono::steady_clock::time_point now);
  /// Answers every request waiting for `w`'s reload.
  void answer_reload(Watch& w, bool ok, const std::string& text);
  /// A line from the request socket ("reload SLOT").
  void handle_request(const RequestServer::Request& request, std::chrono::steady_clock::time_point now);

  // supervisor-status.cpp.
  /// [supervisor thread] Copies every slot's state into the snapshot (a short lock), with the
  /// read-backs, restart times and refresh answers gathered since, and wakes the waiters.
  void publish();
  /// [supervisor thread] The status file, written atomically (status_json()).
  void write_status_file();

  SupervisorOptions options_;
  /// One per slot, fixed at construction. A Watch's slot, name and kind are read-only after it;
  /// the rest (every SandboxInstance included) is the supervisor thread's alone.
  std::vector<std::unique_ptr<Watch>> watches_;
  kj::AutoCloseFd wake_fd_;                  ///< eventfd: stop, set_param, refresh, rate
  std::unique_ptr<RequestServer> requests_;  ///< `sandpipe reload` (the supervisor thread's)
  std::string instance_token_;
  std::string confinement_json_;  ///< the sandboxes' walls on this machine (set once, before the thread)

  // The supervisor thread's, gathered in a round until publish() hands them over.
  std::uint64_t refresh_asked_ = 0;     ///< the refresh() call the stats requests in flight are for
  std::uint64_t refresh_answered_ = 0;  ///< answered up to this call
  std::vector<ReadBack> new_read_backs_;
  std::vector<double> new_restart_ms_;

  /// Held only to copy or swap what follows, never across process work.
  mutable std::mutex mutex_;
  std::condition_variable changed_;  ///< a snapshot was published
  bool stop_ = false;
  std::vector<ParamRequest> param_inbox_;
  double rate_inbox_ = 0.0;           ///< set_sample_rate() since the last round (0: none)
  std::uint64_t refresh_wanted_ = 0;  ///< refresh() calls so far
  std::uint64_t refresh_done_ = 0;    ///< published: answered up to this call
  std::vector<SlotStatus> published_;  ///< the supervisor thread's part of every slot's status
  std::vector<std::uint64_t> published_generation_;  ///< each slot's running sandbox's link (0: none)
  std::vector<Schedule> schedules_;                   ///< set_schedule(), one per slot
  std::vector<double> restart_ms_;
  std::vector<ReadBack> read_backs_;
  std::function<void()> read_back_listener_;
  std::function<std::string()> node_status_;

  std::thread thread_;
};

/// [any] Where `sandpipe run` keeps NODE's status: $XDG_RUNTIME_DIR/sandpipe/NODE.status, or
/// /tmp/sandpipe-UID/NODE.status without XDG_RUNTIME_DIR.
[[nodiscard]] std::filesystem::path status_file_path(std::string_view node_name);

/// [main] A supervisor for a chain's `slots` (config order, as Chain builds them) and the
/// sandboxes behind them (`instances`, one list per slot: see Supervisor): restart limits from
/// `config`; live (not `offline`): the status file at status_file_path(node) and the request
/// socket at request_socket_path(node) unless `options` names them.
[[nodiscard]] std::unique_ptr<Supervisor> supervise_chain(const ChainConfig& config,
                                                          const std::vector<std::shared_ptr<Processor>>& slots,
                                                          std::vector<std::vector<std::unique_ptr<SandboxInstance>>> instances,
                                                          bool offline, SupervisorOptions options);

}  // namespace sandpipe::host
