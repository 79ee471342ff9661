// API CONTRACT (declarations agreed between host and sandbox; shm/ implements it).
// Audio blocks between the host's real-time thread and one sandbox process.
//
// One memfd-backed segment per sandbox, mapped with Boost.Interprocess in both processes:
//   [SegmentHeader | jobs ring (host → sandbox) | completions ring (sandbox → host) | audio slots]
// Audio slots are planar float32, each channel of a slot cache-line aligned. A job names a slot;
// the sandbox processes that slot in place and publishes a completion naming the same slot.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>

#include "shm/clock.h"
#include "shm/spsc-ring.h"

namespace sandpipe::shm {

inline constexpr std::uint32_t layout_version = 3;  // 2: Job::submit_us; 3: relays
inline constexpr std::uint32_t max_channels = 8;
inline constexpr std::uint32_t max_frames_limit = 8192;
inline constexpr std::uint32_t max_slots = 16;

/// Shape of a segment. Chosen by the host; the sandbox only ever validates it.
struct Geometry {
  std::uint32_t channels = 2;       ///< 1..max_channels
  std::uint32_t max_frames = 1024;  ///< 1..max_frames_limit
  std::uint32_t slot_count = 4;     ///< power of two, 2..max_slots; also the ring capacity
};

/// Host → sandbox: "process slot `slot`, which holds `frames` frames, as block `seq`".
struct Job {
  std::uint32_t seq = 0;
  std::uint32_t slot = 0;
  std::uint32_t frames = 0;
  /// Low 32 bits of the host's CLOCK_MONOTONIC in µs when it submitted the job (set by
  /// HostEndpoint::submit_rt): the cadence the sandbox's anticipation follows.
  std::uint32_t submit_us = 0;
};

/// Direct hand-off (a relay of sandboxes, see SandboxEndpoint::send_output_to): a sandbox that
/// passes a job on to the next one says in the top bits of Job::frames what became of the block
/// before it. The next sandbox processes the block all the same (its plugin sees every block)
/// and its completion says `failed` or `passthrough` as the worst of the run did.
inline constexpr std::uint32_t job_upstream_failed = 1U << 31;
inline constexpr std::uint32_t job_upstream_passthrough = 1U << 30;
inline constexpr std::uint32_t job_upstream_flags = job_upstream_failed | job_upstream_passthrough;

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

namespace detail {
struct ControlNotify;
}  // namespace detail

/// Host side of one block channel. [rt] methods are noexcept, allocate nothing, take no lock and
/// make no syscall but FUTEX_WAKE and a FUTEX_WAIT bounded by the given deadline.
/// Trusts only the geometry it created; indices read from the segment are validated.
///
/// At most `slot_count` jobs are in flight (submitted, completion not yet popped). Completions
/// must come back in submission order, each naming the seq and slot of the oldest job in flight,
/// with frames <= max_frames and a known status; anything else is `corrupt`, and a corrupt
/// endpoint stays corrupt (every later call returns corrupt / false / nullptr).
class HostEndpoint {
 public:
  /// Spin before sleeping in wait_complete_rt(), over the first `default_spin_ns` of the oldest
  /// job's life: a sandbox that answers quickly is caught without the two wake-ups of a futex
  /// round trip (tens of µs each when the sandbox runs on an idle vCPU), and a job submitted a
  /// cycle earlier (pipelined) is slept on at once. Adaptive: after `spin_miss_limit`
  /// spins in a row that did not catch the completion, waits sleep at once, except one spin every
  /// `spin_probe_interval` waits to notice the sandbox got fast again.
  static constexpr std::uint64_t default_spin_ns = 50'000;
  static constexpr std::uint32_t spin_miss_limit = 4;
  static constexpr std::uint32_t spin_probe_interval = 64;

