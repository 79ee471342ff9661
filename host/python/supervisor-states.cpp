// The supervisor's round: one transition function per slot state (starting, running,
// restarting, failed/bypassed), each on the supervisor thread and under no lock. See
// supervisor.h; hot reload is in supervisor-reload.cpp.
#include <algorithm>
#include <cstdio>
#include <utility>

#include "host/python/supervisor-watch.h"
#include "shm/clock.h"

namespace sandpipe::host {

using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// Delay before restart attempt `k` (1-based) within the window: at once, then doubling.
std::chrono::milliseconds backoff(std::size_t k) {
  if (k <= 1) return std::chrono::milliseconds(0);
  const std::size_t shift = std::min<std::size_t>(k - 2, 5);
  return std::chrono::milliseconds(100) * (1u << shift);  // 100 ms … 3.2 s
}

/// A real-time sandbox busy in one block for this long (or half its hang timeout, if shorter)
/// runs without its priority until it answers. At SCHED_FIFO a runaway would take its CPU until
/// the kernel's RT throttling (950 ms in every second) stops every real-time thread there, the
/// graph's with it: a dropped cycle for a plugin that was only slow.
constexpr std::chrono::milliseconds max_realtime_stall{250};

/// Counts a failure at `now` in a slot's window; true once there are more than `max_restarts`.
bool too_many_failures(std::deque<Clock::time_point>& failures, Clock::time_point now,
                       const SupervisorOptions& options) {
  failures.push_back(now);
  while (!failures.empty() && now - failures.front() > options.restart_window) failures.pop_front();
  return failures.size() > options.max_restarts;
}

std::string given_up_output(const SupervisedSlot& slot) {
  return slot.on_failure == OnFailure::mute ? "muted (silent)" : "bypassed";
}

}  // namespace

