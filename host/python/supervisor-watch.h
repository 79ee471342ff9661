// The supervisor's private parts, shared by supervisor*.cpp only: one slot's supervision
// (Supervisor::Watch) and the helpers more than one of those files needs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "host/python/sandbox-instance.h"
#include "host/python/supervisor.h"

namespace sandpipe::host {

/// One slot's supervision. `slot`, `name`, `python` and `hang_timeout` are set by the
/// constructor and only read after it (but a native slot's `slot.processor`, which
/// rebind_slots() replaces under the mutex and only status() reads, under it too); everything
/// else is the supervisor thread's alone (other threads see it through Supervisor::publish()'s
/// snapshot), so no lock guards it.
struct Supervisor::Watch {
  using Clock = std::chrono::steady_clock;

  SupervisedSlot slot;
  std::string name;
  bool python = false;
  std::chrono::milliseconds hang_timeout{200};
  std::size_t slot_index = 0;  ///< the chain slot watched (a relay's plugins share one)
  /// A relay's plugin: its place in the relay (-1: not a relay's) and the watch of the plugin
  /// before it (null: the first). It never hands a link to the slot: the relay's link outlives
  /// its sandboxes, and a new sandbox joins the same edges.
  int relay_stage = -1;
  Watch* relay_before = nullptr;
  bool relay_last = false;  ///< the relay's last plugin: the only one that writes its tail
  /// A relay's: the index of this stage's first plugin among the slot's (ParamSetting::member):
  /// a sandbox group's stage counts as its members.
  std::uint32_t relay_first_plugin = 0;
  /// The relay's: the count of blocks offered to this plugin (by the host, or passed on by the
  /// plugin before it) when it last answered one. While it stays the same, a plugin that does
  /// not answer is starved, not hung.
  std::uint32_t offered_hint = 0;

  // What the status shows (copied by publish()).
  SlotState state = SlotState::running;
  std::uint64_t exceptions_before = 0;  ///< exceptions of sandboxes that are gone
  std::uint64_t exceptions_now = 0;     ///< the current sandbox's, from its stats
  /// A sandbox group's slot: the same per member (and each member's last error, latency and
  /// time in process() as the running sandbox last said).
  std::vector<MemberStatus> members;
  std::vector<std::uint64_t> member_exceptions_before;
  std::uint64_t restarts = 0;
  std::uint64_t reloads = 0;
  std::uint64_t crashes = 0;
  std::uint64_t hangs = 0;
  std::uint64_t demotions = 0;  ///< its sandboxes' real-time priority taken away (busy too long)
  std::string last_error;
  std::string first_error;  ///< the first last_error (render's summary names it)
  pid_t pid = -1;
  double last_restart_ms = 0.0;
  double max_restart_ms = 0.0;

  // The sandboxes. NOTE: an instance points into its link's endpoint: wherever both go, the
  // instance goes first.
  std::unique_ptr<SandboxInstance> current;     ///< the sandbox the RT side uses
  std::unique_ptr<SandboxInstance> spare;       ///< interpreter ready, waiting for a load
  std::unique_ptr<SandboxInstance> pending;     ///< loading, to replace `current`
  std::unique_ptr<SandboxLink> unclaimed_link;  ///< `current`'s, not yet accepted by replace_link
  SandboxLaunch launch;
  std::vector<ParamSetting> params;
  std::vector<std::byte> saved_state;
  std::deque<Clock::time_point> failures;  ///< crashes and hangs inside the window
  Clock::time_point died_at{};
  Clock::time_point next_attempt{};
  Clock::time_point next_spare{};
  Clock::time_point last_poll{};
  std::uint64_t next_generation = 2;
  std::uint64_t process_errors_seen = 0;
  /// The hang watchdog's view of progress: the sandbox's count of answered blocks when last
  /// seen moving, and when. A sandbox that keeps answering is not hung, however old the
  /// oldest block the RT side has not collected yet (a pipelined chain, a paused graph).
  std::uint32_t answered_hint = 0;
  Clock::time_point progress_at{};

  // Hot reload (`reload = true`): the file's time when last loaded, the new version loading
  // beside the running one, and when its state was asked for.
  std::vector<std::filesystem::file_time_type> file_times;  ///< detail::followed_files()'s
  Clock::time_point next_file_check{};
  Clock::time_point reload_asked{};
  bool reload_wanted = false;
  bool reload_state_fresh = false;
  std::unique_ptr<SandboxInstance> reloading;
  /// `reloading`'s link once taken from it, until the RT side accepts it: replace_link() leaves
  /// it with the caller while an earlier offer is pending, and `reloading` points into it.
  std::unique_ptr<SandboxLink> reload_link;
  /// The version a reload replaced: it may still be answering the block the RT side waits for,
  /// so it is stopped a little later (never talked to again: its link may be gone).
  std::unique_ptr<SandboxInstance> retiring;
  shm::HostEndpoint* retiring_endpoint = nullptr;  ///< its notify_endpoint, should it come back
  /// `sandpipe reload` requests waiting for this slot's reload to end, and the new version's
  /// generation while the RT side hands over to it (the answer waits for that).
  std::vector<std::uint64_t> reload_requests;
  std::vector<std::uint64_t> queued_requests;  ///< arrived once a load was sent: the next reload's
  std::uint64_t switch_generation = 0;
  Clock::time_point switch_since{};

  /// Stops every sandbox of the slot, each before its link.
  void stop_sandboxes();
  /// Keeps `setting` for the next sandbox's load (replacing an earlier value of its key).
  void remember_param(const ParamSetting& setting);
  /// How many of its slot's plugins it runs (ParamSetting::member counts them): a group's
  /// members, else 1.
  [[nodiscard]] std::uint32_t plugin_count() const noexcept {
    return members.empty() ? 1U : static_cast<std::uint32_t>(members.size());
  }
};

namespace detail {

/// [supervisor thread] Spawns a sandbox for a restart, a reload or a spare; nullptr (and the
/// reason in `error`) on failure.
std::unique_ptr<SandboxInstance> spawn_instance(const SandboxLaunch& launch, std::uint64_t generation,
                                                std::string& error);

/// [supervisor thread] The files a `reload` slot follows: its plugin's, or a sandbox group's
/// members' that say `reload = true`.
[[nodiscard]] std::vector<std::filesystem::path> followed_files(const SandboxLaunch& launch);
/// [supervisor thread] Each file's last write time (file_time_type::min() for one that cannot be
/// read now: an editor replacing it).
[[nodiscard]] std::vector<std::filesystem::file_time_type> file_times(
    const std::vector<std::filesystem::path>& files);

/// [any] "44100 Hz".
[[nodiscard]] std::string format_rate(double rate);

/// [any] True if the status file at `path` was written by the supervisor with `instance_token`
/// (a newer chain of the same node may have written its own since).
[[nodiscard]] bool status_file_is_ours(const std::filesystem::path& path, const std::string& instance_token);

}  // namespace detail

}  // namespace sandpipe::host
