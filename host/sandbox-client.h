// Python plugins: each `*.py` slot runs in its own sandbox process (sandbox/), reached through
// a shared-memory block channel (shm/) and a Cap'n Proto control channel (schemas/control.capnp).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "host/config.h"
#include "host/processor.h"

namespace sandpipe::host {

/// [main] Spawns one sandbox per spec (all started before any is waited for, so several plugins
/// load in parallel), performs the hello/version/layout handshake, loads each plugin with its
/// params, and returns one Processor per spec in the same order. Throws PluginError naming the
/// plugin and the reason (with the Python traceback) if any fails to load.
[[nodiscard]] std::vector<std::unique_ptr<Processor>> start_sandboxes(std::span<const PluginSpec> specs,
                                                                      double sample_rate,
                                                                      std::uint32_t channels,
                                                                      std::uint32_t max_frames);

}  // namespace sandpipe::host
