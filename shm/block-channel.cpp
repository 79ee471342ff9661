// Binding endpoints to a segment, and the sandbox side of the block channel.
#include "shm/block-channel.h"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <utility>

#include "shm/futex.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace sandpipe::shm {

HostEndpoint::HostEndpoint(Segment& segment) noexcept : geometry_(segment.geometry()) {
  const detail::Layout layout = detail::compute_layout(geometry_);
  const detail::SegmentParts parts = detail::segment_parts(segment.base(), layout);
  slots_ = parts.slots;
  channel_stride_bytes_ = layout.channel_stride_bytes;
  slot_stride_bytes_ = layout.slot_stride_bytes;
  jobs_ = SpscProducer<Job>(parts.jobs_control, parts.jobs, geometry_.slot_count);
  completions_ = SpscConsumer<Completion>(parts.completions_control, parts.completions, geometry_.slot_count);
  control_ = parts.control;
  output_slots_ = slots_;
}

namespace {

[[nodiscard]] bool same_geometry(const Geometry& a, const Geometry& b) noexcept {
  return a.channels == b.channels && a.max_frames == b.max_frames && a.slot_count == b.slot_count;
}

}  // namespace

HostEndpoint::HostEndpoint(Segment& head, Segment& tail) : HostEndpoint(head) {
  if (!same_geometry(head.geometry(), tail.geometry())) {
    throw std::invalid_argument("a relay's head and tail edges differ in geometry");
  }
  const detail::SegmentParts parts =
      detail::segment_parts(tail.base(), detail::compute_layout(geometry_));
  completions_ = SpscConsumer<Completion>(parts.completions_control, parts.completions, geometry_.slot_count);
  output_slots_ = parts.slots;
  relay_ = true;
}

const Geometry& HostEndpoint::geometry() const noexcept { return geometry_; }
void HostEndpoint::release_rt_thread() noexcept { rt_thread_ = std::thread::id{}; }
void HostEndpoint::set_abort_flag(const std::atomic<bool>* flag) noexcept { abort_ = flag; }
void HostEndpoint::set_spin_ns(std::uint64_t spin_ns) noexcept {
  spin_ns_ = spin_ns;
  spin_misses_ = 0;
}

SandboxEndpoint::SandboxEndpoint(Segment& segment) noexcept : geometry_(segment.geometry()) {
  const detail::Layout layout = detail::compute_layout(geometry_);
  const detail::SegmentParts parts = detail::segment_parts(segment.base(), layout);
  slots_ = parts.slots;
  channel_stride_bytes_ = layout.channel_stride_bytes;
  slot_stride_bytes_ = layout.slot_stride_bytes;
  jobs_ = SpscConsumer<Job>(parts.jobs_control, parts.jobs, geometry_.slot_count);
  completions_ = SpscProducer<Completion>(parts.completions_control, parts.completions, geometry_.slot_count);
  control_ = parts.control;
  // NOTE: last_control_ starts at 0, so a notification sent before we attached still shows up.
}

bool SandboxEndpoint::poll(Job& out, Wake& wake) noexcept {
  // Bounded: a host writing garbage jobs as fast as we skip them must not keep us here forever.
  for (std::uint32_t attempt = 0; attempt <= geometry_.slot_count; ++attempt) {
    Job job;
    const PopResult popped = jobs_.try_pop(job);
    if (popped == PopResult::corrupt) {
      jobs_.resync();  // the host broke the ring; drop what it claims and carry on
      break;
    }
    if (popped == PopResult::empty) {
      break;
    }
    const std::uint32_t frames = job.frames & ~job_upstream_flags;
    if (job.slot < geometry_.slot_count && frames <= geometry_.max_frames) {
      upstream_[job.slot] = job.frames & job_upstream_flags;
      submit_us_[job.slot] = job.submit_us;
      job.frames = frames;
      if (input_slots_ != nullptr) {
        copy_slot(input_slots_, slots_, job.slot, frames);
      }
      out = job;
      wake = Wake::job;
      return true;
    }
    // Invalid job: skip it (never index with it).
  }
  const std::uint32_t control = control_->count.load(std::memory_order_acquire);
  if (control != last_control_) {
    last_control_ = control;
    wake = Wake::control;
    return true;
  }
  return false;
}

namespace {

/// When the host submitted a job stamped `submit_us`, on our clock (the same CLOCK_MONOTONIC).
/// A stamp from the future or over a second old says nothing about the cadence: now, then.
std::uint64_t submitted_ns(std::uint32_t submit_us, std::uint64_t now) noexcept {
  const std::uint32_t ago_us = static_cast<std::uint32_t>(now / 1000U) - submit_us;  // mod 2^32
  return ago_us > 1'000'000U ? now : now - std::uint64_t{ago_us} * 1000U;
}

}  // namespace

