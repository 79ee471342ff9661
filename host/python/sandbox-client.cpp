// Main-thread side of Python plugins: starting a chain's sandboxes, `sandpipe inspect`. One
// sandbox's process and conversation is SandboxInstance (sandbox-instance.{h,cpp}), the slot's
// real-time side PythonSlot (python-slot.h).
#include "host/python/sandbox-client.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <utility>

#include "host/python/python-slot.h"
#include "host/python/relay.h"
#include "host/python/sandbox-instance.h"

namespace sandpipe::host {
namespace {

using Clock = std::chrono::steady_clock;
using detail::Reply;
using detail::remaining_ms;

const char* level_prefix(SandboxLogLevel level) {
  switch (level) {
    case SandboxLogLevel::debug:
      return "debug: ";
    case SandboxLogLevel::info:
      return "";
    case SandboxLogLevel::warning:
      return "";
    case SandboxLogLevel::error:
      return "error: ";
  }
  return "";
}

std::string format_value(const ParamValue& v) {
  if (const auto* d = std::get_if<double>(&v)) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", *d);
    return buf;
  }
  if (const auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  return "\"" + std::get<std::string>(v) + "\"";
}

/// A relay's slot once its sandboxes answered their loads: its info (each plugin's as a member,
/// their latencies summed) and on-failure. Returns the errors, one line per plugin that did not
/// load, or, `keep_failed`, logs them and leaves the relay dead: its sandboxes stopped, each
/// failed, the slot dry or mute for good (a relay with a plugin missing cannot play).
std::string relay_loaded(const PluginSpec& spec, StartedSandbox& started, bool keep_failed) {
  PythonSlot& proc = *started.slot;
  PythonPluginInfo info;
  info.api = "relay";
  info.role = "processor";
  info.name = spec.name;
  std::string errors;
  for (std::size_t k = 0; k < started.stages.size(); ++k) {
    SandboxInstance& c = *started.stages[k];
    const PluginSpec& stage = spec.stages[k];
    const bool loaded = c.phase() == SandboxInstance::Phase::loaded;
    info.members.push_back(loaded ? c.info() : PythonPluginInfo{});
    info.latency += info.members.back().latency;
    if (k == 0) {
      info.python_version = c.python_version();
      info.numpy_version = c.numpy_version();
    }
    std::string error;
    if (!loaded) {
      error = c.failure();
    } else if (c.info().role != "processor") {
      error = "it is a " + c.info().role + ": only processors can be in a relay (give it mode = \"sync\" or "
              "\"auto\")";
    }
    while (!error.empty() && error.back() == '\n') error.pop_back();
    if (!error.empty())
      errors += "python plugin \"" + stage.name + "\" (" + c.file().string() + ", in relay " + spec.name + "): " +
                error + "\n";
  }
  proc.set_plugin(info);
  proc.set_on_failure(slot_on_failure(spec, info));
  if (errors.empty() || !keep_failed) return errors;
  while (!errors.empty() && errors.back() == '\n') errors.pop_back();
  for (auto& c : started.stages) {
    c->fail(errors);
    c->kill_and_reap();
  }
  proc.mark_link_dead();
  started.stages.front()->emit(SandboxLogLevel::error,
                               std::string("cannot load, the relay is ") +
                                   (proc.on_failure() == OnFailure::mute ? "muted" : "bypassed") + ": " + errors);
  return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------

StartedSandbox::StartedSandbox() = default;
StartedSandbox::StartedSandbox(StartedSandbox&&) noexcept = default;
StartedSandbox& StartedSandbox::operator=(StartedSandbox&& other) noexcept {
  instance = std::move(other.instance);  // the old instance points into the old slot's link
  stages = std::move(other.stages);      // as do the old relay's sandboxes
  slot = std::move(other.slot);
  return *this;
}

StartedSandbox::~StartedSandbox() = default;

std::vector<SandboxInstance*> StartedSandbox::instances() const {
  std::vector<SandboxInstance*> out;
  if (instance) out.push_back(instance.get());
  for (const auto& stage : stages) out.push_back(stage.get());
  return out;
}

std::string StartedSandbox::load_preloaded(std::chrono::milliseconds timeout) {
  if (!instance || instance->phase() != SandboxInstance::Phase::ready) return "not a sandbox waiting for its load";
  SandboxInstance& c = *instance;
  c.send_load({});
  if (std::string why = c.wait_loaded(Clock::now() + timeout); !why.empty()) {
    return c.phase() == SandboxInstance::Phase::failed
               ? why
               : "no answer to its load within " + std::to_string(timeout.count()) + " ms";
  }
  slot->set_plugin(c.info());
  return {};
}

void log_to_stderr(std::string_view plugin, SandboxLogLevel level, std::string_view line) {
  std::string text = "sandpipe: [";
  text.append(plugin);
  text += "] ";
  text += level_prefix(level);
  text.append(line);
  text += '\n';
  std::fwrite(text.data(), 1, text.size(), stderr);
}

// ---------------------------------------------------------------------------------------------

std::vector<StartedSandbox> start_sandboxes(std::span<const PluginSpec> specs, double sample_rate,
                                            std::uint32_t channels, std::uint32_t max_frames,
                                            const SandboxOptions& options) {
  if (!(sample_rate > 0.0 && sample_rate <= 1'000'000.0))
    throw PluginError("python plugins: bad sample rate");
  if (channels < 1 || channels > shm::max_channels)
    throw PluginError("python plugins: channels must be 1..8");
  if (max_frames < 1 || max_frames > shm::max_frames_limit) {
    throw PluginError("python plugins: max frames must be 1.." + std::to_string(shm::max_frames_limit));
  }
  if (!options.states.empty() && options.states.size() != specs.size()) {
    throw std::invalid_argument("SandboxOptions::states: one per spec or none");
  }
  if (!options.preload_only.empty() && options.preload_only.size() != specs.size()) {
    throw std::invalid_argument("SandboxOptions::preload_only: one per spec or none");
  }
  const auto preload_only = [&](std::size_t i) {
    return !options.preload_only.empty() && options.preload_only[i];
  };
  const std::filesystem::path exe =
      options.sandbox_executable.empty() ? default_sandbox_executable() : options.sandbox_executable;
  if (::access(exe.c_str(), X_OK) != 0) {
    throw PluginError("python plugins need " + exe.string() + ", which is missing or not executable");
  }
  const shm::Geometry geometry{channels, max_frames, options.slot_count};
  const auto deadline = Clock::now() + options.start_timeout;

  // 1. Spawn every sandbox (each is sent its hello) before loading any, so their interpreters
  //    start in parallel; then each gets its load (or, preload only, its preload).
  std::vector<StartedSandbox> started(specs.size());
  const auto make_launch = [&](const PluginSpec& spec) {
    std::filesystem::path file = spec.resolved.empty() ? std::filesystem::path(spec.path) : spec.resolved;
    file = std::filesystem::absolute(file);
    if (!std::filesystem::is_regular_file(file)) {
      throw PluginError("python plugin \"" + spec.name + "\": " + file.string() + ": no such file");
    }
    const SandboxLogFn log = options.log ? options.log : SandboxLogFn(log_to_stderr);
    SandboxLaunch launch{spec.name,
                         file,
                         exe,
                         geometry,
                         sample_rate,
                         spec.memory_mb,
                         options.host_spin_ns,
                         log,
                         options.request_timeout,
                         options.shutdown_timeout};
    launch.allow_writes = spec.allow_writes;
    launch.rt_priority = options.rt_priority;
    launch.wake_lead_us = spec.wake_lead_us;
    launch.keep_denormals = spec.bit_exact;
    launch.zygote = options.zygote;
    for (const PluginSpec& member : spec.members) {
      const std::filesystem::path member_file = std::filesystem::absolute(
          member.resolved.empty() ? std::filesystem::path(member.path) : member.resolved);
      if (!std::filesystem::is_regular_file(member_file))
        throw PluginError("python plugin \"" + member.name + "\" (sandbox group \"" + spec.sandbox +
                          "\"): " + member_file.string() + ": no such file");
      launch.members.push_back({member.name, member_file,
                                member.on_failure_given || member.on_failure == OnFailure::mute
                                    ? std::optional<OnFailure>(member.on_failure)
                                    : std::nullopt,
                                member.reload});
    }
    return launch;
  };
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const PluginSpec& spec = specs[i];
    StartedSandbox& s = started[i];
    if (is_relay(spec)) {
      // One slot, one link (the relay's edges), a sandbox per plugin joined to it.
      auto link = make_relay_link(spec.stages.size(), geometry, 1);
      SandboxLink& relay = *link;
      s.slot = std::make_unique<PythonSlot>(spec.name, std::move(link), max_frames);
      for (std::size_t k = 0; k < spec.stages.size(); ++k) {
        SandboxLaunch launch = make_launch(spec.stages[k]);
        join_relay(launch, relay, k, spec.stages.size());
        s.stages.push_back(SandboxInstance::spawn(launch, 1));
        s.stages.back()->set_params(spec.stages[k].params);
      }
    } else {
      s.instance = SandboxInstance::spawn(make_launch(spec), 1);
      s.instance->set_params(spec.params);
      // The first link is the slot's from the start; the endpoint the instance notifies stays
      // the same object.
      s.slot = std::make_unique<PythonSlot>(spec.name, s.instance->take_link(), max_frames);
    }
    s.slot->set_on_failure(spec.on_failure);  // until the load says which API it is
    s.slot->set_bit_exact(spec.bit_exact);
    s.slot->set_max_level(max_level_linear(spec.max_level_db));
  }
  for (std::size_t i = 0; i < started.size(); ++i) {
    for (auto& stage : started[i].stages) stage->send_load({}, options.inspect);
    if (!started[i].instance) continue;
    SandboxInstance& c = *started[i].instance;
    if (preload_only(i)) {
      c.send_preload();  // hello and preload only: the module is imported, the plugin not made
    } else {
      c.send_load(options.states.empty() ? std::vector<std::byte>{} : options.states[i], options.inspect);
    }
  }

  // 2. Wait for every answer, whichever comes first.
  const auto waiting = [](const SandboxInstance& c) {
    return c.phase() == SandboxInstance::Phase::hello || c.phase() == SandboxInstance::Phase::loading;
  };
  for (;;) {
    std::vector<pollfd> pfds;
    std::vector<SandboxInstance*> polled;
    for (auto& s : started) {
      for (SandboxInstance* c : s.instances()) {
        if (!waiting(*c)) continue;
        pfds.push_back({c->control_fd(), POLLIN, 0});
        polled.push_back(c);
      }
    }
    if (pfds.empty()) break;
    const int ms = remaining_ms(deadline);
    if (ms == 0) {
      for (SandboxInstance* c : polled) {
        c->fail("no answer within " + std::to_string(options.start_timeout.count() / 1000) + " s");
      }
      break;
    }
    if (::poll(pfds.data(), pfds.size(), ms) < 0 && errno != EINTR) {
      throw PluginError(std::string("python plugins: poll: ") + std::strerror(errno));
    }
    for (std::size_t k = 0; k < pfds.size(); ++k) {
      if (pfds[k].revents != 0) polled[k]->advance();
    }
  }

  std::string errors;
  for (std::size_t i = 0; i < started.size(); ++i) {
    if (is_relay(specs[i])) {
      errors += relay_loaded(specs[i], started[i], options.keep_failed);
      continue;
    }
    PythonSlot& proc = *started[i].slot;
    SandboxInstance& c = *started[i].instance;
    const bool loaded = c.phase() == SandboxInstance::Phase::loaded;
    PythonPluginInfo info = loaded ? c.info() : PythonPluginInfo{};
    info.python_version = c.python_version();
    info.numpy_version = c.numpy_version();
    proc.set_plugin(info);
    // Earlier-API processors fail closed unless their entry says otherwise.
    proc.set_on_failure(slot_on_failure(specs[i], info));
    if (c.phase() != SandboxInstance::Phase::failed) continue;
    std::string error = "python plugin \"" + specs[i].name + "\" (" + c.file().string() + "): " + c.failure();
    while (!error.empty() && error.back() == '\n') error.pop_back();
    if (options.keep_failed) {
      // Never fatal: the slot stays dry (or mute) for good; the error is logged and kept.
      c.fail(error);
      c.kill_and_reap();
      proc.mark_link_dead();
      c.emit(SandboxLogLevel::error, std::string("cannot load, the slot is ") +
                                         (proc.on_failure() == OnFailure::mute ? "muted" : "bypassed") +
                                         ": " + error);
      continue;
    }
    if (!errors.empty()) errors += "\n";
    errors += error;
  }
  if (!errors.empty()) {
    while (!errors.empty() && errors.back() == '\n') errors.pop_back();
    throw PluginError(errors);  // the instances' destructors stop every sandbox, loaded or not
  }
  return started;
}

OnFailure slot_on_failure(const PluginSpec& spec, const PythonPluginInfo& info) {
  if (!is_group(spec) && !is_relay(spec)) return effective_on_failure(spec, info.api, info.role);
  // A group's or relay's slot fails closed if any of its plugins does (a group's members' own
  // apply inside the sandbox; a group in a relay is a stage whose info has its members').
  const std::vector<PluginSpec>& parts = is_group(spec) ? spec.members : spec.stages;
  const PythonPluginInfo unknown{};
  for (std::size_t m = 0; m < parts.size(); ++m)
    if (slot_on_failure(parts[m], m < info.members.size() ? info.members[m] : unknown) == OnFailure::mute)
      return OnFailure::mute;
  return OnFailure::bypass;
}

std::string describe_python_plugin(const std::filesystem::path& file) {
  PluginSpec spec;
  const std::filesystem::path absolute = std::filesystem::absolute(file);
  spec.name = absolute.stem().string();
  spec.path = file.string();
  spec.kind = PluginKind::python;
  spec.resolved = absolute;
  SandboxOptions options;
  options.inspect = true;
  auto started = start_sandboxes(std::span<const PluginSpec>(&spec, 1), 48000.0, 2, 512, options);
  const PythonPluginInfo& info = started.front().slot->info();

  std::ostringstream out;
  out << "File:        " << absolute.string() << "\n";
  if (info.api == "legacy") {
    out << "API:         earlier API " << info.role << " (create_plugin(), the earlier pipeline's "
        << (info.role == "source" ? "AudioSourcePlugin"
            : info.role == "sink" ? "AudioSinkPlugin"
                                  : "AudioProcessorPlugin")
        << ")\n";
  } else {
    out << "API:         sdk " << info.role << " (sandpipe.Plugin subclass)\n";
  }
  out << "Name:        " << info.name << "\n";
  out << "Version:     " << (info.version.empty() ? "-" : info.version) << "\n";
  if (!info.description.empty()) out << "Description: " << info.description << "\n";
  out << "Role:        " << info.role << "\n";
  out << "Latency:     " << info.latency << " frames\n";
  out << "Runtime:     Python " << info.python_version << ", numpy " << info.numpy_version << "\n";
  const bool earlier = info.api == "legacy";
  if (info.params.empty()) {
    out << (earlier ? "Parameters:  none it answers with get_parameter(); every key in the config's params = "
                      "{ ... }\n"
                      "             reaches set_parameter() as a string and is published as SLOT:KEY\n"
                    : "Parameters:  none\n");
    return out.str();
  }
  // The earlier API declares no parameters: what is listed are the keys the plugin answers with
  // get_parameter() (from its attributes), with the value it answered.
  out << (earlier ? "Parameters (keys it answers with get_parameter(); any config key is accepted too):\n"
                  : "Parameters:\n");
  std::size_t key_width = 0;
  for (const auto& p : info.params) key_width = std::max(key_width, p.key.size());
  for (const auto& p : info.params) {
    std::string line = "  " + p.key + std::string(key_width - p.key.size() + 2, ' ');
    std::string kind = p.kind;
    kind.resize(std::max<std::size_t>(kind.size(), 8), ' ');
    line += kind + (earlier ? " now " : " default ") + format_value(p.default_value);
    if (earlier) {
      // unbounded: the plugin's set_parameter() decides
    } else if (p.kind == "number" || p.kind == "integer") {
      line += ", range " + format_value(p.min) + " .. " + format_value(p.max);
    } else if (p.kind == "choice") {
      line += ", one of:";
      for (std::size_t k = 0; k < p.choices.size(); ++k) line += (k == 0 ? " " : ", ") + p.choices[k];
    }
    if (!p.unit.empty()) line += " " + p.unit;
    if (!p.label.empty() && p.label != p.key) line += "  (" + p.label + ")";
    out << line << "\n";
  }
  return out.str();
}

}  // namespace sandpipe::host
