// `sandpipe`: the command line. main() wires things; each subcommand lives in its own module.
#include <signal.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "host/config.h"
#include "host/node.h"
#include "host/native-plugin.h"
#include "host/node-requests.h"
#include "host/processor.h"
#include "host/render.h"
#include "host/sandbox-client.h"
#include "host/supervisor.h"
#include "host/set-command.h"

namespace {

using sandpipe::host::ChainConfig;
using sandpipe::host::ConfigError;
using sandpipe::host::PluginError;
using sandpipe::host::RenderError;

constexpr int exit_ok = 0;
constexpr int exit_runtime = 1;
constexpr int exit_usage = 2;  // bad command line, bad config, plugin that cannot load: nothing started

constexpr std::string_view usage_text = R"(Usage:
  sandpipe run CHAIN.conf
  sandpipe render CHAIN.conf IN.wav OUT.wav [--block N] [--timeout-ms T] [--allow-bypass]
  sandpipe render SOURCE-CHAIN.conf OUT.wav --frames N [--rate R] [options as above]
  sandpipe check CHAIN.conf
  sandpipe inspect PLUGIN.py
  sandpipe set NODE SLOT:PARAM VALUE [SLOT:PARAM VALUE ...]
  sandpipe status NODE
  sandpipe reload NODE SLOT [--timeout S]
  sandpipe --help | --version
)";

constexpr std::string_view help_text =
    R"(sandpipe - run Python and native audio plugins as a PipeWire filter node

COMMANDS
  run CHAIN.conf
      Create a PipeWire filter node (media.class Audio/Filter) named after the config's
      node.name, with ports input_FL/output_FL... per channel, and run the chain on every
      cycle until SIGINT or SIGTERM. Native plugins run on PipeWire's real-time thread;
      each Python plugin runs in its own sandbox process. Patch it with pw-link or qpwgraph.

  render CHAIN.conf IN.wav OUT.wav [--block N] [--timeout-ms T] [--allow-bypass]
      Run the same chain offline over IN.wav (anything libsndfile reads). OUT.wav is float32
      WAV with exactly the input's length, rate and channels, sample-aligned with the input
      (plugin latency is compensated). --block is the block size every plugin sees
      (1..8192, default 512). --timeout-ms is how long a Python plugin may take for one
      block before the hang watchdog kills and restarts it (default 5000; the block comes
      out dry). A crashed plugin is restarted and costs only the block it was processing.
      A Python plugin that cannot load fails the render (exit 2), and one given up on after
      restart.max crashes makes it exit 1, unless --allow-bypass (its slot passes audio).
      Prints a per-plugin summary (blocks, deadline misses, bypassed, exceptions, restarts).
      A chain that starts with a source plugin ignores its input: IN.wav then only gives
      length, rate and channels, or is left out for --frames N [--rate R] (default 48000;
      channels from the config). A chain that ends with a sink plugin writes to OUT.wav what
      reached the sink.

  status NODE
      Print the status of the running node NODE (its node.name) as JSON: per slot the state
      (starting, running, restarting, failed, bypassed), blocks, deadline misses, exceptions,
      restarts, the last error, the scheduling mode, pipeline depth and latency (frames), and
      whether an `auto` slot fits latency.max-ms (schedule_fits, schedule: why). Read from $XDG_RUNTIME_DIR/sandpipe/NODE.status, which
      `run` rewrites every second; exit 1 if NODE is not running.

  reload NODE SLOT [--timeout S]
      Hot-reload the Python plugin of slot SLOT in the running node NODE now, whether or not
      its config entry has reload = true: the supervisor asks the running version for its
      state, loads the file again in a new sandbox with that state and the slot's current
      params, and hands over: both versions process the same blocks until the output has
      crossfaded (64 frames) from the old version's processed signal to the new one's, with
      no dry frame and no shift in time. Prints the outcome and exits 0 once the new version
      is playing (when nothing is linked to the node the graph does not run it: then once
      the new version is loaded; it takes over at the node's next cycle). If the new version
      does not load (a syntax error, an exception in its constructor, another latency), the
      old one keeps playing and the error is printed with its Python traceback, exit 1.
      Exit 1 as well for an unknown node or slot, a native slot, a slot that is not
      running, or no answer within S seconds (default 30).
      The request goes over $XDG_RUNTIME_DIR/sandpipe/NODE.sock.

  check CHAIN.conf
      Parse the config and detect every plugin's type without starting anything.

  inspect PLUGIN.py
      Load a Python plugin in a sandbox and print what was detected: API (Sandpipe SDK or
      the earlier create_plugin() API), name, parameters with ranges, latency.

  set NODE SLOT:PARAM VALUE [SLOT:PARAM VALUE ...]
      Change parameters of a running chain: finds the node named NODE (its node.name) and
      sends it Props, as `pw-cli set-param ID Props '{ params = [ "trim:gain" 0.25 ] }'` does.
      VALUE is a number, true/false, or a choice name ("lowpass"). Out-of-range numbers are
      clamped; unknown names and wrong types are refused: the running node's log says which.
      List the parameters with `pw-cli enum-params ID PropInfo` (current values: Props).

CHAIN CONFIG
  SPA-JSON, the syntax of PipeWire's own config files:
      node.name = "sandpipe-fx"
      channels  = 2
      plugins = [
        { name = "trim" path = "builtin:gain"   params = { gain = 0.5 } }
        { name = "lp"   path = "builtin:biquad" params = { type = "lowpass" freq = 8000 q = 0.707 } }
        { name = "fx"   path = "my_effect.py"   params = { amount = 0.3 } }
      ]
  A path is builtin:NAME (gain, biquad, delay), a native *.so, or a Python *.py file;
  relative paths are relative to the config file. See docs/config.md.

  CHAIN.conf may also be a bare NAME, looked up as NAME or NAME.conf in
  $XDG_CONFIG_HOME/sandpipe/ (~/.config/sandpipe/), /etc/sandpipe/ and the shipped examples;
  `systemctl --user start sandpipe@NAME` runs that chain as a service.

ENVIRONMENT
  SANDPIPE_PLUGIN_PATH   extra directories searched for builtin:NAME (colon separated)
  PIPEWIRE_REMOTE, XDG_RUNTIME_DIR   which PipeWire daemon `run` connects to

EXIT STATUS
  0 success, 1 runtime failure, 2 bad usage, config or plugin (nothing was started).
)";

