// Native plugins: finding, loading and checking a plugin .so, applying its config parameters, and
// the NativeProcessor that runs it in-process on the data thread.
#include "host/slot/native-plugin.h"

#include <dlfcn.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cfloat>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

#include <sandpipe/plugin.h>

namespace sandpipe::host {
namespace detail {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view builtin_prefix = "builtin:";

/// Descriptors a library may offer; a bound so a broken entry point cannot loop us forever.
constexpr std::uint32_t max_descriptors = 256;

/// Parameters a descriptor may declare; more is taken for a corrupt descriptor.
constexpr std::uint32_t max_params = 1024;

/// Longest latency a plugin may report, in seconds; the host keeps that much dry signal per channel.
constexpr double max_latency_seconds = 10.0;

struct LibraryCloser {
  void operator()(void* handle) const noexcept {
    if (handle != nullptr) dlclose(handle);
  }
};
/// A dlopen handle; dlclose'd when the last user is gone.
using Library = std::unique_ptr<void, LibraryCloser>;

struct InstanceDestroyer {
  const sandpipe_plugin_descriptor* desc = nullptr;
  void operator()(sandpipe_instance* instance) const noexcept {
    if (instance != nullptr) desc->destroy(instance);
  }
};
using Instance = std::unique_ptr<sandpipe_instance, InstanceDestroyer>;

/// [any] Shortest text that reads back as `value` ("16", "0.025", "1e-05"), whole numbers in full
/// ("2000000", not "2e+06").
template <typename T>
std::string format_number(T value) {
  char buf[64];
  const bool whole = std::isfinite(value) && std::fabs(value) < T(1e15) && std::trunc(value) == value;
  const auto result = whole ? std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed, 0)
                            : std::to_chars(buf, buf + sizeof buf, value);
  return {buf, result.ptr};
}

/// [any] A config value as it would be written in the config, for messages.
std::string describe(const ParamValue& value) {
  if (const auto* number = std::get_if<double>(&value)) return format_number(*number);
  if (const auto* flag = std::get_if<bool>(&value)) return *flag ? "true" : "false";
  return '"' + std::get<std::string>(value) + '"';
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

/// Builds PluginError messages that all start with `plugin "NAME" (PATH): `.
class ErrorContext {
 public:
  explicit ErrorContext(const PluginSpec& spec)
      : prefix_("plugin \"" + spec.name + "\" (" + spec.path + "): ") {}

  /// [main] Throws PluginError with `problem` after the plugin's name and path.
  [[noreturn]] void fail(const std::string& problem) const { throw PluginError(prefix_ + problem); }

 private:
  std::string prefix_;
};

/// [main] `builtin:NAME` → the NAME.so found first on the search path.
fs::path locate_builtin(const ErrorContext& error, std::string_view builtin) {
  const bool valid = !builtin.empty() && std::all_of(builtin.begin(), builtin.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' ||
           ch == '_';
  });
  if (!valid) {
    error.fail("\"" + std::string(builtin) + "\" is not a built-in name (letters, digits, '-' and '_' only)");
  }
  const std::string file_name = std::string(builtin) + ".so";
  const auto dirs = builtin_search_path();
  std::error_code ec;
  for (const auto& dir : dirs) {
    fs::path candidate = dir / file_name;
    if (fs::is_regular_file(candidate, ec)) return candidate;
  }

  std::vector<std::string> searched;
  std::set<std::string> available;
  for (const auto& dir : dirs) {
    searched.push_back(dir.string());
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() == ".so") available.insert(it->path().stem().string());
    }
    ec.clear();
  }
  std::string message =
      "no built-in plugin \"" + std::string(builtin) + "\": no " + file_name + " in " + join(searched, ", ");
  if (!available.empty())
    message += "; available: " + join(std::vector<std::string>(available.begin(), available.end()), ", ");
  error.fail(message);
}

/// [main] Whether the first two fields say this is a descriptor of the ABI we speak.
bool speaks_our_abi(const sandpipe_plugin_descriptor& desc) noexcept {
  return desc.abi_version == SANDPIPE_PLUGIN_ABI_VERSION &&
         desc.struct_size >= sizeof(sandpipe_plugin_descriptor);
}

