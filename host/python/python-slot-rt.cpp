// The real-time core of a Python slot: jobs by stream position through the shared segment, an
// output reorder ring tagged with positions, the dry input history, and the wet/dry ramps.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "host/python/python-slot.h"

namespace sandpipe::host {

namespace {

/// Counters have one writer (the RT thread): a relaxed load + store is enough and is no
/// locked read-modify-write.
void bump(std::atomic<std::uint64_t>& counter) noexcept {
  counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

/// True if no sample of `x` is NaN or beyond ±`ceiling` (Inf is; one pass, no early exit: it
/// vectorises).
bool all_within(const float* x, std::size_t n, float ceiling) noexcept {
  bool bad = false;
  for (std::size_t i = 0; i < n; ++i) bad |= !(std::fabs(x[i]) <= ceiling);
  return !bad;
}

/// Positions [p, p + n) of a ring of `mask + 1` cells (n ≤ that) wrap at most once: calls
/// `run(cell, offset, length)` for each of the at most two contiguous runs, `offset` counting
/// from p.
template <typename Run>
void for_each_ring_run(std::uint32_t mask, std::uint64_t p, std::size_t n, Run&& run) noexcept {
  const std::size_t start = p & mask;
  const std::size_t head = std::min<std::size_t>(n, std::size_t{mask} + 1 - start);
  run(start, std::size_t{0}, head);
  if (head < n) run(std::size_t{0}, head, n - head);
}

constexpr std::uint32_t fifo_mask = shm::max_slots - 1;
static_assert((shm::max_slots & fifo_mask) == 0, "the job FIFO indexes by mask");

/// A job an earlier cycle already waited for in vain gets this share of what is left of the
/// budget: enough for one that was only just late, little for one that hangs.
constexpr std::uint64_t late_job_wait_divisor = 4;

std::uint64_t late_job_deadline_rt(std::uint64_t deadline_ns) noexcept {
  const std::uint64_t now = shm::now_ns();
  return deadline_ns > now ? now + (deadline_ns - now) / late_job_wait_divisor : deadline_ns;
}

}  // namespace

SlotCounters PythonSlot::counters() const noexcept {
  SlotCounters c;
  c.blocks = blocks_.load(std::memory_order_relaxed);
  c.deadline_misses = deadline_misses_.load(std::memory_order_relaxed);
  c.bypassed_blocks = bypassed_blocks_.load(std::memory_order_relaxed);
  c.sanitized_blocks = sanitized_blocks_.load(std::memory_order_relaxed);
  c.passthrough_blocks = passthrough_blocks_.load(std::memory_order_relaxed);
  c.recent_miss_ns = recent_miss_ns_.snapshot();
  return c;
}

std::uint64_t PythonSlot::oldest_outstanding_age_ns(std::uint64_t now_ns) const noexcept {
  const std::uint64_t t = oldest_submit_ns_.load(std::memory_order_relaxed);
  return (t == 0 || now_ns < t) ? 0 : now_ns - t;
}

void PythonSlot::publish_oldest_rt() noexcept {
  const std::uint64_t t =
      lane_.fifo_head == lane_.fifo_tail ? 0 : lane_.jobs[lane_.fifo[lane_.fifo_head & fifo_mask]].submit_ns;
  oldest_submit_ns_.store(t, std::memory_order_relaxed);
}

void PythonSlot::fail_link_rt(Lane& lane) noexcept {
  lane.usable = false;
  if (&lane == &lane_) link_failed_.store(true, std::memory_order_relaxed);
}

bool PythonSlot::live_rt(const Lane& lane, const SandboxLink* link) const noexcept {
  return link != nullptr && lane.usable && !link->paused.load(std::memory_order_relaxed);
}

namespace {

/// Forgets every job of `lane`: its slots belong to a segment nothing here reads any more.
template <typename Lane>
void clear_jobs(Lane& lane) noexcept {
  for (auto& j : lane.jobs) j.busy = false;
  lane.fifo_head = lane.fifo_tail = 0;
  lane.missed_end = 0;  // a new link owes nothing yet
  lane.stalled = false;
}

}  // namespace

void PythonSlot::switch_link_rt(SandboxLink* next) noexcept {
  if (links_.rt != nullptr) links_.retired.store(links_.rt, std::memory_order_release);
  links_.rt = next;
  // What the old sandbox owed is gone: those positions stay untagged (dry). Its slots
  // belong to the old segment, so nothing here can be overwritten by it any more.
  clear_jobs(lane_);
  lane_.usable = true;
  link_failed_.store(false, std::memory_order_relaxed);
  active_generation_.store(next->generation, std::memory_order_relaxed);
  publish_oldest_rt();
}

void PythonSlot::finish_handover_rt() noexcept {
  // The old link goes back to the main thread (the retired slot was empty when the hand-over
  // began and nothing else retires meanwhile); the incoming lane's jobs and audio become the
  // slot's (a swap of vectors and arrays: no allocation).
  links_.retired.store(links_.rt, std::memory_order_release);
  links_.rt = links_.incoming;
  links_.incoming = nullptr;
  std::swap(lane_, incoming_);
  clear_jobs(incoming_);
  handover_ = false;
  link_failed_.store(!lane_.usable, std::memory_order_relaxed);
  active_generation_.store(links_.rt->generation, std::memory_order_relaxed);
  publish_oldest_rt();
  handing_over_.store(false, std::memory_order_release);
}

void PythonSlot::adopt_rt() noexcept {
  // A new link: only when the previous retired one was collected (one slot RT → main), and
  // not while a reload hands over (the offer waits for it to end).
  if (!handover_ && links_.offered.load(std::memory_order_relaxed) != nullptr &&
      links_.retired.load(std::memory_order_acquire) == nullptr) {
    SandboxLink* next = links_.offered.exchange(nullptr, std::memory_order_acq_rel);
    if (next != nullptr) {
      // A reload crossfades from a running link; before the first block, during a retime or
      // without ramps it switches like a restart.
      const bool crossfade = next->swap == LinkSwap::reload && live_rt(lane_, links_.rt) &&
                             in_pos_ != position_base && retime_left_ == 0 &&
                             (crossfade_frames_ > 0 || bit_exact_);
      if (crossfade) {
        links_.incoming = next;
        clear_jobs(incoming_);
        incoming_.usable = true;
        handover_ = true;
        handover_from_ = in_pos_ - latency_;  // the wet position of its first job
        // Bit-exact: no blend; the new version's output takes over at one frame.
        handover_left_ = bit_exact_ ? 1 : crossfade_frames_;
        handing_over_.store(true, std::memory_order_release);
      } else {
        switch_link_rt(next);
      }
    }
  }
  const std::uint32_t pf = pipeline_frames_.load(std::memory_order_relaxed);
  if (pf != active_pipeline_frames_ && !handover_) {
    if (in_pos_ == position_base || crossfade_frames_ == 0 || bit_exact_) {
      active_pipeline_frames_ = pf;  // not running yet (or hard switches): nothing to fade
    } else {
      retime_old_frames_ = active_pipeline_frames_;
      active_pipeline_frames_ = pf;
      retime_left_ = crossfade_frames_;
    }
  }
}

bool PythonSlot::apply_completion_rt(Lane& lane, SandboxLink& link, const shm::Completion& done,
                                           std::uint64_t now) noexcept {
  // The endpoint checked seq and slot against its own record; check against ours too.
  if (lane.fifo_head == lane.fifo_tail || done.slot >= shm::max_slots ||
      lane.fifo[lane.fifo_head & fifo_mask] != done.slot) {
    return false;
  }
  JobRecord& job = lane.jobs[done.slot];
  if (!job.busy || job.seq != done.seq || job.frames != done.frames) return false;
  job.busy = false;
  ++lane.fifo_head;
  if (&lane == &lane_) publish_oldest_rt();
  if (job.pos < position_base) return true;  // a calibration block: nothing to keep
  histogram_.record_rt(now > job.submit_ns ? now - job.submit_ns : 0);

  // Wet position of the job's first frame, and the oldest position still to be read (older
  // ones would alias cells that now hold newer positions).
  const std::uint64_t wet_first = job.pos - latency_;
  const std::uint32_t oldest_read_latency =
      latency_ + std::max(active_pipeline_frames_, retime_left_ > 0 ? retime_old_frames_ : 0U);
  const std::uint64_t keep_from = in_pos_ - oldest_read_latency;
  const std::uint64_t first = std::max(wet_first, keep_from);
  if (first >= wet_first + job.frames) return true;  // entirely in the past
  const auto skip = static_cast<std::uint32_t>(first - wet_first);
  const std::uint32_t n = job.frames - skip;
  const std::size_t cap = std::size_t{ring_mask_} + 1;

  switch (static_cast<shm::CompletionStatus>(done.status)) {
    case shm::CompletionStatus::processed:
      break;
    case shm::CompletionStatus::passthrough:
      // Fail-closed: the plugin did not process this block, so nothing of it leaves (untagged:
      // zeros when read).
      if (on_failure_ == OnFailure::mute && !sink_) return true;
      // Otherwise the plugin's own choice (not a bypass): the dry signal, tagged as processed,
      // and counted as not processed all the same (a sink's passthrough is its output).
      if (!sink_) bump(passthrough_blocks_);
      for (std::uint32_t i = 0; i < n; ++i) {
        const std::uint64_t p = first + i;
        const std::size_t idx = p & ring_mask_;
        for (std::uint32_t ch = 0; ch < channels_; ++ch) lane.wet[ch * cap + idx] = history_[ch * cap + idx];
        lane.tag[idx] = p;
      }
      return true;
    case shm::CompletionStatus::failed:
      return true;  // untagged: dry when read
    default:
      return false;
  }

  // Copy out, then refuse NaN and samples beyond max-level in our copy (the sandbox may still
  // write its slot; what we check is what we play): `!(|x| <= max)` is also true for NaN. Tags
  // are written only after every channel passed, so a bad block is read as dry (or zeros). A
  // bit-exact slot's output is never judged: NaN, Inf and denormal patterns are its content.
  bool bad = false;
  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    const float* src = link.endpoint.output_channel_rt(done.slot, ch);
    if (src == nullptr) return false;
    float* line = lane.wet.data() + ch * cap;
    for_each_ring_run(ring_mask_, first, n, [&](std::size_t cell, std::size_t offset, std::size_t len) {
      std::memcpy(line + cell, src + skip + offset, len * sizeof(float));
      if (!bit_exact_) bad |= !all_within(line + cell, len, max_level_);
    });
  }
  if (bad) {
    bump(sanitized_blocks_);
    return true;
  }
  for (std::uint32_t i = 0; i < n; ++i) lane.tag[(first + i) & ring_mask_] = first + i;
  return true;
}

bool PythonSlot::collect_rt(Lane& lane, SandboxLink& link, std::uint64_t needed_end,
                                  std::uint64_t deadline_ns) noexcept {
  shm::HostEndpoint& ep = link.endpoint;
  shm::Completion done;
  for (;;) {
    if (lane.fifo_head == lane.fifo_tail) {
      lane.stalled = false;
      return false;
    }
    const JobRecord& oldest = lane.jobs[lane.fifo[lane.fifo_head & fifo_mask]];
    const bool needed = oldest.pos < needed_end;
    const bool behind = oldest.pos < lane.missed_end;  // an earlier cycle's wait for it ran out
    lane.stalled = lane.stalled && behind;
    // A stalled sandbox is not waited on: a hang would otherwise take the budget of every
    // cycle until the watchdog ends it (the graph's headroom with it). One more wait after a
    // miss still lets a sandbox that was only briefly late catch up; a short one, so a hang's
    // first two cycles do not both spend the whole budget. Once that job is back, the jobs
    // after it get the full wait.
    const bool wait = needed && !lane.stalled;
    const shm::WaitResult r =
        !wait ? ep.try_complete_rt(done)
              : ep.wait_complete_rt(done, behind ? late_job_deadline_rt(deadline_ns) : deadline_ns);
    if (r == shm::WaitResult::ready) {
      if (!apply_completion_rt(lane, link, done, shm::now_ns())) {
        fail_link_rt(lane);
        return false;
      }
      continue;
    }
    if (r == shm::WaitResult::corrupt) {
      fail_link_rt(lane);
      return false;
    }
    // timeout: not back (or the wait was aborted because the sandbox is known dead)
    // Only a wait that ran out is a miss that can stall the lane. A poll while stalled that
    // finds the current block still out must not move `missed_end` on: the stall would then
    // never end for a sandbox that answers just after the cycle starts, though a wait would
    // have found its every block back in time.
    if (wait) {
      lane.stalled = behind;
      lane.missed_end = std::max(lane.missed_end, needed_end);
    }
    return needed && !link.dead.load(std::memory_order_relaxed);
  }
}

void PythonSlot::submit_rt(Lane& lane, SandboxLink& link, const float* const* in, std::uint32_t frames,
                                 std::uint64_t deadline_ns) noexcept {
  shm::HostEndpoint& ep = link.endpoint;
  const std::uint32_t slot_count = std::min(ep.geometry().slot_count, shm::max_slots);
  std::uint32_t slot = slot_count;
  for (;;) {
    for (std::uint32_t s = 0; s < slot_count; ++s) {
      if (!lane.jobs[s].busy) {
        slot = s;
        break;
      }
    }
    if (slot != slot_count || lane.fifo_head == lane.fifo_tail) break;
    // Every slot is out (small calls against a deep pipeline, or a slow sandbox): the oldest
    // job frees one; wait for it, never past the deadline. A slot the sandbox may still write
    // is never reused.
    shm::Completion done;
    const shm::WaitResult r =
        lane.stalled ? ep.try_complete_rt(done) : ep.wait_complete_rt(done, deadline_ns);
    if (r == shm::WaitResult::timeout) return;  // these positions will be read as dry
    if (r == shm::WaitResult::corrupt || !apply_completion_rt(lane, link, done, shm::now_ns())) {
      fail_link_rt(lane);
      return;
    }
  }
  if (slot == slot_count) return;

  const std::size_t bytes = std::size_t{frames} * sizeof(float);
  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    float* dst = ep.channel_rt(slot, ch);
    if (dst == nullptr) {
      fail_link_rt(lane);
      return;
    }
    std::memcpy(dst, in[ch], bytes);
  }
  const std::uint32_t seq = next_seq_++;
  if (!ep.submit_rt(shm::Job{seq, slot, frames, 0})) {
    if (ep.failed()) fail_link_rt(lane);
    return;
  }
  lane.jobs[slot] = JobRecord{in_pos_, shm::now_ns(), frames, seq, true};
  lane.fifo[lane.fifo_tail++ & fifo_mask] = slot;
  if (&lane == &lane_) publish_oldest_rt();
}

