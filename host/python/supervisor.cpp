// The supervisor thread: watch, kill, restart, report. See supervisor.h.
#include "host/python/supervisor.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <fstream>
#include <random>
#include <sstream>
#include <system_error>
#include <utility>

#include "host/python/confinement-probe.h"
#include "host/python/sandbox-instance.h"
#include "shm/clock.h"

namespace sandpipe::host {

using Clock = std::chrono::steady_clock;

std::string_view to_string(SlotState state) noexcept {
  switch (state) {
    case SlotState::starting:
      return "starting";
    case SlotState::running:
      return "running";
    case SlotState::restarting:
      return "restarting";
    case SlotState::failed:
      return "failed";
    case SlotState::bypassed:
      return "bypassed";
  }
  return "unknown";
}

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// What the slot passes on now: "processed" while its plugin runs (or is being restarted), or,
/// once given up on (or never loaded), "silent" (on-failure = "mute") or "dry".
std::string_view slot_output(const SlotStatus& s) noexcept {
  if (s.state != SlotState::failed && s.state != SlotState::bypassed) return "processed";
  return s.on_failure == OnFailure::mute ? "silent" : "dry";
}

std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out.push_back(ch);
        }
    }
  }
  return out;
}

/// Delay before restart attempt `k` (1-based) within the window: at once, then doubling.
std::chrono::milliseconds backoff(std::size_t k) {
  if (k <= 1) return std::chrono::milliseconds(0);
  const std::size_t shift = std::min<std::size_t>(k - 2, 5);
  return std::chrono::milliseconds(100) * (1u << shift);  // 100 ms … 3.2 s
}

}  // namespace

/// One slot's supervision. The status part (state … pid, restart times) is guarded by
/// Supervisor::mutex_; the instances are the supervisor thread's alone.
struct Supervisor::Watch {
  SupervisedSlot slot;
  std::string name;
  bool python = false;
  std::chrono::milliseconds hang_timeout{200};

  // Status (mutex_).
  SlotState state = SlotState::running;
  std::uint64_t exceptions_before = 0;  ///< exceptions of sandboxes that are gone
  std::uint64_t exceptions_now = 0;     ///< the current sandbox's, from its stats
  std::uint64_t restarts = 0;
  std::uint64_t reloads = 0;
  std::uint64_t crashes = 0;
  std::uint64_t hangs = 0;
  std::string last_error;
  std::string first_error;  ///< the first last_error (render's summary names it)
  pid_t pid = -1;
  double last_restart_ms = 0.0;
  double max_restart_ms = 0.0;
  std::string mode;  ///< the scheduler's (set_schedule)
  bool schedule_fits = true;
  std::string schedule;

  // The supervisor thread's.
  std::unique_ptr<SandboxInstance> current;     ///< the sandbox the RT side uses
  std::unique_ptr<SandboxInstance> spare;       ///< interpreter ready, waiting for a load
  std::unique_ptr<SandboxInstance> pending;     ///< loading, to replace `current`
  std::unique_ptr<SandboxLink> unclaimed_link;  ///< loaded, not yet accepted by replace_link
  SandboxLaunch launch;
  std::vector<ParamSetting> params;
  std::vector<std::byte> saved_state;
  std::deque<Clock::time_point> failures;  ///< crashes and hangs inside the window
  Clock::time_point died_at{};
  Clock::time_point next_attempt{};
  Clock::time_point next_spare{};
  Clock::time_point last_poll{};
  std::uint64_t next_generation = 2;
  std::uint64_t process_errors_seen = 0;
  /// The hang watchdog's view of progress: the sandbox's count of answered blocks when last
  /// seen moving, and when. A sandbox that keeps answering is not hung, however old the
  /// oldest block the RT side has not collected yet (a pipelined chain, a paused graph).
  std::uint32_t answered_hint = 0;
  Clock::time_point progress_at{};
  std::uint64_t demotions = 0;  ///< its sandboxes' real-time priority taken away (busy too long)
  // Hot reload (`reload = true`): the file's time when last loaded, the new version loading
  // beside the running one, and when its state was asked for.
  std::filesystem::file_time_type file_time{};
  Clock::time_point next_file_check{};
  Clock::time_point reload_asked{};
  bool reload_wanted = false;
  bool reload_state_fresh = false;
  std::unique_ptr<SandboxInstance> reloading;
  /// The version a reload replaced: it may still be answering the block the RT side waits for,
  /// so it is stopped a little later (never talked to again: its link may be gone).
  std::unique_ptr<SandboxInstance> retiring;
  shm::HostEndpoint* retiring_endpoint = nullptr;  ///< its notify_endpoint, should it come back
  /// `sandpipe reload` requests waiting for this slot's reload to end, and the new version's
  /// generation while the RT side hands over to it (the answer waits for that).
  std::vector<std::uint64_t> reload_requests;
  std::vector<std::uint64_t> queued_requests;  ///< arrived once a load was sent: the next reload's
  std::uint64_t switch_generation = 0;
  Clock::time_point switch_since{};
};