/// [main] Refuses a descriptor the host cannot safely use.
void check_descriptor(const ErrorContext& error, const sandpipe_plugin_descriptor& desc) {
  // abi_version and struct_size come first in every version of the struct, so they are safe to read.
  if (desc.abi_version != SANDPIPE_PLUGIN_ABI_VERSION) {
    error.fail("built for plugin ABI version " + std::to_string(desc.abi_version) +
               "; this host speaks version " + std::to_string(SANDPIPE_PLUGIN_ABI_VERSION));
  }
  if (desc.struct_size < sizeof(sandpipe_plugin_descriptor)) {
    error.fail("descriptor is " + std::to_string(desc.struct_size) + " bytes; plugin ABI version " +
               std::to_string(SANDPIPE_PLUGIN_ABI_VERSION) + " needs at least " +
               std::to_string(sizeof(sandpipe_plugin_descriptor)));
  }
  if (desc.instantiate == nullptr || desc.destroy == nullptr || desc.process == nullptr) {
    error.fail("descriptor lacks instantiate, destroy or process");
  }
  if (desc.n_params > max_params) {
    error.fail("descriptor declares " + std::to_string(desc.n_params) + " parameters (at most " +
               std::to_string(max_params) + ")");
  }
  if (desc.n_params > 0 && (desc.params == nullptr || desc.set_param == nullptr)) {
    error.fail("descriptor declares parameters but no params array or set_param");
  }
  for (std::uint32_t i = 0; i < desc.n_params; ++i) {
    const sandpipe_param_info& info = desc.params[i];
    if (info.id == nullptr || info.id[0] == '\0') {
      error.fail("parameter " + std::to_string(i) + " has no id");
    }
    if (!(info.min_value <= info.default_value && info.default_value <= info.max_value)) {
      error.fail("parameter \"" + std::string(info.id) +
                 "\" declares an empty range or a default outside it");
    }
    if ((info.flags & SANDPIPE_PARAM_ENUM) != 0u) {
      if (info.choices == nullptr || info.n_choices == 0) {
        error.fail("enum parameter \"" + std::string(info.id) + "\" has no choices");
      }
      for (std::uint32_t c = 0; c < info.n_choices; ++c) {
        if (info.choices[c] == nullptr) {
          error.fail("enum parameter \"" + std::string(info.id) + "\" has a NULL choice");
        }
      }
    }
  }
}

/// [main] The descriptor to use: the one whose id is `wanted` if given and present, else the first.
const sandpipe_plugin_descriptor& pick_descriptor(const ErrorContext& error, const fs::path& file,
                                                  sandpipe_plugin_entry_fn entry, std::string_view wanted) {
  const sandpipe_plugin_descriptor* first = entry(SANDPIPE_PLUGIN_ABI_VERSION, 0);
  if (first == nullptr) error.fail(file.string() + " offers no plugin descriptor");
  if (!wanted.empty()) {
    for (std::uint32_t i = 0; i < max_descriptors; ++i) {
      const sandpipe_plugin_descriptor* desc = i == 0 ? first : entry(SANDPIPE_PLUGIN_ABI_VERSION, i);
      if (desc == nullptr) break;
      if (speaks_our_abi(*desc) && desc->id != nullptr && wanted == desc->id) return *desc;
    }
  }
  return *first;
}

std::string choice_list(const sandpipe_param_info& info) {
  std::vector<std::string> names(info.choices, info.choices + info.n_choices);
  return join(names, ", ");
}

