// Binding endpoints to a segment, and the sandbox side of the block channel.
#include "shm/block-channel.h"

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

SandboxEndpoint::Wake SandboxEndpoint::wait(Job& out, std::uint64_t timeout_ns) noexcept {
  Wake wake = Wake::timeout;
  if (poll(out, wake)) {
    return wake;
  }
  const std::uint64_t start = now_ns();
  const std::uint64_t deadline = timeout_ns > std::numeric_limits<std::uint64_t>::max() - start
                                     ? std::numeric_limits<std::uint64_t>::max()
                                     : start + timeout_ns;
  if (spin_ns_ > 0) {
    const std::uint64_t spin_end = std::min(start + spin_ns_, deadline);
    do {
      for (int i = 0; i < 8 && !jobs_.looks_non_empty(); ++i) {
        detail::cpu_relax();
      }
      if (poll(out, wake)) {
        return wake;
      }
    } while (now_ns() < spin_end);
  }
  bool found = false;
  for (;;) {
    jobs_.announce_sleep();
    found = poll(out, wake);
    if (found) {
      break;
    }
    const std::uint64_t now = now_ns();
    if (now >= deadline) {
      break;
    }
    jobs_.sleep(deadline - now);
  }
  jobs_.cancel_sleep();
  return found ? wake : Wake::timeout;
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

std::uint32_t HostEndpoint::answered_hint() const noexcept { return completions_.producer_write_hint(); }

bool HostEndpoint::sandbox_idle_hint() const noexcept {
  return jobs_.published_write_index() == completions_.producer_write_hint();
}

}  // namespace sandpipe::shm
