// Offline render: libsndfile in, the chain, libsndfile out.
#include "host/chain/render.h"

#include <sndfile.h>

#include <algorithm>
#include <memory>
#include <ostream>
#include <vector>

#include "host/chain/chain.h"
#include "shm/clock.h"

namespace sandpipe::host {

namespace {

struct SndfileCloser {
  void operator()(SNDFILE* file) const noexcept { sf_close(file); }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

/// Interleaved ↔ planar staging for one block.
struct Block {
  Block(std::uint32_t channels, std::uint32_t frames)
      : interleaved(std::size_t{channels} * frames), planar_in(std::size_t{channels} * frames),
        planar_out(std::size_t{channels} * frames) {
    for (std::uint32_t ch = 0; ch < channels; ++ch) {
      in_ptrs.push_back(planar_in.data() + std::size_t{ch} * frames);
      out_ptrs.push_back(planar_out.data() + std::size_t{ch} * frames);
    }
  }
  std::vector<float> interleaved;
  std::vector<float> planar_in;
  std::vector<float> planar_out;
  std::vector<const float*> in_ptrs;
  std::vector<float*> out_ptrs;
};

}  // namespace

RenderReport render_file(const ChainConfig& config, const std::filesystem::path& input,
                         const std::filesystem::path& output, const RenderOptions& options, std::ostream& summary) {
  if (options.block_frames < 1 || options.block_frames > 8192)
    throw RenderError("--block must be between 1 and 8192 frames");

  SF_INFO in_info{};
  SndfilePtr in_file;
  if (input.empty()) {  // a source's chain: length and rate from the options
    if (options.sample_rate < 8000 || options.sample_rate > 768000)
      throw RenderError("--rate must be between 8000 and 768000 Hz");
    in_info.frames = static_cast<sf_count_t>(options.frames);
    in_info.samplerate = static_cast<int>(options.sample_rate);
    in_info.channels = static_cast<int>(config.channels);
  } else {
    in_file.reset(sf_open(input.c_str(), SFM_READ, &in_info));
    if (!in_file) throw RenderError(input.string() + ": " + sf_strerror(nullptr));
  }
  if (in_info.channels < 1 || in_info.channels > static_cast<int>(Chain::max_channels))
    throw RenderError(input.string() + ": " + std::to_string(in_info.channels) + " channels (Sandpipe handles 1 to 8)");

  ChainConfig file_config = config;
  file_config.channels = static_cast<std::uint32_t>(in_info.channels);
  // Offline fault handling: a sandbox that dies or hangs costs only the block it hit. The
  // deadline is past every hang watchdog, so a stuck block is ended by the watchdog (which
  // restarts the sandbox), and between blocks the render waits until the supervisor has the
  // slot back: the next block runs on a live sandbox, whatever the machine's load.
  ChainOptions chain_options;
  chain_options.offline = true;
  // Offline there is no deadline to schedule for: `auto` slots stay synchronous, and no
  // calibration burst runs through a plugin before the file's first sample (it would advance a
  // stateful plugin, e.g. a cipher's keystream, and shift its output).
  chain_options.calibration_blocks = 0;
  chain_options.allow_bypass = options.allow_bypass;
  chain_options.crossfade_frames = options.crossfade_frames;
  chain_options.supervision.default_hang_timeout =
      std::chrono::milliseconds(static_cast<std::int64_t>(std::max(1.0, options.timeout_ms)));
  if (options.log) chain_options.supervision.log = options.log;
  Chain chain(file_config, static_cast<double>(in_info.samplerate), options.block_frames, chain_options);
  if (!in_file && !chain.has_source())
    throw RenderError("render needs IN.wav: the chain does not start with a source plugin");
  double longest_watchdog_ms = options.timeout_ms;
  std::uint64_t python_slots = 0;
  for (const auto& spec : file_config.plugins) {
    if (spec.kind != PluginKind::python) continue;
    ++python_slots;
    longest_watchdog_ms = std::max(longest_watchdog_ms, spec.timeout_ms);
  }

  SF_INFO out_info{};
  out_info.samplerate = in_info.samplerate;
  out_info.channels = in_info.channels;
  out_info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SndfilePtr out_file(sf_open(output.c_str(), SFM_WRITE, &out_info));
  if (!out_file) throw RenderError(output.string() + ": " + sf_strerror(nullptr));

  const auto channels = static_cast<std::uint32_t>(in_info.channels);
  const auto total = static_cast<std::uint64_t>(std::max<sf_count_t>(in_info.frames, 0));
  const std::uint64_t latency = chain.latency_frames();
  const std::uint32_t block = options.block_frames;
  // Each Python slot gets an equal share of the deadline (Chain): make every share outlast
  // the longest watchdog by a margin.
  const auto timeout_ns =
      static_cast<std::uint64_t>((longest_watchdog_ms + 5000.0) * 1e6) * std::max<std::uint64_t>(python_slots, 1);
  Block staging(channels, block);

  // Feed total + latency frames (silence after the end of the input) and drop the first
  // `latency` frames of output, so output frame i is the chain's answer to input frame i.
  std::uint64_t fed = 0;
  std::uint64_t produced = 0;  // frames of chain output seen, including the skipped ones
  std::uint64_t written = 0;
  while (written < total) {
    const auto n = static_cast<std::uint32_t>(std::min<std::uint64_t>(block, total + latency - fed));
    sf_count_t got = 0;
    if (fed < total && !chain.has_source()) {  // a source ignores its input: silence
      const auto want = static_cast<sf_count_t>(std::min<std::uint64_t>(n, total - fed));
      got = sf_readf_float(in_file.get(), staging.interleaved.data(), want);
      if (got != want) throw RenderError(input.string() + ": short read at frame " + std::to_string(fed));
    }
    for (std::uint32_t ch = 0; ch < channels; ++ch) {
      float* dst = staging.planar_in.data() + std::size_t{ch} * block;
      for (std::uint32_t i = 0; i < n; ++i)
        dst[i] = static_cast<sf_count_t>(i) < got ? staging.interleaved[std::size_t{i} * channels + ch] : 0.0F;
    }
    chain.process_rt(staging.in_ptrs.data(), staging.out_ptrs.data(), n, shm::now_ns() + timeout_ns);
    if (!chain.supervisor().wait_settled()) {
      throw RenderError("a Python plugin could not be restarted within 5 minutes; giving up at frame " +
                        std::to_string(fed));
    }
    fed += n;

    // Keep the part of this block that lies past the latency and inside the input's length.
    const std::uint64_t begin = std::max<std::uint64_t>(produced, latency);
    const std::uint64_t end = std::min<std::uint64_t>(produced + n, latency + total);
    if (end > begin) {
      const auto skip = static_cast<std::uint32_t>(begin - produced);
      const auto keep = static_cast<std::uint32_t>(end - begin);
      for (std::uint32_t i = 0; i < keep; ++i)
        for (std::uint32_t ch = 0; ch < channels; ++ch)
          staging.interleaved[std::size_t{i} * channels + ch] = staging.planar_out[std::size_t{ch} * block + skip + i];
      if (sf_writef_float(out_file.get(), staging.interleaved.data(), keep) != keep)
        throw RenderError(output.string() + ": write failed: " + sf_strerror(out_file.get()));
      written += keep;
    }
    produced += n;
  }

  summary << "rendered " << written << " frames, " << channels << " ch @ " << in_info.samplerate
          << " Hz, block " << block << ", latency compensated " << latency << " frames\n";
  chain.supervisor().refresh();  // exact exception counts for the summary
  RenderReport report{written, channels, static_cast<std::uint32_t>(in_info.samplerate),
                      static_cast<std::uint32_t>(latency), chain.supervisor().status(),
                      chain.supervisor().restart_times_ms(), false};
  for (const SlotStatus& st : report.slots) {
    const SlotCounters& c = st.counters;
    const std::uint64_t missing = blocks_not_processed(st);
    summary << "  " << st.name << ": ";
    // A relay's blocks are counted once, on its first plugin's line.
    if (!st.relay.empty() && st.relay_stage == 0) summary << "relay " << st.relay << ", ";
    if (!st.relay.empty() && st.relay_stage > 0)
      summary << "in relay " << st.relay << " (sandbox " << st.relay_stage + 1
              << ", its blocks counted above)";
    else
      summary << "blocks " << c.blocks << ", deadline misses " << c.deadline_misses << ", bypassed "
              << c.bypassed_blocks << ", sanitized " << c.sanitized_blocks;
    if (c.passthrough_blocks > 0) summary << ", returned False " << c.passthrough_blocks;
    if (st.relay.empty() || st.relay_stage == 0) summary << ", not processed " << missing;
    if (st.kind == "python") {
      summary << ", exceptions " << st.exceptions << ", restarts " << st.restarts << " (crashes " << st.crashes
              << ", hangs " << st.hangs << "), state " << to_string(st.state);
      if (st.restarts > 0) summary << ", restart max " << st.max_restart_ms << " ms";
    }
    summary << "\n";
    // A sandbox group's plugins: each one's own exceptions (its part of such a block took its
    // on-failure; the others played on) and its share of the group's time.
    for (const MemberStatus& m : st.members) {
      summary << "    member " << m.name << ": exceptions " << m.exceptions;
      if (m.exceptions > 0) summary << " (its part of those blocks came out " << (m.on_failure == OnFailure::mute ? "muted" : "dry") << ")";
      if (c.blocks > 0) summary << ", process " << m.process_ns / c.blocks / 1000.0 << " us per block";
      summary << "\n";
      if (!m.last_error.empty()) summary << "      last error: " << m.last_error.substr(0, m.last_error.find('\n')) << "\n";
    }
    if (st.state == SlotState::failed || st.state == SlotState::bypassed) {
      report.degraded = true;
      summary << "    " << (st.on_failure == OnFailure::mute ? "MUTED" : "BYPASSED") << ": " << st.last_error << "\n";
    }
    if (missing > 0) {
      // What a user needs to fix it: which slot, how much, and the first thing that went wrong
      // (later errors are often its consequences); its traceback when it had one.
      std::string first = st.first_error;
      if (first.empty() && c.sanitized_blocks > 0) first = "its output held NaN or Inf (the dry input was used)";
      if (first.empty() && c.passthrough_blocks > 0)
        first = "the plugin returned False for " + std::to_string(c.passthrough_blocks) +
                " blocks (they passed on unprocessed)";
      if (first.empty()) first = "no error reported (the blocks were late or the plugin was down)";
      for (std::size_t at = first.find('\n'); at != std::string::npos; at = first.find('\n', at + 7))
        first.replace(at, 1, "\n      ");  // the traceback, indented under its slot
      while (!first.empty() && (first.back() == ' ' || first.back() == '\n')) first.pop_back();
      summary << "    NOT PROCESSED: " << missing << " of " << c.blocks << " blocks of slot \"" << st.name << "\" came out "
              << (st.on_failure == OnFailure::mute ? "muted" : "dry") << "; first error: " << first << "\n";
    } else if (!st.last_error.empty() && st.state != SlotState::failed && st.state != SlotState::bypassed) {
      summary << "    last error: " << st.last_error.substr(0, st.last_error.find('\n')) << "\n";
    }
  }
  return report;
}

std::uint64_t blocks_not_processed(const SlotStatus& slot) noexcept {
  // A sandboxed slot counts every block with a dry or muted frame (a sanitized block is one);
  // a native slot replaces a NaN/Inf block with the dry input and counts it as sanitized.
  // A block a processor returned False for left it as the dry signal too, by its own choice.
  return std::max(slot.counters.bypassed_blocks, slot.counters.sanitized_blocks) + slot.counters.passthrough_blocks;
}

std::uint64_t blocks_not_processed(const RenderReport& report) noexcept {
  std::uint64_t total = 0;
  for (const SlotStatus& slot : report.slots) total += blocks_not_processed(slot);
  return total;
}

}  // namespace sandpipe::host
