// The PipeWire filter node: one DSP input and one DSP output port per channel, the chain in
// between. `filter-node.cpp` runs on the main thread, `filter-node-rt.cpp` is the process
// callback on PipeWire's data thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include <spa/support/loop.h>

#include "host/chain/chain.h"
#include "host/config/config.h"
#include "host/node/cycle-timing.h"
#include "host/node/param-queue.h"
#include "host/node/pipewire-session.h"
#include "host/node/schedule-request.h"

struct pw_loop;
struct spa_io_position;

namespace sandpipe::host {

/// [main] `chain` (built from `config` by make_live_chain, neither starting with a source nor
/// ending with a sink: those are streams, host/node/stream-node.h) as a PipeWire `Audio/Filter` node
/// with one DSP input and output port per channel, for run_with_pipewire to connect. It follows
/// the graph's rate (rebuilding the chain) and quantum. Throws PluginError or std::runtime_error.
[[nodiscard]] std::unique_ptr<GraphNode> make_filter_node(const ChainConfig& config, const PipeWireEnv& env,
                                                          std::unique_ptr<Chain> chain);

namespace detail {

/// The quantum the chain's pipelined slots are prepared for until the graph's is seen:
/// PipeWire's default `clock.quantum`.
inline constexpr std::uint32_t default_quantum = 1024;

/// How often the main thread reviews the scheduler (auto slots deepen after sustained misses).
inline constexpr std::uint64_t schedule_review_ns = 1'000'000'000;

/// The largest quantum the node processes; PipeWire's default `clock.quantum-limit`.
/// A cycle longer than this gets silence (and a count) instead of audio.
inline constexpr std::uint32_t max_quantum = 8192;

/// The block size the chain is built for; PipeWire's default `clock.max-quantum`, so every
/// usual quantum runs as one block (the chain splits longer ones itself).
inline constexpr std::uint32_t chain_block_frames = 2048;

/// Rate the chain is built for when the graph does not tell (no settings metadata).
inline constexpr std::uint32_t default_rate = 48000;

/// The chain may use this share of a cycle's period, counted from the cycle's start: the rest
/// is left to the nodes after us and to scheduling jitter.
inline constexpr std::uint64_t budget_percent = 75;

/// ...but never less than this from the moment the chain is called: when we run late in the
/// cycle a native chain still completes, and a sandboxed slot still gets a chance to answer.
inline constexpr std::uint64_t min_budget_ns = 250'000;

/// [any] When the chain's output must be ready for a cycle that started at `cycle_start_ns`
/// (CLOCK_MONOTONIC, 0 if unknown) and lasts `frames` at `rate` Hz, called at `now_ns`:
/// `max(cycle_start + budget_percent % of the period, now + min_budget_ns)`.
[[nodiscard]] std::uint64_t cycle_deadline_ns(std::uint64_t cycle_start_ns, std::uint64_t frames,
                                              std::uint32_t rate, std::uint64_t now_ns) noexcept;

/// What the data thread counts instead of logging. Written by the data thread only
/// (relaxed increments), read by the main thread.
struct NodeCounters {
  CycleTiming timing;                                  ///< cycles that ran the chain, overruns
  std::atomic<std::uint64_t> oversized_cycles{0};      ///< quantum > max_quantum or the buffers: silence
  std::atomic<std::uint64_t> missing_buffers{0};       ///< cycles skipped: no output port had a buffer
  std::atomic<std::uint64_t> partial_cycles{0};        ///< some ports unlinked: silence in, output dropped
  std::atomic<std::uint64_t> no_chain_cycles{0};       ///< cycles before a chain was swapped in
  std::atomic<std::uint64_t> rate_mismatch_cycles{0};  ///< chain built for another rate (rebuild pending)
};

/// Everything the process callback touches. Built and sized on the main thread before
/// `pw_filter_connect`; afterwards `chain` is only written on the data thread (via
/// `pw_loop_invoke` on the data loop) and the port tables are never written again.
struct RtState {
  /// The chain the data thread runs. Swapped in on the data loop; owned by the main thread.
  Chain* chain = nullptr;
  std::uint32_t channels = 0;
  /// pw_filter port data per channel. A null port reads `silence` / writes `discard`; since
  /// source and sink chains are streams (host/node/stream-node.h) every port is set.
  std::array<void*, Chain::max_channels> in_ports{};
  std::array<void*, Chain::max_channels> out_ports{};
  /// Stand-ins for ports without a buffer (not linked): an input reads `silence`, an output
  /// writes to its slice of `discard`. max_quantum and channels × max_quantum frames.
  std::vector<float> silence;
  std::vector<float> discard;

  NodeCounters counters;

  /// Live parameter changes for native slots (NodeProps pushes, the process callback drains).
  ParamQueue param_changes;

  /// The last graph rate the data thread saw (0: none yet).
  std::atomic<std::uint32_t> graph_rate{0};
  /// Set by the data thread when it asks the main thread for a chain at `graph_rate`; cleared
  /// by the main thread once that request is handled. Merges repeats into one request.
  std::atomic<bool> rebuild_requested{false};
  /// A rate the main thread failed to build a chain for: not asked for again.
  std::atomic<std::uint32_t> rejected_rate{0};

  /// Where and how the data thread asks for a rebuild: a non-blocking invoke on the main loop.
  pw_loop* main_loop = nullptr;
  spa_invoke_func_t on_rebuild_request = nullptr;
  void* rebuild_request_data = nullptr;

  /// Quantum changes: the main thread re-schedules the chain and re-reports its latency.
  ScheduleRequest schedule;
};

/// [rt] The `pw_filter_events::process` callback; `data` is the RtState.
void on_process_rt(void* data, spa_io_position* position) noexcept;

}  // namespace detail
}  // namespace sandpipe::host
