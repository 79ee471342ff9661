// What a sandbox is asked (host/python/sandbox-instance.h): its preload and load, then, loaded,
// to set a parameter, get its state or its counters, follow a new rate; answered synchronously
// (tests and tools) or filed for the supervisor thread, which never waits.
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
  if (id != 0) notify();
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
  notify();
  async_outstanding_.push_back({id, Request::rate, {}, rate});
  return true;
}

void SandboxInstance::request_async(Request kind) {
  if (phase_ != Phase::loaded || gone() || awaiting(kind)) return;
  // A full socket means a sandbox that does not read: the watchdog deals with that.
  const std::uint32_t id = send_request(kind, nullptr, Clock::now());
  if (id != 0) async_outstanding_.push_back({id, kind, {}});
}

void SandboxInstance::send_preload() {
  // A group's sandbox imports its members at the load (a preload names one file).
  if (phase_ == Phase::failed || load_sent_ || !launch_.members.empty()) return;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<schema::HostMessage>().setPreload(launch_.file.string());
  if (send(msg, Clock::now() + launch_.request_timeout) == 0) {
    phase_ = Phase::failed;
    failure_ = gone_reason();
  }
}

void SandboxInstance::send_load(const std::vector<std::byte>& state, bool inspect) {
  if (phase_ == Phase::failed) return;
  capnp::MallocMessageBuilder load_msg;
  auto load = load_msg.initRoot<schema::HostMessage>().initLoad();
  load.setPath(launch_.file.string());
  load.setInstanceName(launch_.name);
  load.setSampleRate(launch_.sample_rate);
  load.setChannels(launch_.geometry.channels);
  load.setMaxFrames(launch_.geometry.max_frames);
  const auto write_params = [](auto list, const std::vector<ParamSetting>& params) {
    for (unsigned k = 0; k < params.size(); ++k) {
      list[k].setKey(params[k].key);
      schema::set_param_value(list[k].initValue(), params[k].value);
    }
  };
  if (launch_.members.empty()) {
    write_params(load.initParams(static_cast<unsigned>(params_.size())), params_);
  } else {
    // A group: each member with its own params (ParamSetting::member says whose).
    auto members = load.initMembers(static_cast<unsigned>(launch_.members.size()));
    for (unsigned m = 0; m < launch_.members.size(); ++m) {
      const GroupMemberLaunch& member = launch_.members[m];
      members[m].setName(member.name);
      members[m].setPath(member.file.string());
      using Failure = schema::GroupMember::MemberFailure;
      members[m].setOnFailure(!member.on_failure                     ? Failure::AUTO
                              : *member.on_failure == OnFailure::mute ? Failure::MUTE
                                                                      : Failure::BYPASS);
      std::vector<ParamSetting> own;
      for (const ParamSetting& p : params_)
        if (p.member == m) own.push_back(p);
      write_params(members[m].initParams(static_cast<unsigned>(own.size())), own);
    }
  }
  if (!state.empty())
    load.setState(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(state.data()), state.size()));
  load.setInspect(inspect);
  load_id_ = send(load_msg, Clock::now() + launch_.request_timeout);
  if (load_id_ == 0) {
    phase_ = Phase::failed;
    failure_ = gone_reason();
    return;
  }
  if (phase_ == Phase::ready) phase_ = Phase::loading;
  load_sent_ = true;
}

}  // namespace sandpipe::host
