// The supervisor thread and its public face: construction, the round loop, and the requests
// other threads make. The transitions are in supervisor-states.cpp, hot reload in
// supervisor-reload.cpp, the snapshot and the status JSON in supervisor-status.cpp.
// See supervisor.h.
#include "host/python/supervisor.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "host/python/confinement-probe.h"
#include "host/python/supervisor-watch.h"

namespace sandpipe::host {

using Clock = std::chrono::steady_clock;

std::string detail::format_rate(double rate) {
  char text[32];
  std::snprintf(text, sizeof text, "%g Hz", rate);
  return text;
}

void Supervisor::Watch::stop_sandboxes() {
  for (auto* instance : {&reloading, &retiring, &spare, &pending, &current}) instance->reset();
  reload_link.reset();
  unclaimed_link.reset();
}

void Supervisor::Watch::remember_param(const ParamSetting& setting) {
  auto it = std::find_if(params.begin(), params.end(),
                         [&](const ParamSetting& p) { return p.key == setting.key && p.member == setting.member; });
  if (it != params.end()) {
    it->value = setting.value;
  } else {
    params.push_back(setting);
  }
}

Supervisor::Supervisor(std::vector<SupervisedSlot> slots,
                       std::vector<std::vector<std::unique_ptr<SandboxInstance>>> instances, SupervisorOptions options)
    : options_(std::move(options)) {
  if (!options_.log) options_.log = log_to_stderr;
  if (instances.size() != slots.size()) throw std::invalid_argument("Supervisor: one list of instances per slot");
  bool any_python = false;
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const SupervisedSlot& s = slots[i];
    const std::size_t stages = s.stages.empty() ? 1 : s.stages.size();
    instances[i].resize(std::max(instances[i].size(), stages));
    Watch* before = nullptr;
    std::uint32_t first_plugin = 0;  // a relay's: the stage's first plugin in the slot's params
    for (std::size_t k = 0; k < stages; ++k) {
      auto w = std::make_unique<Watch>();
      w->slot = s;
      w->slot_index = i;
      w->name = std::string(s.processor->name());
      double timeout_ms = s.timeout_ms;
      if (!s.stages.empty()) {
        // A relay: a watch per stage (a plugin or a sandbox group), each over the one slot.
        w->name = s.stages[k].name;
        w->slot.on_failure = s.stages[k].on_failure;
        w->slot.group = s.stages[k].group;
        w->slot.members = s.stages[k].members;
        w->slot.stages.clear();
        timeout_ms = s.stages[k].timeout_ms;
        w->relay_stage = static_cast<int>(k);
        w->relay_first_plugin = first_plugin;
        w->relay_before = before;
        w->relay_last = k + 1 == stages;
      }
      before = w.get();
      any_python |= adopt(*w, timeout_ms, std::move(instances[i][k]));
      first_plugin += w->plugin_count();  // adopt() listed a group's members
      watches_.push_back(std::move(w));
    }
  }
  schedules_.resize(watches_.size());
  start(any_python);
}

bool Supervisor::adopt(Watch& w, double timeout_ms, std::unique_ptr<SandboxInstance> instance) {
  const SupervisedSlot& s = w.slot;
  w.python = s.sandbox != nullptr;
  for (const auto& [name, on_failure] : s.members) w.members.push_back(MemberStatus{name, on_failure, 0, 0, 0, {}});
  w.member_exceptions_before.assign(w.members.size(), 0);
  if (!w.python) return false;
  if (s.reload && instance) w.file_times = detail::file_times(detail::followed_files(instance->launch()));
  w.hang_timeout = timeout_ms > 0.0 ? std::chrono::milliseconds(static_cast<std::int64_t>(timeout_ms))
                                    : options_.default_hang_timeout;
  // From now on only the supervisor thread talks to the sandbox.
  w.current = std::move(instance);
  if (!w.current) {
    w.state = SlotState::failed;
    return true;
  }
  w.launch = w.current->launch();
  w.params = w.current->params();
  w.pid = w.current->pid();
  if (w.current->phase() == SandboxInstance::Phase::loading) w.state = SlotState::starting;
  if (w.current->phase() == SandboxInstance::Phase::failed) {
    w.state = SlotState::failed;
    w.last_error = w.current->failure();
    w.first_error = w.last_error;
    w.pid = -1;
  }
  return true;
}