Supervisor::Supervisor(std::vector<SupervisedSlot> slots, SupervisorOptions options)
    : options_(std::move(options)) {
  if (!options_.log) options_.log = log_to_stderr;
  bool any_python = false;
  for (const SupervisedSlot& s : slots) {
    auto w = std::make_unique<Watch>();
    w->slot = s;
    w->name = std::string(s.processor->name());
    w->python = s.sandbox != nullptr;
    if (w->python) {
      any_python = true;
      if (s.reload) {
        std::error_code ec;
        w->file_time = std::filesystem::last_write_time(
            s.sandbox->instance_ ? s.sandbox->instance_->file() : std::filesystem::path{}, ec);
      }
      w->hang_timeout = s.timeout_ms > 0.0
                            ? std::chrono::milliseconds(static_cast<std::int64_t>(s.timeout_ms))
                            : options_.default_hang_timeout;
      // The supervisor takes the conversation over: from now on only its thread talks to it.
      w->current = std::move(s.sandbox->instance_);
      s.sandbox->supervisor_ = this;
      if (w->current) {
        w->launch = w->current->launch();
        w->params = w->current->params();
        w->pid = w->current->pid();
        if (w->current->phase() == SandboxInstance::Phase::failed) {
          w->state = SlotState::failed;
          w->last_error = w->current->failure();
          w->first_error = w->last_error;
          w->pid = -1;
        }
      } else {
        w->state = SlotState::failed;
      }
    }
    watches_.push_back(std::move(w));
  }
  {
    std::random_device rd;
    instance_token_ = std::to_string(::getpid()) + "-" + std::to_string(rd());
  }
  if (any_python) {
    // Once per node: which walls its sandboxes get here, and which they do not (and why).
    const ConfinementLayers layers = probe_confinement();
    confinement_json_ = confinement_json(layers);
    std::string in_force;
    for (const auto& l : layers.in_force) in_force += (in_force.empty() ? "" : ", ") + l;
    options_.log("supervisor", SandboxLogLevel::info,
                 "sandbox confinement: " + (in_force.empty() ? std::string("none") : in_force));
    for (const auto& m : layers.missing)
      options_.log("supervisor", SandboxLogLevel::warning, "sandbox confinement layer missing: " + m);
  }
  if (!any_python && options_.status_file.empty()) return;
  if (!options_.request_socket.empty()) {
    try {
      requests_ = std::make_unique<RequestServer>(options_.request_socket);
    } catch (const std::exception& e) {
      options_.log(
          "supervisor", SandboxLogLevel::warning,
          std::string("no request socket (`sandpipe reload` will not reach this node): ") + e.what());
    }
  }
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  publish_given_up();  // slots whose plugin did not load
  thread_ = std::thread([this] { run(); });
}

Supervisor::~Supervisor() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
    thread_.join();
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
  for (auto& w : watches_)
    if (w->python) w->slot.sandbox->supervisor_ = nullptr;
  if (!options_.status_file.empty()) {
    // Only ours: a newer chain of the same node (rate change) may have written it since.
    std::ifstream in(options_.status_file);
    std::stringstream text;
    text << in.rdbuf();
    if (text.str().find("\"instance\":\"" + instance_token_ + "\"") != std::string::npos) {
      std::error_code ec;
      std::filesystem::remove(options_.status_file, ec);
    }
  }
}

std::vector<SlotStatus> Supervisor::status() const {
  std::lock_guard lock(mutex_);
  std::vector<SlotStatus> out;
  out.reserve(watches_.size());
  for (const auto& w : watches_) {
    SlotStatus s;
    s.name = w->name;
    s.kind = w->python ? "python" : "native";
    s.state = w->state;
    s.on_failure = w->slot.on_failure;
    s.counters = w->slot.processor->counters();
    s.exceptions = w->exceptions_before + w->exceptions_now;
    s.restarts = w->restarts;
    s.reloads = w->reloads;
    s.crashes = w->crashes;
    s.hangs = w->hangs;
    s.demotions = w->demotions;
    s.demoted = w->current != nullptr && w->current->demoted();
    s.last_error = w->last_error;
    s.first_error = w->first_error;
    s.pid = w->pid;
    s.last_restart_ms = w->last_restart_ms;
    s.max_restart_ms = w->max_restart_ms;
    s.latency_frames = w->slot.processor->latency_frames();
    if (w->slot.sandbox != nullptr) s.pipeline_blocks = w->slot.sandbox->pipeline_blocks();
    s.mode = w->mode;
    s.schedule_fits = w->schedule_fits;
    s.schedule = w->schedule;
    out.push_back(std::move(s));
  }
  return out;
}

void Supervisor::set_node_status(std::function<std::string()> fn) {
  std::lock_guard lock(mutex_);
  node_status_ = std::move(fn);
}

std::vector<Supervisor::ReadBack> Supervisor::take_read_backs() {
  std::lock_guard lock(mutex_);
  return std::exchange(read_backs_, {});
}

void Supervisor::set_read_back_listener(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  read_back_listener_ = std::move(fn);
}