  /// [main] Binds to a segment the host created. The segment must outlive the endpoint. Bind
  /// before the sandbox runs (the ring indices are taken from the segment once, here).
  explicit HostEndpoint(Segment& segment) noexcept;
  /// [main] A relay of sandboxes (direct hand-off): jobs and their input go into the `head`
  /// edge, which the relay's first sandbox takes them from; completions and the processed
  /// audio come back in the `tail` edge, which its last one fills; the sandboxes in between
  /// pass each block on among themselves (SandboxEndpoint::send_output_to). Both segments must
  /// have the same geometry (std::invalid_argument otherwise) and outlive the endpoint. No
  /// sandbox sleeps on `head`'s control word: tell each one through its own ControlBell.
  ///
  /// A relay outlives its sandboxes: one that is restarted loses the blocks it was working on,
  /// so a completion may come back for a later job than the oldest in flight. Such a completion
  /// is accepted when it names a job in flight; the jobs before it are returned first, one per
  /// call, as `failed` (lost). Anything else is still `corrupt`.
  HostEndpoint(Segment& head, Segment& tail);
  HostEndpoint(const HostEndpoint&) = delete;
  HostEndpoint& operator=(const HostEndpoint&) = delete;
  HostEndpoint(HostEndpoint&&) noexcept = default;
  HostEndpoint& operator=(HostEndpoint&&) noexcept = default;
  ~HostEndpoint() = default;

  /// [rt] Pushes a job; wakes the sandbox if it sleeps. False if the jobs ring is full (all
  /// `slot_count` slots in flight), if the job is out of range, or if the endpoint failed.
  bool submit_rt(const Job& job) noexcept;

  /// [rt] Pops the next completion if one is there (never waits). `timeout` means none yet.
  WaitResult try_complete_rt(Completion& out) noexcept;

  /// [rt] Pops the next completion, spinning briefly then sleeping on a futex until
  /// `deadline_ns` (CLOCK_MONOTONIC, absolute). Never waits past the deadline. Returns
  /// `timeout` at once when no job is in flight (nothing could complete), and as soon as the
  /// abort flag (set_abort_flag()) is seen set.
  WaitResult wait_complete_rt(Completion& out, std::uint64_t deadline_ns) noexcept;

  /// [rt] Channel `ch` of slot `slot` (both must be in range: checked, nullptr otherwise): where
  /// a job's input goes.
  [[nodiscard]] float* channel_rt(std::uint32_t slot, std::uint32_t ch) noexcept;
  /// [rt] The same in the segment completions come from, where the processed audio is: the
  /// same memory as channel_rt() but in a relay.
  [[nodiscard]] const float* output_channel_rt(std::uint32_t slot, std::uint32_t ch) noexcept;

  /// [any] Tells the sandbox a control message is waiting on its socket (bumps a counter, wakes it).
  void notify_control() noexcept;

  /// [any] The geometry the host created (a private copy, never re-read from the segment).
  [[nodiscard]] const Geometry& geometry() const noexcept;

  /// [rt] Distance in floats between two channels of one slot.
  [[nodiscard]] std::size_t channel_stride() const noexcept;
  /// [rt] Jobs submitted whose completion has not been popped yet (0..slot_count).
  [[nodiscard]] std::uint32_t in_flight() const noexcept;
  /// [any] True when the sandbox claims a completion for every job pushed so far, whether or
  /// not the RT side collected them yet (it may not have been called: a paused graph). For the
  /// hang watchdog only: the claim is read from shared memory, the count it is compared with is
  /// the host's own (submitted_count()).
  [[nodiscard]] bool sandbox_idle_hint() const noexcept;
  /// [any] How many jobs the host has submitted on this endpoint (free-running), from its own
  /// memory, never from the segment: what the watchdog checks the sandbox's claims against.
  [[nodiscard]] std::uint32_t submitted_count() const noexcept;
  /// [any] How many blocks the sandbox claims to have answered so far (free-running). Moves as
  /// long as the sandbox makes progress: the hang watchdog's other input. A hint, as above.
  [[nodiscard]] std::uint32_t answered_hint() const noexcept;
  /// [any] The same for a relay's sandbox bound to this endpoint's segment (its own, whose
  /// rings the host does not use): the blocks it claims to have passed on.
  [[nodiscard]] std::uint32_t relay_answered_hint() const noexcept;
  /// [rt] True once the sandbox broke the protocol (the endpoint then stays unusable).
  [[nodiscard]] bool failed() const noexcept;
  /// [main] How long wait_complete_rt() spins at most before it sleeps (0: sleep at once).
  void set_spin_ns(std::uint64_t spin_ns) noexcept;
  /// [main] A host-private flag (never in the segment, so the sandbox cannot touch it) that makes
  /// wait_complete_rt() give up at once: checked while spinning and before every sleep. Set it,
  /// then call wake_waiter(). nullptr (the default): no abort. The flag must outlive the endpoint.
  void set_abort_flag(const std::atomic<bool>* flag) noexcept;
  /// [any] Wakes a wait_complete_rt() sleeping on another thread so it re-checks the abort flag
  /// (a FUTEX_WAKE only if it announced that it sleeps).
  void wake_waiter() noexcept;
  /// [any] True if the abort flag is set.
  [[nodiscard]] bool aborted() const noexcept;

