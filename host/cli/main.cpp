// `sandpipe`: the command line. main() wires things; each subcommand lives in its own module.
// Arguments are parsed with CLI11: every subcommand answers --help.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <string_view>
#include <vector>

#include "host/config/config.h"
#include "host/slot/native-plugin.h"
#include "host/python/node-requests.h"
#include "host/node/node.h"
#include "host/slot/processor.h"
#include "host/chain/render.h"
#include "host/python/sandbox-client.h"
#include "host/cli/set-command.h"
#include "host/cli/status-command.h"

namespace {

using sandpipe::host::ChainConfig;
using sandpipe::host::ConfigError;
using sandpipe::host::PluginError;
using sandpipe::host::RenderError;

constexpr int exit_ok = 0;
constexpr int exit_runtime = 1;
constexpr int exit_usage = 2;  // bad command line, bad config, plugin that cannot load: nothing started

/// A command line that parsed but makes no sense (a value out of range, a file too many).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr std::string_view synopsis = R"(Usage:
  sandpipe run CHAIN.conf
  sandpipe render CHAIN.conf IN.wav OUT.wav [--block N] [--timeout-ms T] [--allow-bypass]
  sandpipe render SOURCE-CHAIN.conf OUT.wav --frames N [--rate R] [options as above]
  sandpipe check CHAIN.conf
  sandpipe inspect PLUGIN.py
  sandpipe set NODE SLOT:PARAM VALUE [SLOT:PARAM VALUE ...]
  sandpipe status NODE [--json]
  sandpipe reload NODE SLOT [--timeout S]
  sandpipe COMMAND --help | sandpipe --help | --version
)";

constexpr std::string_view main_footer = R"(
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
  0 success, 1 runtime failure (or, for render, blocks a plugin did not process; for set, a
  value the node refused), 2 bad usage, config or plugin (nothing was started).
  `sandpipe COMMAND --help` says what each exit status means for COMMAND.
)";

constexpr std::string_view run_footer = R"(
Creates a PipeWire filter node (media.class Audio/Filter) named after the config's node.name,
with ports input_FL/output_FL... per channel, and runs the chain on every cycle until SIGINT
or SIGTERM. Native plugins run on PipeWire's real-time thread; each Python plugin runs in its
own sandbox process. Patch it with pw-link or qpwgraph.

Exit status: 0 stopped by SIGINT/SIGTERM; 1 PipeWire failed (no daemon, the node was
removed); 2 bad config or a native plugin that cannot load or has bad params (checked as
`sandpipe check` does, before touching PipeWire).
)";

constexpr std::string_view render_footer = R"(
Runs the same chain offline over IN.wav (anything libsndfile reads). OUT.wav is float32 WAV
with exactly the input's length, rate and channels, sample-aligned with the input (plugin
latency is compensated). --block is the block size every plugin sees. --timeout-ms is how long
a Python plugin may take for one block before the hang watchdog kills and restarts it (the
block comes out dry). A crashed plugin is restarted and costs only the block it was
processing. Prints a per-plugin summary (blocks, not processed, deadline misses, exceptions,
restarts).
A chain that starts with a source plugin ignores its input: IN.wav then only gives length,
rate and channels, or is left out for --frames N [--rate R] (channels from the config). A
chain that ends with a sink plugin writes to OUT.wav what reached the sink.

Exit status: 0 every block of every slot was processed by its plugin; 1 OUT.wav was written
whole but some blocks were not (an exception, a block the plugin returned False for, a crash,
a hang, a deadline miss, NaN/Inf output, a plugin given up on): the summary names each such
slot, how many blocks, and its first error with the traceback; 1 also when a file cannot be
read or written. 2 bad usage, config, or a plugin that cannot load. --allow-bypass accepts
blocks that were not processed (and plugins that cannot load: their slots pass audio): exit 0,
the summary still names them.
)";