std::string Supervisor::status_json() const {
  const auto slots = status();
  std::string node;
  {
    std::lock_guard lock(mutex_);
    if (node_status_) node = node_status_();
  }
  std::ostringstream j;
  j << "{\"node\":\"" << json_escape(options_.node_name) << "\",\"pid\":" << ::getpid() << ",\"instance\":\""
    << instance_token_ << "\",\"time\":" << std::time(nullptr);
  if (!node.empty()) j << ",\"timing\":{" << node << "}";
  if (!confinement_json_.empty()) j << ",\"confinement\":" << confinement_json_;
  j << ",\"slots\":[";
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const SlotStatus& s = slots[i];
    char restart[96];
    std::snprintf(restart, sizeof restart, "\"last_restart_ms\":%.3f,\"max_restart_ms\":%.3f",
                  s.last_restart_ms, s.max_restart_ms);
    j << (i ? "," : "") << "{\"name\":\"" << json_escape(s.name) << "\",\"kind\":\"" << s.kind
      << "\",\"state\":\"" << to_string(s.state) << "\",\"on_failure\":\"" << to_string(s.on_failure)
      << "\",\"output\":\"" << slot_output(s) << "\",\"blocks\":" << s.counters.blocks
      << ",\"deadline_misses\":" << s.counters.deadline_misses
      << ",\"bypassed_blocks\":" << s.counters.bypassed_blocks
      << ",\"sanitized_blocks\":" << s.counters.sanitized_blocks
      << ",\"passthrough_blocks\":" << s.counters.passthrough_blocks
      << ",\"recent_misses_ns\":" << times_json(s.counters.recent_miss_ns)
      << ",\"exceptions\":" << s.exceptions << ",\"restarts\":" << s.restarts << ",\"reloads\":" << s.reloads
      << ",\"crashes\":" << s.crashes << ",\"hangs\":" << s.hangs << ",\"demotions\":" << s.demotions
      << ",\"demoted\":" << (s.demoted ? "true" : "false") << ",\"pid\":" << s.pid << "," << restart
      << ",\"last_error\":\"" << json_escape(s.last_error) << "\"";
    j << ",\"mode\":\"" << s.mode << "\",\"pipeline_blocks\":" << s.pipeline_blocks
      << ",\"latency_frames\":" << s.latency_frames
      << ",\"schedule_fits\":" << (s.schedule_fits ? "true" : "false") << ",\"schedule\":\""
      << json_escape(s.schedule) << "\"}";
  }
  j << "]}\n";
  return j.str();
}

std::optional<std::string> Supervisor::set_param(const SandboxProcessor& slot, const ParamSetting& setting) {
  // The main thread never touches a sandbox, nor waits for the supervisor's tick: the change is
  // queued under a short lock and the supervisor thread woken to send it (apply_params()).
  const bool supervised = std::any_of(watches_.begin(), watches_.end(),
                                      [&](const auto& w) { return w->python && w->slot.sandbox == &slot; });
  if (!supervised) return std::string("not a supervised slot");
  {
    std::lock_guard lock(inbox_mutex_);
    for (const auto& [given_up, why] : given_up_)
      if (given_up == &slot) return why;
    param_inbox_.push_back({&slot, setting});
  }
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  return std::nullopt;
}

void Supervisor::apply_params() {
  std::vector<ParamRequest> inbox;
  {
    std::lock_guard lock(inbox_mutex_);
    inbox.swap(param_inbox_);
  }
  for (const auto& [slot, setting] : inbox) {
    for (auto& w : watches_) {
      if (w->slot.sandbox != slot || w->state == SlotState::failed || w->state == SlotState::bypassed)
        continue;
      if (w->state == SlotState::running && w->current && w->current->request_set_param(setting)) continue;
      // Restarting (or the socket is full): the next sandbox loads with it.
      auto it = std::find_if(w->params.begin(), w->params.end(),
                             [&](const ParamSetting& p) { return p.key == setting.key; });
      if (it != w->params.end()) {
        it->value = setting.value;
      } else {
        w->params.push_back(setting);
      }
    }
  }
}

void Supervisor::publish_given_up() {
  std::vector<std::pair<const SandboxProcessor*, std::string>> given_up;
  for (const auto& w : watches_) {
    if (w->python && (w->state == SlotState::failed || w->state == SlotState::bypassed))
      given_up.emplace_back(w->slot.sandbox,
                            w->name + " is " + std::string(to_string(w->state)) + ": " + w->last_error);
  }
  std::lock_guard lock(inbox_mutex_);
  given_up_.swap(given_up);
}

void Supervisor::set_schedule(const SandboxProcessor& slot, std::string_view mode, bool fits,
                              std::string why) {
  std::lock_guard lock(mutex_);
  for (auto& w : watches_) {
    if (w->slot.sandbox != &slot) continue;
    w->mode = mode;
    w->schedule_fits = fits;
    w->schedule = std::move(why);
  }
}

bool Supervisor::refresh(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable()) return true;
  const std::uint64_t target = ++refresh_wanted_;
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_, &one, sizeof one);
  return changed_.wait_for(lock, timeout, [&] { return refresh_done_ >= target; });
}

std::vector<double> Supervisor::restart_times_ms() const {
  std::lock_guard lock(mutex_);
  return restart_ms_;
}

bool Supervisor::settled_locked() const {
  for (const auto& w : watches_) {
    if (!w->python) continue;
    if (w->state == SlotState::starting || w->state == SlotState::restarting) return false;
    if (w->state == SlotState::running && w->current && w->slot.sandbox->link_failed() &&
        w->slot.sandbox->active_generation() == w->current->generation()) {
      return false;  // broken, not dealt with yet
    }
  }
  return true;
}