  /// [main] Debug builds assert that [rt] methods always run on one thread, the first that
  /// called one; call this when the real-time side moves to another thread (stream restarted).
  void release_rt_thread() noexcept;

 private:
  WaitResult fail() noexcept;
  void check_rt_thread() noexcept;

  Geometry geometry_;  // the host's own copy: never re-read from the segment
  std::byte* slots_ = nullptr;
  std::byte* output_slots_ = nullptr;  // slots_ but in a relay
  std::size_t channel_stride_bytes_ = 0;
  std::size_t slot_stride_bytes_ = 0;
  SpscProducer<Job> jobs_;
  SpscConsumer<Completion> completions_;
  detail::ControlNotify* control_ = nullptr;
  const std::atomic<bool>* abort_ = nullptr;     // host-private; see set_abort_flag()
  std::array<Job, max_slots> in_flight_jobs_{};  // indexed by sequence number mod slot_count
  std::uint32_t submitted_ = 0;
  /// submitted_ for other threads (relaxed copy; movable, unlike a bare std::atomic).
  struct SharedCount {
    std::atomic<std::uint32_t> value{0};
    SharedCount() = default;
    SharedCount(const SharedCount&) = delete;
    SharedCount& operator=(const SharedCount&) = delete;
    SharedCount(SharedCount&& o) noexcept : value(o.value.load(std::memory_order_relaxed)) {}
    SharedCount& operator=(SharedCount&& o) noexcept {
      value.store(o.value.load(std::memory_order_relaxed), std::memory_order_relaxed);
      return *this;
    }
    ~SharedCount() = default;
  } submitted_shared_;
  std::uint32_t completed_ = 0;
  std::uint64_t spin_ns_ = default_spin_ns;
  std::uint32_t spin_misses_ = 0;
  std::uint32_t waits_since_probe_ = 0;
  bool failed_ = false;
  bool relay_ = false;          // made by the relay constructor: completions may skip lost jobs
  bool has_held_ = false;       // a relay's completion that came after lost jobs, for later
  Completion held_{};
  std::thread::id rt_thread_{};  // debug builds only
};

/// Sandbox side of one block channel (runs in the sandbox process; not real-time on the host).
///
/// Protocol: complete every job `wait()` returns, in the order returned, with the job's seq and
/// slot (status `failed` if the plugin could not process it). Jobs that fail validation (slot or
/// frames out of range) are skipped, never returned.
class SandboxEndpoint {
 public:
  /// Spin in wait() before sleeping. 0 by default: jobs come one per quantum (milliseconds
  /// apart), so spinning would only burn the CPU the host's audio thread may need.
  static constexpr std::uint64_t default_spin_ns = 0;