/// [main] A config named on the command line: a path as given if it exists or names a directory
/// part, else NAME or NAME.conf in $XDG_CONFIG_HOME/sandpipe, SYSCONFDIR/sandpipe and the
/// shipped examples, in that order (what `systemctl --user start sandpipe@NAME` relies on).
std::filesystem::path find_config(std::string_view arg) {
  const std::filesystem::path given(arg);
  std::error_code ec;
  if (std::filesystem::exists(given, ec) || arg.find('/') != std::string_view::npos) return given;
  std::vector<std::filesystem::path> dirs;
  if (const char* xdg = std::getenv("XDG_CONFIG_HOME"); xdg != nullptr && *xdg != '\0')
    dirs.emplace_back(std::filesystem::path(xdg) / "sandpipe");
  else if (const char* home = std::getenv("HOME"); home != nullptr && *home != '\0')
    dirs.emplace_back(std::filesystem::path(home) / ".config" / "sandpipe");
  dirs.emplace_back(SANDPIPE_SYSCONF_DIR);
  dirs.emplace_back(SANDPIPE_EXAMPLES_DIR);
  std::string looked;
  for (const auto& dir : dirs) {
    for (const auto& name : {std::string(arg), std::string(arg) + ".conf"})
      if (std::filesystem::is_regular_file(dir / name, ec)) return dir / name;
    looked += ", " + dir.string();
  }
  throw ConfigError("no chain \"" + std::string(arg) + "\": no file " + std::string(arg) + " or " + std::string(arg) +
                    ".conf here" + looked);
}

int fail_usage(std::string_view message) {
  std::cerr << "sandpipe: " << message << "\n" << usage_text;
  return exit_usage;
}