bool Supervisor::wait_settled(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable()) return true;
  return changed_.wait_for(lock, timeout, [this] { return settled_locked(); });
}

void Supervisor::write_status_file() {
  if (options_.status_file.empty()) return;
  const std::string text = status_json();
  std::error_code ec;
  std::filesystem::create_directories(options_.status_file.parent_path(), ec);
  const std::filesystem::path tmp = options_.status_file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) return;
    out << text;
    if (!out) return;
  }
  std::filesystem::rename(tmp, options_.status_file, ec);
}

// ---------------------------------------------------------------------------------------------

namespace {

/// Spawns a sandbox for a restart or a spare; nullptr (and the reason in `error`) on failure.
std::unique_ptr<SandboxInstance> spawn_instance(const SandboxLaunch& launch, std::uint64_t generation,
                                                std::string& error) {
  try {
    return SandboxInstance::spawn(launch, generation);
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}

/// A real-time sandbox busy in one block for this long (or half its hang timeout, if shorter)
/// runs without its priority until it answers. At SCHED_FIFO a runaway would take its CPU until
/// the kernel's RT throttling (950 ms in every second) stops every real-time thread there, the
/// graph's with it: a dropped cycle for a plugin that was only slow.
constexpr std::chrono::milliseconds max_realtime_stall{250};

}  // namespace

void Supervisor::run() {
  auto last_status = Clock::time_point{};
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_, POLLIN, 0});
    for (const auto& w : watches_) {
      for (SandboxInstance* c : {w->current.get(), w->spare.get(), w->pending.get(), w->reloading.get()}) {
        if (c == nullptr) continue;
        if (!c->eof() && c->protocol_error().empty()) fds.push_back({c->control_fd(), POLLIN, 0});
        if (!c->reaped() && c->pidfd() >= 0) fds.push_back({c->pidfd(), POLLIN, 0});
      }
    }
    if (requests_)
      for (const int fd : requests_->fds()) fds.push_back({fd, POLLIN, 0});
    const int ms = static_cast<int>(options_.tick.count());
    if (::poll(fds.data(), fds.size(), ms) < 0 && errno != EINTR) break;
    if ((fds[0].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      (void)!::read(wake_fd_, &count, sizeof count);
    }
    const auto now = Clock::now();
    bool stop = false;
    bool dirty = false;
    {
      std::lock_guard lock(mutex_);
      stop = stop_;
      if (!stop && requests_)
        for (const auto& request : requests_->service()) handle_request(request, now);
      if (!stop) apply_params();
      if (!stop) dirty = tick(now);
      if (!stop) publish_given_up();
    }
    changed_.notify_all();
    if (stop) break;
    if (dirty || now - last_status >= std::chrono::seconds(1)) {
      last_status = now;
      write_status_file();
    }
  }
  // Shut down here: a sandbox this thread spawned dies with it (PR_SET_PDEATHSIG follows the
  // thread), so it gets its clean shutdown before the thread ends.
  for (auto& w : watches_) {
    w->reload_requests.insert(w->reload_requests.end(), w->queued_requests.begin(), w->queued_requests.end());
    w->queued_requests.clear();
    answer_reload(*w, false, w->name + ": the node is stopping");
    w->spare.reset();
    w->pending.reset();
    w->current.reset();
  }
  requests_.reset();
  write_status_file();
}

void Supervisor::answer_reload(Watch& w, bool ok, const std::string& text) {
  for (const std::uint64_t id : w.reload_requests)
    if (requests_) requests_->reply(id, ok, text);
  w.reload_requests.clear();
  w.switch_generation = 0;
}

void Supervisor::begin_reload(Watch& w, Clock::time_point now) {
  // Ask the running version for its state now, so the new one continues from here.
  std::error_code ec;
  const auto time = std::filesystem::last_write_time(w.launch.file, ec);
  if (!ec) w.file_time = time;  // a watched file does not reload a second time for this change
  w.reload_wanted = true;
  w.reload_state_fresh = false;
  w.reload_asked = now;
  w.current->request_async(SandboxInstance::Request::state);
}

void Supervisor::handle_request(const RequestServer::Request& request, Clock::time_point now) {
  constexpr std::string_view verb = "reload ";
  if (!request.line.starts_with(verb)) {
    requests_->reply(request.id, false,
                     "unknown request \"" + request.line + "\" (this node knows: reload SLOT)");
    return;
  }
  const std::string slot = request.line.substr(verb.size());
  Watch* found = nullptr;
  std::string names;
  for (auto& w : watches_) {
    names += (names.empty() ? "" : ", ") + w->name + (w->python ? " (python)" : " (native)");
    if (w->name == slot) found = w.get();
  }
  const std::string node = options_.node_name.empty() ? "the node" : "node \"" + options_.node_name + "\"";
  if (found == nullptr) {
    requests_->reply(request.id, false, node + " has no slot \"" + slot + "\" (slots: " + names + ")");
    return;
  }
  Watch& w = *found;
  if (!w.python) {
    requests_->reply(request.id, false,
                     slot +
                         " is a native plugin: it is loaded once, only Python slots reload (restart the node "
                         "to load a new build)");
    return;
  }
  if (w.state != SlotState::running || !w.current) {
    requests_->reply(request.id, false,
                     slot + " is " + std::string(to_string(w.state)) + ", a reload needs a running version" +
                         (w.last_error.empty() ? std::string() : ": " + w.last_error));
    return;
  }
  if (w.reloading || w.switch_generation != 0) {
    // A load already sent read the file before this request: it gets the next reload.
    w.queued_requests.push_back(request.id);
    return;
  }
  w.reload_requests.push_back(request.id);
  if (!w.reload_wanted) begin_reload(w, now);  // else one is about to load: it reads the file now
}

