// The PipeWire session a node runs in: pw_init, the main loop with SIGINT/SIGTERM, the context
// (client-rt.conf: a real-time data thread), the core with a watch for the daemon going away,
// and the graph's rate from the "settings" metadata. One copy for every shape of node
// (host/node/filter-node.h, host/node/stream-node.h); host/node/node.h picks the shape.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>

#include "host/chain/chain.h"
#include "host/config/config.h"

struct pw_core;
struct pw_main_loop;

namespace sandpipe::host {

/// What run_with_pipewire hands the node it builds.
struct PipeWireEnv {
  pw_main_loop* main_loop = nullptr;
  pw_core* core = nullptr;
  /// The graph's rate (settings metadata: clock.force-rate, else clock.rate; 48 kHz if unknown).
  std::uint32_t rate = 0;
};

/// A node run_with_pipewire drives: connected once, run until a signal, disconnected.
class GraphNode {
 public:
  GraphNode() = default;
  virtual ~GraphNode() = default;
  GraphNode(const GraphNode&) = delete;
  GraphNode& operator=(const GraphNode&) = delete;
  GraphNode(GraphNode&&) = delete;
  GraphNode& operator=(GraphNode&&) = delete;

  /// [main] Joins the graph. Returns 0 or -errno.
  virtual int connect() = 0;
  /// [main] Leaves the graph (the node disappears); it is destroyed later.
  virtual void disconnect() = 0;
  /// [main] Nonzero once the node went into an error state (the loop was quit).
  [[nodiscard]] virtual int failure() const noexcept = 0;
  /// [main] What the data thread counted, on stderr: the exit summary, not a log line.
  virtual void print_counters() const = 0;
};

/// [main] Builds the node once the session is up; throws PluginError or std::runtime_error.
using NodeBuilder = std::function<std::unique_ptr<GraphNode>(const PipeWireEnv&)>;

/// [main] Sets up the session (see above), builds the node with `build`, connects it and runs
/// the main loop until SIGINT or SIGTERM (or the daemon goes away, or the node fails), then
/// tears everything down. Returns 0 on a clean stop, 1 if PipeWire failed or went away, 2 if a
/// plugin could not be loaded (PluginError: like a config error, nothing was started).
/// Catches everything: never throws. While the node runs it logs on sandpipe's PipeWire log
/// topics (host/slot/log.h), set up right after pw_init.
[[nodiscard]] int run_with_pipewire(const NodeBuilder& build);

/// [main] A chain for the live graph at `rate`: pipelined slots prepared for `quantum` (0:
/// PipeWire's default until the graph's is seen), sandboxes at live_sandbox_rt_priority, the
/// scheduler's lines logged on sandpipe.chain. Throws PluginError.
[[nodiscard]] std::unique_ptr<Chain> make_live_chain(const ChainConfig& config, double rate,
                                                     std::uint32_t quantum);
/// [main] `previous` at the graph's new `rate`: its Python slots and sandboxes kept (Chain's
/// rate-change constructor), its native plugins made anew. Throws PluginError.
[[nodiscard]] std::unique_ptr<Chain> make_live_chain(const ChainConfig& config, double rate, const Chain& previous);

/// [main] Re-schedules a live chain for the graph's `quantum` (0: none seen yet, nothing to do):
/// pipelined slots take L = k × quantum. True if the chain's latency changed (the node must
/// re-publish it). A failure is logged (sandpipe.chain) and leaves the schedule as it was.
[[nodiscard]] bool reschedule_live_chain(Chain& chain, std::uint32_t quantum) noexcept;

/// [main] The node's periodic scheduler review (Chain::review_schedule). True if the chain's
/// latency changed. A failure is logged (sandpipe.chain).
[[nodiscard]] bool review_live_chain(Chain& chain) noexcept;

/// [main] One line per slot of what it counted (blocks, misses, bypassed, sanitized), on stderr:
/// what every node prints at exit after its own counters.
void print_slot_counters(const Chain& chain);

}  // namespace sandpipe::host