void Supervisor::start(bool any_python) {
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
  publish();  // before the thread: status() and set_param() see every slot from the start
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
  wake_fd_ = kj::AutoCloseFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (wake_fd_.get() < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
  thread_ = std::thread([this] { run(); });
}

Supervisor::~Supervisor() {
  if (thread_.joinable()) {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake();
    thread_.join();
  }
  if (!options_.status_file.empty() && detail::status_file_is_ours(options_.status_file, instance_token_)) {
    std::error_code ec;
    std::filesystem::remove(options_.status_file, ec);
  }
}

namespace detail {

std::vector<std::filesystem::path> followed_files(const SandboxLaunch& launch) {
  if (launch.members.empty()) return {launch.file};
  std::vector<std::filesystem::path> out;
  for (const GroupMemberLaunch& member : launch.members)
    if (member.reload) out.push_back(member.file);
  return out;
}

std::vector<std::filesystem::file_time_type> file_times(const std::vector<std::filesystem::path>& files) {
  std::vector<std::filesystem::file_time_type> out;
  for (const auto& file : files) {
    std::error_code ec;
    const auto time = std::filesystem::last_write_time(file, ec);
    out.push_back(ec ? std::filesystem::file_time_type::min() : time);
  }
  return out;
}

}  // namespace detail

void Supervisor::wake() const noexcept {
  const std::uint64_t one = 1;
  (void)!::write(wake_fd_.get(), &one, sizeof one);
}

// ---- requests from other threads: a short lock, then the supervisor thread is woken ---------

std::optional<std::string> Supervisor::set_param(const PythonSlot& slot, const ParamSetting& setting) {
  // The main thread never touches a sandbox, nor waits for the supervisor's round: the change
  // is queued under a short lock and the supervisor thread woken to send it (apply_params()).
  const auto it = std::find_if(watches_.begin(), watches_.end(),
                               [&](const auto& w) { return takes_param(*w, &slot, setting.member); });
  if (it == watches_.end()) return std::string("not a supervised slot");
  const auto index = static_cast<std::size_t>(it - watches_.begin());
  {
    std::lock_guard lock(mutex_);
    const SlotStatus& s = published_.at(index);
    if (s.state == SlotState::failed || s.state == SlotState::bypassed)
      return s.name + " is " + std::string(to_string(s.state)) + ": " + s.last_error;
    param_inbox_.push_back({&slot, setting});
  }
  wake();
  return std::nullopt;
}

void Supervisor::set_sample_rate(double rate) {
  {
    std::lock_guard lock(mutex_);
    rate_inbox_ = rate;
  }
  if (thread_.joinable()) wake();
}

void Supervisor::rebind_slots(const std::vector<std::shared_ptr<Processor>>& slots) {
  if (watches_.empty() ? !slots.empty() : slots.size() != watches_.back()->slot_index + 1)
    throw std::invalid_argument("rebind_slots: another chain");
  for (const auto& w : watches_) {
    Processor* now = slots[w->slot_index].get();
    if (w->python != (dynamic_cast<PythonSlot*>(now) != nullptr) || (w->python && now != w->slot.processor))
      throw std::invalid_argument("rebind_slots: a Python slot is not the one supervised");
  }
  std::lock_guard lock(mutex_);
  for (auto& w : watches_) w->slot.processor = slots[w->slot_index].get();
}

bool Supervisor::takes_param(const Watch& w, const PythonSlot* slot, std::uint32_t member) noexcept {
  if (!w.python || w.slot.sandbox != slot) return false;
  if (w.relay_stage < 0) return true;
  return member >= w.relay_first_plugin && member - w.relay_first_plugin < w.plugin_count();
}

void Supervisor::set_schedule(const PythonSlot& slot, std::string_view mode, bool fits,
                              std::string why) {
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < watches_.size(); ++i) {
    if (watches_[i]->slot.sandbox != &slot) continue;
    schedules_[i] = {std::string(mode), fits, why};
  }
}