void Supervisor::demote_while_stuck(Watch& w, SandboxInstance& c, std::uint64_t age_ns, Clock::time_point now,
                                    bool& state_changed) {
  if (w.launch.rt_priority <= 0) return;
  const auto limit = std::min<std::chrono::milliseconds>(w.hang_timeout / 2, max_realtime_stall);
  const bool stuck = age_ns > static_cast<std::uint64_t>(std::chrono::nanoseconds(limit).count()) &&
                     now - w.progress_at > limit;
  if (stuck == c.demoted()) return;
  if (stuck) {
    set_sandbox_priority(c.pid(), 0);
    ++w.demotions;
    options_.log(w.name, SandboxLogLevel::warning,
                 "busy in one block for over " + std::to_string(limit.count()) +
                     " ms: runs without real-time priority until it answers (the hang watchdog ends it at " +
                     std::to_string(w.hang_timeout.count()) + " ms)");
  } else {
    set_sandbox_priority(c.pid(), w.launch.rt_priority);
    options_.log(w.name, SandboxLogLevel::info, "answering again: real-time priority restored");
  }
  c.set_demoted(stuck);
  state_changed = true;
}

void Supervisor::reload_tick(Watch& w, Clock::time_point now, bool& state_changed) {
  SandboxProcessor& proc = *w.slot.sandbox;
  // The version a reload replaced goes once the RT side let go of its link.
  if (w.retiring && !proc.handing_over() && proc.active_generation() != w.retiring->generation()) {
    w.retiring->kill_and_reap();
    w.retiring.reset();
  }
  if (w.state != SlotState::running || !w.current) {  // a crash: the restart path has it
    if (w.reloading) w.reloading->kill_and_reap();
    w.reloading.reset();
    w.reload_wanted = false;
    w.reload_requests.insert(w.reload_requests.end(), w.queued_requests.begin(), w.queued_requests.end());
    w.queued_requests.clear();
    if (!w.reload_requests.empty())
      answer_reload(w, false,
                    w.name + ": the sandbox died during the reload (" + w.last_error + "); it is " +
                        std::string(to_string(w.state)));
    return;
  }
  if (w.switch_generation != 0) {
    // Swapped in: answer once the RT side plays the new version (or says why it cannot yet).
    const std::string who =
        w.name + " reloaded from " + w.launch.file.string() + " (pid " + std::to_string(w.pid) + ")";
    if (proc.active_generation() == w.switch_generation && !proc.handing_over()) {
      answer_reload(w, true, who + ": the new version is playing");
    } else if (now - w.switch_since > std::chrono::seconds(2)) {
      answer_reload(w, true,
                    who +
                        ": the new version is loaded; the node is not processing audio now, it takes over "
                        "at the next cycle");
    }
  }
  if (!w.queued_requests.empty() && w.reload_requests.empty() && !w.reload_wanted && !w.reloading &&
      w.switch_generation == 0) {
    w.reload_requests = std::exchange(w.queued_requests, {});
    begin_reload(w, now);
  }
  if (w.slot.reload && !w.reload_wanted && !w.reloading && now >= w.next_file_check) {
    w.next_file_check = now + std::chrono::milliseconds(250);
    std::error_code ec;
    const auto time = std::filesystem::last_write_time(w.launch.file, ec);
    if (!ec && time != w.file_time) begin_reload(w, now);
  }
  if (w.reload_wanted && !w.reloading &&
      (w.reload_state_fresh || now - w.reload_asked > std::chrono::milliseconds(500))) {
    w.reload_wanted = false;
    std::string error;
    // The spare imported the file when it started; the sandbox imports it again if it changed
    // since (it compares the contents), so the reload runs the new code either way.
    if (w.spare && !w.spare->gone() && w.spare->phase() != SandboxInstance::Phase::failed) {
      w.reloading = std::move(w.spare);
    } else {
      w.reloading = spawn_instance(w.launch, w.next_generation++, error);
    }
    if (!w.reloading) {
      w.last_error = "reload: cannot start a sandbox: " + error;
      options_.log(w.name, SandboxLogLevel::error, w.last_error + "; the running version stays");
      answer_reload(w, false, w.name + ": " + w.last_error + "; the running version stays");
      state_changed = true;
      return;
    }
    w.reloading->set_params(w.params);
    w.reloading->send_load(w.saved_state);
  }
  if (!w.reloading) return;
  SandboxInstance& r = *w.reloading;
  r.advance();
  std::string refusal;
  if (r.phase() == SandboxInstance::Phase::failed || r.gone()) {
    refusal = r.phase() == SandboxInstance::Phase::failed ? r.failure() : "sandbox " + r.gone_reason();
  } else if (r.phase() == SandboxInstance::Phase::loaded &&
             r.info().latency != proc.plugin_latency_frames()) {
    // The output is aligned for the slot's latency: another one would shift it.
    refusal = "the new version reports a latency of " + std::to_string(r.info().latency) +
              " frames, the running one " + std::to_string(proc.plugin_latency_frames()) +
              " (a reload cannot change it: restart the node)";
  }
  if (!refusal.empty()) {
    w.last_error = "reload failed, the running version stays: " + refusal;
    options_.log(w.name, SandboxLogLevel::error, w.last_error);
    answer_reload(w, false, w.name + ": " + w.last_error);
    r.kill_and_reap();
    w.reloading.reset();
    state_changed = true;
    return;
  }
  if (r.phase() != SandboxInstance::Phase::loaded) return;
  if (w.retiring) {
    // The previous version is not taken in yet. Handing over: that takes a few blocks, wait.
    // Still only offered (the graph does not run the node): take it back, it never played.
    std::unique_ptr<SandboxLink> back = proc.withdraw_link();
    if (!back) return;
    if (w.switch_generation != 0)
      answer_reload(w, true,
                    w.name + " reloaded, then replaced by a newer version before the node processed audio");
    w.current->kill_and_reap();
    w.current.reset();  // before its link: it points into the link's endpoint
    back.reset();
    w.current = std::move(w.retiring);
    w.current->set_notify_endpoint(std::exchange(w.retiring_endpoint, nullptr));
    w.reloads -= 1;
    w.pid = w.current->pid();
  }
  proc.collect_retired_links();
  if (!proc.replace_link(r.take_link(), LinkSwap::reload)) return;  // an offer still pending: next tick
  // The RT side takes the new version in at its next block: both run until it crossfades from
  // the old one's output to the new one's; the old one is stopped once it let go of its link.
  w.retiring = std::move(w.current);
  w.retiring_endpoint = w.retiring->notify_endpoint();  // its link goes with the switch
  w.retiring->set_notify_endpoint(nullptr);
  w.current = std::move(w.reloading);
  w.pid = w.current->pid();
  w.reloads += 1;
  w.progress_at = now;
  w.answered_hint = 0;  // the new endpoint counts from zero
  w.last_poll = now;
  w.process_errors_seen = w.current->process_errors();
  w.switch_generation = w.current->generation();
  w.switch_since = now;
  state_changed = true;
  options_.log(w.name, SandboxLogLevel::info,
               "reloaded " + w.launch.file.filename().string() + " (pid " + std::to_string(w.pid) + ")");
}

