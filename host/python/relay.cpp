#include "host/python/relay.h"

#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "host/python/sandbox-client.h"
#include "shm/segment.h"

namespace sandpipe::host {

std::unique_ptr<SandboxLink> make_relay_link(std::size_t sandboxes, const shm::Geometry& geometry,
                                             std::uint64_t generation) {
  std::vector<shm::Segment> edges;
  edges.reserve(sandboxes + 1);
  try {
    for (std::size_t i = 0; i <= sandboxes; ++i) edges.push_back(shm::Segment::create(geometry));
  } catch (const std::exception& e) {
    throw PluginError(std::string("python plugins: a relay's shared memory: ") + e.what());
  }
  return std::make_unique<SandboxLink>(std::move(edges), generation);
}

void join_relay(SandboxLaunch& launch, SandboxLink& link, std::size_t index, std::size_t count) {
  launch.input_edge = &link.relay_input(index);
  launch.output_edge = &link.relay_output(index);
  launch.output_to_host = index + 1 == count;
}

}  // namespace sandpipe::host