  /// [main] Binds to an attached segment (which must outlive the endpoint); one endpoint per
  /// segment. The methods below are for the sandbox's one audio thread ([any] in the sense that
  /// it need not be real-time, but never two threads at once).
  explicit SandboxEndpoint(Segment& segment) noexcept;
  SandboxEndpoint(const SandboxEndpoint&) = delete;
  SandboxEndpoint& operator=(const SandboxEndpoint&) = delete;
  SandboxEndpoint(SandboxEndpoint&&) noexcept = default;
  SandboxEndpoint& operator=(SandboxEndpoint&&) noexcept = default;
  ~SandboxEndpoint() = default;

  enum class Wake : std::uint8_t { job, control, timeout };
  /// [any] Waits for a job or a control notification, at most `timeout_ns`. A waiting job is returned
  /// before a pending control notification; several notifications merge into one `control`.
  Wake wait(Job& out, std::uint64_t timeout_ns) noexcept;

  /// [any] Publishes a completion and wakes the host if it sleeps. (Dropped if the ring is full, which
  /// a host keeping at most slot_count jobs in flight never allows.) In a relay, the status is
  /// the worst of the run's so far (job_upstream_flags), and a sandbox that sends its output on
  /// (send_output_to) passes the block and the job to the next sandbox instead.
  void complete(const Completion& completion) noexcept;

  // --- Direct hand-off: a relay of sandboxes ------------------------------------------------
  // The host submits to the first sandbox of a relay and collects from the last; each one in
  // between takes its jobs from an edge segment the one before it fills. An edge is an
  // ordinary segment of the relay's geometry that only those two sandboxes (and the host,
  // which created it) map: the sandbox before it can write the next one's input and nothing
  // else, so it can neither forge the next one's output nor skip it.

  /// [main] Takes jobs from `edge` (pushed by the host or by the sandbox before us) instead of
  /// our own segment's jobs ring; each job's input is copied from the edge's slot into ours,
  /// where the plugin works on it. Control notifications still count in our own segment, but
  /// the host wakes us on the edge (ControlBell). The ring's index is taken from the edge now:
  /// bind when this sandbox starts serving (a spare that waited for its load must not start
  /// from where the edge was when it was made). False if `edge`'s geometry differs from ours.
  /// `edge` must outlive the endpoint.
  bool take_input_from(Segment& edge) noexcept;
  /// [main] complete() copies the processed slot into `edge`'s slot of the same index and
  /// passes the block on: as a job for the next sandbox (the run's status in its flags), or,
  /// `to_host` (the relay's last sandbox), as a completion in the edge's completions ring.
  /// False if `edge`'s geometry differs from ours. When to bind: as take_input_from().
  bool send_output_to(Segment& edge, bool to_host) noexcept;
  /// [any] Jobs passed on to the next sandbox, and those it had no room for (it is far behind
  /// or broke the edge's ring: the host's wait for them runs out and the run goes to its
  /// fallback).
  [[nodiscard]] std::uint64_t forwarded() const noexcept { return forwarded_; }
  [[nodiscard]] std::uint64_t forward_drops() const noexcept { return forward_drops_; }

  /// [any] Channel `ch` of slot `slot`, or nullptr if either is out of range.
  [[nodiscard]] float* channel(std::uint32_t slot, std::uint32_t ch) noexcept;
  /// [any] Distance in floats between two channels of one slot (for numpy strides).
  [[nodiscard]] std::size_t channel_stride() const noexcept;
  /// [any] Distance in floats between two slots (= channels × channel_stride()); slot s channel c
  /// starts at channel(0, 0) + s * slot_stride() + c * channel_stride().
  [[nodiscard]] std::size_t slot_stride() const noexcept;
  /// [any] The validated geometry (a private copy made at attach).
  [[nodiscard]] const Geometry& geometry() const noexcept;
  /// [main] How long wait() spins before it sleeps.
  void set_spin_ns(std::uint64_t spin_ns) noexcept;

