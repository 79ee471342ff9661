// Helpers shared by the sandbox suites: signals, the numpy reference, block runs, log capture.
#pragma once

#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "../temp-dir.h"
#include "host/python/python-slot.h"
#include "host/python/sandbox-client.h"
#include "host/python/sandbox-instance.h"
#include "shm/block-channel.h"

extern char** environ;  // NOLINT: POSIX

namespace sandpipe::sandbox_test {

using host::BlockStatus;
using host::ParamSetting;
using host::PluginSpec;
using host::PythonSlot;

inline std::filesystem::path examples_dir() {
  return std::filesystem::path(SANDPIPE_SOURCE_ROOT) / "plugins-py/examples";
}
inline std::filesystem::path fixtures_dir() { return SANDPIPE_SANDBOX_FIXTURES; }
/// The earlier pipeline's processors the host tests use too (tests/host/fixtures/earlier-api).
inline std::filesystem::path earlier_api_examples() {
  return fixtures_dir() / "../../host/fixtures/earlier-api/plugins_py/examples";
}

inline PluginSpec python_spec(const std::string& name, const std::filesystem::path& file,
                              std::vector<ParamSetting> params = {}) {
  PluginSpec spec;
  spec.name = name;
  spec.path = file.string();
  spec.kind = host::PluginKind::python;
  spec.resolved = file;
  spec.params = std::move(params);
  return spec;
}

/// Planar float32 audio.
struct Signal {
  std::uint32_t channels = 0;
  std::uint32_t frames = 0;
  std::vector<float> data;
  Signal(std::uint32_t c, std::uint32_t f) : channels(c), frames(f), data(std::size_t{c} * f, 0.0F) {}
  float* ch(std::uint32_t c) { return data.data() + std::size_t{c} * frames; }
  [[nodiscard]] const float* ch(std::uint32_t c) const { return data.data() + std::size_t{c} * frames; }
};

/// Two different sines plus noise, with a quiet stretch in the middle (for the gate).
inline Signal test_signal(std::uint32_t channels, std::uint32_t frames, std::uint32_t seed = 1) {
  Signal s(channels, frames);
  std::uint32_t state = seed * 2654435761u + 1;
  for (std::uint32_t c = 0; c < channels; ++c) {
    for (std::uint32_t i = 0; i < frames; ++i) {
      state = state * 1664525u + 1013904223u;
      const float noise = static_cast<float>(state >> 8) / 16777216.0F - 0.5F;
      const bool quiet = i >= frames / 3 && i < frames / 2;
      const double phase = 2.0 * M_PI * (220.0 * (c + 1)) * i / 48000.0;
      s.ch(c)[i] = (quiet ? 0.001F : 1.0F) * (0.4F * static_cast<float>(std::sin(phase)) + 0.1F * noise);
    }
  }
  return s;
}

/// Deliberately irregular: the view cache, partial blocks and a one-frame block.
inline std::vector<std::uint32_t> block_sizes(std::uint32_t total, std::uint32_t max_frames) {
  const std::uint32_t pattern[] = {max_frames, 256, 1, 100, max_frames, 37, 480, max_frames};
  std::vector<std::uint32_t> out;
  std::uint32_t done = 0;
  for (std::size_t i = 0; done < total; ++i) {
    const std::uint32_t n = std::min({pattern[i % std::size(pattern)], max_frames, total - done});
    out.push_back(n);
    done += n;
  }
  return out;
}

using test_util::TempDir;

/// Runs tests/sandbox/reference.py with Debian's python3 and returns its output.
inline Signal run_reference(const std::string& kind, const Signal& in, double rate,
                            const std::vector<std::uint32_t>& blocks, const std::string& params_json) {
  TempDir dir("sandbox-test");
  const auto src = dir.path() / "in.f32";
  const auto dst = dir.path() / "out.f32";
  {
    std::ofstream f(src, std::ios::binary);
    f.write(reinterpret_cast<const char*>(in.data.data()),
            static_cast<std::streamsize>(in.data.size() * sizeof(float)));
  }
  std::string sizes;
  for (auto b : blocks) sizes += std::to_string(b) + ",";
  const std::string script = std::string(SANDPIPE_SOURCE_ROOT) + "/tests/sandbox/reference.py";
  std::vector<std::string> args = {SANDPIPE_TEST_PYTHON,
                                   script,
                                   kind,
                                   src.string(),
                                   dst.string(),
                                   std::to_string(in.channels),
                                   std::to_string(in.frames),
                                   std::to_string(rate),
                                   sizes,
                                   params_json};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  if (::posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ) != 0)
    throw std::runtime_error("spawn python");
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw std::runtime_error("reference.py failed for " + kind);
  Signal out(in.channels, in.frames);
  std::ifstream f(dst, std::ios::binary);
  f.read(reinterpret_cast<char*>(out.data.data()),
         static_cast<std::streamsize>(out.data.size() * sizeof(float)));
  if (!f) throw std::runtime_error("reference.py wrote too little");
  return out;
}

