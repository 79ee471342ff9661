// Helpers shared by the native plugin tests: specs, multichannel buffers, block-wise runs.
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <sandpipe/plugin.h>

#include "host/config/config.h"
#include "host/slot/native-plugin.h"
#include "host/slot/processor.h"

namespace sandpipe::test {

constexpr double test_rate = 48000.0;
constexpr std::uint32_t test_max_frames = 1024;

/// A spec for `builtin:NAME`, as the config parser hands it over.
inline host::PluginSpec builtin_spec(const std::string& slot_name, const std::string& builtin,
                                     std::vector<host::ParamSetting> params = {}) {
  host::PluginSpec spec;
  spec.name = slot_name;
  spec.path = "builtin:" + builtin;
  spec.kind = host::PluginKind::native_builtin;
  spec.params = std::move(params);
  return spec;
}

/// Path of a fixture plugin built from tests/plugins-native/fixtures.
inline std::filesystem::path fixture_path(const std::string& file) {
  return std::filesystem::path(SANDPIPE_TEST_FIXTURE_DIR) / file;
}

/// A spec for a third-party `.so`, resolved to an absolute path as the config parser does.
inline host::PluginSpec library_spec(const std::string& slot_name, const std::filesystem::path& file,
                                     std::vector<host::ParamSetting> params = {}) {
  host::PluginSpec spec;
  spec.name = slot_name;
  spec.path = file.filename().string();
  spec.kind = host::PluginKind::native_library;
  spec.resolved = file;
  spec.params = std::move(params);
  return spec;
}

inline std::unique_ptr<host::Processor> make(const host::PluginSpec& spec, std::uint32_t channels = 2,
                                             double rate = test_rate,
                                             std::uint32_t max_frames = test_max_frames) {
  return host::make_native_processor(spec, rate, channels, max_frames);
}

/// Planar audio: one vector per channel.
using Signal = std::vector<std::vector<float>>;

/// Runs `input` through `processor` in blocks whose sizes cycle through `block_sizes`, each block
/// copied into separate in/out buffers as the chain does. Returns the output and each block's status.
struct RunResult {
  Signal output;
  std::vector<host::BlockStatus> statuses;
};

inline RunResult run_blocks(host::Processor& processor, const Signal& input,
                            const std::vector<std::uint32_t>& block_sizes) {
  const std::size_t channels = input.size();
  const std::size_t length = input.front().size();
  RunResult result{Signal(channels, std::vector<float>(length)), {}};
  std::uint32_t max_block = 0;
  for (auto size : block_sizes) max_block = std::max(max_block, size);
  Signal in_buf(channels, std::vector<float>(max_block));
  Signal out_buf(channels, std::vector<float>(max_block));
  std::vector<const float*> in_ptrs(channels);
  std::vector<float*> out_ptrs(channels);
  for (std::size_t c = 0; c < channels; ++c) {
    in_ptrs[c] = in_buf[c].data();
    out_ptrs[c] = out_buf[c].data();
  }
  std::size_t pos = 0;
  std::size_t block = 0;
  while (pos < length) {
    const auto frames = static_cast<std::uint32_t>(
        std::min<std::size_t>(block_sizes[block++ % block_sizes.size()], length - pos));
    for (std::size_t c = 0; c < channels; ++c) {
      std::copy_n(input[c].begin() + static_cast<std::ptrdiff_t>(pos), frames, in_buf[c].begin());
    }
    result.statuses.push_back(processor.process_rt(in_ptrs.data(), out_ptrs.data(), frames, {}));
    for (std::size_t c = 0; c < channels; ++c) {
      std::copy_n(out_buf[c].begin(), frames, result.output[c].begin() + static_cast<std::ptrdiff_t>(pos));
    }
    pos += frames;
  }
  return result;
}

/// A signal whose every sample is distinct, so a shift by any number of frames shows.
inline Signal ramp_signal(std::size_t channels, std::size_t length) {
  Signal s(channels, std::vector<float>(length));
  for (std::size_t c = 0; c < channels; ++c) {
    for (std::size_t n = 0; n < length; ++n) {
      s[c][n] = static_cast<float>(n + 1) * 1e-4f + static_cast<float>(c);
    }
  }
  return s;
}

/// The built-in opened directly through the ABI, for what the host never does (in-place buffers).
class RawBuiltin {
 public:
  explicit RawBuiltin(const char* file) {
    const auto path = std::filesystem::path(SANDPIPE_BUILTIN_DIR) / file;
    handle_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ == nullptr) throw std::runtime_error(dlerror());  // NOLINT(concurrency-mt-unsafe)
    auto entry = reinterpret_cast<sandpipe_plugin_entry_fn>(dlsym(handle_, SANDPIPE_PLUGIN_ENTRY_SYMBOL));
    desc_ = entry(SANDPIPE_PLUGIN_ABI_VERSION, 0);
  }
  ~RawBuiltin() { dlclose(handle_); }
  RawBuiltin(const RawBuiltin&) = delete;
  RawBuiltin& operator=(const RawBuiltin&) = delete;
  RawBuiltin(RawBuiltin&&) = delete;
  RawBuiltin& operator=(RawBuiltin&&) = delete;
  [[nodiscard]] const sandpipe_plugin_descriptor& desc() const { return *desc_; }

 private:
  void* handle_ = nullptr;
  const sandpipe_plugin_descriptor* desc_ = nullptr;
};

/// Output of a built-in run in place (out == in) over `input`, one channel, blocks of `block`.
inline std::vector<float> run_in_place(const char* file, std::uint32_t param, float value,
                                       std::vector<float> buffer, std::uint32_t block) {
  RawBuiltin plugin(file);
  sandpipe_instance* instance = plugin.desc().instantiate(&plugin.desc(), test_rate, 1, block);
  plugin.desc().set_param(instance, param, value);
  for (std::size_t pos = 0; pos < buffer.size(); pos += block) {
    float* io = buffer.data() + pos;
    plugin.desc().process(instance, &io, &io,
                          static_cast<std::uint32_t>(std::min<std::size_t>(block, buffer.size() - pos)));
  }
  plugin.desc().destroy(instance);
  return buffer;
}

}  // namespace sandpipe::test