constexpr std::string_view check_footer = R"(
Parses the config, detects every plugin's type and loads every native plugin to check its
params (names, types, ranges) with the same function `run` and `render` use. Each Python
plugin is loaded in a sandbox the way `sandpipe inspect` loads it: its file is imported and the
plugin constructed (the earlier API: create_plugin() and get_info(); the SDK: the class, with
the config's params checked against its declared ones), but none of its lifecycle runs. So a
file with no plugin in it, a create_plugin() that raises or returns something without the
methods its role needs, or a get_info() that returns junk fails here; an initialize() or start()
that returns False only shows when the plugin runs (`render`, `run`).

Exit status: 0 the config is valid; 2 it is not (the message names the file, line, plugin and
problem; for a Python plugin, the file, what is missing and the plugin's traceback).
)";

constexpr std::string_view inspect_footer = R"(
Imports a Python plugin file in a sandbox and prints what was detected: API (Sandpipe SDK or
the earlier create_plugin() API), name, parameters with ranges, latency. Of the plugin it runs
only what describes it: for the earlier API create_plugin() and get_info() (get_type() and
get_parameter() when it has them), none of initialize(), start() or the rest of its lifecycle;
for the SDK the class's construction, not prepare(). A recording sink opens nothing.

Exit status: 0 loaded; 1 the sandbox could not be started; 2 the plugin cannot load (the
error and its traceback are printed).
)";

constexpr std::string_view set_footer = R"(
Changes parameters of a running chain: finds the node named NODE (its node.name) and sends
it Props, as `pw-cli set-param ID Props '{ params = [ "trim:gain" 0.25 ] }'` does. VALUE is a
number, true/false, or a choice name ("lowpass"). The node's PropInfo says what each
parameter takes: a value it refuses (an unknown name, a wrong type) is printed with the
reason and not sent; out-of-range numbers are clamped, with a note. Then the node's Props are
read back until they hold every value sent, or another one: an earlier-API plugin's Props show
what its get_parameter() reads back, which is printed beside the value sent.
List the parameters with `pw-cli enum-params ID PropInfo` (current values: Props).

Exit status: 0 every value was taken (clamped ones with a note); 1 the node refused a value,
did not take it within 5 s, or there is no such node (or no PipeWire); 2 bad usage.
)";

constexpr std::string_view status_footer = R"(
Prints the status of the running node NODE (its node.name): per slot the state (starting,
running, restarting, failed, bypassed), blocks, blocks not processed, deadline misses,
exceptions, restarts, the scheduling mode, pipeline depth and latency (frames), and the last
error. --json prints the whole status as JSON for programs: the fields above and more
(schedule_fits, schedule, recent_misses_ns, the node's timing). Read from
$XDG_RUNTIME_DIR/sandpipe/NODE.status, which `run` rewrites every second.

Exit status: 0 NODE is running; 1 it is not (no status file, or a stale one); 2 bad usage.
)";

constexpr std::string_view reload_footer = R"(
Hot-reloads the Python plugin of slot SLOT in the running node NODE now, whether or not its
config entry has reload = true: the supervisor asks the running version for its state, loads
the file again in a new sandbox with that state and the slot's current params, and hands
over: both versions process the same blocks until the output has crossfaded (64 frames) from
the old version's processed signal to the new one's, with no dry frame and no shift in time.
If the new version does not load (a syntax error, an exception in its constructor, another
latency), the old one keeps playing and the error is printed with its Python traceback.
The request goes over $XDG_RUNTIME_DIR/sandpipe/NODE.sock.

Exit status: 0 once the new version is playing (when nothing is linked to the node: once it
is loaded; it takes over at the next cycle); 1 it did not load, an unknown node or slot, a
native slot, a slot that is not running, or no answer within S seconds; 2 bad usage.
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

/// [main] Loads every native plugin of `config` with its params, as the chain of `run` and
/// `render` does (make_native_processor: unknown names, wrong types and out-of-range values are
/// a PluginError), and drops it. `check` and `run` call it before starting anything.
void check_native_plugins(const ChainConfig& config) {
  for (const auto& spec : config.plugins)
    if (spec.kind != sandpipe::host::PluginKind::python)
      (void)sandpipe::host::make_native_processor(spec, 48000.0, config.channels, 512);
}