bool Supervisor::tick(Clock::time_point now) {
  bool state_changed = false;
  for (auto& wp : watches_) {
    Watch& w = *wp;
    if (!w.python) continue;
    SandboxProcessor& proc = *w.slot.sandbox;
    proc.collect_retired_links();

    // ---- the sandbox in use -----------------------------------------------------------------
    if (w.state == SlotState::running && w.current) {
      SandboxInstance& c = *w.current;
      c.advance();
      if (c.process_errors() != w.process_errors_seen) {
        w.process_errors_seen = c.process_errors();
        w.last_error = c.last_process_error();
        // Repeats of an error come without their traceback: the first keeps it.
        if (w.first_error.empty()) w.first_error = c.first_process_error();
      }
      if (auto stats = c.take_async_stats()) w.exceptions_now = stats->exceptions;
      w.exceptions_now = std::max(w.exceptions_now, c.process_errors());  // reports arrive first
      if (auto state = c.take_async_state()) {
        w.saved_state = std::move(*state);
        w.reload_state_fresh = w.reload_wanted;
      }
      bool read_back = false;
      for (auto& [setting, refusal, value] : c.take_param_results()) {
        if (value) {
          read_backs_.push_back({&proc, setting.key, *value});
          read_back = true;
        }
        if (refusal) {
          options_.log(w.name, SandboxLogLevel::error, "set " + setting.key + " refused: " + *refusal);
          continue;
        }
        auto it = std::find_if(w.params.begin(), w.params.end(),
                               [&](const ParamSetting& p) { return p.key == setting.key; });
        if (it != w.params.end()) {
          it->value = setting.value;
        } else {
          w.params.push_back(setting);
        }
        w.last_poll = Clock::time_point{};  // the state after a change: ask for it now
      }
      if (read_back && read_back_listener_) read_back_listener_();

      std::string reason;
      bool hang = false;
      // The RT side's link state is this sandbox's only once it adopted its link (at its next
      // call after replace_link); until then it still describes the dead one.
      const bool adopted = proc.active_generation() == c.generation();
      const std::uint64_t age = adopted ? proc.oldest_outstanding_age_ns(shm::now_ns()) : 0;
      if (c.notify_endpoint() != nullptr) {
        // The sandbox's claims count only when they fit the host's own count of submitted jobs:
        // a sandbox scribbling over its ring indices cannot hold the watchdog off (it did, 4 s for
        // a 1 s timeout), so the timeout runs from the host's own submit time (`age`).
        const std::uint32_t answered = c.notify_endpoint()->answered_hint();
        const std::uint32_t submitted = c.notify_endpoint()->submitted_count();
        const bool plausible = answered - w.answered_hint <= submitted - w.answered_hint;
        if (plausible && (answered != w.answered_hint || answered == submitted)) {
          w.progress_at = now;
          w.answered_hint = answered;
        }
      } else {
        w.progress_at = now;
      }
      // A process that dies closes its socket as it exits: give the exit a moment to show, so
      // the reason names the signal or status rather than the EOF.
      if (c.eof() && !c.reaped()) c.wait_exit(Clock::now() + std::chrono::milliseconds(50));
      if (c.poll_exit()) {
        reason = "sandbox " + describe_exit(c.exit_status());
      } else if (!c.protocol_error().empty()) {
        reason = "broke the control protocol (" + c.protocol_error() + ")";
      } else if (c.eof()) {
        reason = "closed its control socket";
      } else if (adopted && proc.link_failed()) {
        reason = "broke the block protocol on the shared segment (corrupt ring or completion)";
      } else if (age > static_cast<std::uint64_t>(std::chrono::nanoseconds(w.hang_timeout).count()) &&
                 now - w.progress_at > w.hang_timeout) {
        hang = true;
        reason = "did not finish a block for " + std::to_string(age / 1'000'000) + " ms (timeout " +
                 std::to_string(w.hang_timeout.count()) + " ms): killed";
      }
      if (!reason.empty()) {
        proc.mark_link_dead();  // the RT side stops waiting at once, goes dry (or mute)
        w.died_at = now;
        c.kill_and_reap();
        w.exceptions_before += w.exceptions_now;
        w.exceptions_now = 0;
        w.current.reset();
        w.pid = -1;
        (hang ? w.hangs : w.crashes) += 1;
        w.last_error = reason;
        w.failures.push_back(now);
        while (!w.failures.empty() && now - w.failures.front() > options_.restart_window)
          w.failures.pop_front();
        state_changed = true;
        if (w.failures.size() > options_.max_restarts) {
          w.state = SlotState::bypassed;
          w.spare.reset();
          options_.log(w.name, SandboxLogLevel::error,
                       reason + "; " + std::to_string(w.failures.size()) + " failures within " +
                           std::to_string(options_.restart_window.count() / 1000) +
                           " s: giving up, the slot stays " +
                           (w.slot.on_failure == OnFailure::mute ? "muted (silent)" : "bypassed"));
        } else {
          w.state = SlotState::restarting;
          w.next_attempt = now + backoff(w.failures.size());
          options_.log(w.name, SandboxLogLevel::error, reason + "; restarting it");
        }
      } else {
        demote_while_stuck(w, c, age, now, state_changed);
        if (now - w.last_poll >= options_.state_poll) {
          // The state restored after a crash, and the exception count, kept fresh while it runs.
          w.last_poll = now;
          c.request_async(SandboxInstance::Request::state);
          c.request_async(SandboxInstance::Request::stats);
        }
      }
    }

    // ---- hot reload: a new version of the file beside the running one -----------------------
    reload_tick(w, now, state_changed);

    // ---- bringing a new one up --------------------------------------------------------------
    if (w.state == SlotState::restarting) {
      if (!w.pending && !w.unclaimed_link && now >= w.next_attempt) {
        std::string error;
        if (w.spare && !w.spare->gone() && w.spare->phase() != SandboxInstance::Phase::failed) {
          w.pending = std::move(w.spare);
          // Spares start at normal priority: their interpreter's start-up (numpy's import, a few
          // hundred ms of CPU) must not compete with the sandboxes serving audio meanwhile.
          if (w.launch.rt_priority > 0) set_sandbox_priority(w.pending->pid(), w.launch.rt_priority);
        } else {
          w.spare.reset();
          w.pending = spawn_instance(w.launch, w.next_generation++, error);
        }
        if (w.pending) {
          w.pending->set_params(w.params);
          w.pending->send_load(w.saved_state);
        } else {
          w.last_error = "cannot start a sandbox: " + error;
          w.failures.push_back(now);
          w.next_attempt = now + backoff(w.failures.size());
        }
      }
      if (w.pending) {
        SandboxInstance& p = *w.pending;
        p.advance();
        if (p.phase() == SandboxInstance::Phase::loaded) {
          if (p.info().latency != proc.plugin_latency_frames()) {
            options_.log(w.name, SandboxLogLevel::warning,
                         "the restarted plugin reports a latency of " + std::to_string(p.info().latency) +
                             " frames; the slot keeps " + std::to_string(proc.plugin_latency_frames()));
          }
          w.unclaimed_link = p.take_link();
          w.current = std::move(w.pending);
        } else if (p.phase() == SandboxInstance::Phase::failed || p.gone()) {
          std::string why =
              p.phase() == SandboxInstance::Phase::failed ? p.failure() : "sandbox " + p.gone_reason();
          p.kill_and_reap();
          w.pending.reset();
          w.last_error = "restart failed: " + why;
          w.failures.push_back(now);
          while (!w.failures.empty() && now - w.failures.front() > options_.restart_window)
            w.failures.pop_front();
          state_changed = true;
          if (w.failures.size() > options_.max_restarts) {
            w.state = SlotState::bypassed;
            options_.log(w.name, SandboxLogLevel::error,
                         w.last_error + "; giving up, the slot stays " +
                             (w.slot.on_failure == OnFailure::mute ? "muted (silent)" : "bypassed"));
          } else {
            w.next_attempt = now + backoff(w.failures.size());
            options_.log(w.name, SandboxLogLevel::error, w.last_error + "; trying again");
          }
        }
      }
      if (w.unclaimed_link) {
        proc.collect_retired_links();
        if (proc.replace_link(std::move(w.unclaimed_link))) {
          const double ms = ms_between(w.died_at, Clock::now());
          w.state = SlotState::running;
          w.restarts += 1;
          w.pid = w.current->pid();
          w.last_restart_ms = ms;
          w.max_restart_ms = std::max(w.max_restart_ms, ms);
          w.last_poll = now;
          w.progress_at = now;  // the watchdog's clock starts again with this sandbox
          w.answered_hint = 0;
          w.process_errors_seen = w.current->process_errors();
          restart_ms_.push_back(ms);
          state_changed = true;
          char text[96];
          std::snprintf(text, sizeof text, "restarted (pid %d) in %.1f ms%s", static_cast<int>(w.pid), ms,
                        w.current->info().preloaded ? ", module imported ahead" : "");
          options_.log(w.name, SandboxLogLevel::info, text);
        } else {
          // An earlier offer the RT side has not taken yet (the graph is paused): replace_link
          // left the link with us; drop this sandbox and its link (the instance first: it points
          // into the link's endpoint) and try again later.
          w.current->kill_and_reap();
          w.current.reset();
          w.unclaimed_link.reset();
          w.next_attempt = now + std::chrono::seconds(1);
        }
      }
    }

    // ---- the spare ----------------------------------------------------------------------------
    if (w.spare) {
      w.spare->advance();
      if (w.spare->gone() || w.spare->phase() == SandboxInstance::Phase::failed) {
        options_.log(w.name, SandboxLogLevel::warning,
                     "spare sandbox failed: " +
                         (w.spare->failure().empty() ? w.spare->gone_reason() : w.spare->failure()));
        w.spare->kill_and_reap();
        w.spare.reset();
        w.next_spare = now + std::chrono::seconds(5);
      }
    }
    const bool want_spare =
        options_.keep_spare && (w.state == SlotState::running || w.state == SlotState::restarting);
    if (want_spare && !w.spare && !w.pending && now >= w.next_spare) {
      std::string error;
      SandboxLaunch spare_launch = w.launch;
      spare_launch.rt_priority = 0;  // until it takes over (set_sandbox_priority)
      w.spare = spawn_instance(spare_launch, w.next_generation++, error);
      // It imports the plugin module now: a restart (or reload) then only instantiates it.
      if (w.spare) w.spare->send_preload();
      if (!w.spare) {
        options_.log(w.name, SandboxLogLevel::warning, "cannot start a spare sandbox: " + error);
        w.next_spare = now + std::chrono::seconds(5);
      }
    }
    if (w.first_error.empty()) w.first_error = w.last_error;
  }
  // refresh(): ask every running sandbox for its stats, done once none is outstanding.
  if (refresh_wanted_ > refresh_asked_) {
    refresh_asked_ = refresh_wanted_;
    for (auto& w : watches_)
      if (w->python && w->state == SlotState::running && w->current)
        w->current->request_async(SandboxInstance::Request::stats);
  }
  if (refresh_asked_ > refresh_done_) {
    bool outstanding = false;
    for (auto& w : watches_) {
      if (!w->python || w->state != SlotState::running || !w->current) continue;
      outstanding = outstanding || w->current->awaiting(SandboxInstance::Request::stats);
    }
    if (!outstanding) refresh_done_ = refresh_asked_;
  }
  return state_changed;
}

