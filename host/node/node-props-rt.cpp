// Live parameter changes on the data thread: drained at the start of a cycle, with a bound.
#include "host/node/node-props.h"

namespace sandpipe::host {

std::uint32_t drain_param_changes_rt(ParamQueue& queue, Chain& chain, std::uint32_t max_changes) noexcept {
  std::uint32_t applied = 0;
  ParamChange change;
  for (std::uint32_t n = 0; n < max_changes && queue.pop(change); ++n) {
    // Indices come from the main thread's table of the same chain layout; checked anyway.
    const auto& slots = chain.slots();
    if (change.slot < slots.size() && slots[change.slot]->set_param_rt(change.index, change.value)) ++applied;
  }
  return applied;
}

}  // namespace sandpipe::host