/// [main] The float handed to set_param for a config value, or a PluginError saying why not.
float to_param_value(const ErrorContext& error, const sandpipe_param_info& info, const ParamValue& value) {
  const std::string param = "parameter \"" + std::string(info.id) + "\"";
  const std::string range = "[" + format_number(info.min_value) + ", " + format_number(info.max_value) + "]";

  if ((info.flags & SANDPIPE_PARAM_ENUM) != 0u) {
    if (const auto* name = std::get_if<std::string>(&value)) {
      for (std::uint32_t i = 0; i < info.n_choices; ++i) {
        if (*name == info.choices[i]) return static_cast<float>(i);
      }
      error.fail(param + " = " + describe(value) + " is not one of: " + choice_list(info));
    }
    if (const auto* index = std::get_if<double>(&value)) {
      if (*index >= 0.0 && *index < info.n_choices && std::trunc(*index) == *index) {
        return static_cast<float>(*index);
      }
      error.fail(param + " = " + describe(value) + " is not a choice index in [0, " +
                 std::to_string(info.n_choices - 1) + "] nor one of: " + choice_list(info));
    }
    error.fail(param + " expects one of: " + choice_list(info) + "; got " + describe(value));
  }

  if ((info.flags & SANDPIPE_PARAM_BOOLEAN) != 0u) {
    if (const auto* flag = std::get_if<bool>(&value)) return *flag ? 1.0f : 0.0f;
    error.fail(param + " expects true or false, got " + describe(value));
  }

  const auto* number = std::get_if<double>(&value);
  if (number == nullptr) error.fail(param + " expects a number in " + range + ", got " + describe(value));
  // Compare as the float the plugin will see: 0.1 must pass a range declared as [0.1f, …].
  const bool representable = std::isfinite(*number) && std::fabs(*number) <= FLT_MAX;
  const auto as_float = representable ? static_cast<float>(*number) : 0.0f;
  if (!representable || as_float < info.min_value || as_float > info.max_value) {
    error.fail(param + " = " + describe(value) + " is out of range " + range);
  }
  if ((info.flags & SANDPIPE_PARAM_INTEGER) != 0u && std::trunc(*number) != *number) {
    error.fail(param + " expects a whole number in " + range + ", got " + describe(value));
  }
  return as_float;
}

/// [main] Maps every configured parameter to (index, value), refusing unknown, repeated and bad ones.
std::vector<std::pair<std::uint32_t, float>> resolve_params(const ErrorContext& error,
                                                            const sandpipe_plugin_descriptor& desc,
                                                            const std::vector<ParamSetting>& settings) {
  std::vector<std::pair<std::uint32_t, float>> resolved;
  std::vector<bool> seen(desc.n_params, false);
  for (const ParamSetting& setting : settings) {
    std::uint32_t index = 0;
    while (index < desc.n_params && setting.key != desc.params[index].id) ++index;
    if (index == desc.n_params) {
      std::vector<std::string> valid;
      for (std::uint32_t i = 0; i < desc.n_params; ++i) valid.emplace_back(desc.params[i].id);
      error.fail(
          "unknown parameter \"" + setting.key + "\"; " +
          (valid.empty() ? std::string("the plugin has no parameters") : "valid: " + join(valid, ", ")));
    }
    if (seen[index]) error.fail("parameter \"" + setting.key + "\" is given twice");
    seen[index] = true;
    resolved.emplace_back(index, to_param_value(error, desc.params[index], setting.value));
  }
  return resolved;
}

/// A native plugin instance in a chain slot. Everything is prepared by the constructor on the main
/// thread; process_rt only calls the plugin and checks its output.
class NativeProcessor final : public Processor {
 public:
  /// [main] Takes the loaded library and an instance with its parameters applied.
  NativeProcessor(std::string name, Library library, const sandpipe_plugin_descriptor& desc,
                  Instance instance, std::uint32_t channels, std::uint32_t max_frames, std::uint32_t latency)
      : name_(std::move(name)),
        library_(std::move(library)),
        desc_(desc),
        instance_(std::move(instance)),
        channels_(channels),
        max_frames_(max_frames),
        latency_(latency),
        dry_history_(static_cast<std::size_t>(channels) * latency_, 0.0f) {}

  /// [main] PluginSpec::on_failure, bit_exact and max-level. Before running.
  void set_output_policy(OnFailure on_failure, bool bit_exact, float max_level) noexcept {
    on_failure_ = on_failure;
    bit_exact_ = bit_exact;
    max_level_ = max_level;
  }

  NativeProcessor(const NativeProcessor&) = delete;
  NativeProcessor& operator=(const NativeProcessor&) = delete;
  NativeProcessor(NativeProcessor&&) = delete;
  NativeProcessor& operator=(NativeProcessor&&) = delete;
  /// [main] Destroys the instance, then closes the library (member order).
  ~NativeProcessor() override = default;