std::filesystem::path status_file_path(std::string_view node_name) {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  const std::filesystem::path dir =
      (xdg != nullptr && *xdg != '\0')
          ? std::filesystem::path(xdg) / "sandpipe"
          : std::filesystem::path("/tmp") / ("sandpipe-" + std::to_string(::getuid()));
  return dir / (std::string(node_name) + ".status");
}

std::unique_ptr<Supervisor> supervise_chain(const ChainConfig& config,
                                            const std::vector<std::unique_ptr<Processor>>& slots,
                                            bool offline, SupervisorOptions options) {
  options.offline = offline;
  options.max_restarts = config.restart_max;
  options.restart_window =
      std::chrono::milliseconds(static_cast<std::int64_t>(config.restart_window_s * 1000.0));
  options.node_name = config.node_name;
  if (!offline && options.status_file.empty()) options.status_file = status_file_path(config.node_name);
  if (!offline && options.request_socket.empty())
    options.request_socket = request_socket_path(config.node_name);
  std::vector<SupervisedSlot> supervised;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    SupervisedSlot s;
    s.processor = slots[i].get();
    s.sandbox = dynamic_cast<SandboxProcessor*>(slots[i].get());
    if (i < config.plugins.size()) {
      // A sandbox knows its effective policy (an earlier-API plugin defaults to mute).
      s.on_failure = s.sandbox != nullptr ? s.sandbox->on_failure() : config.plugins[i].on_failure;
      s.timeout_ms = config.plugins[i].timeout_ms;
      s.reload = config.plugins[i].reload && !offline;
    }
    supervised.push_back(s);
  }
  return std::make_unique<Supervisor>(std::move(supervised), std::move(options));
}

}  // namespace sandpipe::host
