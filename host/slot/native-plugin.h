// Native plugins: `builtin:NAME` and third-party `*.so` files speaking plugins-native/include/sandpipe/plugin.h.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "host/config/config.h"
#include "host/slot/processor.h"

namespace sandpipe::host {

/// [main] Where `builtin:NAME` is looked up: $SANDPIPE_PLUGIN_PATH (colon separated) if set, then
/// the build tree's plugins-native/builtins, then the installed libdir/sandpipe/plugins.
[[nodiscard]] std::vector<std::filesystem::path> builtin_search_path();

/// [main] Loads the plugin named by `spec` (kind native_builtin or native_library), checks its ABI,
/// instantiates it for (rate, channels, max_frames) and applies `spec.params` (unknown keys and
/// out-of-range or mistyped values are errors). Throws PluginError naming the plugin and the reason.
[[nodiscard]] std::unique_ptr<Processor> make_native_processor(const PluginSpec& spec, double sample_rate,
                                                               std::uint32_t channels,
                                                               std::uint32_t max_frames);

}  // namespace sandpipe::host