int cmd_check(const ChainConfig& config) {
  std::cout << "node " << config.node_name << ", " << config.channels << " channels, "
            << config.plugins.size() << " plugins\n";
  for (const auto& plugin : config.plugins) {
    std::cout << "  " << plugin.name << ": " << sandpipe::host::to_string(plugin.kind) << "  "
              << (plugin.resolved.empty() ? plugin.path : plugin.resolved.string()) << "\n";
  }
  return exit_ok;
}

int cmd_render(const ChainConfig& config, const std::vector<std::string_view>& args) {
  if (args.size() < 2) return fail_usage("render needs IN.wav and OUT.wav");
  sandpipe::host::RenderOptions options;
  std::vector<std::string_view> files;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto arg = args[i];
    if (arg == "--allow-bypass") {
      options.allow_bypass = true;
      continue;
    }
    if (arg == "--block" || arg == "--timeout-ms" || arg == "--frames" || arg == "--rate") {
      if (i + 1 >= args.size()) return fail_usage(std::string(arg) + " needs a value");
      const std::string value(args[++i]);
      char* end = nullptr;
      const double number = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0') return fail_usage(std::string(arg) + ": not a number: " + value);
      if (arg == "--block") {
        if (number < 1 || number > 8192 || number != static_cast<std::uint32_t>(number))
          return fail_usage("--block must be a whole number from 1 to 8192");
        options.block_frames = static_cast<std::uint32_t>(number);
      } else if (arg == "--frames") {
        if (number < 1 || number > 1e12 || number != std::floor(number))
          return fail_usage("--frames must be a whole number from 1");
        options.frames = static_cast<std::uint64_t>(number);
      } else if (arg == "--rate") {
        if (number < 8000 || number > 768000 || number != std::floor(number))
          return fail_usage("--rate must be a whole number of Hz from 8000 to 768000");
        options.sample_rate = static_cast<std::uint32_t>(number);
      } else {
        if (number <= 0 || number > 600000) return fail_usage("--timeout-ms must be in (0, 600000]");
        options.timeout_ms = number;
      }
    } else if (arg.starts_with("--")) {
      return fail_usage("unknown option " + std::string(arg));
    } else {
      files.push_back(arg);
    }
  }
  // --frames: no input file (a chain that starts with a source plugin).
  if (options.frames > 0 ? files.size() != 1 : files.size() != 2)
    return fail_usage(options.frames > 0 ? "render with --frames needs only OUT.wav"
                                         : "render needs exactly IN.wav and OUT.wav (or OUT.wav --frames N)");
  const std::string in_file = options.frames > 0 ? std::string() : std::string(files[0]);
  const auto report =
      sandpipe::host::render_file(config, in_file, std::string(files.back()), options, std::cerr);
  if (report.degraded && !options.allow_bypass) {
    std::cerr << "sandpipe: a Python plugin was given up on: parts of " << files.back()
              << " are dry (--allow-bypass accepts that)\n";
    return exit_runtime;
  }
  return exit_ok;
}

/// [main] `sandpipe status NODE`: the JSON the running node's supervisor keeps up to date.
int cmd_status(std::string_view node) {
  const auto path = sandpipe::host::status_file_path(node);
  std::ifstream in(path);
  if (!in) {
    std::cerr << "sandpipe: no node \"" << node << "\" is running (no " << path.string() << ")\n";
    return exit_runtime;
  }
  std::stringstream text;
  text << in.rdbuf();
  const std::string json = text.str();
  // A node that died without cleaning up leaves its file: check its pid.
  const auto at = json.find("\"pid\":");
  const long pid = at == std::string::npos ? -1 : std::strtol(json.c_str() + at + 6, nullptr, 10);
  if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)) {
    std::cerr << "sandpipe: node \"" << node << "\" is not running (stale " << path.string() << ")\n";
    return exit_runtime;
  }
  std::cout << json;
  return exit_ok;
}

