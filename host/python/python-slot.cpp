// Main-thread side of PythonSlot's RT core: sizing the rings, handing links over (restarts),
// the pipeline depth, calibration. The sandbox process and its control conversation are
// SandboxInstance (sandbox-instance.h).
#include "host/python/python-slot.h"

#include <algorithm>
#include <bit>
#include <stdexcept>
#include <utility>

namespace sandpipe::host {

SandboxLink* PythonSlot::LinkSlots::own(std::unique_ptr<SandboxLink> link) {
  owned.push_back(std::move(link));
  return owned.back().get();
}

std::unique_ptr<SandboxLink> PythonSlot::LinkSlots::disown(const SandboxLink* link) noexcept {
  const auto it = std::find_if(owned.begin(), owned.end(), [&](const auto& l) { return l.get() == link; });
  if (it == owned.end()) return nullptr;
  std::unique_ptr<SandboxLink> out = std::move(*it);
  owned.erase(it);
  return out;
}

PythonSlot::PythonSlot(std::string name, std::unique_ptr<SandboxLink> link, std::uint32_t max_frames)
    : name_(std::move(name)), channels_(link->segment.geometry().channels), max_frames_(max_frames) {
  init_rt(std::move(link));
}

PythonSlot::~PythonSlot() = default;

void PythonSlot::set_plugin(const PythonPluginInfo& info) {
  info_ = info;
  set_latency(info.latency);
  sink_ = info.role == "sink";
}

void PythonSlot::init_rt(std::unique_ptr<SandboxLink> link) {
  const std::uint32_t slots = std::min(link->endpoint.geometry().slot_count, shm::max_slots);
  max_pipeline_blocks_ = slots > 2 ? slots - 2 : 0;
  max_pipeline_frames_ = max_pipeline_blocks_ * max_frames_;
  active_generation_.store(link->generation, std::memory_order_relaxed);
  next_generation_ = link->generation + 1;
  links_.owned.reserve(4);  // the RT side's, an offer, a retired one, the graveyard's
  links_.rt = links_.own(std::move(link));
  links_.latest.store(links_.rt, std::memory_order_release);
  lane_.usable = true;
  set_latency(0);
}

void PythonSlot::set_latency(std::uint32_t latency) {
  latency_ = latency;
  // Positions still read (the longest L) + one call being written + one call of slack.
  const std::uint64_t need = std::uint64_t{latency} + max_pipeline_frames_ + 2ULL * max_frames_;
  const auto cap = static_cast<std::uint32_t>(std::bit_ceil(need));
  ring_mask_ = cap - 1;
  history_.assign(std::size_t{channels_} * cap, 0.0F);
  for (Lane* lane : {&lane_, &incoming_}) {
    lane->wet.assign(std::size_t{channels_} * cap, 0.0F);
    lane->tag.assign(cap, 0);
  }
}

bool PythonSlot::replace_link(std::unique_ptr<SandboxLink>&& link, LinkSwap swap) {
  if (!link) throw std::invalid_argument("replace_link: no link");
  const shm::Geometry& have = link_for_main().endpoint.geometry();
  const shm::Geometry& got = link->endpoint.geometry();
  if (got.channels != have.channels || got.max_frames != have.max_frames ||
      got.slot_count != have.slot_count) {
    throw std::invalid_argument("replace_link: the new segment's geometry differs from the slot's");
  }
  collect_retired_links();
  if (links_.offered.load(std::memory_order_acquire) != nullptr) return false;
  if (links_.retired.load(std::memory_order_acquire) != nullptr) return false;
  link->swap = swap;
  links_.before_offer = links_.latest.load(std::memory_order_relaxed);
  SandboxLink* raw = links_.own(std::move(link));
  links_.latest.store(raw, std::memory_order_release);
  links_.offered.store(raw, std::memory_order_release);
  return true;
}

std::unique_ptr<SandboxLink> PythonSlot::withdraw_link() noexcept {
  SandboxLink* link = links_.offered.exchange(nullptr, std::memory_order_acq_rel);
  if (link == nullptr) return nullptr;
  links_.latest.store(links_.before_offer, std::memory_order_release);
  return links_.disown(link);
}

void PythonSlot::collect_retired_links() {
  // Two phases: a link retired now is freed at the next call, so an [any] mark_link_dead() that
  // loaded it just before it was replaced does not touch freed memory.
  const SandboxLink* older = std::exchange(links_.graveyard, links_.retired.exchange(nullptr, std::memory_order_acq_rel));
  if (older != nullptr) links_.disown(older).reset();
}

std::uint64_t PythonSlot::next_link_generation() noexcept { return next_generation_++; }

void PythonSlot::mark_link_dead() noexcept {
  SandboxLink* link = links_.latest.load(std::memory_order_acquire);
  if (link == nullptr) return;
  link->dead.store(true, std::memory_order_seq_cst);
  link->paused.store(true, std::memory_order_seq_cst);
  link->endpoint.wake_waiter();
}

void PythonSlot::relay_stage_down() noexcept {
  SandboxLink* link = links_.latest.load(std::memory_order_acquire);
  if (link == nullptr || relay_down_++ > 0) return;
  link->paused.store(true, std::memory_order_seq_cst);
  link->endpoint.wake_waiter();
}

void PythonSlot::relay_stage_up() noexcept {
  SandboxLink* link = links_.latest.load(std::memory_order_acquire);
  if (link == nullptr || relay_down_ == 0 || --relay_down_ > 0) return;
  link->paused.store(link->dead.load(std::memory_order_relaxed), std::memory_order_seq_cst);
}

void PythonSlot::set_pipeline(std::uint32_t blocks, std::uint32_t block_frames) noexcept {
  const std::uint32_t k = std::min(blocks, max_pipeline_blocks_);
  const std::uint32_t frames = std::clamp<std::uint32_t>(block_frames, 1, max_frames_);
  pipeline_blocks_.store(k, std::memory_order_relaxed);
  pipeline_frames_.store(k * frames, std::memory_order_relaxed);
}

bool PythonSlot::calibrate(std::uint32_t blocks, std::uint32_t frames, std::uint64_t timeout_ns,
                                 HistogramCounts& out) {
  SandboxLink* link = links_.rt;
  if (link == nullptr || !lane_.usable || lane_.fifo_head != lane_.fifo_tail) return false;
  shm::HostEndpoint& ep = link->endpoint;
  frames = std::clamp<std::uint32_t>(frames, 1, max_frames_);
  bool ok = true;
  for (std::uint32_t b = 0; b < calibration_warmup_blocks + blocks && ok; ++b) {
    for (std::uint32_t ch = 0; ch < channels_; ++ch) {
      float* dst = ep.channel_rt(0, ch);
      if (dst == nullptr) return false;
      std::fill_n(dst, frames, 0.0F);
    }
    const std::uint32_t seq = next_seq_++;
    const std::uint64_t start = shm::now_ns();
    if (!ep.submit_rt(shm::Job{seq, 0, frames, 0})) return false;
    // Position 0 (before position_base): a late completion is freed and otherwise ignored.
    lane_.jobs[0] = JobRecord{0, start, frames, seq, true};
    lane_.fifo[lane_.fifo_tail++ & (shm::max_slots - 1)] = 0;
    shm::Completion done;
    const shm::WaitResult r = ep.wait_complete_rt(done, start + timeout_ns);
    const std::uint64_t end = shm::now_ns();
    if (r != shm::WaitResult::ready) {
      if (r == shm::WaitResult::corrupt) fail_link_rt(lane_);
      ok = false;
      break;
    }
    if (!apply_completion_rt(lane_, *link, done, end)) {
      fail_link_rt(lane_);
      ok = false;
      break;
    }
    if (b >= calibration_warmup_blocks) out.add(end - start);
  }
  publish_oldest_rt();
  ep.release_rt_thread();  // the data thread takes over from here
  return ok;
}

}  // namespace sandpipe::host