  /// Anticipation: jobs come once per graph cycle. Once `steady_jobs_needed` jobs in a row came
  /// at the same cadence (a period of at least `min_anticipated_period_ns`), wait() sleeps only
  /// until `min(lead, period / 16)` before the next one is due and spins until as long after.
  /// (The sandbox sets its timer slack to 1 ns: the default 50 µs would eat the lead.)
  /// Off unless asked for (`wake-lead-us`): it pays on the critical path of sync slots only,
  /// and spins up to 1/8 of a core (docs/performance.md).
  static constexpr std::uint64_t default_lead_ns = 0;
  static constexpr std::uint64_t min_anticipated_period_ns = 500'000;
  static constexpr std::uint32_t steady_jobs_needed = 8;
  /// [main] The lead (0: never anticipate; sleep until the host wakes us).
  void set_lead_ns(std::uint64_t lead_ns) noexcept;
  struct Anticipation {
    std::uint64_t waits = 0;      ///< waits that spun over a job's due time
    std::uint64_t caught = 0;     ///< of those, jobs that arrived while we spun
    std::uint64_t period_ns = 0;  ///< the cadence followed (0: none steady)
  };
  /// [any] What anticipation did so far.
  [[nodiscard]] Anticipation anticipation() const noexcept;

 private:
  bool poll(Job& out, Wake& wake) noexcept;
  /// Jobs come at a cadence worth anticipating (see above).
  [[nodiscard]] bool steady() const noexcept;
  /// A job submitted at `now` was returned: follow the cadence.
  void note_job(std::uint64_t now) noexcept;
  /// Polls, then sleeps on the jobs futex until a job or control notification, or `until`.
  bool sleep_until(Job& out, Wake& wake, std::uint64_t until) noexcept;
  /// Polls in a loop until a job or control notification, or `until`; with `yield`, lets any
  /// other runnable thread of this CPU go first between polls.
  bool spin_until(Job& out, Wake& wake, std::uint64_t until, bool yield) noexcept;

  /// Copies `frames` frames of every channel of slot `slot` from `from` to `to` (slot areas).
  void copy_slot(const std::byte* from, std::byte* to, std::uint32_t slot, std::uint32_t frames) const noexcept;

  Geometry geometry_;
  std::byte* slots_ = nullptr;
  std::size_t channel_stride_bytes_ = 0;
  std::size_t slot_stride_bytes_ = 0;
  SpscConsumer<Job> jobs_;
  SpscProducer<Completion> completions_;
  // A relay: the edge jobs come from (input_slots_ non-null) and the edge they go on to.
  const std::byte* input_slots_ = nullptr;
  std::byte* output_slots_ = nullptr;
  SpscProducer<Job> next_jobs_;
  SpscProducer<Completion> tail_completions_;  // the relay's last sandbox: to the host
  bool to_host_ = false;
  std::uint32_t answered_ = 0;
  /// What each slot's job said of the run before us (job_upstream_flags) and its submit stamp.
  std::array<std::uint32_t, max_slots> upstream_{};
  std::array<std::uint32_t, max_slots> submit_us_{};
  std::uint64_t forwarded_ = 0;
  std::uint64_t forward_drops_ = 0;
  detail::ControlNotify* control_ = nullptr;
  std::uint32_t last_control_ = 0;
  std::uint64_t spin_ns_ = default_spin_ns;
  std::uint64_t lead_ns_ = default_lead_ns;
  std::uint64_t last_job_ns_ = 0;
  std::uint64_t period_ns_ = 0;
  std::uint32_t steady_jobs_ = 0;
  std::uint64_t anticipated_ = 0;
  std::uint64_t caught_ = 0;
};

/// Host side: tells a relay's later sandbox that a control message waits on its socket. Such
/// a sandbox counts notifications in its own segment but sleeps on the edge before it, so the
/// bell bumps the one and wakes the other. Both segments must outlive the bell.
class ControlBell {
 public:
  /// [main] `own`: the sandbox's segment; `sleeps_on`: the edge it takes its jobs from.
  ControlBell(Segment& own, Segment& sleeps_on) noexcept;
  /// [any] Bumps the counter and wakes the sandbox if it sleeps.
  void ring() noexcept;

 private:
  detail::ControlNotify* control_ = nullptr;
  SpscProducer<Job> wake_;
};

}  // namespace sandpipe::shm
