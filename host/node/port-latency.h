// The Latency params of a node's ports: the latency the graph adds before us (published on our
// output ports) and after us (on our input ports), each plus our own process latency. This is
// PipeWire's default latency algorithm; pw_filter runs it only when a peer's latency changes,
// so a node whose own latency changes (a quantum change, a deeper pipeline) re-runs it here.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include <spa/param/latency.h>

namespace sandpipe::host {

/// What each port last heard from its peers, and what the ports publish. [main] only.
class PortLatency {
 public:
  /// [main] A node with `inputs` input ports and `outputs` output ports (either may be 0).
  PortLatency(std::uint32_t inputs, std::uint32_t outputs);

  /// [main] The graph set `info` on port `index` of `port_direction`. Returns the direction of
  /// the ports to re-publish (info.direction), or nullopt if nothing changes: the info runs the
  /// port's own way (it is what we published) or the port is unknown.
  std::optional<spa_direction> peer_latency(spa_direction port_direction, std::uint32_t index,
                                            const spa_latency_info& info);

  /// [main] What every port of `direction` publishes: the other side's ports' latencies combined
  /// as PipeWire combines them (smallest min, largest max), plus `process_frames` at the graph
  /// rate. SPA_DIRECTION_OUTPUT: from the sources to our outputs; INPUT: from our inputs to the
  /// sinks.
  [[nodiscard]] spa_latency_info published(spa_direction direction, std::uint32_t process_frames) const;

 private:
  std::vector<spa_latency_info> upstream_;    ///< per input port: from the sources (direction OUTPUT)
  std::vector<spa_latency_info> downstream_;  ///< per output port: to the sinks (direction INPUT)
};

}  // namespace sandpipe::host
