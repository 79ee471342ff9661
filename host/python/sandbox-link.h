// One sandbox as the RT side of a PythonSlot sees it: its shared segment and the host end
// of the block channel. A restarted sandbox comes with a new link (PythonSlot::replace_link).
#pragma once

#include <atomic>
#include <cstdint>

#include "shm/block-channel.h"
#include "shm/segment.h"

namespace sandpipe::host {

/// How the RT side takes a new link over (PythonSlot::replace_link).
enum class LinkSwap : std::uint8_t {
  /// The old sandbox is dead or hung: drop what it owed (dry), fade from dry to the new one.
  restart,
  /// A new version beside a running one (hot reload): run both for a moment and crossfade from
  /// the old version's wet output to the new one's (no dry frames, no shift).
  reload,
};

/// Owns one sandbox's segment and host endpoint. Built on the main thread, handed to the RT
/// side of a PythonSlot (which then is its only user of `endpoint`'s [rt] methods), taken
/// back and destroyed on the main thread. Not copyable, not movable: the endpoint's abort flag
/// points at `dead`.
struct SandboxLink {
  /// [main] Binds an endpoint to `segment` (create it with shm::Segment::create, before the
  /// sandbox runs). `generation` numbers the sandboxes of one slot (1 for the first).
  SandboxLink(shm::Segment segment_in, std::uint64_t generation_in) noexcept
      : segment(std::move(segment_in)), endpoint(segment), generation(generation_in) {
    endpoint.set_abort_flag(&dead);
  }
  SandboxLink(const SandboxLink&) = delete;
  SandboxLink& operator=(const SandboxLink&) = delete;
  SandboxLink(SandboxLink&&) = delete;
  SandboxLink& operator=(SandboxLink&&) = delete;
  ~SandboxLink() = default;

  shm::Segment segment;
  shm::HostEndpoint endpoint;
  const std::uint64_t generation;
  /// [any] Set once this sandbox is known dead (PythonSlot::mark_link_dead): waits on the
  /// endpoint return at once, the RT side stops submitting and goes dry.
  std::atomic<bool> dead{false};
  /// Set by replace_link() before the link is offered (read by the RT side after adopting it).
  LinkSwap swap = LinkSwap::restart;
};

}  // namespace sandpipe::host
