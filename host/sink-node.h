// `mode = "sink"`: the chain as a virtual output device, built like module-filter-chain's
// capture/playback pair. Two pw_streams in one node.group (one driver, one cycle):
//
//   NODE         (Audio/Sink, the capture stream)   ← applications pick it as their output
//   NODE.output  (Stream/Output/Audio, passive)     → WirePlumber links it to the default sink
//
// The capture stream's process only triggers the playback stream; the playback stream's process
// takes both buffers and runs the chain between them. Both streams are F32P at the chain's
// rate; their adapters convert to whatever the graph and the device use. node.link-group keeps
// WirePlumber from linking the output back into the sink. The Props ("SLOT:PARAM") live on
// NODE, as on filter-chain's capture stream.
//
// `sink-node.cpp` runs on the main thread, `sink-node-rt.cpp` is the data thread's part.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "host/chain.h"
#include "host/config.h"
#include "host/param-queue.h"

struct pw_stream;

namespace sandpipe::host {

/// [main] Publishes `config`'s chain as a virtual sink (see above) and runs the main loop until
/// SIGINT or SIGTERM. Returns 0 on a clean stop, 1 if PipeWire failed or went away, 2 if the
/// chain could not be built. Catches everything: never throws.
[[nodiscard]] int run_sink_node(const ChainConfig& config);

namespace detail {

/// What the sink's data thread counts (relaxed; written by the data thread only).
struct SinkCounters {
  std::atomic<std::uint64_t> cycles{0};           ///< playback cycles that ran the chain
  std::atomic<std::uint64_t> no_output_buffer{0};  ///< playback had no buffer: nothing to do
  std::atomic<std::uint64_t> no_input_buffer{0};   ///< nothing captured: the chain ran on silence
  std::atomic<std::uint64_t> oversized{0};         ///< more frames than max_quantum: silence out
};

/// Everything the playback stream's process callback touches. Built on the main thread before
/// the streams connect; `chain` is never swapped (the streams' rate is fixed: their adapters
/// resample), so nothing here is written by the main thread afterwards.
struct SinkRtState {
  pw_stream* capture = nullptr;
  pw_stream* playback = nullptr;
  Chain* chain = nullptr;
  std::uint32_t channels = 0;
  std::uint32_t rate = 0;
  std::vector<float> silence;  ///< max_quantum frames: the input while nothing was captured
  ParamQueue param_changes;
  SinkCounters counters;
};

/// [rt] The capture stream's process: asks for the playback stream's cycle. `data`: SinkRtState.
void on_capture_process_rt(void* data) noexcept;
/// [rt] The playback stream's process: captured buffer → chain → playback buffer.
void on_playback_process_rt(void* data) noexcept;

}  // namespace detail
}  // namespace sandpipe::host