  /// [any]
  [[nodiscard]] std::string_view name() const noexcept override { return name_; }

  /// [any] The plugin's latency, read once its configured parameters were applied.
  [[nodiscard]] std::uint32_t latency_frames() const noexcept override { return latency_; }

  /// [rt] Runs the plugin; output holding NaN or a sample beyond max-level (Inf too) is replaced
  /// by the latency-aligned dry input (zeros with on-failure = "mute"); a bit-exact slot's
  /// output is never judged.
  BlockStatus process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                         const ProcessContext& ctx) noexcept override;

  /// [any]
  [[nodiscard]] SlotCounters counters() const noexcept override {
    SlotCounters c;
    c.blocks = blocks_.load(std::memory_order_relaxed);
    c.sanitized_blocks = sanitized_blocks_.load(std::memory_order_relaxed);
    return c;
  }

  /// [main] The descriptor's parameters (checked at load by check_descriptor).
  [[nodiscard]] std::vector<ParamDescription> describe_params() const override {
    std::vector<ParamDescription> out;
    out.reserve(desc_.n_params);
    for (std::uint32_t i = 0; i < desc_.n_params; ++i) {
      const sandpipe_param_info& info = desc_.params[i];
      ParamDescription d;
      d.key = info.id;
      d.min = info.min_value;
      d.max = info.max_value;
      d.default_value = static_cast<double>(info.default_value);
      if ((info.flags & SANDPIPE_PARAM_ENUM) != 0u) {
        d.kind = "choice";
        d.choices.assign(info.choices, info.choices + info.n_choices);
        d.min = 0.0;
        d.max = static_cast<double>(info.n_choices - 1);
      } else if ((info.flags & SANDPIPE_PARAM_BOOLEAN) != 0u) {
        d.kind = "boolean";
        d.default_value = info.default_value != 0.0f;
      } else if ((info.flags & SANDPIPE_PARAM_INTEGER) != 0u) {
        d.kind = "integer";
      } else {
        d.kind = "number";
      }
      out.push_back(std::move(d));
    }
    return out;
  }

  /// [rt] Hands a value the main thread validated to the plugin's set_param (an [audio-thread]
  /// entry point); range-checked again so a stale or corrupt request never reaches the plugin.
  bool set_param_rt(std::uint32_t index, float value) noexcept override {
    if (index >= desc_.n_params || desc_.set_param == nullptr) return false;
    const sandpipe_param_info& info = desc_.params[index];
    if (!(value >= info.min_value && value <= info.max_value)) return false;  // also refuses NaN
    desc_.set_param(instance_.get(), index, value);
    return true;
  }

 private:
  /// [rt] Whether every sample of the block is a number within ±max_level_.
  [[nodiscard]] bool output_within_rt(const float* const* out, std::uint32_t frames) const noexcept;
  /// [rt] Writes the input delayed by the plugin's latency into `out`.
  void write_dry_rt(const float* const* in, float* const* out, std::uint32_t frames) const noexcept;
  /// [rt] Keeps the last `latency_` input frames for write_dry_rt.
  void remember_input_rt(const float* const* in, std::uint32_t frames) noexcept;
  /// [rt] Single writer, so a relaxed load and store suffice (no locked read-modify-write).
  static void bump_rt(std::atomic<std::uint64_t>& counter) noexcept {
    counter.store(counter.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }

  std::string name_;
  Library library_;  // declared before instance_: the instance is destroyed before dlclose
  const sandpipe_plugin_descriptor& desc_;
  Instance instance_;
  std::uint32_t channels_;
  std::uint32_t max_frames_;
  std::uint32_t latency_;
  std::vector<float> dry_history_;  ///< channels × latency_, a ring whose oldest frame is at dry_pos_
  std::uint32_t dry_pos_ = 0;
  std::atomic<std::uint64_t> blocks_{0};
  std::atomic<std::uint64_t> sanitized_blocks_{0};
  OnFailure on_failure_ = OnFailure::bypass;
  bool bit_exact_ = false;
  float max_level_ = FLT_MAX;
};

