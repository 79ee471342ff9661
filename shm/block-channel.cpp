// Binding endpoints to a segment, and the sandbox side of the block channel.
#include "shm/block-channel.h"

#include <sched.h>

#include <algorithm>
#include <limits>

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
    if (job.slot < geometry_.slot_count && job.frames <= geometry_.max_frames) {
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
  if (completions_.try_push(completion) == PushResult::ok) {
    completions_.wake_consumer();
  }
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

bool HostEndpoint::sandbox_idle_hint() const noexcept {
  return submitted_count() == completions_.producer_write_hint();
}

std::uint32_t HostEndpoint::submitted_count() const noexcept {
  return submitted_shared_.value.load(std::memory_order_relaxed);
}

}  // namespace sandpipe::shm