inline std::uint64_t deadline_in(std::chrono::milliseconds ms) {
  return shm::now_ns() + static_cast<std::uint64_t>(ms.count()) * 1'000'000u;
}

/// Generous: offline-style, never reached unless something is broken.
inline constexpr std::chrono::milliseconds generous{30'000};

struct BlockRun {
  Signal out;
  std::vector<BlockStatus> statuses;
};

/// Feeds `in` block by block; out-of-place, like the chain.
inline BlockRun run_blocks(host::Processor& p, const Signal& in, const std::vector<std::uint32_t>& blocks,
                           std::chrono::milliseconds budget = generous) {
  BlockRun run{Signal(in.channels, in.frames), {}};
  std::uint32_t pos = 0;
  std::vector<const float*> ins(in.channels);
  std::vector<float*> outs(in.channels);
  for (auto n : blocks) {
    for (std::uint32_t c = 0; c < in.channels; ++c) {
      ins[c] = in.ch(c) + pos;
      outs[c] = run.out.ch(c) + pos;
    }
    run.statuses.push_back(
        p.process_rt(ins.data(), outs.data(), n, host::ProcessContext{deadline_in(budget)}));
    pos += n;
  }
  return run;
}

inline double max_abs_diff(const Signal& a, const Signal& b) {
  double worst = 0.0;
  for (std::size_t i = 0; i < a.data.size(); ++i)
    worst = std::max(worst, std::fabs(double{a.data[i]} - b.data[i]));
  return worst;
}

inline bool bit_equal(const Signal& a, const Signal& b) {
  return a.data.size() == b.data.size() &&
         std::memcmp(a.data.data(), b.data.data(), a.data.size() * sizeof(float)) == 0;
}

/// Collects log lines (main thread only, like the sink's contract).
struct LogCapture {
  std::shared_ptr<std::vector<std::string>> lines = std::make_shared<std::vector<std::string>>();
  host::SandboxLogFn sink() const {
    auto l = lines;
    return [l](std::string_view plugin, host::SandboxLogLevel, std::string_view line) {
      l->push_back("[" + std::string(plugin) + "] " + std::string(line));
    };
  }
  [[nodiscard]] bool contains(const std::string& needle) const {
    for (const auto& l : *lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  [[nodiscard]] std::string all() const {
    std::string s;
    for (const auto& l : *lines) s += l + "\n";
    return s;
  }
};

/// One started sandbox that reads as its slot (`proc->process_rt(...)`, `*proc`); its process is
/// `proc.instance` (pid, synchronous set_param / get_state / stats). No supervisor: a dead
/// sandbox stays dead.
struct OneSandbox : host::StartedSandbox {
  explicit OneSandbox(host::StartedSandbox&& started) : host::StartedSandbox(std::move(started)) {}
  PythonSlot* operator->() const noexcept { return slot.get(); }
  PythonSlot& operator*() const noexcept { return *slot; }
};

inline OneSandbox start_one(const PluginSpec& spec, std::uint32_t channels = 2, std::uint32_t max_frames = 512,
                            const host::SandboxOptions& options = {}) {
  auto started = host::start_sandboxes(std::span<const PluginSpec>(&spec, 1), 48000.0, channels, max_frames, options);
  return OneSandbox(std::move(started.front()));
}

}  // namespace sandpipe::sandbox_test