bool SandboxEndpoint::steady() const noexcept {
  return steady_jobs_ >= steady_jobs_needed && period_ns_ >= min_anticipated_period_ns;
}

void SandboxEndpoint::note_job(std::uint64_t now) noexcept {
  if (last_job_ns_ != 0 && now > last_job_ns_) {
    const std::uint64_t interval = now - last_job_ns_;
    // Within a quarter of the estimate: the same cadence; follow it slowly (1/8 per job).
    // Anything else (a burst, a pause, a new quantum) starts the estimate again.
    if (period_ns_ != 0 && interval >= period_ns_ - period_ns_ / 4 &&
        interval <= period_ns_ + period_ns_ / 4) {
      period_ns_ = period_ns_ - period_ns_ / 8 + interval / 8;
      steady_jobs_ = std::min<std::uint32_t>(steady_jobs_ + 1, steady_jobs_needed);
    } else {
      period_ns_ = interval;
      steady_jobs_ = 0;
    }
  }
  last_job_ns_ = now;
}

bool SandboxEndpoint::sleep_until(Job& out, Wake& wake, std::uint64_t until) noexcept {
  bool found = false;
  for (;;) {
    jobs_.announce_sleep();
    found = poll(out, wake);
    if (found) {
      break;
    }
    const std::uint64_t now = now_ns();
    if (now >= until) {
      break;
    }
    jobs_.sleep(until - now);
  }
  jobs_.cancel_sleep();
  return found;
}

bool SandboxEndpoint::spin_until(Job& out, Wake& wake, std::uint64_t until, bool yield) noexcept {
  do {
    for (int i = 0; i < 8 && !jobs_.looks_non_empty(); ++i) {
      detail::cpu_relax();
    }
    if (poll(out, wake)) {
      return true;
    }
    // Whatever else is runnable on this CPU goes first: it may be the thread about to hand us
    // the job (the host's, or another sandbox of the same real-time priority).
    if (yield) ::sched_yield();
  } while (now_ns() < until);
  return false;
}

SandboxEndpoint::Wake SandboxEndpoint::wait(Job& out, std::uint64_t timeout_ns) noexcept {
  Wake wake = Wake::timeout;
  const auto found = [&] {
    if (wake == Wake::job) note_job(submitted_ns(out.submit_us, now_ns()));
    return wake;
  };
  if (poll(out, wake)) {
    return found();
  }
  const std::uint64_t start = now_ns();
  const std::uint64_t deadline = timeout_ns > std::numeric_limits<std::uint64_t>::max() - start
                                     ? std::numeric_limits<std::uint64_t>::max()
                                     : start + timeout_ns;
  // Anticipation: on a steady cadence, sleep only until shortly before the next job is due and
  // spin over its arrival. The host's submit then finds us awake (no wake syscall) and the job
  // starts at once, instead of after the wake-up of a sleeping process (on an idle vCPU tens of
  // µs, on each side). The spin is at most twice the window, and the window a small share of
  // the period.
  if (lead_ns_ > 0 && steady()) {
    const std::uint64_t window = std::min(lead_ns_, period_ns_ / 16);
    const std::uint64_t due = last_job_ns_ + period_ns_;
    if (due + window > start) {
      ++anticipated_;
      const std::uint64_t spin_from = due - window;
      if (start < spin_from && sleep_until(out, wake, std::min(spin_from, deadline))) {
        return found();
      }
      if (spin_until(out, wake, std::min(due + window, deadline), true)) {
        ++caught_;
        return found();
      }
    }
  }
  if (spin_ns_ > 0 && spin_until(out, wake, std::min(start + spin_ns_, deadline), false)) {
    return found();
  }
  return sleep_until(out, wake, deadline) ? found() : Wake::timeout;
}

void SandboxEndpoint::complete(const Completion& completion) noexcept {
  Completion done = completion;
  const bool in_range = done.slot < geometry_.slot_count && done.frames <= geometry_.max_frames;
  if (in_range) {
    const std::uint32_t upstream = std::exchange(upstream_[done.slot], 0U);
    if ((upstream & job_upstream_failed) != 0) {
      done.status = static_cast<std::uint32_t>(CompletionStatus::failed);
    } else if ((upstream & job_upstream_passthrough) != 0 &&
               done.status == static_cast<std::uint32_t>(CompletionStatus::processed)) {
      done.status = static_cast<std::uint32_t>(CompletionStatus::passthrough);
    }
  }
  if (output_slots_ == nullptr) {
    if (completions_.try_push(done) == PushResult::ok) {
      completions_.wake_consumer();
    }
    return;
  }
  if (!in_range) {
    ++forward_drops_;
    return;
  }
  control_->answered.store(++answered_, std::memory_order_release);
  copy_slot(slots_, output_slots_, done.slot, done.frames);
  if (to_host_) {
    if (tail_completions_.try_push(done) == PushResult::ok) {
      ++forwarded_;
      tail_completions_.wake_consumer();
    } else {
      ++forward_drops_;
    }
    return;
  }
  std::uint32_t flags = 0;
  if (done.status == static_cast<std::uint32_t>(CompletionStatus::passthrough)) {
    flags = job_upstream_passthrough;
  } else if (done.status != static_cast<std::uint32_t>(CompletionStatus::processed)) {
    flags = job_upstream_failed;
  }
  const Job job{done.seq, done.slot, done.frames | flags, submit_us_[done.slot]};
  if (next_jobs_.try_push(job) != PushResult::ok) {
    ++forward_drops_;
    return;
  }
  ++forwarded_;
  next_jobs_.wake_consumer();
}

