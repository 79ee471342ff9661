// Offline render: a chain over an audio file, block by block, latency compensated.
#pragma once

#include <cstdint>
#include <filesystem>
#include <iosfwd>

#include "host/config.h"

namespace sandpipe::host {

struct RenderOptions {
  std::uint32_t block_frames = 512;  ///< 1..8192: the block size every slot sees
  double timeout_ms = 5000.0;        ///< how long a sandboxed slot may take for one block offline
};

/// What happened during a render, for the summary and for tests.
struct RenderReport {
  std::uint64_t frames = 0;
  std::uint32_t channels = 0;
  std::uint32_t sample_rate = 0;
  std::uint32_t latency_frames = 0;  ///< compensated: the output is aligned with the input
};

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
RenderReport render_file(const ChainConfig& config, const std::filesystem::path& input,
                         const std::filesystem::path& output, const RenderOptions& options,
                         std::ostream& summary);

}  // namespace sandpipe::host
