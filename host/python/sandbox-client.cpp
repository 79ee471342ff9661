// Main-thread side of Python plugins: starting sandboxes for a chain, the synchronous requests
// of an unsupervised slot, `sandpipe inspect`. One sandbox's process and conversation is
// SandboxInstance (host/sandbox-instance.{h,cpp}).
#include "host/python/sandbox-client.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <utility>

#include "host/python/sandbox-instance.h"
#include "host/python/supervisor.h"

namespace sandpipe::host {
namespace {

using Clock = std::chrono::steady_clock;
using detail::Reply;

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000 ? 1'000'000 : static_cast<int>(left);
}

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

}  // namespace

// ---------------------------------------------------------------------------------------------

SandboxProcessor::SandboxProcessor(std::string name, std::unique_ptr<SandboxLink> link,
                                   std::uint32_t max_frames)
    : name_(std::move(name)), channels_(link->segment.geometry().channels), max_frames_(max_frames) {
  init_rt(std::move(link));  // sandbox-processor.cpp: sizes the RT core
}

SandboxProcessor::~SandboxProcessor() {
  // SandboxInstance's destructor: `shutdown`, a bounded wait, SIGKILL, reap. Null when a Supervisor
  // took the conversation over (it stops its sandboxes itself).
  instance_.reset();
}

std::string SandboxProcessor::load_preloaded(std::chrono::milliseconds timeout) {
  if (!instance_ || instance_->phase() != SandboxInstance::Phase::ready)
    return "not a sandbox waiting for its load";
  SandboxInstance& c = *instance_;
  c.send_load({});
  if (std::string why = c.wait_loaded(Clock::now() + timeout); !why.empty()) {
    return c.phase() == SandboxInstance::Phase::failed
               ? why
               : "no answer to its load within " + std::to_string(timeout.count()) + " ms";
  }
  info_ = c.info();
  set_latency(info_.latency);
  return {};
}

pid_t SandboxProcessor::pid() const noexcept { return instance_ ? instance_->pid() : -1; }
int SandboxProcessor::control_fd() const noexcept { return instance_ ? instance_->control_fd() : -1; }

bool SandboxProcessor::service_control() {
  if (!instance_) return usable();
  SandboxInstance& c = *instance_;
  c.pump();
  c.discard_replies();  // nothing was asked: whatever is here is stray
  if ((c.eof() || !c.protocol_error().empty()) && usable()) {
    usable_.store(false, std::memory_order_relaxed);
    c.emit(SandboxLogLevel::error, c.gone_reason() + "; its slot passes audio through from now on");
  }
  return usable();
}

SandboxInstance& SandboxProcessor::own_instance() const {
  if (!instance_) throw PluginError(name_ + ": supervised: its control channel belongs to the supervisor");
  return *instance_;
}

std::optional<std::string> SandboxProcessor::set_param(const ParamSetting& setting) {
  // Supervised: the change goes through the supervisor thread (kept for restarts); the plugin's
  // answer arrives later and a refusal is logged then.
  if (!instance_ && supervisor_ != nullptr) return supervisor_->set_param(*this, setting);
  SandboxInstance& c = own_instance();
  auto reply =
      c.request(SandboxInstance::Request::param, &setting, Clock::now() + c.launch().request_timeout);
  if (!reply) throw PluginError(name_ + ": setting " + setting.key + ": " + c.gone_reason());
  if (reply->kind == Reply::Kind::error) {
    return reply->message + (reply->traceback.empty() ? "" : "\n" + reply->traceback);
  }
  if (reply->kind != Reply::Kind::param_set || reply->key != setting.key) {
    throw PluginError(name_ + ": unexpected answer to setting " + setting.key);
  }
  if (reply->latency != latency_) {
    c.emit(SandboxLogLevel::warning, "the plugin now reports a latency of " + std::to_string(reply->latency) +
                                         " frames; the slot keeps " + std::to_string(latency_) +
                                         " until it is restarted");
  }
  return std::nullopt;
}