void SandboxEndpoint::copy_slot(const std::byte* from, std::byte* to, std::uint32_t slot,
                                std::uint32_t frames) const noexcept {
  for (std::uint32_t ch = 0; ch < geometry_.channels; ++ch) {
    const std::size_t at = slot * slot_stride_bytes_ + ch * channel_stride_bytes_;
    std::memcpy(to + at, from + at, std::size_t{frames} * sizeof(float));
  }
}

bool SandboxEndpoint::take_input_from(Segment& edge) noexcept {
  if (!same_geometry(edge.geometry(), geometry_)) {
    return false;
  }
  const detail::SegmentParts parts = detail::segment_parts(edge.base(), detail::compute_layout(geometry_));
  jobs_ = SpscConsumer<Job>(parts.jobs_control, parts.jobs, geometry_.slot_count);
  input_slots_ = parts.slots;
  return true;
}

bool SandboxEndpoint::send_output_to(Segment& edge, bool to_host) noexcept {
  if (!same_geometry(edge.geometry(), geometry_)) {
    return false;
  }
  const detail::SegmentParts parts = detail::segment_parts(edge.base(), detail::compute_layout(geometry_));
  if (to_host) {
    tail_completions_ = SpscProducer<Completion>(parts.completions_control, parts.completions, geometry_.slot_count);
  } else {
    next_jobs_ = SpscProducer<Job>(parts.jobs_control, parts.jobs, geometry_.slot_count);
  }
  to_host_ = to_host;
  output_slots_ = parts.slots;
  return true;
}

ControlBell::ControlBell(Segment& own, Segment& sleeps_on) noexcept {
  control_ = detail::segment_parts(own.base(), detail::compute_layout(own.geometry())).control;
  const detail::SegmentParts edge =
      detail::segment_parts(sleeps_on.base(), detail::compute_layout(sleeps_on.geometry()));
  // Only its wake-up is used: the bell never pushes a job.
  wake_ = SpscProducer<Job>(edge.jobs_control, edge.jobs, sleeps_on.geometry().slot_count);
}

void ControlBell::ring() noexcept {
  control_->count.fetch_add(1, std::memory_order_release);
  wake_.wake_consumer();
}

float* SandboxEndpoint::channel(std::uint32_t slot, std::uint32_t ch) noexcept {
  if (slot >= geometry_.slot_count || ch >= geometry_.channels) {
    return nullptr;
  }
  return reinterpret_cast<float*>(slots_ + slot * slot_stride_bytes_ + ch * channel_stride_bytes_);
}

std::size_t SandboxEndpoint::channel_stride() const noexcept { return channel_stride_bytes_ / sizeof(float); }
std::size_t SandboxEndpoint::slot_stride() const noexcept { return slot_stride_bytes_ / sizeof(float); }
const Geometry& SandboxEndpoint::geometry() const noexcept { return geometry_; }
void SandboxEndpoint::set_spin_ns(std::uint64_t spin_ns) noexcept { spin_ns_ = spin_ns; }
void SandboxEndpoint::set_lead_ns(std::uint64_t lead_ns) noexcept { lead_ns_ = lead_ns; }
SandboxEndpoint::Anticipation SandboxEndpoint::anticipation() const noexcept {
  return {anticipated_, caught_, steady() ? period_ns_ : 0};
}

std::uint32_t HostEndpoint::answered_hint() const noexcept { return completions_.producer_write_hint(); }
std::uint32_t HostEndpoint::relay_answered_hint() const noexcept {
  return control_->answered.load(std::memory_order_acquire);
}

bool HostEndpoint::sandbox_idle_hint() const noexcept {
  return submitted_count() == completions_.producer_write_hint();
}

std::uint32_t HostEndpoint::submitted_count() const noexcept {
  return submitted_shared_.value.load(std::memory_order_relaxed);
}

}  // namespace sandpipe::shm
