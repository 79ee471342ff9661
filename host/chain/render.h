// Offline render: a chain over an audio file, block by block, latency compensated.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>
#include <vector>

#include "host/config/config.h"
#include "host/python/sandbox-client.h"
#include "host/python/supervisor.h"

namespace sandpipe::host {

struct RenderOptions {
  std::uint32_t block_frames = 512;  ///< 1..8192: the block size every slot sees
  /// How long a sandboxed slot may take for one block offline before the hang watchdog kills
  /// and restarts it (the block comes out dry); a plugin's own `timeout-ms` wins.
  double timeout_ms = 5000.0;
  /// A Python plugin that cannot load (or is given up on after restart.max crashes) is bypassed
  /// instead of failing the render (`--allow-bypass`).
  bool allow_bypass = false;
  /// Wet↔dry ramp of Python slots around a fault (frames; 0: hard switch, exact samples).
  std::uint32_t crossfade_frames = 64;
  /// Sandbox log lines (from the supervisor thread); empty: stderr.
  SandboxLogFn log;
  /// Without an input file (a chain that starts with a source plugin): frames to render and
  /// their rate; the channels are the config's.
  std::uint64_t frames = 0;
  std::uint32_t sample_rate = 48000;
};

/// What happened during a render, for the summary and for tests.
struct RenderReport {
  std::uint64_t frames = 0;
  std::uint32_t channels = 0;
  std::uint32_t sample_rate = 0;
  std::uint32_t latency_frames = 0;  ///< compensated: the output is aligned with the input
  std::vector<SlotStatus> slots;     ///< every slot at the end: counters, restarts, errors
  std::vector<double> restart_ms;    ///< death noticed → new sandbox handed over, per restart
  /// Some Python slot was given up on (failed or bypassed for good): parts of the output are
  /// dry beyond the blocks a fault hit.
  bool degraded = false;
};

/// [any] Blocks of `slot` whose output is not its plugin's: dry or muted (an exception, a block
/// the plugin returned False for, a crash, a hang, a deadline miss, a plugin down or given up
/// on) or replaced because it held NaN/Inf.
[[nodiscard]] std::uint64_t blocks_not_processed(const SlotStatus& slot) noexcept;
/// [any] The sum over every slot of `report`: `sandpipe render` exits 0 only when it is 0.
[[nodiscard]] std::uint64_t blocks_not_processed(const RenderReport& report) noexcept;

/// A file that cannot be read or written. `what()` names the file and the reason.
class RenderError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// [main] Runs `config`'s chain over `input` (any format libsndfile reads) and writes `output`
/// as float32 WAV with exactly the input's length, rate and channels, sample-aligned with the
/// input: the chain's reported latency is skipped at the start and flushed with silence at the
/// end. The chain is built for the file's channel count and rate. Writes a per-plugin summary to
/// `summary`. Throws RenderError (files), PluginError (plugins).
///
/// A chain that starts with a source plugin ignores its input: `input` then only gives the
/// length, rate and channels, and may be empty (options.frames at options.sample_rate, the
/// config's channels). A chain that ends with a sink plugin writes what reached the sink.
RenderReport render_file(const ChainConfig& config, const std::filesystem::path& input,
                         const std::filesystem::path& output, const RenderOptions& options,
                         std::ostream& summary);

}  // namespace sandpipe::host