/// [main] `sandpipe reload NODE SLOT [--timeout S]`.
int cmd_reload(const std::vector<std::string_view>& args) {
  std::vector<std::string_view> names;
  double timeout_s = 30.0;
  for (std::size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--timeout") {
      if (i + 1 >= args.size()) return fail_usage("--timeout needs a value");
      const std::string value(args[++i]);
      char* end = nullptr;
      timeout_s = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || !(timeout_s > 0 && timeout_s <= 3600))
        return fail_usage("--timeout must be a number of seconds in (0, 3600]");
    } else if (args[i].starts_with("--")) {
      return fail_usage("unknown option " + std::string(args[i]));
    } else {
      names.push_back(args[i]);
    }
  }
  if (names.size() != 2) return fail_usage("reload needs NODE and SLOT");
  return sandpipe::host::reload_node_plugin(names[0], names[1],
                                            std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000.0)));
}

int dispatch(const std::vector<std::string_view>& args) {
  if (args.empty()) return fail_usage("no command");
  const auto command = args[0];
  if (command == "--help" || command == "-h" || command == "help") {
    std::cout << help_text;
    return exit_ok;
  }
  if (command == "--version") {
    std::cout << "sandpipe " << SANDPIPE_VERSION << "\n";
    return exit_ok;
  }
  if (command == "inspect") {
    if (args.size() != 2) return fail_usage("inspect needs one PLUGIN.py");
    std::cout << sandpipe::host::describe_python_plugin(std::string(args[1]));
    return exit_ok;
  }
  if (command == "set") {
    if (args.size() < 4 || (args.size() - 2) % 2 != 0)
      return fail_usage("set needs NODE and one or more SLOT:PARAM VALUE pairs");
    std::vector<std::pair<std::string, sandpipe::host::ParamValue>> params;
    for (std::size_t i = 2; i + 1 < args.size(); i += 2) {
      const std::string name(args[i]);
      if (name.find(':') == std::string::npos || name.front() == ':' || name.back() == ':')
        return fail_usage("\"" + name + "\" is not SLOT:PARAM (e.g. trim:gain)");
      params.emplace_back(name, sandpipe::host::parse_cli_value(std::string(args[i + 1])));
    }
    return sandpipe::host::set_node_params(std::string(args[1]), params);
  }
  if (command == "status") {
    if (args.size() != 2) return fail_usage("status needs one NODE");
    return cmd_status(args[1]);
  }
  if (command == "reload") return cmd_reload(args);
  if (command != "run" && command != "render" && command != "check")
    return fail_usage("unknown command \"" + std::string(command) + "\"");
  if (args.size() < 2) return fail_usage(std::string(command) + " needs CHAIN.conf");

  const ChainConfig config = sandpipe::host::load_config(find_config(args[1]));
  const std::vector<std::string_view> rest(args.begin() + 2, args.end());
  if (command == "check") return rest.empty() ? cmd_check(config) : fail_usage("check takes one CHAIN.conf");
  if (command == "render") return cmd_render(config, rest);
  if (!rest.empty()) return fail_usage("run takes one CHAIN.conf");
  // Native plugins are cheap to try: refuse bad ones (unknown or out-of-range params, a broken
  // .so) before touching PipeWire, so the error is the same with or without a daemon.
  for (const auto& spec : config.plugins)
    if (spec.kind != sandpipe::host::PluginKind::python)
      (void)sandpipe::host::make_native_processor(spec, 48000.0, config.channels, 512);
  return sandpipe::host::run_node(config);
}

}  // namespace

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  try {
    return dispatch(args);
  } catch (const ConfigError& e) {
    std::cerr << "sandpipe: config error: " << e.what() << "\n";
    return exit_usage;
  } catch (const PluginError& e) {
    std::cerr << "sandpipe: plugin error: " << e.what() << "\n";
    return exit_usage;
  } catch (const RenderError& e) {
    std::cerr << "sandpipe: " << e.what() << "\n";
    return exit_runtime;
  } catch (const std::exception& e) {
    std::cerr << "sandpipe: " << e.what() << "\n";
    return exit_runtime;
  }
}
