// The main thread's view of CycleTiming: the status file's "timing" and the exit line.
#include "host/cycle-timing.h"

#include "host/chain.h"

namespace sandpipe::host {

std::string CycleTiming::status_json() const {
  return "\"cycles\":" + std::to_string(cycles.load(std::memory_order_relaxed)) +
         ",\"overruns\":" + std::to_string(overruns.load(std::memory_order_relaxed)) +
         ",\"longest_cycle_us\":" + std::to_string(longest_cycle_ns.load(std::memory_order_relaxed) / 1000) +
         ",\"recent_overruns_ns\":" + times_json(recent_overrun_ns.snapshot());
}

std::string CycleTiming::exit_fields() const {
  return "cycles=" + std::to_string(cycles.load(std::memory_order_relaxed)) +
         " overruns=" + std::to_string(overruns.load(std::memory_order_relaxed)) +
         " longest-cycle-us=" + std::to_string(longest_cycle_ns.load(std::memory_order_relaxed) / 1000);
}

void publish_cycle_timing(Chain& chain, const CycleTiming& timing) {
  chain.supervisor().set_node_status([&timing] { return timing.status_json(); });
}

}  // namespace sandpipe::host
