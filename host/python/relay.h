// A relay of sandboxes (direct hand-off, issue 17): one PythonSlot whose blocks pass through
// several sandbox processes in a row, each handing the block straight to the next through an
// edge segment, with no host hop in between. The host submits into the relay's head edge and
// collects from its tail (shm::HostEndpoint's relay constructor); each sandbox keeps its own
// process, its own segment (where its plugin works on the block) and its own control channel,
// and is restarted on its own: the edges, and so the slot's link, outlive it.
//
//   host ──head──▶ sandbox 0 ──edge──▶ sandbox 1 ──edge──▶ … sandbox N−1 ──tail──▶ host
//
// An edge is mapped by the host and the two sandboxes beside it only: a sandbox can write the
// next one's input and nothing else, so it can neither forge the next one's output nor skip it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "host/python/sandbox-link.h"
#include "host/python/sandbox-process.h"
#include "shm/block-channel.h"

namespace sandpipe::host {

/// [main] The link of a relay of `sandboxes` sandboxes (at least 1): its head, the edges between
/// them and its tail, all of `geometry`. Throws PluginError if the shared memory cannot be made.
[[nodiscard]] std::unique_ptr<SandboxLink> make_relay_link(std::size_t sandboxes, const shm::Geometry& geometry,
                                                           std::uint64_t generation);

/// [main] Makes `launch` the sandbox at `index` of the `count` of the relay behind `link`: the
/// edge its jobs come from and the one its blocks go on to. `link` must outlive every sandbox
/// started with `launch` (and its restarts and spares).
void join_relay(SandboxLaunch& launch, SandboxLink& link, std::size_t index, std::size_t count);

}  // namespace sandpipe::host
