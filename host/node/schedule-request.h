// The data thread's request to the main thread to re-schedule a node's chain for a new graph
// quantum, the same for the filter node and the stream nodes.
#pragma once

#include <atomic>
#include <cstdint>

#include <spa/support/loop.h>

struct pw_loop;

namespace sandpipe::host::detail {

/// The data thread's request to re-schedule the chain for the graph's quantum (pipelined slots
/// take L = k × the quantum), shared by the filter node and the stream nodes.
struct ScheduleRequest {
  /// The graph's quantum as the data thread last saw it, and the quantum the chain's pipelined
  /// latency was computed for (written by the main thread). When they differ the data thread
  /// asks the main thread, once, to re-schedule the chain and re-report its latency.
  std::atomic<std::uint32_t> graph_quantum{0};
  std::atomic<std::uint32_t> chain_quantum{0};
  /// Set by the data thread when it asks; cleared by the main thread once it has re-scheduled.
  /// Merges repeats into one request.
  std::atomic<bool> requested{false};
  /// Invoked on the main loop, with `data`.
  spa_invoke_func_t on_request = nullptr;
  void* data = nullptr;
};

/// [rt] Records `quantum` and asks the main thread on `main_loop` to re-schedule, unless a
/// request is in flight (the main thread then reads the latest graph_quantum). Allocates nothing.
void request_schedule_rt(ScheduleRequest& request, pw_loop* main_loop, std::uint32_t quantum) noexcept;

}  // namespace sandpipe::host::detail