bool Supervisor::refresh(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable()) return true;
  const std::uint64_t target = ++refresh_wanted_;
  wake();
  return changed_.wait_for(lock, timeout, [&] { return refresh_done_ >= target; });
}

bool Supervisor::settled_locked() const {
  for (std::size_t i = 0; i < watches_.size(); ++i) {
    const Watch& w = *watches_[i];
    if (!w.python) continue;
    const SlotState state = published_[i].state;
    if (state == SlotState::starting || state == SlotState::restarting) return false;
    // The link state is the RT side's, read live: a block just processed may have broken it.
    const std::uint64_t generation = published_generation_[i];
    if (state == SlotState::running && generation != 0 && w.slot.sandbox->link_failed() &&
        w.slot.sandbox->active_generation() == generation) {
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

std::vector<double> Supervisor::restart_times_ms() const {
  std::lock_guard lock(mutex_);
  return restart_ms_;
}

std::vector<Supervisor::ReadBack> Supervisor::take_read_backs() {
  std::lock_guard lock(mutex_);
  return std::exchange(read_backs_, {});
}

void Supervisor::set_read_back_listener(std::function<void()> fn) {
  std::lock_guard lock(mutex_);
  read_back_listener_ = std::move(fn);
}

void Supervisor::set_node_status(std::function<std::string()> fn) {
  std::lock_guard lock(mutex_);
  node_status_ = std::move(fn);
}

// ---- the supervisor thread ---------------------------------------------------------------------

Supervisor::Inbox Supervisor::take_inbox() {
  Inbox inbox;
  std::lock_guard lock(mutex_);
  inbox.stop = stop_;
  inbox.params.swap(param_inbox_);
  inbox.sample_rate = std::exchange(rate_inbox_, 0.0);
  inbox.refresh_wanted = refresh_wanted_;
  return inbox;
}

void Supervisor::apply_params(const std::vector<ParamRequest>& params) {
  for (const auto& [slot, setting] : params) {
    for (auto& w : watches_) {
      if (!takes_param(*w, slot, setting.member) || w->state == SlotState::failed ||
          w->state == SlotState::bypassed)
        continue;
      ParamSetting own = setting;
      // A relay's stage: a plugin of its own in its sandbox (0), or a group's member.
      if (w->relay_stage >= 0) own.member = setting.member - w->relay_first_plugin;
      if (w->state == SlotState::running && w->current && w->current->request_set_param(own)) continue;
      w->remember_param(own);  // restarting (or the socket is full): the next sandbox loads with it
    }
  }
}

void Supervisor::apply_rate(double rate) {
  for (auto& w : watches_) {
    if (!w->python || w->launch.sample_rate == rate) continue;
    w->launch.sample_rate = rate;
    if (w->state == SlotState::running && w->current)
      options_.log(w->name, SandboxLogLevel::info,
                   "the graph runs at " + detail::format_rate(rate) + " now: its sandbox (pid " +
                       std::to_string(w->current->pid()) + ") prepares the plugin for it");
  }
}

void Supervisor::run() {
  auto last_status = Clock::time_point{};
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({wake_fd_.get(), POLLIN, 0});
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
      (void)!::read(wake_fd_.get(), &count, sizeof count);
    }
    const auto now = Clock::now();
    const Inbox inbox = take_inbox();
    if (inbox.stop) break;
    // No lock from here to publish(): every sandbox is this thread's.
    if (requests_)
      for (const auto& request : requests_->service()) handle_request(request, now);
    if (inbox.sample_rate > 0.0) apply_rate(inbox.sample_rate);
    apply_params(inbox.params);
    const bool dirty = tick(now);
    track_refresh(inbox.refresh_wanted);
    publish();
    if (dirty || now - last_status >= std::chrono::seconds(1)) {
      last_status = now;
      write_status_file();
    }
  }
  shut_down();
}

void Supervisor::shut_down() {
  // A sandbox this thread spawned dies with it (PR_SET_PDEATHSIG follows the thread), so it
  // gets its clean shutdown here, before the thread ends.
  for (auto& w : watches_) {
    w->reload_requests.insert(w->reload_requests.end(), w->queued_requests.begin(), w->queued_requests.end());
    w->queued_requests.clear();
    answer_reload(*w, false, w->name + ": the node is stopping");
    w->stop_sandboxes();
  }
  requests_.reset();
  publish();
  write_status_file();
}

std::filesystem::path status_file_path(std::string_view node_name) {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  const std::filesystem::path dir =
      (xdg != nullptr && *xdg != '\0')
          ? std::filesystem::path(xdg) / "sandpipe"
          : std::filesystem::path("/tmp") / ("sandpipe-" + std::to_string(::getuid()));
  return dir / (std::string(node_name) + ".status");
}

namespace {

/// A sandbox group's members' names and effective on-failure (`info`: the group's, once loaded).
std::vector<std::pair<std::string, OnFailure>> group_members(const PluginSpec& group,
                                                             const PythonPluginInfo& info) {
  std::vector<std::pair<std::string, OnFailure>> out;
  for (std::size_t m = 0; m < group.members.size(); ++m) {
    const PythonPluginInfo* own = m < info.members.size() ? &info.members[m] : nullptr;
    out.emplace_back(group.members[m].name,
                     effective_on_failure(group.members[m], own != nullptr ? own->api : "",
                                          own != nullptr ? own->role : ""));
  }
  return out;
}

}  // namespace

std::unique_ptr<Supervisor> supervise_chain(const ChainConfig& config,
                                            const std::vector<std::shared_ptr<Processor>>& slots,
                                            std::vector<std::vector<std::unique_ptr<SandboxInstance>>> instances,
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
    s.sandbox = dynamic_cast<PythonSlot*>(slots[i].get());
    if (i < config.plugins.size()) {
      // A sandbox knows its effective policy (an earlier-API plugin defaults to mute).
      s.on_failure = s.sandbox != nullptr ? s.sandbox->on_failure() : config.plugins[i].on_failure;
      s.timeout_ms = config.plugins[i].timeout_ms;
      s.reload = config.plugins[i].reload && !offline;
      const PluginSpec& spec = config.plugins[i];
      if (is_relay(spec) && s.sandbox != nullptr) {
        const auto& infos = s.sandbox->info().members;
        const PythonPluginInfo unknown{};
        for (std::size_t k = 0; k < spec.stages.size(); ++k) {
          const PluginSpec& stage = spec.stages[k];
          const PythonPluginInfo& own = k < infos.size() ? infos[k] : unknown;
          SupervisedSlot::Stage& st = s.stages.emplace_back();
          st.name = stage.name;
          st.on_failure = slot_on_failure(stage, own);
          st.timeout_ms = stage.timeout_ms;
          if (is_group(stage)) {
            st.group = stage.sandbox;
            st.members = group_members(stage, own);
          }
        }
      }
      if (is_group(spec) && s.sandbox != nullptr) {
        s.group = spec.sandbox;
        s.members = group_members(spec, s.sandbox->info());
      }
    }
    supervised.push_back(s);
  }
  return std::make_unique<Supervisor>(std::move(supervised), std::move(instances), std::move(options));
}

}  // namespace sandpipe::host
