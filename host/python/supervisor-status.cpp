// What the supervisor shows: the snapshot its thread publishes once per round, the copies other
// threads take of it, and the status JSON (the status file, `sandpipe status`). See supervisor.h.
#include <unistd.h>

#include <cmath>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <system_error>
#include <utility>

#include "host/python/supervisor-watch.h"
#include "host/slot/recent-times.h"

namespace sandpipe::host {

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

using Json = nlohmann::ordered_json;

/// What the slot passes on now: "processed" while its plugin runs (or is being restarted), or,
/// once given up on (or never loaded), "silent" (on-failure = "mute") or "dry".
std::string_view slot_output(const SlotStatus& s) noexcept {
  if (s.state != SlotState::failed && s.state != SlotState::bypassed) return "processed";
  return s.on_failure == OnFailure::mute ? "silent" : "dry";
}

/// Milliseconds as the status has always written them: three decimals.
double three_decimals(double ms) { return std::round(ms * 1000.0) / 1000.0; }

/// One slot's object; the member order is the file's (tests and scripts search its text).
Json slot_json(const SlotStatus& s) {
  Json slot{
      {"name", s.name},
      {"kind", s.kind},
      {"state", std::string(to_string(s.state))},
      {"on_failure", std::string(to_string(s.on_failure))},
      {"output", std::string(slot_output(s))},
      {"blocks", s.counters.blocks},
      {"deadline_misses", s.counters.deadline_misses},
      {"bypassed_blocks", s.counters.bypassed_blocks},
      {"sanitized_blocks", s.counters.sanitized_blocks},
      {"passthrough_blocks", s.counters.passthrough_blocks},
      {"recent_misses_ns", times_array(s.counters.recent_miss_ns)},
      {"exceptions", s.exceptions},
      {"restarts", s.restarts},
      {"reloads", s.reloads},
      {"crashes", s.crashes},
      {"hangs", s.hangs},
      {"demotions", s.demotions},
      {"demoted", s.demoted},
      {"pid", s.pid},
      {"last_restart_ms", three_decimals(s.last_restart_ms)},
      {"max_restart_ms", three_decimals(s.max_restart_ms)},
      {"last_error", s.last_error},
      {"mode", s.mode},
      {"pipeline_blocks", s.pipeline_blocks},
      {"latency_frames", s.latency_frames},
      {"schedule_fits", s.schedule_fits},
      {"schedule", s.schedule},
  };
  if (!s.relay.empty()) {
    slot["relay"] = s.relay;
    slot["relay_stage"] = s.relay_stage;
  }
  if (s.members.empty()) return slot;
  // A sandbox group's slot: one process and one hop for the plugins below, each with its own.
  slot["group"] = s.group;
  Json members = Json::array();
  for (const MemberStatus& m : s.members) {
    members.push_back(Json{{"name", m.name},
                           {"on_failure", std::string(to_string(m.on_failure))},
                           {"exceptions", m.exceptions},
                           {"process_ns", m.process_ns},
                           {"latency_frames", m.latency_frames},
                           {"last_error", m.last_error}});
  }
  slot["members"] = std::move(members);
  return slot;
}

/// `members` (JSON object members without the braces) as an object; null if they do not parse.
Json members_object(const std::string& members) {
  Json object = Json::parse("{" + members + "}", nullptr, false);
  return object.is_discarded() ? Json() : object;
}

}  // namespace

bool detail::status_file_is_ours(const std::filesystem::path& path, const std::string& instance_token) {
  std::ifstream in(path);
  const Json status = Json::parse(in, nullptr, false);
  return status.is_object() && status.value("instance", std::string()) == instance_token;
}

void Supervisor::publish() {
  std::vector<SlotStatus> slots;
  std::vector<std::uint64_t> generations;
  slots.reserve(watches_.size());
  generations.reserve(watches_.size());
  for (const auto& w : watches_) {
    SlotStatus s;
    s.name = w->name;
    s.kind = w->python ? "python" : "native";
    s.state = w->state;
    s.on_failure = w->slot.on_failure;
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
    s.group = w->slot.group;
    s.members = w->members;
    if (w->relay_stage >= 0) {
      s.relay = std::string(w->slot.processor->name());
      s.relay_stage = static_cast<std::uint32_t>(w->relay_stage);
    }
    if (w->current) {
      const auto& infos = w->current->info().members;
      for (std::size_t m = 0; m < s.members.size() && m < infos.size(); ++m)
        s.members[m].latency_frames = infos[m].latency;
    }
    slots.push_back(std::move(s));
    generations.push_back(w->current ? w->current->generation() : 0);
  }
  {
    std::lock_guard lock(mutex_);
    published_.swap(slots);
    published_generation_.swap(generations);
    refresh_done_ = refresh_answered_;
    restart_ms_.insert(restart_ms_.end(), new_restart_ms_.begin(), new_restart_ms_.end());
    const bool read_back = !new_read_backs_.empty();
    for (auto& r : new_read_backs_) read_backs_.push_back(std::move(r));
    // Called under the lock so that set_read_back_listener({}) returns only once it is done:
    // it only wakes the node's main loop.
    if (read_back && read_back_listener_) read_back_listener_();
  }
  new_restart_ms_.clear();
  new_read_backs_.clear();
  changed_.notify_all();
}

std::vector<SlotStatus> Supervisor::status() const {
  std::vector<SlotStatus> out;
  std::lock_guard lock(mutex_);  // a rate change's rebind_slots() may swap a native slot
  out = published_;
  // The RT side's part is read live: its counters are atomics, readable from any thread.
  for (std::size_t i = 0; i < out.size() && i < watches_.size(); ++i) {
    const SupervisedSlot& slot = watches_[i]->slot;
    SlotStatus& s = out[i];
    if (watches_[i]->relay_stage > 0) {
      s.mode = schedules_[i].mode;
      continue;  // the relay's counters, latency and schedule are on its first plugin's entry
    }
    s.counters = slot.processor->counters();
    s.latency_frames = slot.processor->latency_frames();
    if (slot.sandbox != nullptr) s.pipeline_blocks = slot.sandbox->pipeline_blocks();
    s.mode = schedules_[i].mode;
    s.schedule_fits = schedules_[i].fits;
    s.schedule = schedules_[i].why;
  }
  return out;
}

std::string Supervisor::status_json() const {
  const auto slots = status();
  std::string node;
  {
    // Under the lock: set_node_status({}) must not return while its function still runs.
    std::lock_guard lock(mutex_);
    if (node_status_) node = node_status_();
  }
  Json j = {{"node", options_.node_name}, {"pid", ::getpid()}, {"instance", instance_token_},
            {"time", static_cast<std::int64_t>(std::time(nullptr))}};
  if (!node.empty()) j["timing"] = members_object(node);
  if (!confinement_json_.empty()) j["confinement"] = Json::parse(confinement_json_, nullptr, false);
  Json array = Json::array();
  for (const SlotStatus& s : slots) array.push_back(slot_json(s));
  j["slots"] = std::move(array);
  // Plugin errors are whatever bytes the sandbox sent: never let one stop the status.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
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

}  // namespace sandpipe::host
