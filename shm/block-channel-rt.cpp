// HostEndpoint's real-time half: everything the host's audio thread calls per block.
// No allocation, no lock, no syscall but FUTEX_WAKE and a FUTEX_WAIT bounded by the deadline.
#include <algorithm>
#include <cassert>
#include <thread>

#include "shm/block-channel.h"
#include "shm/futex.h"
#include "shm/layout.h"

namespace sandpipe::shm {

void HostEndpoint::check_rt_thread() noexcept {
#ifndef NDEBUG
  const std::thread::id self = std::this_thread::get_id();
  if (rt_thread_ == std::thread::id{}) {
    rt_thread_ = self;
  }
  assert(rt_thread_ == self && "HostEndpoint: [rt] methods called from two threads");
#endif
}

WaitResult HostEndpoint::fail() noexcept {
  failed_ = true;
  return WaitResult::corrupt;
}

bool HostEndpoint::submit_rt(const Job& request) noexcept {
  check_rt_thread();
  if (failed_) {
    return false;
  }
  Job job = request;
  job.submit_us = static_cast<std::uint32_t>(now_ns() / 1000U);
  // Our own bugs, not the sandbox's: refuse rather than hand it a job it must skip.
  if (job.slot >= geometry_.slot_count || job.frames > geometry_.max_frames) {
    return false;
  }
  if (submitted_ - completed_ >= geometry_.slot_count) {
    return false;
  }
  switch (jobs_.try_push(job)) {
    case PushResult::ok:
      break;
    case PushResult::full:
      // Cannot happen with an honest sandbox: the ring holds at most the jobs in flight.
      return false;
    case PushResult::corrupt:
      fail();
      return false;
  }
  in_flight_jobs_[submitted_ & (geometry_.slot_count - 1)] = job;  // with its stamp
  ++submitted_;
  submitted_shared_.value.store(submitted_, std::memory_order_relaxed);
  jobs_.wake_consumer();
  return true;
}

WaitResult HostEndpoint::try_complete_rt(Completion& out) noexcept {
  check_rt_thread();
  if (failed_) {
    return WaitResult::corrupt;
  }
  const std::uint32_t in_flight = submitted_ - completed_;
  const std::uint32_t mask = geometry_.slot_count - 1;
  const Job& expected = in_flight_jobs_[completed_ & mask];
  // A relay's job lost with a restarted sandbox: what it returns in its place.
  const auto lost = [&] {
    out = Completion{expected.seq, expected.slot, expected.frames,
                     static_cast<std::uint32_t>(CompletionStatus::failed)};
    ++completed_;
    return WaitResult::ready;
  };
  if (has_held_) {
    if (held_.seq != expected.seq) return lost();
    has_held_ = false;
    out = held_;
    ++completed_;
    return WaitResult::ready;
  }
  Completion completion;
  switch (completions_.try_pop(completion, in_flight)) {
    case PopResult::ok:
      break;
    case PopResult::empty:
      return WaitResult::timeout;
    case PopResult::corrupt:
      return fail();
  }
  // `completion` is a private copy: check it field by field against what we sent.
  if (completion.frames > geometry_.max_frames ||
      completion.status > static_cast<std::uint32_t>(CompletionStatus::failed)) {
    return fail();
  }
  if (completion.seq != expected.seq || completion.slot != expected.slot) {
    // In a relay, it may name a later job in flight: the ones before it were lost.
    std::uint32_t later = 1;
    while (relay_ && later < in_flight) {
      const Job& job = in_flight_jobs_[(completed_ + later) & mask];
      if (job.seq == completion.seq && job.slot == completion.slot) break;
      ++later;
    }
    if (!relay_ || later >= in_flight) return fail();
    held_ = completion;
    has_held_ = true;
    return lost();
  }
  ++completed_;
  out = completion;
  return WaitResult::ready;
}

WaitResult HostEndpoint::wait_complete_rt(Completion& out, std::uint64_t deadline_ns) noexcept {
  WaitResult result = try_complete_rt(out);
  if (result != WaitResult::timeout || submitted_ == completed_ || aborted()) {
    return result;
  }

  // Spin: a sandbox that answers within a few µs costs no context switch at all. Only over the
  // first `spin_ns_` of the oldest job's life, though: one submitted a cycle ago (pipelined) and
  // still out is busy for longer, and spinning for it would only take the CPU it may need. A
  // spin that keeps missing (a slow plugin, or the sandbox waiting for the very core we spin
  // on) also burns that time, so after a few misses in a row we sleep at once and only probe
  // with a spin every `spin_probe_interval` waits.
  const std::uint64_t spin_start = now_ns();
  const std::uint32_t age_us = static_cast<std::uint32_t>(spin_start / 1000U) -
                               in_flight_jobs_[completed_ & (geometry_.slot_count - 1)].submit_us;
  const std::uint64_t age_ns = std::uint64_t{age_us} * 1000U;
  const bool spin = spin_ns_ > 0 && age_ns < spin_ns_ &&
                    (spin_misses_ < spin_miss_limit || ++waits_since_probe_ % spin_probe_interval == 0);
  if (spin) {
    const std::uint64_t spin_for = spin_ns_ - age_ns;  // what is left of the job's first spin_ns_
    const std::uint64_t spin_end = std::min(spin_start + spin_for, deadline_ns);
    do {
      for (int i = 0; i < 8 && !completions_.looks_non_empty(); ++i) {
        detail::cpu_relax();
      }
      result = try_complete_rt(out);
      if (result != WaitResult::timeout) {
        spin_misses_ = 0;
        return result;
      }
      if (aborted()) {
        return result;
      }
    } while (now_ns() < spin_end);
    // A spin the deadline cut short says nothing about the sandbox's speed.
    if (spin_end - spin_start >= spin_for && spin_misses_ < spin_miss_limit) {
      ++spin_misses_;
    }
  }

  // Sleep: announce, re-check, then FUTEX_WAIT with whatever is left until the deadline.
  for (;;) {
    completions_.announce_sleep();
    result = try_complete_rt(out);
    if (result != WaitResult::timeout || aborted()) {
      break;
    }
    const std::uint64_t now = now_ns();
    if (now >= deadline_ns) {
      break;
    }
    completions_.sleep(deadline_ns - now);
  }
  completions_.cancel_sleep();
  return result;
}

float* HostEndpoint::channel_rt(std::uint32_t slot, std::uint32_t ch) noexcept {
  check_rt_thread();
  if (failed_ || slot >= geometry_.slot_count || ch >= geometry_.channels) {
    return nullptr;
  }
  return reinterpret_cast<float*>(slots_ + slot * slot_stride_bytes_ + ch * channel_stride_bytes_);
}

const float* HostEndpoint::output_channel_rt(std::uint32_t slot, std::uint32_t ch) noexcept {
  check_rt_thread();
  if (failed_ || slot >= geometry_.slot_count || ch >= geometry_.channels) {
    return nullptr;
  }
  return reinterpret_cast<const float*>(output_slots_ + slot * slot_stride_bytes_ + ch * channel_stride_bytes_);
}

void HostEndpoint::notify_control() noexcept {
  control_->count.fetch_add(1, std::memory_order_release);
  jobs_.wake_consumer();
}

void HostEndpoint::wake_waiter() noexcept { completions_.wake_self(); }
bool HostEndpoint::aborted() const noexcept {
  return abort_ != nullptr && abort_->load(std::memory_order_seq_cst);
}

std::size_t HostEndpoint::channel_stride() const noexcept { return channel_stride_bytes_ / sizeof(float); }
std::uint32_t HostEndpoint::in_flight() const noexcept { return submitted_ - completed_; }
bool HostEndpoint::failed() const noexcept { return failed_; }

}  // namespace sandpipe::shm