/// [main] Loads every Python plugin of `config` in its own sandbox as `sandpipe inspect` does
/// (SandboxOptions::inspect: imported and constructed with the config's params, no lifecycle
/// run), all in parallel, and drops them. Throws PluginError naming each file that cannot load,
/// what is missing and the plugin's traceback.
void check_python_plugins(const ChainConfig& config) {
  std::vector<sandpipe::host::PluginSpec> specs;
  // A sandbox group's members are inspected one by one: inspecting constructs, never runs.
  for (const auto* spec : sandpipe::host::plugins_as_written(config))
    if (spec->kind == sandpipe::host::PluginKind::python) specs.push_back(*spec);
  if (specs.empty()) return;
  sandpipe::host::SandboxOptions options;
  options.inspect = true;
  (void)sandpipe::host::start_sandboxes(specs, 48000.0, config.channels, 512, options);
}

int cmd_check(const ChainConfig& config) {
  check_native_plugins(config);
  check_python_plugins(config);
  const auto plugins = sandpipe::host::plugins_as_written(config);
  std::cout << "node " << config.node_name << ", " << config.channels << " channels, " << plugins.size()
            << " plugins\n";
  const auto print = [](const sandpipe::host::PluginSpec& plugin, const char* indent) {
    std::cout << indent << plugin.name << ": " << sandpipe::host::to_string(plugin.kind) << "  "
              << (plugin.resolved.empty() ? plugin.path : plugin.resolved.string()) << "\n";
  };
  for (const auto& slot : config.plugins) {
    if (sandpipe::host::is_relay(slot)) {
      std::cout << "  relay " << slot.name << " (a sandbox each, handing each block straight to the next; "
                << slot.blocks << (slot.blocks == 1 ? " block" : " blocks") << " of pipeline in all):\n";
      for (const auto& stage : slot.stages) {
        if (!sandpipe::host::is_group(stage)) {
          print(stage, "    ");
          continue;
        }
        std::cout << "    sandbox group " << stage.sandbox << " (one process):\n";
        for (const auto& member : stage.members) print(member, "      ");
      }
      continue;
    }
    if (!sandpipe::host::is_group(slot)) {
      print(slot, "  ");
      continue;
    }
    std::cout << "  sandbox group " << slot.sandbox << " (one process, one hop per block):\n";
    for (const auto& member : slot.members) print(member, "    ");
  }
  return exit_ok;
}

/// What `render` was given on the command line (validated after parsing, with our messages).
struct RenderArgs {
  std::vector<std::string> files;
  double block = 512;
  double timeout_ms = 5000;
  double frames = 0;
  double rate = 48000;
  bool allow_bypass = false;
};

/// [main] The render options, or a UsageError naming the bad one.
sandpipe::host::RenderOptions render_options(const RenderArgs& a, const CLI::App& sub) {
  sandpipe::host::RenderOptions options;
  options.allow_bypass = a.allow_bypass;
  if (sub.count("--block") > 0) {
    if (a.block < 1 || a.block > 8192 || a.block != std::floor(a.block))
      throw UsageError("--block must be a whole number from 1 to 8192");
    options.block_frames = static_cast<std::uint32_t>(a.block);
  }
  if (sub.count("--frames") > 0) {
    if (a.frames < 1 || a.frames > 1e12 || a.frames != std::floor(a.frames))
      throw UsageError("--frames must be a whole number from 1");
    options.frames = static_cast<std::uint64_t>(a.frames);
  }
  if (sub.count("--rate") > 0) {
    if (a.rate < 8000 || a.rate > 768000 || a.rate != std::floor(a.rate))
      throw UsageError("--rate must be a whole number of Hz from 8000 to 768000");
    options.sample_rate = static_cast<std::uint32_t>(a.rate);
  }
  if (sub.count("--timeout-ms") > 0) {
    if (!(a.timeout_ms > 0) || a.timeout_ms > 600000) throw UsageError("--timeout-ms must be in (0, 600000]");
    options.timeout_ms = a.timeout_ms;
  }
  // --frames: no input file (a chain that starts with a source plugin).
  if (options.frames > 0 ? a.files.size() != 1 : a.files.size() != 2)
    throw UsageError(options.frames > 0 ? "render with --frames needs only OUT.wav"
                                        : "render needs exactly IN.wav and OUT.wav (or OUT.wav --frames N)");
  return options;
}

