// What a segment looks like inside: the header struct and the offsets of everything after it.
// Both processes compute the offsets from the geometry with compute_layout(); the header repeats
// them so the attaching side can check it agrees with the creator (and so a hexdump explains
// itself). Offsets only: each process maps the segment at a different address.
//
//   0                 SegmentHeader (magic, version, sizes, geometry, offsets)
//   jobs_control      RingControl: write | read | sleeping (one cache line each)   host → sandbox
//   jobs_entries      Job[slot_count]
//   completions_...   RingControl + Completion[slot_count]                          sandbox → host
//   control           ControlNotify: counter bumped by HostEndpoint::notify_control()
//   slots             slot_count × channels × channel_stride_bytes of float32, planar
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "shm/block-channel.h"
#include "shm/spsc-ring.h"

namespace sandpipe::shm {

class Segment;

namespace detail {

/// "SPSH" little-endian: the first word of every segment.
inline constexpr std::uint32_t segment_magic = 0x48535053;

/// The first bytes of a segment. Written once by the host before the sandbox exists; read once
/// (copied, then validated) by the sandbox when it attaches.
struct alignas(cache_line_size) SegmentHeader {
  std::uint32_t magic;
  std::uint32_t layout_version;
  std::uint32_t header_size;           ///< sizeof(SegmentHeader) of the creator
  std::uint32_t channels;
  std::uint32_t max_frames;
  std::uint32_t slot_count;            ///< also the capacity of both rings
  std::uint32_t channel_stride_bytes;  ///< distance between two channels of a slot
  std::uint32_t reserved;
  std::uint64_t total_size;            ///< bytes from the header to the end of the last slot
  std::uint64_t jobs_offset;
  std::uint64_t completions_offset;
  std::uint64_t control_offset;
  std::uint64_t slots_offset;
};
static_assert(std::is_standard_layout_v<SegmentHeader> && std::is_trivially_copyable_v<SegmentHeader>);
static_assert(sizeof(SegmentHeader) == 2 * cache_line_size);

/// The control-notify counter, alone on its cache line. The sandbox compares it with the last
/// value it saw; the wake-up itself goes through the jobs ring's futex word (a thread can sleep
/// on one futex only), so a job and a control message wake the same sleeper.
struct ControlNotify {
  alignas(cache_line_size) std::atomic<std::uint32_t> count;
  /// Blocks a relay's sandbox has answered (processed and passed on, or tried to), bumped by
  /// the sandbox: its host-side watchdog's sign of progress, as the completions ring's index is
  /// for a sandbox that answers the host itself. Untrusted on the host.
  std::atomic<std::uint32_t> answered;
};
static_assert(std::is_standard_layout_v<ControlNotify>);
static_assert(sizeof(ControlNotify) == cache_line_size);

static_assert(std::is_standard_layout_v<Job> && std::is_trivially_copyable_v<Job>);
static_assert(std::is_standard_layout_v<Completion> && std::is_trivially_copyable_v<Completion>);
static_assert(sizeof(Job) == 16 && sizeof(Completion) == 16);

/// Byte offsets of every part of a segment, derived from a geometry alone.
struct Layout {
  std::size_t jobs_control = 0;
  std::size_t jobs_entries = 0;
  std::size_t completions_control = 0;
  std::size_t completions_entries = 0;
  std::size_t control = 0;
  std::size_t slots = 0;
  std::size_t channel_stride_bytes = 0;
  std::size_t slot_stride_bytes = 0;
  std::size_t total_size = 0;
};

[[nodiscard]] constexpr std::size_t align_up(std::size_t value, std::size_t alignment) noexcept {
  return (value + alignment - 1) / alignment * alignment;
}

/// [any] True if `geometry` is within the limits of block-channel.h.
[[nodiscard]] constexpr bool geometry_valid(const Geometry& geometry) noexcept {
  return geometry.channels >= 1 && geometry.channels <= max_channels && geometry.max_frames >= 1 &&
         geometry.max_frames <= max_frames_limit && geometry.slot_count >= 2 &&
         geometry.slot_count <= max_slots && std::has_single_bit(geometry.slot_count);
}

/// [any] Offsets for a valid geometry (callers check geometry_valid() first; the sizes cannot
/// overflow then: the largest segment is a little over 4 MiB).
[[nodiscard]] constexpr Layout compute_layout(const Geometry& geometry) noexcept {
  Layout layout;
  std::size_t at = sizeof(SegmentHeader);
  layout.jobs_control = at;
  layout.jobs_entries = at + sizeof(RingControl);
  at = align_up(layout.jobs_entries + geometry.slot_count * sizeof(Job), cache_line_size);
  layout.completions_control = at;
  layout.completions_entries = at + sizeof(RingControl);
  at = align_up(layout.completions_entries + geometry.slot_count * sizeof(Completion), cache_line_size);
  layout.control = at;
  at += sizeof(ControlNotify);
  layout.slots = at;
  layout.channel_stride_bytes = align_up(std::size_t{geometry.max_frames} * sizeof(float), cache_line_size);
  layout.slot_stride_bytes = layout.channel_stride_bytes * geometry.channels;
  layout.total_size = layout.slots + layout.slot_stride_bytes * geometry.slot_count;
  return layout;
}

inline constexpr std::size_t max_segment_size =
    compute_layout(Geometry{max_channels, max_frames_limit, max_slots}).total_size;

/// [any] The parts of a mapped segment, as typed pointers (base is where this process mapped it).
struct SegmentParts {
  RingControl* jobs_control;
  Job* jobs;
  RingControl* completions_control;
  Completion* completions;
  ControlNotify* control;
  std::byte* slots;
};
[[nodiscard]] SegmentParts segment_parts(void* base, const Layout& layout) noexcept;

/// [main] Test hook: sets both indices of both rings to `start` (e.g. near UINT32_MAX to exercise
/// wrap-around). Only before any endpoint is bound to the segment.
void set_ring_indices_for_testing(Segment& segment, std::uint32_t start) noexcept;

}  // namespace detail
}  // namespace sandpipe::shm
