// What a loaded sandbox is asked (host/python/sandbox-instance.h): set a parameter, get its state
// or its counters, follow a new rate; answered synchronously (tests and tools) or filed for the
// supervisor thread, which never waits.
#include <algorithm>
#include <utility>

#include <capnp/message.h>

#include "host/python/sandbox-instance.h"
#include "schemas/control.capnp.h"
#include "schemas/param-value.h"

namespace sandpipe::host {

using detail::Reply;

std::uint32_t SandboxInstance::send_request(Request kind, const ParamSetting* setting,
                                            Clock::time_point deadline) {
  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<schema::HostMessage>();
  if (kind == Request::param) {
    auto p = root.initSetParam();
    p.setKey(setting->key);
    p.setMember(setting->member);
    schema::set_param_value(p.initValue(), setting->value);
  } else if (kind == Request::state) {
    root.setGetState();
  } else {
    root.setGetStats();
  }
  const std::uint32_t id = send(msg, deadline);
  if (id != 0 && notify_endpoint_ != nullptr) notify_endpoint_->notify_control();
  return id;
}

std::optional<Reply> SandboxInstance::request(Request kind, const ParamSetting* setting,
                                              Clock::time_point deadline) {
  const std::uint32_t id = send_request(kind, setting, deadline);
  if (id == 0) return std::nullopt;
  return wait_reply(id, deadline);
}

bool SandboxInstance::awaiting(Request kind) const noexcept {
  return std::any_of(async_outstanding_.begin(), async_outstanding_.end(),
                     [&](const Outstanding& o) { return o.kind == kind; });
}

bool SandboxInstance::request_set_param(const ParamSetting& setting) {
  if (phase_ != Phase::loaded || gone()) return false;
  const std::uint32_t id =
      send_request(Request::param, &setting, Clock::now() + std::chrono::milliseconds(100));
  if (id == 0) return false;
  async_outstanding_.push_back({id, Request::param, setting});
  return true;
}

std::optional<std::string> SandboxInstance::set_param(const ParamSetting& setting) {
  auto reply = request(Request::param, &setting, Clock::now() + launch_.request_timeout);
  if (!reply) throw PluginError(launch_.name + ": setting " + setting.key + ": " + gone_reason());
  if (reply->kind == Reply::Kind::error)
    return reply->message + (reply->traceback.empty() ? "" : "\n" + reply->traceback);
  if (reply->kind != Reply::Kind::param_set || reply->key != setting.key)
    throw PluginError(launch_.name + ": unexpected answer to setting " + setting.key);
  if (reply->latency != info_.latency) {
    emit(SandboxLogLevel::warning, "the plugin now reports a latency of " + std::to_string(reply->latency) +
                                       " frames; the slot keeps " + std::to_string(info_.latency) +
                                       " until it is restarted");
  }
  return std::nullopt;
}

std::vector<std::byte> SandboxInstance::get_state() {
  auto reply = request(Request::state, nullptr, Clock::now() + launch_.request_timeout);
  if (!reply) throw PluginError(launch_.name + ": get_state: " + gone_reason());
  if (reply->kind == Reply::Kind::error)
    throw PluginError(launch_.name + ": get_state: " + reply->message + "\n" + reply->traceback);
  if (reply->kind != Reply::Kind::state) throw PluginError(launch_.name + ": unexpected answer to getState");
  return std::move(reply->state);
}

SandboxStats SandboxInstance::stats() {
  auto reply = request(Request::stats, nullptr, Clock::now() + launch_.request_timeout);
  if (!reply) throw PluginError(launch_.name + ": stats: " + gone_reason());
  if (reply->kind != Reply::Kind::stats) throw PluginError(launch_.name + ": unexpected answer to getStats");
  return reply->stats;
}

bool SandboxInstance::request_set_rate(double rate) {
  if (phase_ != Phase::loaded || gone()) return false;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<schema::HostMessage>().setSetRate(rate);
  const std::uint32_t id = send(msg, Clock::now() + std::chrono::milliseconds(100));
  if (id == 0) return false;
  if (notify_endpoint_ != nullptr) notify_endpoint_->notify_control();
  async_outstanding_.push_back({id, Request::rate, {}, rate});
  return true;
}

void SandboxInstance::request_async(Request kind) {
  if (phase_ != Phase::loaded || gone() || awaiting(kind)) return;
  // A full socket means a sandbox that does not read: the watchdog deals with that.
  const std::uint32_t id = send_request(kind, nullptr, Clock::now());
  if (id != 0) async_outstanding_.push_back({id, kind, {}});
}

}  // namespace sandpipe::host