int cmd_render(const ChainConfig& config, const RenderArgs& args, const sandpipe::host::RenderOptions& options) {
  const std::string in_file = options.frames > 0 ? std::string() : args.files[0];
  const std::string& out_file = args.files.back();
  const auto report = sandpipe::host::render_file(config, in_file, out_file, options, std::cerr);
  const std::uint64_t missing = sandpipe::host::blocks_not_processed(report);
  if (missing == 0) return exit_ok;
  if (options.allow_bypass) {
    std::cerr << "sandpipe: " << missing << " blocks were not processed by their plugin; --allow-bypass accepts "
              << "that: " << out_file << " is complete\n";
    return exit_ok;
  }
  std::cerr << "sandpipe: " << out_file << " is complete, but " << missing
            << " blocks were not processed by their plugin (see above; --allow-bypass accepts that)\n";
  return exit_runtime;
}

/// [main] A `set` command line's SLOT:PARAM VALUE pairs (the values parsed by the set command,
/// which knows each parameter's type).
std::vector<std::pair<std::string, std::string>> set_pairs(const std::vector<std::string>& words) {
  if (words.empty() || words.size() % 2 != 0)
    throw UsageError("set needs NODE and one or more SLOT:PARAM VALUE pairs");
  std::vector<std::pair<std::string, std::string>> params;
  for (std::size_t i = 0; i + 1 < words.size(); i += 2) {
    const std::string& name = words[i];
    if (name.find(':') == std::string::npos || name.front() == ':' || name.back() == ':')
      throw UsageError("\"" + name + "\" is not SLOT:PARAM (e.g. trim:gain)");
    params.emplace_back(name, words[i + 1]);
  }
  return params;
}

/// [main] A subcommand with `footer` after its options in its --help.
CLI::App* add_command(CLI::App& app, const char* name, const char* summary, std::string_view footer) {
  CLI::App* sub = app.add_subcommand(name, summary);
  sub->footer(std::string(footer));
  return sub;
}

