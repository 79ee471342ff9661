// Picks the node's shape once the chain is built (only then are its plugins' roles known).
#include "host/node/node.h"

#include "host/node/filter-node.h"
#include "host/node/pipewire-session.h"
#include "host/node/stream-node.h"

namespace sandpipe::host {

int run_node(const ChainConfig& config) {
  return run_with_pipewire([&config](const PipeWireEnv& env) {
    std::unique_ptr<Chain> chain = make_live_chain(config, static_cast<double>(env.rate), 0);
    if (config.mode != NodeMode::filter || chain->has_source() || chain->has_sink())
      return make_stream_node(config, env, std::move(chain));
    return make_filter_node(config, env, std::move(chain));
  });
}

}  // namespace sandpipe::host
