// Sandbox groups (issue 17): a run of consecutive Python plugins of one group becomes one slot,
// so the run costs one hop to its sandbox per block instead of one per plugin. Relays: a run of
// consecutive pipelined Python plugins becomes one slot whose sandboxes hand each block straight
// to the next (host/python/relay.h), so the run costs one hop from the host and one back.
#include <algorithm>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "host/config/config.h"

namespace sandpipe::host {

namespace {

/// The group a plugin runs in ("" for a process of its own).
std::string group_of(const PluginSpec& spec, SandboxDefault fallback) {
  if (spec.kind != PluginKind::python) return {};
  if (!spec.sandbox.empty()) return spec.sandbox;
  return fallback == SandboxDefault::shared ? "shared" : "";
}

[[noreturn]] void fail(const std::string& where, int line, const std::string& problem) {
  throw ConfigError(where + ":" + std::to_string(line) + ": " + problem);
}

/// One option that shapes the group's process or slot: every member must give it the same value.
template <typename T>
void agree(const std::string& where, const std::vector<PluginSpec>& run, const std::string& group,
           const char* key, T PluginSpec::*field) {
  const PluginSpec& first = run.front();
  for (const PluginSpec& member : run) {
    if (member.*field == first.*field) continue;
    fail(where, member.line,
         "plugin \"" + member.name + "\" and plugin \"" + first.name + "\" (line " +
             std::to_string(first.line) + ") share sandbox group \"" + group + "\" but not their " + key +
             ": a group runs as one slot in one process, so give " + key +
             " the same value on each of its plugins (or on none)");
  }
}

/// The slot of a group or relay takes its plugins' params (each tagged with the plugin's index
/// in the slot's slot_plugins(): a group in a relay counts as its members) and fails closed: its
/// own fallback (its sandboxes down or late) is mute if any plugin's is.
void take_plugins(PluginSpec& slot_spec, const std::vector<PluginSpec>& run) {
  slot_spec.params.clear();
  slot_spec.on_failure = OnFailure::bypass;
  slot_spec.on_failure_given = true;
  std::uint32_t first = 0;  // the index of run[m]'s first plugin
  for (const PluginSpec& part : run) {
    for (ParamSetting setting : part.params) {
      setting.member += first;  // a group's are tagged with its own member index already
      slot_spec.params.push_back(std::move(setting));
    }
    if (part.on_failure == OnFailure::mute) slot_spec.on_failure = OnFailure::mute;
    if (!part.on_failure_given) slot_spec.on_failure_given = false;
    first += static_cast<std::uint32_t>(slot_plugins(part).size());
  }
}

PluginSpec make_group(const std::string& where, std::vector<PluginSpec> run, std::string group,
                      std::string slot) {
  agree(where, run, group, "mode", &PluginSpec::mode);
  agree(where, run, group, "blocks", &PluginSpec::blocks);
  agree(where, run, group, "timeout-ms", &PluginSpec::timeout_ms);
  agree(where, run, group, "memory-mb", &PluginSpec::memory_mb);
  agree(where, run, group, "allow-writes", &PluginSpec::allow_writes);
  agree(where, run, group, "wake-lead-us", &PluginSpec::wake_lead_us);
  agree(where, run, group, "bit-exact", &PluginSpec::bit_exact);
  agree(where, run, group, "max-level", &PluginSpec::max_level_db);
  PluginSpec slot_spec = run.front();  // the options every member shares
  // A member's `reload` reloads the whole group (each member's own `reload` says whose file is
  // followed: GroupMemberLaunch::reload).
  slot_spec.reload = std::any_of(run.begin(), run.end(), [](const PluginSpec& m) { return m.reload; });
  slot_spec.name = std::move(slot);
  slot_spec.path = "sandbox group \"" + group + "\"";
  slot_spec.sandbox = std::move(group);
  take_plugins(slot_spec, run);
  slot_spec.members = std::move(run);
  return slot_spec;
}

}  // namespace

void group_sandboxes(ChainConfig& config, const std::string& where) {
  std::unordered_set<std::string> names;
  for (const PluginSpec& spec : config.plugins) names.insert(spec.name);
  std::unordered_set<std::string> slot_names;  // the groups' slots so far
  std::vector<PluginSpec> slots;
  std::vector<PluginSpec>& plugins = config.plugins;
  for (std::size_t i = 0; i < plugins.size();) {
    const std::string group = group_of(plugins[i], config.sandbox_default);
    std::size_t end = i + 1;
    while (!group.empty() && end < plugins.size() && group_of(plugins[end], config.sandbox_default) == group)
      ++end;
    if (end - i < 2) {  // alone in its group: a slot like any other
      slots.push_back(std::move(plugins[i]));
      i = end;
      continue;
    }
    if (names.count(group) != 0 && !plugins[i].sandbox.empty())
      fail(where, plugins[i].line,
           "sandbox group \"" + group + "\" has the name of a plugin: give the group a name of its own");
    // A group split by another plugin runs as one process per run; each run's slot is named
    // GROUP, GROUP-2, GROUP-3 … (the status and the log lines use that name).
    std::string slot = group;
    for (int k = 2; names.count(slot) != 0 || slot_names.count(slot) != 0; ++k)
      slot = group + "-" + std::to_string(k);
    slot_names.insert(slot);
    std::vector<PluginSpec> run(std::make_move_iterator(plugins.begin() + static_cast<std::ptrdiff_t>(i)),
                                std::make_move_iterator(plugins.begin() + static_cast<std::ptrdiff_t>(end)));
    slots.push_back(make_group(where, std::move(run), group, std::move(slot)));
    i = end;
  }
  plugins = std::move(slots);
}

namespace {

/// `plugin "NAME"` or `sandbox group "NAME"` (a relay's stage may be either).
std::string describe(const PluginSpec& spec) {
  return (is_group(spec) ? "sandbox group \"" : "plugin \"") + spec.name + "\"";
}

/// A Python plugin or a sandbox group (whose members agree on mode and blocks), pipelined.
bool relays(const PluginSpec& spec) {
  return spec.kind == PluginKind::python && spec.mode == SlotMode::pipelined;
}

PluginSpec make_relay(const std::string& where, std::vector<PluginSpec> run, std::string slot) {
  const PluginSpec& first = run.front();
  std::uint32_t blocks = 0;
  for (const PluginSpec& stage : run) {
    const auto disagree = [&](const char* key) {
      fail(where, stage.line,
           describe(stage) + " and " + describe(first) + " (line " + std::to_string(first.line) +
               ") are pipelined one after the other, so they run as one relay, but differ in " + key +
               ": a relay's output is checked once, so give " + key + " the same value on each (or on none)");
    };
    if (stage.bit_exact != first.bit_exact) disagree("bit-exact");
    if (stage.max_level_db != first.max_level_db) disagree("max-level");
    if (stage.reload)  // a group refused it already
      fail(where, stage.line,
           describe(stage) +
               " is pipelined right after or before another, so they run as one relay: "
               "reload is not supported in a relay yet (give it mode = \"sync\" or \"auto\", or "
               "pipeline.handoff = \"host\", to reload it)");
    blocks += stage.blocks;
  }
  if (blocks > max_pipeline_blocks)
    fail(where, first.line,
         "the relay from " + describe(first) + " to " + describe(run.back()) + " is " +
             std::to_string(blocks) + " blocks deep in all, more than " +
             std::to_string(max_pipeline_blocks) +
             ": give its later plugins blocks = 0 where they fit in the blocks before them");
  PluginSpec slot_spec = first;  // bit-exact and max-level, which every stage shares
  slot_spec.members.clear();     // the first stage's, if a group: the relay's are its stages
  slot_spec.sandbox.clear();
  slot_spec.name = std::move(slot);
  slot_spec.path = "relay of " + std::to_string(run.size()) + " sandboxes";
  slot_spec.blocks = blocks;
  take_plugins(slot_spec, run);
  slot_spec.stages = std::move(run);
  return slot_spec;
}

}  // namespace

void relay_pipelines(ChainConfig& config, const std::string& where) {
  std::vector<PluginSpec>& plugins = config.plugins;
  std::unordered_set<std::string> names;
  for (const PluginSpec& spec : plugins) names.insert(spec.name);
  std::vector<PluginSpec> slots;
  for (std::size_t i = 0; i < plugins.size();) {
    std::size_t end = i + 1;
    while (config.direct_handoff && relays(plugins[i]) && end < plugins.size() && relays(plugins[end])) ++end;
    // `blocks = 0`: only where the blocks before it are a relay's.
    for (std::size_t k = i; k < end; ++k) {
      if (plugins[k].mode != SlotMode::pipelined || plugins[k].blocks != 0 || k > i) continue;
      fail(where, plugins[k].line,
           describe(plugins[k]) +
               " has blocks = 0, which only a pipelined Python plugin or group right after "
               "another one may have (it then runs in the blocks of those before it, in one relay)" +
               std::string(config.direct_handoff ? "" : "; pipeline.handoff = \"host\" makes no relays"));
    }
    if (end - i < 2) {
      slots.push_back(std::move(plugins[i]));
      i = end;
      continue;
    }
    std::string slot = plugins[i].name + ".." + plugins[end - 1].name;
    for (int k = 2; names.count(slot) != 0; ++k) slot = plugins[i].name + ".." + plugins[end - 1].name + "-" + std::to_string(k);
    names.insert(slot);
    std::vector<PluginSpec> run(std::make_move_iterator(plugins.begin() + static_cast<std::ptrdiff_t>(i)),
                                std::make_move_iterator(plugins.begin() + static_cast<std::ptrdiff_t>(end)));
    slots.push_back(make_relay(where, std::move(run), std::move(slot)));
    i = end;
  }
  plugins = std::move(slots);
}

std::vector<const PluginSpec*> plugins_as_written(const ChainConfig& config) {
  std::vector<const PluginSpec*> out;
  for (const PluginSpec& spec : config.plugins)
    for (const PluginSpec* plugin : slot_plugins(spec)) out.push_back(plugin);
  return out;
}

}  // namespace sandpipe::host