// ---- real-time part ---------------------------------------------------------------------------

BlockStatus NativeProcessor::process_rt(const float* const* in, float* const* out, std::uint32_t frames,
                                        const ProcessContext& /*ctx*/) noexcept {
  if (frames == 0) return BlockStatus::processed;
  if (frames > max_frames_) {
    // Outside the contract; the plugin's buffers were sized for max_frames, so never call it.
    for (std::uint32_t c = 0; c < channels_; ++c) std::memset(out[c], 0, sizeof(float) * frames);
    return BlockStatus::muted;
  }
  desc_.process(instance_.get(), in, out, frames);
  bump_rt(blocks_);
  const bool good = bit_exact_ || output_within_rt(out, frames);
  if (!good) {
    if (on_failure_ == OnFailure::mute) {
      for (std::uint32_t c = 0; c < channels_; ++c) std::memset(out[c], 0, sizeof(float) * frames);
    } else {
      write_dry_rt(in, out, frames);
    }
    bump_rt(sanitized_blocks_);
  }
  if (latency_ > 0) remember_input_rt(in, frames);
  if (good) return BlockStatus::processed;
  return on_failure_ == OnFailure::mute ? BlockStatus::muted : BlockStatus::bypassed;
}

bool NativeProcessor::output_within_rt(const float* const* out, std::uint32_t frames) const noexcept {
  // On the bits, so it stays correct under -ffast-math: |x| as an integer orders like |x| as a
  // float for every number, and every NaN is above Inf, which is above every ceiling.
  const std::uint32_t limit = std::bit_cast<std::uint32_t>(max_level_);
  std::uint32_t beyond = 0;
  for (std::uint32_t c = 0; c < channels_; ++c) {
    const float* y = out[c];
    for (std::uint32_t n = 0; n < frames; ++n)
      beyond |= static_cast<std::uint32_t>((std::bit_cast<std::uint32_t>(y[n]) & 0x7fffffffu) > limit);
  }
  return beyond == 0;
}

void NativeProcessor::write_dry_rt(const float* const* in, float* const* out,
                                   std::uint32_t frames) const noexcept {
  for (std::uint32_t c = 0; c < channels_; ++c) {
    if (latency_ == 0) {
      std::memcpy(out[c], in[c], sizeof(float) * frames);
      continue;
    }
    const float* history = dry_history_.data() + static_cast<std::size_t>(c) * latency_;
    const std::uint32_t from_history = std::min(frames, latency_);
    std::uint32_t pos = dry_pos_;
    for (std::uint32_t n = 0; n < from_history; ++n) {
      out[c][n] = history[pos];
      pos = pos + 1 == latency_ ? 0 : pos + 1;
    }
    if (frames > latency_) std::memcpy(out[c] + latency_, in[c], sizeof(float) * (frames - latency_));
  }
}

void NativeProcessor::remember_input_rt(const float* const* in, std::uint32_t frames) noexcept {
  for (std::uint32_t c = 0; c < channels_; ++c) {
    float* history = dry_history_.data() + static_cast<std::size_t>(c) * latency_;
    if (frames >= latency_) {
      std::memcpy(history, in[c] + (frames - latency_), sizeof(float) * latency_);
      continue;
    }
    std::uint32_t pos = dry_pos_;
    for (std::uint32_t n = 0; n < frames; ++n) {
      history[pos] = in[c][n];
      pos = pos + 1 == latency_ ? 0 : pos + 1;
    }
  }
  dry_pos_ = frames >= latency_ ? 0 : (dry_pos_ + frames) % latency_;
}

}  // namespace
}  // namespace detail

// ---- main-thread part -------------------------------------------------------------------------

