// The main thread's view of CycleTiming: the status file's "timing" and the exit line.
#include "host/node/cycle-timing.h"

#include <nlohmann/json.hpp>

#include "host/chain/chain.h"

namespace sandpipe::host {

std::string CycleTiming::status_json() const {
  const nlohmann::ordered_json members = {
      {"cycles", cycles.load(std::memory_order_relaxed)},
      {"overruns", overruns.load(std::memory_order_relaxed)},
      {"longest_cycle_us", longest_cycle_ns.load(std::memory_order_relaxed) / 1000},
      {"recent_overruns_ns", times_array(recent_overrun_ns.snapshot())},
  };
  // The supervisor splices these members into its "timing" object: the text without the braces.
  const std::string object = members.dump();
  return object.substr(1, object.size() - 2);
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
