// Building a chain: native slots in-process, Python slots in sandboxes started together.
#include "host/chain.h"

#include <algorithm>
#include <span>

#include "host/native-plugin.h"
#include "host/sandbox-client.h"

namespace sandpipe::host {

Chain::Chain(const ChainConfig& config, double sample_rate, std::uint32_t max_frames)
    : channels_(config.channels), max_frames_(max_frames), sample_rate_(sample_rate) {
  if (channels_ < 1 || channels_ > max_channels) throw PluginError("chain: channels must be 1..8");
  if (max_frames_ < 1 || max_frames_ > 8192) throw PluginError("chain: max_frames must be 1..8192");

  // Python plugins first, all at once, so their interpreters start in parallel while native
  // plugins load; then the slots are laid out in config order.
  std::vector<PluginSpec> python_specs;
  for (const auto& spec : config.plugins)
    if (spec.kind == PluginKind::python) python_specs.push_back(spec);
  std::vector<std::unique_ptr<Processor>> sandboxed;
  if (!python_specs.empty())
    sandboxed = start_sandboxes(std::span<const PluginSpec>(python_specs), sample_rate, channels_, max_frames_);

  std::size_t next_sandboxed = 0;
  for (const auto& spec : config.plugins) {
    if (spec.kind == PluginKind::python) {
      slots_.push_back(std::move(sandboxed.at(next_sandboxed++)));
      remote_.push_back(true);
    } else {
      slots_.push_back(make_native_processor(spec, sample_rate, channels_, max_frames_));
      remote_.push_back(false);
    }
  }

  remote_count_ = python_specs.size();
  scratch_.assign(std::size_t{2} * channels_ * max_frames_, 0.0F);
  for (std::uint32_t ch = 0; ch < channels_; ++ch) {
    ping_[ch] = scratch_.data() + std::size_t{ch} * max_frames_;
    pong_[ch] = scratch_.data() + std::size_t{channels_ + ch} * max_frames_;
  }
}

Chain::~Chain() = default;

std::uint32_t Chain::latency_frames() const noexcept {
  std::uint32_t total = 0;
  for (const auto& slot : slots_) total += slot->latency_frames();
  return total;
}

}  // namespace sandpipe::host
