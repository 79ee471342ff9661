// `sandpipe run`: the chain in the graph, in the shape it needs (docs/config.md, "Node modes"):
// a filter node with DSP ports (host/node/filter-node.h), or streams WirePlumber treats as a device
// (host/node/stream-node.h): the virtual sink of `mode = "sink"`, or an Audio/Source / Audio/Sink for
// a chain that starts with a source or ends with a sink plugin.
#pragma once

#include "host/config/config.h"

namespace sandpipe::host {

/// [main] Builds `config`'s chain at the graph's rate, publishes it and runs until SIGINT or
/// SIGTERM (run_with_pipewire). Returns 0 on a clean stop, 1 if PipeWire failed or went away,
/// 2 if the chain could not be built. Never throws.
[[nodiscard]] int run_node(const ChainConfig& config);

}  // namespace sandpipe::host
