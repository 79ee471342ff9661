// The data thread's side of ScheduleRequest.
#include <pipewire/loop.h>

#include "host/node/schedule-request.h"

namespace sandpipe::host::detail {

void request_schedule_rt(ScheduleRequest& request, pw_loop* main_loop, std::uint32_t quantum) noexcept {
  request.graph_quantum.store(quantum, std::memory_order_relaxed);
  if (main_loop == nullptr || request.on_request == nullptr ||
      request.requested.exchange(true, std::memory_order_acq_rel)) {
    return;  // one request in flight; the main thread reads the latest graph_quantum
  }
  // NOTE: the one system call: a non-blocking eventfd write waking the main loop, at most once
  // per quantum change (the flag above merges repeats).
  pw_loop_invoke(main_loop, request.on_request, 0, nullptr, 0, false, request.data);
}

}  // namespace sandpipe::host::detail