std::vector<std::byte> SandboxProcessor::get_state() {
  SandboxInstance& c = own_instance();
  auto reply = c.request(SandboxInstance::Request::state, nullptr, Clock::now() + c.launch().request_timeout);
  if (!reply) throw PluginError(name_ + ": get_state: " + c.gone_reason());
  if (reply->kind == Reply::Kind::error)
    throw PluginError(name_ + ": get_state: " + reply->message + "\n" + reply->traceback);
  if (reply->kind != Reply::Kind::state) throw PluginError(name_ + ": unexpected answer to getState");
  return std::move(reply->state);
}

SandboxStats SandboxProcessor::stats() {
  SandboxInstance& c = own_instance();
  auto reply = c.request(SandboxInstance::Request::stats, nullptr, Clock::now() + c.launch().request_timeout);
  if (!reply) throw PluginError(name_ + ": stats: " + c.gone_reason());
  if (reply->kind != Reply::Kind::stats) throw PluginError(name_ + ": unexpected answer to getStats");
  return reply->stats;
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

std::vector<std::unique_ptr<SandboxProcessor>> start_sandbox_processors(std::span<const PluginSpec> specs,
                                                                        double sample_rate,
                                                                        std::uint32_t channels,
                                                                        std::uint32_t max_frames,
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
  std::vector<std::unique_ptr<SandboxProcessor>> procs;
  procs.reserve(specs.size());
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const PluginSpec& spec = specs[i];
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
    std::unique_ptr<SandboxInstance> instance = SandboxInstance::spawn(launch, 1);
    instance->set_params(spec.params);
    // The first link is the processor's from the start; the endpoint the instance notifies stays the
    // same object.
    std::unique_ptr<SandboxProcessor> proc(
        new SandboxProcessor(spec.name, instance->take_link(), max_frames));
    proc->instance_ = std::move(instance);
    proc->set_on_failure(spec.on_failure);  // until the load says which API it is
    proc->set_bit_exact(spec.bit_exact);
    proc->set_max_level(max_level_linear(spec.max_level_db));
    procs.push_back(std::move(proc));
  }
  for (std::size_t i = 0; i < procs.size(); ++i) {
    SandboxInstance& c = *procs[i]->instance_;
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
    for (auto& proc : procs) {
      if (!waiting(*proc->instance_)) continue;
      pfds.push_back({proc->instance_->control_fd(), POLLIN, 0});
      polled.push_back(proc->instance_.get());
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
  for (std::size_t i = 0; i < procs.size(); ++i) {
    SandboxProcessor& proc = *procs[i];
    SandboxInstance& c = *proc.instance_;
    const bool loaded = c.phase() == SandboxInstance::Phase::loaded;
    proc.info_.python_version = c.python_version();
    proc.info_.numpy_version = c.numpy_version();
    if (loaded) {
      proc.info_ = c.info();
      proc.set_latency(proc.info_.latency);
    }
    // Earlier-API processors fail closed unless their entry says otherwise.
    proc.set_on_failure(
        effective_on_failure(specs[i], loaded ? proc.info_.api : "", loaded ? proc.info_.role : ""));
    // A sink passes what it received on (its `passthrough`): that is its output, not a bypass.
    proc.sink_ = loaded && proc.info_.role == "sink";
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
    throw PluginError(errors);  // procs' destructors stop every sandbox, loaded or not
  }
  return procs;
}

std::vector<std::unique_ptr<Processor>> start_sandboxes(std::span<const PluginSpec> specs, double sample_rate,
                                                        std::uint32_t channels, std::uint32_t max_frames) {
  auto procs = start_sandbox_processors(specs, sample_rate, channels, max_frames);
  std::vector<std::unique_ptr<Processor>> out;
  out.reserve(procs.size());
  for (auto& p : procs) out.push_back(std::move(p));
  return out;
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
  auto procs = start_sandbox_processors(std::span<const PluginSpec>(&spec, 1), 48000.0, 2, 512, options);
  const PythonPluginInfo& info = procs.front()->info();

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