float PythonSlot::fallback_rt(std::uint32_t ch, std::uint64_t p) const noexcept {
  if (on_failure_ == OnFailure::mute) return 0.0F;
  return history_[ch * (std::size_t{ring_mask_} + 1) + (p & ring_mask_)];
}

bool PythonSlot::plain_wet_rt(std::uint64_t first, std::uint32_t frames) const noexcept {
  if (!prev_wet_ || fade_in_left_ > 0 || offset_left_ > 0 || handover_ || retime_left_ > 0 ||
      first < position_base)
    return false;
  bool all = true;
  for (std::uint32_t i = 0; i < frames; ++i) all &= lane_.tag[(first + i) & ring_mask_] == first + i;
  return all;
}

std::uint32_t PythonSlot::render_rt(float* const* out, std::uint64_t first,
                                          std::uint32_t frames) noexcept {
  const std::size_t cap = std::size_t{ring_mask_} + 1;
  if (plain_wet_rt(first, frames)) {
    // The steady state: every frame processed, no ramp running. Copies only.
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      const float* line = lane_.wet.data() + ch * cap;
      for_each_ring_run(ring_mask_, first, frames,
                        [&](std::size_t cell, std::size_t offset, std::size_t len) {
                          std::memcpy(out[ch] + offset, line + cell, len * sizeof(float));
                        });
      last_out_[ch] = out[ch][frames - 1];
    }
    return 0;
  }
  const float ramp = crossfade_frames_ > 0 ? 1.0F / static_cast<float>(crossfade_frames_) : 1.0F;
  // Fail-closed and bit-exact slots switch hard between processed output and the fallback: a
  // fade-in from zeros or dry, or a step decaying onto them, would be neither the plugin's
  // output nor the fallback (and, with bypass, a blend of dry audio).
  const std::uint32_t wet_dry_frames =
      on_failure_ == OnFailure::mute || bit_exact_ ? 0U : crossfade_frames_;
  // During a retime the old timeline reads `first + delta`; delta = new L − old L (may be < 0).
  const std::int64_t delta =
      static_cast<std::int64_t>(active_pipeline_frames_) - static_cast<std::int64_t>(retime_old_frames_);
  std::uint32_t dry = 0;
  for (std::uint32_t i = 0; i < frames; ++i) {
    const std::uint64_t p = first + i;
    if (p < position_base) {  // pre-roll: nothing was input yet; silence, no ramp after it
      for (std::uint32_t ch = 0; ch < channels_; ++ch) out[ch][i] = last_out_[ch] = 0.0F;
      prev_wet_ = true;
      continue;
    }
    const std::size_t idx = p & ring_mask_;
    bool wet = lane_.tag[idx] == p;
    const float offset_gain = offset_left_ > 0 ? static_cast<float>(offset_left_) * ramp : 0.0F;
    if (wet) {
      if (!prev_wet_) fade_in_left_ = wet_dry_frames;  // a run of processed frames after dry ones
      const float g = 1.0F - static_cast<float>(fade_in_left_) * ramp;
      for (std::uint32_t ch = 0; ch < channels_; ++ch) {
        const float w = lane_.wet[ch * cap + idx];
        float v = w;
        if (fade_in_left_ > 0) {
          const float d = fallback_rt(ch, p) + offset_[ch] * offset_gain;
          v = d + g * (w - d);
        }
        out[ch][i] = v;
      }
      if (fade_in_left_ > 0) --fade_in_left_;
    } else {
      ++dry;
      if (prev_wet_) {
        // The wet signal is missing: it cannot be faded out (it does not exist). Remove the
        // step instead: start from the last output and let the difference to the dry signal
        // decay over the ramp.
        for (std::uint32_t ch = 0; ch < channels_; ++ch) offset_[ch] = last_out_[ch] - fallback_rt(ch, p - 1);
        offset_left_ = wet_dry_frames;
        fade_in_left_ = 0;
      }
      // No offset (none left, or a step of 0): the fallback itself, exactly (x + 0 is not x for
      // a signalling NaN or -0).
      const float og = offset_left_ > 0 ? static_cast<float>(offset_left_) * ramp : 0.0F;
      for (std::uint32_t ch = 0; ch < channels_; ++ch)
        out[ch][i] = offset_left_ > 0 && offset_[ch] != 0.0F ? fallback_rt(ch, p) + offset_[ch] * og
                                                             : fallback_rt(ch, p);
    }
    if (offset_left_ > 0) --offset_left_;
    if (handover_ && p >= handover_from_ && incoming_.tag[idx] == p) {
      // Reload: from the old version's output (above) to the new one's, frame by frame where
      // the new one has processed audio; the last frame is the new version's alone.
      --handover_left_;
      const float g = 1.0F - static_cast<float>(handover_left_) * ramp;
      for (std::uint32_t ch = 0; ch < channels_; ++ch) {
        const float w = incoming_.wet[ch * cap + idx];
        out[ch][i] = handover_left_ == 0 ? w : out[ch][i] + g * (w - out[ch][i]);  // the last: exactly new
      }
      if (handover_left_ == 0) {
        finish_handover_rt();
        wet = true;  // the output is the new version's wet signal now
        fade_in_left_ = 0;
        offset_left_ = 0;
      }
    }
    if (retime_left_ > 0) {
      // Mode change: fade from the old timeline (old L) to the new one.
      const std::uint64_t po = static_cast<std::uint64_t>(static_cast<std::int64_t>(p) + delta);
      const float g = 1.0F - static_cast<float>(retime_left_) * ramp;
      for (std::uint32_t ch = 0; ch < channels_; ++ch) {
        const float old = po < position_base                 ? 0.0F
                          : lane_.tag[po & ring_mask_] == po ? lane_.wet[ch * cap + (po & ring_mask_)]
                                                             : fallback_rt(ch, po);
        out[ch][i] = old + g * (out[ch][i] - old);
      }
      --retime_left_;
    }
    for (std::uint32_t ch = 0; ch < channels_; ++ch) last_out_[ch] = out[ch][i];
    prev_wet_ = wet;
  }
  return dry;
}