std::unique_ptr<SandboxInstance> detail::spawn_instance(const SandboxLaunch& launch, std::uint64_t generation,
                                                        std::string& error) {
  try {
    return SandboxInstance::spawn(launch, generation);
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}

bool Supervisor::tick(Clock::time_point now) {
  bool state_changed = false;
  for (auto& wp : watches_) {
    Watch& w = *wp;
    if (!w.python) continue;
    w.slot.sandbox->collect_retired_links();
    switch (w.state) {
      case SlotState::starting:
        on_starting(w, state_changed);
        break;
      case SlotState::running:
        on_running(w, now, state_changed);
        break;
      case SlotState::restarting:
        break;  // after the reload's look, below: a death this round restarts at once
      case SlotState::failed:
      case SlotState::bypassed:
        on_given_up(w);
        break;
    }
    reload_tick(w, now, state_changed);
    if (w.state == SlotState::restarting) on_restarting(w, now, state_changed);
    keep_spare(w, now);
    if (w.first_error.empty()) w.first_error = w.last_error;
  }
  return state_changed;
}

void Supervisor::on_starting(Watch& w, bool& state_changed) {
  if (!w.current) {
    w.state = SlotState::failed;
    state_changed = true;
    return;
  }
  SandboxInstance& c = *w.current;
  c.advance();
  if (c.phase() == SandboxInstance::Phase::loaded) {
    w.state = SlotState::running;
    w.pid = c.pid();
    state_changed = true;
  } else if (c.phase() == SandboxInstance::Phase::failed || c.gone()) {
    w.last_error = c.phase() == SandboxInstance::Phase::failed ? c.failure() : "sandbox " + c.gone_reason();
    w.state = SlotState::failed;
    w.pid = -1;
    state_changed = true;
    options_.log(w.name, SandboxLogLevel::error, w.last_error + "; the slot stays " + given_up_output(w.slot));
  }
}

void Supervisor::on_running(Watch& w, Clock::time_point now, bool& state_changed) {
  if (!w.current) return;
  PythonSlot& proc = *w.slot.sandbox;
  SandboxInstance& c = *w.current;
  c.advance();
  if (c.process_errors() != w.process_errors_seen) {
    w.process_errors_seen = c.process_errors();
    w.last_error = c.last_process_error();
    // Repeats of an error come without their traceback: the first keeps it.
    if (w.first_error.empty()) w.first_error = c.first_process_error();
  }
  if (auto stats = c.take_async_stats()) {
    w.exceptions_now = stats->exceptions;
    for (std::size_t m = 0; m < w.members.size() && m < stats->member_exceptions.size(); ++m) {
      w.members[m].exceptions = w.member_exceptions_before[m] + stats->member_exceptions[m];
      w.members[m].process_ns = stats->member_process_ns[m];
    }
  }
  const auto& member_errors = c.member_process_errors();
  for (std::size_t m = 0; m < w.members.size() && m < member_errors.size(); ++m)
    if (!member_errors[m].empty()) w.members[m].last_error = member_errors[m];
  w.exceptions_now = std::max(w.exceptions_now, c.process_errors());  // reports arrive first
  if (auto state = c.take_async_state()) {
    w.saved_state = std::move(*state);
    w.reload_state_fresh = w.reload_wanted;
  }
  for (auto& [setting, refusal, value] : c.take_param_results()) {
    if (value)
      new_read_backs_.push_back(
          {&proc, setting.key, *value,
           w.relay_stage >= 0 ? w.relay_first_plugin + setting.member : setting.member});
    if (refusal) {
      options_.log(w.name, SandboxLogLevel::error, "set " + setting.key + " refused: " + *refusal);
      continue;
    }
    w.remember_param(setting);
    w.last_poll = Clock::time_point{};  // the state after a change: ask for it now
  }
  if (std::string why = follow_rate(w, c); !why.empty()) {
    on_death(w, why, false, now);
    state_changed = true;
    return;
  }

  // The RT side's link state is this sandbox's only once it adopted its link (at its next call
  // after replace_link); until then it still describes the dead one.
  // A relay's plugin never has a link of its own: the relay's is always the one in use.
  const bool relay = w.relay_stage >= 0;
  const bool adopted = relay || proc.active_generation() == c.generation();
  const std::uint64_t age = adopted ? proc.oldest_outstanding_age_ns(shm::now_ns()) : 0;
  if (relay && c.notify_endpoint() != nullptr) {
    // A relay's plugin moves as long as it passes blocks on; one that does not is hung only if
    // blocks came its way meanwhile (the host's, or the plugin's before it): else it is starved
    // by a hung plugin before it, which is the one to restart. Claims from other sandboxes
    // are hints; the timeout still runs from the host's own submit time (`age`).
    const std::uint32_t answered = c.notify_endpoint()->relay_answered_hint();
    const Watch* before = w.relay_before;
    const std::uint32_t offered =
        before == nullptr ? proc.submitted_hint()
                          : (before->current != nullptr && before->current->notify_endpoint() != nullptr
                                 ? before->current->notify_endpoint()->relay_answered_hint()
                                 : w.offered_hint);
    if (answered != w.answered_hint || offered == w.offered_hint) {
      w.progress_at = now;
      w.answered_hint = answered;
      w.offered_hint = offered;
    }
  } else if (c.notify_endpoint() != nullptr) {
    // The sandbox's claims count only when they fit the host's own count of submitted jobs: a
    // sandbox scribbling over its ring indices cannot hold the watchdog off (it did, 4 s for a
    // 1 s timeout), so the timeout runs from the host's own submit time (`age`).
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
  // A process that dies closes its socket as it exits: give the exit a moment to show, so the
  // reason names the signal or status rather than the EOF.
  if (c.eof() && !c.reaped()) c.wait_exit(Clock::now() + std::chrono::milliseconds(50));
  std::string reason;
  bool hang = false;
  if (c.poll_exit()) {
    reason = "sandbox " + describe_exit(c.exit_status());
  } else if (!c.protocol_error().empty()) {
    reason = "broke the control protocol (" + c.protocol_error() + ")";
  } else if (c.eof()) {
    reason = "closed its control socket";
  } else if (adopted && proc.link_failed() && (!relay || w.relay_last)) {
    reason = "broke the block protocol on the shared segment (corrupt ring or completion)";
  } else if (age > static_cast<std::uint64_t>(std::chrono::nanoseconds(w.hang_timeout).count()) &&
             now - w.progress_at > w.hang_timeout) {
    hang = true;
    reason = "did not finish a block for " + std::to_string(age / 1'000'000) + " ms (timeout " +
             std::to_string(w.hang_timeout.count()) + " ms): killed";
  }
  if (!reason.empty()) {
    on_death(w, reason, hang, now);
    state_changed = true;
    return;
  }
  demote_while_stuck(w, c, age, now, state_changed);
  if (now - w.last_poll >= options_.state_poll) {
    // The state restored after a crash, and the exception count, kept fresh while it runs.
    w.last_poll = now;
    c.request_async(SandboxInstance::Request::state);
    c.request_async(SandboxInstance::Request::stats);
  }
}

std::string Supervisor::follow_rate(Watch& w, SandboxInstance& c) {
  if (auto result = c.take_rate_result()) {
    const std::string rate = detail::format_rate(result->rate);
    if (!result->latency) return "could not follow the graph's rate to " + rate + ": " + result->error;
    options_.log(w.name, SandboxLogLevel::info,
                 "prepared for " + rate + " in the same sandbox (pid " + std::to_string(c.pid()) + ")");
    const std::uint32_t kept = w.slot.sandbox->plugin_latency_frames();
    if (*result->latency != kept) {
      options_.log(w.name, SandboxLogLevel::warning,
                   "at " + rate + " the plugin reports a latency of " + std::to_string(*result->latency) +
                       " frames; the slot keeps " + std::to_string(kept));
    }
  }
  if (c.launch().sample_rate != w.launch.sample_rate && !c.awaiting(SandboxInstance::Request::rate))
    c.request_set_rate(w.launch.sample_rate);  // not sent (a full socket): the next round tries again
  return {};
}

void Supervisor::on_death(Watch& w, const std::string& reason, bool hang, Clock::time_point now) {
  (hang ? w.hangs : w.crashes) += 1;
  w.last_error = reason;
  w.died_at = now;
  const bool give_up = too_many_failures(w.failures, now, options_);
  w.state = give_up ? SlotState::bypassed : SlotState::restarting;
  w.pid = -1;
  w.exceptions_before += w.exceptions_now;
  w.exceptions_now = 0;
  for (std::size_t m = 0; m < w.members.size(); ++m) w.member_exceptions_before[m] = w.members[m].exceptions;
  // NOTE: published before the RT side hears of it. Offline, wait_settled() must not see a
  // running slot once its link is dead: the next block would be rendered dry.
  publish();
  // The RT side stops waiting at once, goes dry (or mute). A relay's link outlives its
  // plugin's sandbox: it is only paused until the new one serves.
  if (w.relay_stage < 0) {
    w.slot.sandbox->mark_link_dead();
  } else {
    w.slot.sandbox->relay_stage_down();
  }
  w.current->kill_and_reap();
  w.current.reset();
  if (give_up) {
    w.spare.reset();
    options_.log(w.name, SandboxLogLevel::error,
                 reason + "; " + std::to_string(w.failures.size()) + " failures within " +
                     std::to_string(options_.restart_window.count() / 1000) +
                     " s: giving up, the slot stays " + given_up_output(w.slot));
  } else {
    w.next_attempt = now + backoff(w.failures.size());
    options_.log(w.name, SandboxLogLevel::error, reason + "; restarting it");
  }
}

void Supervisor::on_restarting(Watch& w, Clock::time_point now, bool& state_changed) {
  PythonSlot& proc = *w.slot.sandbox;
  if (!w.pending && !w.unclaimed_link && now >= w.next_attempt) {
    std::string error;
    if (w.spare && !w.spare->gone() && w.spare->phase() != SandboxInstance::Phase::failed) {
      w.pending = std::move(w.spare);
      // Spares start at normal priority: their interpreter's start-up (numpy's import, a few
      // hundred ms of CPU) must not compete with the sandboxes serving audio meanwhile.
      if (w.launch.rt_priority > 0) set_sandbox_priority(w.pending->pid(), w.launch.rt_priority);
    } else {
      w.spare.reset();
      w.pending = detail::spawn_instance(w.launch, w.next_generation++, error);
    }
    if (w.pending) {
      w.pending->set_params(w.params);
      w.pending->set_sample_rate(w.launch.sample_rate);
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
      // A relay's plugin is one of the slot's members: its own latency is the one to keep.
      const auto& stages = proc.info().members;
      const std::uint32_t kept = w.relay_stage < 0 ? proc.plugin_latency_frames()
                                 : static_cast<std::size_t>(w.relay_stage) < stages.size()
                                     ? stages[static_cast<std::size_t>(w.relay_stage)].latency
                                     : p.info().latency;
      if (p.info().latency != kept) {
        options_.log(w.name, SandboxLogLevel::warning,
                     "the restarted plugin reports a latency of " + std::to_string(p.info().latency) +
                         " frames; the slot keeps " + std::to_string(kept));
      }
      if (w.relay_stage < 0) w.unclaimed_link = p.take_link();
      w.current = std::move(w.pending);
    } else if (p.phase() == SandboxInstance::Phase::failed || p.gone()) {
      const std::string why =
          p.phase() == SandboxInstance::Phase::failed ? p.failure() : "sandbox " + p.gone_reason();
      p.kill_and_reap();
      w.pending.reset();
      w.last_error = "restart failed: " + why;
      state_changed = true;
      if (too_many_failures(w.failures, now, options_)) {
        w.state = SlotState::bypassed;
        options_.log(w.name, SandboxLogLevel::error,
                     w.last_error + "; giving up, the slot stays " + given_up_output(w.slot));
      } else {
        w.next_attempt = now + backoff(w.failures.size());
        options_.log(w.name, SandboxLogLevel::error, w.last_error + "; trying again");
      }
    }
  }
  const bool joined_relay = w.relay_stage >= 0 && w.current && w.state == SlotState::restarting;
  if (!w.unclaimed_link && !joined_relay) return;
  proc.collect_retired_links();
  if (!joined_relay && !proc.replace_link(std::move(w.unclaimed_link))) {
    // An earlier offer the RT side has not taken yet (the graph is paused): replace_link left
    // the link with us; drop this sandbox, then its link, and try again later.
    w.current->kill_and_reap();
    w.current.reset();
    w.unclaimed_link.reset();
    w.next_attempt = now + std::chrono::seconds(1);
    return;
  }
  if (joined_relay) proc.relay_stage_up();
  // Running only once the RT side has the link (published at the end of this round).
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
  new_restart_ms_.push_back(ms);
  state_changed = true;
  char text[96];
  std::snprintf(text, sizeof text, "restarted (pid %d) in %.1f ms%s", static_cast<int>(w.pid), ms,
                w.current->info().preloaded ? ", module imported ahead" : "");
  options_.log(w.name, SandboxLogLevel::info, text);
}

void Supervisor::on_given_up(Watch& w) {
  // A spare started while it was restarting would never be used.
  if (w.spare) w.spare.reset();
}

void Supervisor::keep_spare(Watch& w, Clock::time_point now) {
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
  if (!want_spare || w.spare || w.pending || now < w.next_spare) return;
  std::string error;
  SandboxLaunch spare_launch = w.launch;
  spare_launch.rt_priority = 0;  // until it takes over (set_sandbox_priority)
  w.spare = detail::spawn_instance(spare_launch, w.next_generation++, error);
  if (w.spare) {
    w.spare->send_preload();  // it imports the plugin module now: a restart then only instantiates it
  } else {
    options_.log(w.name, SandboxLogLevel::warning, "cannot start a spare sandbox: " + error);
    w.next_spare = now + std::chrono::seconds(5);
  }
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

void Supervisor::track_refresh(std::uint64_t wanted) {
  const auto running = [](const Watch& w) { return w.python && w.state == SlotState::running && w.current; };
  if (wanted > refresh_asked_) {
    refresh_asked_ = wanted;
    for (auto& w : watches_)
      if (running(*w)) w->current->request_async(SandboxInstance::Request::stats);
  }
  if (refresh_asked_ <= refresh_answered_) return;
  const bool outstanding = std::any_of(watches_.begin(), watches_.end(), [&](const auto& w) {
    return running(*w) && w->current->awaiting(SandboxInstance::Request::stats);
  });
  if (!outstanding) refresh_answered_ = refresh_asked_;
}

}  // namespace sandpipe::host
