// Hot reload: a new version of a Python slot's file loaded beside the running one and handed
// over with a wet → wet crossfade, on a watched file's change or a `sandpipe reload` request.
// Each function runs on the supervisor thread, under no lock. See supervisor.h.
#include <algorithm>
#include <utility>

#include "host/python/supervisor-watch.h"

namespace sandpipe::host {

using Clock = std::chrono::steady_clock;

namespace {

/// The plugin's file (`full`: its path), or a sandbox group's "group g (a.py, b.py)".
std::string describe_files(const SandboxLaunch& launch, bool full) {
  if (launch.members.empty()) return full ? launch.file.string() : launch.file.filename().string();
  std::string files;
  for (const GroupMemberLaunch& m : launch.members)
    files += (files.empty() ? "" : ", ") + m.file.filename().string();
  return "group " + launch.name + " (" + files + ")";
}

}  // namespace

void Supervisor::answer_reload(Watch& w, bool ok, const std::string& text) {
  for (const std::uint64_t id : w.reload_requests)
    if (requests_) requests_->reply(id, ok, text);
  w.reload_requests.clear();
  w.switch_generation = 0;
}

void Supervisor::begin_reload(Watch& w, Clock::time_point now) {
  // Ask the running version for its state now, so the new one continues from here. A followed
  // file does not reload a second time for this change.
  if (w.slot.reload) {
    const auto times = detail::file_times(detail::followed_files(w.launch));
    for (std::size_t i = 0; i < times.size() && i < w.file_times.size(); ++i)
      if (times[i] != std::filesystem::file_time_type::min()) w.file_times[i] = times[i];
  }
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
  // A sandbox group reloads as a whole: by its name or any member's.
  Watch* found = nullptr;
  std::string names;
  for (auto& w : watches_) {
    names += (names.empty() ? "" : ", ") + w->name + (w->python ? " (python)" : " (native)");
    if (w->name == slot) found = w.get();
    for (const MemberStatus& m : w->members) {
      names += ", " + m.name + " (in " + w->name + ")";
      if (m.name == slot && found == nullptr) found = w.get();
    }
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
  if (w.relay_stage >= 0) {
    requests_->reply(request.id, false,
                     w.name + " is in relay " + std::string(w.slot.processor->name()) +
                         ": reload is not supported in a relay yet (give it mode = \"sync\" or \"auto\", or "
                         "pipeline.handoff = \"host\", to reload it)");
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

void Supervisor::reload_tick(Watch& w, Clock::time_point now, bool& state_changed) {
  PythonSlot& proc = *w.slot.sandbox;
  // The version a reload replaced goes once the RT side let go of its link.
  if (w.retiring && !proc.handing_over() && proc.active_generation() != w.retiring->generation()) {
    w.retiring->kill_and_reap();
    w.retiring.reset();
  }
  if (w.state != SlotState::running || !w.current) {  // a crash: the restart path has it
    if (w.reloading) w.reloading->kill_and_reap();
    w.reloading.reset();
    w.reload_link.reset();
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
        w.name + " reloaded from " + describe_files(w.launch, true) + " (pid " + std::to_string(w.pid) + ")";
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
    // A file that cannot be read now (an editor replacing it) is looked at again next time.
    const auto times = detail::file_times(detail::followed_files(w.launch));
    const bool readable =
        std::find(times.begin(), times.end(), std::filesystem::file_time_type::min()) == times.end();
    if (readable && times != w.file_times) begin_reload(w, now);
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
      w.reloading = detail::spawn_instance(w.launch, w.next_generation++, error);
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
    w.reloading.reset();  // before its link, if it was taken: it points into it
    w.reload_link.reset();
    state_changed = true;
    return;
  }
  if (r.phase() == SandboxInstance::Phase::loaded) switch_to_reloaded(w, now, state_changed);
}

void Supervisor::switch_to_reloaded(Watch& w, Clock::time_point now, bool& state_changed) {
  PythonSlot& proc = *w.slot.sandbox;
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
  // The link stays in the Watch until the RT side takes it: replace_link() refuses while an
  // earlier offer is pending, and the new version points into its endpoint meanwhile.
  if (!w.reload_link) w.reload_link = w.reloading->take_link();
  proc.collect_retired_links();
  if (!proc.replace_link(std::move(w.reload_link), LinkSwap::reload)) return;  // still ours: next round
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
               "reloaded " + describe_files(w.launch, false) + " (pid " + std::to_string(w.pid) + ")");
}

}  // namespace sandpipe::host