BlockStatus PythonSlot::process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                                         const ProcessContext& ctx) noexcept {
  bump(blocks_);
  if (frames == 0) return BlockStatus::processed;
  frames = std::min(frames, max_frames_);  // the chain never exceeds it; never index past it
  adopt_rt();

  // 1. The dry input, by position.
  const std::size_t cap = std::size_t{ring_mask_} + 1;
  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    float* line = history_.data() + ch * cap;
    for_each_ring_run(ring_mask_, in_pos_, frames,
                      [&](std::size_t cell, std::size_t offset, std::size_t len) {
                        std::memcpy(line + cell, in[ch] + offset, len * sizeof(float));
                      });
  }

  // 2. Hand this block to the sandbox and collect what it owes for the positions read now.
  // Jobs are needed up to the input position the oldest timeline reads (during a retime the
  // nearer of both).
  const std::uint32_t pipe =
      retime_left_ > 0 ? std::min(active_pipeline_frames_, retime_old_frames_) : active_pipeline_frames_;
  const std::uint64_t needed_end = in_pos_ + frames - pipe;
  bool missed = false;
  const auto live = [this] { return live_rt(lane_, links_.rt); };
  const auto incoming_live = [this] { return handover_ && live_rt(incoming_, links_.incoming); };
  // Both sandboxes get the block before either is waited for (a reload runs them side by side).
  if (live()) {
    (void)collect_rt(lane_, *links_.rt, 0, 0);  // whatever came back meanwhile, without waiting
    if (live()) submit_rt(lane_, *links_.rt, in, frames, ctx.deadline_ns);
  }
  if (incoming_live()) {
    (void)collect_rt(incoming_, *links_.incoming, 0, 0);
    if (incoming_live()) submit_rt(incoming_, *links_.incoming, in, frames, ctx.deadline_ns);
  }
  if (live()) missed = collect_rt(lane_, *links_.rt, needed_end, ctx.deadline_ns);
  if (incoming_live()) (void)collect_rt(incoming_, *links_.incoming, needed_end, ctx.deadline_ns);

  // 3. Output positions [in_pos − L, in_pos − L + frames).
  const std::uint64_t first = in_pos_ - latency_ - active_pipeline_frames_;
  // A hand-over that cannot crossfade (either side gone, or the new one never caught up) ends
  // as a restart would: the new link takes over, missing positions come out dry.
  if (handover_ && (!live() || !incoming_live() || first > handover_from_ + 8ULL * max_frames_))
    finish_handover_rt();
  const std::uint32_t dry = render_rt(out, first, frames);
  in_pos_ += frames;
  if (dry == 0) return BlockStatus::processed;
  if (missed) {
    recent_miss_ns_.note_rt(deadline_misses_.load(std::memory_order_relaxed), shm::now_ns());
    bump(deadline_misses_);
  }
  bump(bypassed_blocks_);
  return on_failure_ == OnFailure::mute ? BlockStatus::muted : BlockStatus::bypassed;
}

}  // namespace sandpipe::host
