// PortLatency: PipeWire's default port latency algorithm, re-runnable when our latency changes.
#include "host/node/port-latency.h"

#include <spa/param/latency-utils.h>

namespace sandpipe::host {

PortLatency::PortLatency(std::uint32_t inputs, std::uint32_t outputs)
    : upstream_(inputs, SPA_LATENCY_INFO(SPA_DIRECTION_OUTPUT)),
      downstream_(outputs, SPA_LATENCY_INFO(SPA_DIRECTION_INPUT)) {}

std::optional<spa_direction> PortLatency::peer_latency(spa_direction port_direction, std::uint32_t index,
                                                       const spa_latency_info& info) {
  if (info.direction == port_direction) return std::nullopt;
  std::vector<spa_latency_info>& ports = port_direction == SPA_DIRECTION_INPUT ? upstream_ : downstream_;
  if (index >= ports.size()) return std::nullopt;
  ports[index] = info;
  return info.direction;
}

spa_latency_info PortLatency::published(spa_direction direction, std::uint32_t process_frames) const {
  const std::vector<spa_latency_info>& other = direction == SPA_DIRECTION_OUTPUT ? upstream_ : downstream_;
  spa_latency_info info{};
  spa_latency_info_combine_start(&info, direction);
  for (const spa_latency_info& port : other) spa_latency_info_combine(&info, &port);
  spa_latency_info_combine_finish(&info);
  spa_process_latency_info process{};
  process.rate = process_frames;
  spa_process_latency_info_add(&process, &info);
  return info;
}

}  // namespace sandpipe::host