std::vector<std::filesystem::path> builtin_search_path() {
  std::vector<std::filesystem::path> dirs;
  // NOTE: read on the main thread at load time; nothing in Sandpipe calls setenv concurrently.
  if (const char* env = std::getenv("SANDPIPE_PLUGIN_PATH");
      env != nullptr) {  // NOLINT(concurrency-mt-unsafe)
    std::string_view rest = env;
    while (!rest.empty()) {
      const auto colon = rest.find(':');
      const std::string_view entry = rest.substr(0, colon);
      if (!entry.empty()) dirs.emplace_back(entry);
      rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
    }
  }
  dirs.emplace_back(SANDPIPE_BUILTIN_DIR);
  dirs.emplace_back(SANDPIPE_BUILTIN_INSTALL_DIR);
  return dirs;
}

std::unique_ptr<Processor> make_native_processor(const PluginSpec& spec, double sample_rate,
                                                 std::uint32_t channels, std::uint32_t max_frames) {
  namespace fs = std::filesystem;
  const detail::ErrorContext error(spec);

  if (!(sample_rate > 0.0) || channels == 0 || max_frames == 0) {
    error.fail("cannot prepare for rate " + detail::format_number(sample_rate) + " Hz, " +
               std::to_string(channels) + " channels, " + std::to_string(max_frames) + " frames");
  }

  fs::path file;
  std::string_view wanted_id;
  switch (spec.kind) {
    case PluginKind::native_builtin: {
      std::string_view builtin = spec.path;
      if (builtin.starts_with(detail::builtin_prefix)) builtin.remove_prefix(detail::builtin_prefix.size());
      file = detail::locate_builtin(error, builtin);
      wanted_id = builtin;
      break;
    }
    case PluginKind::native_library: {
      file = spec.resolved.empty() ? fs::path(spec.path) : spec.resolved;
      std::error_code ec;
      // Absolute, so that dlopen never searches the library path for a bare file name.
      file = fs::absolute(file, ec);
      if (ec || !fs::is_regular_file(file, ec)) error.fail("no such file: " + file.string());
      break;
    }
    case PluginKind::python:
      error.fail("is a Python plugin, not a native one");
  }

  detail::Library library(dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL));
  if (!library) {
    const char* why = dlerror();  // NOLINT(concurrency-mt-unsafe): glibc keeps it per thread
    error.fail("cannot load " + file.string() + ": " + (why != nullptr ? why : "unknown dlopen error"));
  }
  // Clear any stale error so that a NULL from dlsym is read correctly.
  dlerror();  // NOLINT(concurrency-mt-unsafe): glibc keeps it per thread
  void* symbol = dlsym(library.get(), SANDPIPE_PLUGIN_ENTRY_SYMBOL);
  if (symbol == nullptr) {
    error.fail(file.string() +
               " does not export \"" SANDPIPE_PLUGIN_ENTRY_SYMBOL
               "\": not a Sandpipe native plugin (see plugins-native/include/sandpipe/plugin.h)");
  }
  // NOTE: POSIX guarantees that a dlsym result converts to a function pointer.
  auto entry = reinterpret_cast<sandpipe_plugin_entry_fn>(symbol);  // NOLINT

  const sandpipe_plugin_descriptor& desc = detail::pick_descriptor(error, file, entry, wanted_id);
  detail::check_descriptor(error, desc);
  const auto params = detail::resolve_params(error, desc, spec.params);

  detail::Instance instance(desc.instantiate(&desc, sample_rate, channels, max_frames),
                            detail::InstanceDestroyer{&desc});
  if (!instance) {
    error.fail("instantiate failed for " + detail::format_number(sample_rate) + " Hz, " +
               std::to_string(channels) + " channels, up to " + std::to_string(max_frames) + " frames");
  }
  for (const auto& [index, value] : params) desc.set_param(instance.get(), index, value);

  const std::uint32_t latency = desc.latency != nullptr ? desc.latency(instance.get()) : 0;
  if (latency > detail::max_latency_seconds * sample_rate) {
    error.fail("reports a latency of " + std::to_string(latency) + " frames, more than " +
               detail::format_number(detail::max_latency_seconds) + " s");
  }
  auto processor = std::make_unique<detail::NativeProcessor>(spec.name, std::move(library), desc,
                                                             std::move(instance), channels, max_frames, latency);
  processor->set_output_policy(spec.on_failure, spec.bit_exact, max_level_linear(spec.max_level_db));
  return processor;
}

}  // namespace sandpipe::host
