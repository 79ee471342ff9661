// One sandbox as the RT side of a PythonSlot sees it: its shared segment and the host end
// of the block channel. A restarted sandbox comes with a new link (PythonSlot::replace_link).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <vector>

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
  /// [main] A relay's link (direct hand-off, host/python/relay.h): `edges` are its head (where
  /// jobs go), the edges between its sandboxes, then its tail (where completions come from),
  /// all of one geometry, at least two. The relay's sandboxes come and go; its link stays.
  SandboxLink(std::vector<shm::Segment> edges, std::uint64_t generation_in)
      : relay_edges(take_tail(edges)),
        segment(std::move(edges.front())),
        endpoint(segment, relay_edges.back()),
        generation(generation_in) {
    endpoint.set_abort_flag(&paused);
  }
  SandboxLink(const SandboxLink&) = delete;
  SandboxLink& operator=(const SandboxLink&) = delete;
  SandboxLink(SandboxLink&&) = delete;
  SandboxLink& operator=(SandboxLink&&) = delete;
  ~SandboxLink() = default;

  /// A relay's edges after its head, in order (the last is its tail); empty for one sandbox.
  std::vector<shm::Segment> relay_edges;
  shm::Segment segment;  ///< the sandbox's segment; a relay's head edge
  shm::HostEndpoint endpoint;
  const std::uint64_t generation;
  /// [any] Set once this sandbox is known dead (PythonSlot::mark_link_dead): waits on the
  /// endpoint return at once, the RT side stops submitting and goes dry.
  std::atomic<bool> dead{false};
  /// [any] A relay's: one of its sandboxes is down (PythonSlot::relay_stage_down): the RT side
  /// neither submits nor waits until it serves again (also set with `dead`). Its endpoint's
  /// abort flag.
  std::atomic<bool> paused{false};
  /// Set by replace_link() before the link is offered (read by the RT side after adopting it).
  LinkSwap swap = LinkSwap::restart;

  /// [main] A relay's edges: the one a sandbox takes its jobs from (0: the first sandbox's, the
  /// head) and the one it passes its blocks on to (the last sandbox's is the tail).
  [[nodiscard]] shm::Segment& relay_input(std::size_t sandbox) noexcept {
    return sandbox == 0 ? segment : relay_edges[sandbox - 1];
  }
  [[nodiscard]] shm::Segment& relay_output(std::size_t sandbox) noexcept { return relay_edges[sandbox]; }

 private:
  /// Moves every edge but the head out of `edges` (which must hold at least two).
  static std::vector<shm::Segment> take_tail(std::vector<shm::Segment>& edges) {
    if (edges.size() < 2) throw std::invalid_argument("a relay needs a head and a tail edge");
    std::vector<shm::Segment> tail;
    tail.reserve(edges.size() - 1);
    for (std::size_t i = 1; i < edges.size(); ++i) tail.push_back(std::move(edges[i]));
    edges.erase(edges.begin() + 1, edges.end());
    return tail;
  }
};

}  // namespace sandpipe::host