int run_cli(int argc, char** argv) {
  CLI::App app("sandpipe - run Python and native audio plugins as a PipeWire filter node", "sandpipe");
  app.set_version_flag("--version", "sandpipe " SANDPIPE_VERSION);
  app.require_subcommand(0, 1);
  app.footer(std::string(synopsis) + std::string(main_footer));

  std::string chain;
  CLI::App* run = add_command(app, "run", "Run CHAIN.conf as a PipeWire filter node", run_footer);
  run->add_option("CHAIN.conf", chain, "the chain config (a path, or a NAME looked up as NAME.conf)")->required();

  RenderArgs render_args;
  CLI::App* render = add_command(app, "render", "Run CHAIN.conf offline over IN.wav into OUT.wav", render_footer);
  render->add_option("CHAIN.conf", chain, "the chain config")->required();
  render->add_option("IN.wav OUT.wav", render_args.files, "the input and output files, or OUT.wav alone with --frames")
      ->required()
      ->type_name("");
  render->add_option("--block", render_args.block, "the block size every plugin sees, 1..8192 (default 512)")
      ->type_name("N");
  render->add_option("--timeout-ms", render_args.timeout_ms,
                     "how long a Python plugin may take for one block before it is restarted (default 5000)")
      ->type_name("MS");
  render->add_option("--frames", render_args.frames, "frames to render without IN.wav (a source's chain)")
      ->type_name("N");
  render->add_option("--rate", render_args.rate, "the rate with --frames, 8000..768000 Hz (default 48000)")
      ->type_name("HZ");
  render->add_flag("--allow-bypass", render_args.allow_bypass,
                   "accept blocks a plugin did not process, and plugins that cannot load: exit 0");

  CLI::App* check = add_command(app, "check", "Check CHAIN.conf without starting anything", check_footer);
  check->add_option("CHAIN.conf", chain, "the chain config")->required();

  std::string plugin;
  CLI::App* inspect = add_command(
      app, "inspect", "Describe PLUGIN.py (construct it in a sandbox, start nothing)", inspect_footer);
  inspect->add_option("PLUGIN.py", plugin, "a Python plugin file")->required();

  std::string node;
  std::vector<std::string> set_words;
  CLI::App* set = add_command(app, "set", "Change parameters of a running node", set_footer);
  set->add_option("NODE", node, "the node's node.name")->required();
  set->add_option("SLOT:PARAM VALUE", set_words, "one or more pairs, e.g. trim:gain 0.25")->required()->type_name("");

  bool json = false;
  CLI::App* status = add_command(app, "status", "Print the status of a running node", status_footer);
  status->add_option("NODE", node, "the node's node.name")->required();
  status->add_flag("--json", json, "the whole status as JSON, for programs");

  std::string slot;
  double timeout_s = 30.0;
  CLI::App* reload = add_command(app, "reload", "Hot-reload a Python slot of a running node", reload_footer);
  reload->add_option("NODE", node, "the node's node.name")->required();
  reload->add_option("SLOT", slot, "the slot's name in the config")->required();
  reload->add_option("--timeout", timeout_s, "seconds to wait for the outcome, (0, 3600] (default 30)")
      ->type_name("S");

  CLI::App* help = app.add_subcommand("help", "Print this help");

  if (argc > 1 && argv[1][0] != '-') {
    try {
      (void)app.get_subcommand(argv[1]);
    } catch (const CLI::OptionNotFound&) {
      std::cerr << "sandpipe: unknown command \"" << argv[1] << "\"\n" << synopsis;
      return exit_usage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "sandpipe: " << e.what() << "\n" << synopsis;
    return exit_usage;
  }

  if (*help || app.get_subcommands().empty()) {
    if (app.get_subcommands().empty()) {
      std::cerr << "sandpipe: no command\n" << synopsis;
      return exit_usage;
    }
    std::cout << app.help();
    return exit_ok;
  }
  if (*inspect) {
    std::cout << sandpipe::host::describe_python_plugin(plugin);
    return exit_ok;
  }
  if (*set) return sandpipe::host::set_node_params(node, set_pairs(set_words));
  if (*status) return sandpipe::host::print_node_status(node, json, std::cout, std::cerr);
  if (*reload) {
    if (!(timeout_s > 0 && timeout_s <= 3600)) throw UsageError("--timeout must be a number of seconds in (0, 3600]");
    return sandpipe::host::reload_node_plugin(node, slot,
                                              std::chrono::milliseconds(static_cast<std::int64_t>(timeout_s * 1000.0)));
  }
  if (*render) {
    const auto options = render_options(render_args, *render);  // usage first, then the config
    return cmd_render(sandpipe::host::load_config(find_config(chain)), render_args, options);
  }
  const ChainConfig config = sandpipe::host::load_config(find_config(chain));
  if (*check) return cmd_check(config);
  // Native plugins are cheap to try: refuse bad ones (unknown or out-of-range params, a broken
  // .so) before touching PipeWire, so the error is the same with or without a daemon.
  check_native_plugins(config);
  return sandpipe::host::run_node(config);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run_cli(argc, argv);
  } catch (const UsageError& e) {
    std::cerr << "sandpipe: " << e.what() << "\n" << synopsis;
    return exit_usage;
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
