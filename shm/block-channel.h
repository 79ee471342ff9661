// API CONTRACT (declarations agreed between host and sandbox; shm/ implements it).
// Audio blocks between the host's real-time thread and one sandbox process.
//
// One memfd-backed segment per sandbox, mapped with Boost.Interprocess in both processes:
//   [SegmentHeader | jobs ring (host → sandbox) | completions ring (sandbox → host) | audio slots]
// Audio slots are planar float32, each channel of a slot cache-line aligned. A job names a slot;
// the sandbox processes that slot in place and publishes a completion naming the same slot.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace sandpipe::shm {

inline constexpr std::uint32_t layout_version = 1;
inline constexpr std::uint32_t max_channels = 8;
inline constexpr std::uint32_t max_frames_limit = 8192;
inline constexpr std::uint32_t max_slots = 16;

/// Shape of a segment. Chosen by the host; the sandbox only ever validates it.
struct Geometry {
  std::uint32_t channels = 2;     ///< 1..max_channels
  std::uint32_t max_frames = 1024;  ///< 1..max_frames_limit
  std::uint32_t slot_count = 4;   ///< power of two, 2..max_slots; also the ring capacity
};

/// Host → sandbox: "process slot `slot`, which holds `frames` frames, as block `seq`".
struct Job {
  std::uint32_t seq = 0;
  std::uint32_t slot = 0;
  std::uint32_t frames = 0;
  std::uint32_t flags = 0;
};

enum class CompletionStatus : std::uint32_t {
  processed = 0,    ///< the slot holds the plugin's output
  passthrough = 1,  ///< plugin asked for the block to pass unchanged (legacy `process_audio` → False)
  failed = 2,       ///< the plugin raised or produced no output; host uses the dry signal
};

/// Sandbox → host: "block `seq` in `slot` is done". Every field is untrusted on the host.
struct Completion {
  std::uint32_t seq = 0;
  std::uint32_t slot = 0;
  std::uint32_t frames = 0;
  std::uint32_t status = 0;
};

/// Result of a host-side wait. `corrupt` means the sandbox broke the protocol: stop using it.
enum class WaitResult : std::uint8_t { ready, timeout, corrupt };

class Segment;  // defined in shm/segment.h: owns the memfd and the mapping (RAII, move-only)

/// Host side of one block channel. [rt] methods are noexcept, allocate nothing, take no lock and
/// make no syscall but FUTEX_WAKE and a FUTEX_WAIT bounded by the given deadline.
/// Trusts only the geometry it created; indices read from the segment are validated.
class HostEndpoint {
 public:
  /// [main] Binds to a segment the host created. The segment must outlive the endpoint.
  explicit HostEndpoint(Segment& segment) noexcept;

  /// [rt] Pushes a job; wakes the sandbox if it sleeps. False if the jobs ring is full.
  bool submit_rt(const Job& job) noexcept;

  /// [rt] Pops the next completion if one is there (never waits).
  WaitResult try_complete_rt(Completion& out) noexcept;

  /// [rt] Pops the next completion, spinning briefly then sleeping on a futex until
  /// `deadline_ns` (CLOCK_MONOTONIC, absolute). Never waits past the deadline.
  WaitResult wait_complete_rt(Completion& out, std::uint64_t deadline_ns) noexcept;

  /// [rt] Channel `ch` of slot `slot` (both must be in range: checked, nullptr otherwise).
  [[nodiscard]] float* channel_rt(std::uint32_t slot, std::uint32_t ch) noexcept;

  /// [any] Tells the sandbox a control message is waiting on its socket (bumps a counter, wakes it).
  void notify_control() noexcept;

  [[nodiscard]] const Geometry& geometry() const noexcept;
};

/// Sandbox side of one block channel (runs in the sandbox process; not real-time on the host).
class SandboxEndpoint {
 public:
  explicit SandboxEndpoint(Segment& segment) noexcept;

  enum class Wake : std::uint8_t { job, control, timeout };
  /// Waits for a job or a control notification, at most `timeout_ns`.
  Wake wait(Job& out, std::uint64_t timeout_ns) noexcept;

  /// Publishes a completion and wakes the host if it sleeps.
  void complete(const Completion& completion) noexcept;

  [[nodiscard]] float* channel(std::uint32_t slot, std::uint32_t ch) noexcept;
  /// Distance in floats between two channels of one slot (for numpy strides).
  [[nodiscard]] std::size_t channel_stride() const noexcept;
  [[nodiscard]] const Geometry& geometry() const noexcept;
};

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC). [rt] vDSO, no syscall.
[[nodiscard]] std::uint64_t now_ns() noexcept;

}  // namespace sandpipe::shm
