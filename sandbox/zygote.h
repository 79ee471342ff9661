// Zygote mode of the sandbox binary (`sandpipe-sandbox --zygote`): one process per node that
// starts CPython and imports numpy and the SDK once, never runs plugin code, and forks a fresh
// sandbox for each request of its host (schemas/zygote-protocol.h; host/python/zygote.h is the other
// end). Each child then continues exactly as a freshly started sandbox: its own limits, hello,
// load, confine() before the plugin is imported.
#pragma once

#include <filesystem>

namespace sandpipe::sandbox {

/// Runs the zygote: `args` are what follows `--zygote` on the command line
/// (`--control-fd N --parent-pid P [--python-dir DIR]`). Returns the exit code (0 once the host
/// closed the socket). Children never return from here.
int run_zygote(int argc, char** argv, const std::filesystem::path& self,
               const std::filesystem::path& default_sdk_dir);

}  // namespace sandpipe::sandbox
