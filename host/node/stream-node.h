// A chain published as pw_streams: adapter nodes (audioconvert in front of the chain) that
// WirePlumber manages like devices, links applications to, lists in `wpctl status` and can make
// the default. Three shapes, built like module-filter-chain's capture/playback pair and
// module-loopback's virtual source:
//
//   mode = "sink" (a processing chain as a virtual output device), two streams in one
//   node.group (one driver, one cycle):
//     NODE         (Audio/Sink, the capture stream)   ← applications pick it as their output
//     NODE.output  (Stream/Output/Audio, passive)     → WirePlumber links it to the default sink
//   The capture stream's process only triggers the playback stream; the playback stream's
//   process takes both buffers and runs the chain between them. node.link-group keeps
//   WirePlumber from linking the output back into the sink.
//
//   mode = "source" (a processing chain as a virtual microphone), the mirror image:
//     NODE.input   (Stream/Input/Audio, passive)     ← WirePlumber links the default source
//                                                      (or `target`) to it, and moves it
//     NODE         (Audio/Source, the playback stream) → applications record from it
//   Again the capture stream's process triggers the playback stream, whose process runs the
//   chain; the Props live on NODE.
//
//   a chain that starts with a source plugin:  NODE (Audio/Source, one playback stream)
//     ← `pw-record --target NODE`, or any recorder once it is the default source
//   a chain that ends with a sink plugin:      NODE (Audio/Sink, one capture stream)
//     ← `pw-play --target NODE`, or any player once it is the default sink
//
// Every stream is F32P at the graph's rate (the settings metadata at start-up); its adapter
// converts to whatever its peers use. The Props ("SLOT:PARAM") live on NODE. The chain's
// latency is published as the Latency of NODE's port (added to what the graph reports on the
// other stream of a pair), so applications see it as the device's latency; it follows the
// quantum and the scheduler's review as the filter node's ProcessLatency does.
//
// `stream-node.cpp` runs on the main thread, `stream-node-rt.cpp` is the data thread's part.
#pragma once

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
struct pw_stream;
struct spa_io_position;

namespace sandpipe::host {

/// [main] `chain` (built from `config` by make_live_chain at `env.rate`) as streams (see above):
/// the virtual sink with `mode = "sink"`, else an Audio/Source for a chain that starts with a
/// source plugin or an Audio/Sink for one that ends with a sink plugin. Throws PluginError for
/// a chain that fits no shape (a source chain in sink mode, a chain with both a source and a
/// sink), std::runtime_error if PipeWire refuses a stream.
[[nodiscard]] std::unique_ptr<GraphNode> make_stream_node(const ChainConfig& config, const PipeWireEnv& env,
                                                          std::unique_ptr<Chain> chain);

namespace detail {

/// What the streams' data thread counts (relaxed; written by the data thread only).
struct StreamCounters {
  CycleTiming timing;                              ///< cycles that ran the chain, overruns
  std::atomic<std::uint64_t> no_output_buffer{0};  ///< playback had no buffer: nothing to do
  std::atomic<std::uint64_t> no_input_buffer{0};   ///< nothing captured: silence in (or, sink: skipped)
  std::atomic<std::uint64_t> oversized{0};         ///< more frames than max_quantum: silence out
};

/// Everything the process callbacks touch. Built on the main thread before the streams
/// connect; `chain` is never swapped (the streams' rate is fixed: their adapters resample).
/// Afterwards only the atomics below are shared with the main thread.
struct StreamRtState {
  pw_stream* capture = nullptr;   ///< the input stream; null for a source chain
  pw_stream* playback = nullptr;  ///< the output stream; null for a sink chain
  Chain* chain = nullptr;
  std::uint32_t channels = 0;
  std::uint32_t rate = 0;
  std::vector<float> silence;  ///< max_quantum frames: the input without a capture buffer
  std::vector<float> discard;  ///< channels × max_quantum: the output of a sink chain
  ParamQueue param_changes;
  StreamCounters counters;

  /// The running stream's position (the driver's clock), written on the data loop only (as
  /// pw_stream does for its own copy); null until the stream is scheduled.
  spa_io_position* position = nullptr;
  /// Quantum changes: the main thread re-schedules the chain (pipelined slots take L = k × the
  /// quantum) and re-reports its latency.
  ScheduleRequest schedule;
  pw_loop* main_loop = nullptr;
};

/// [rt] The capture stream's process: with a playback stream, asks for its cycle; alone (a sink
/// chain), runs the chain. `data`: StreamRtState.
void on_capture_process_rt(void* data) noexcept;
/// [rt] The playback stream's process: captured buffer (or silence) → chain → playback buffer.
void on_playback_process_rt(void* data) noexcept;

}  // namespace detail
}  // namespace sandpipe::host
