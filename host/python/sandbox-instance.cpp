// One sandbox process and its control conversation (host/python/sandbox-instance.h): spawn, the
// hello/preload/load handshake, answers matched to their requests by id, teardown. The requests
// of a loaded sandbox are in sandbox-instance-requests.cpp.
#include "host/python/sandbox-instance.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <deque>
#include <set>
#include <system_error>
#include <utility>

#include "schemas/control.capnp.h"
#include "schemas/param-value.h"

namespace sandpipe::host {
namespace {

using Clock = std::chrono::steady_clock;
using schema::SandboxMessage;

constexpr std::uint32_t max_latency_frames = 1u << 18;
constexpr std::size_t max_params = 256;
constexpr std::size_t max_choices = 256;
constexpr std::size_t max_line = 16u << 10;
constexpr std::size_t max_traceback = 256u << 10;

using detail::Reply;
using detail::remaining_ms;

/// Text from the sandbox, made safe to print: bounded, control characters replaced (no
/// terminal escapes), newlines kept only where a traceback needs them.
std::string clean(std::string_view in, std::size_t max, bool multiline) {
  std::string out;
  const std::size_t n = in.size() < max ? in.size() : max;
  out.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto c = static_cast<unsigned char>(in[i]);
    if (c == '\n' && multiline) {
      out.push_back('\n');
    } else if (c == '\t') {
      out.push_back('\t');
    } else if (c < 0x20 || c == 0x7f) {
      out.push_back('?');
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (in.size() > max) out += "...[truncated]";
  return out;
}

std::string clean(capnp::Text::Reader t, std::size_t max, bool multiline = false) {
  return clean(std::string_view(t.begin(), t.size()), max, multiline);
}

/// Validates a plugin description; returns what is wrong, or nothing.
std::optional<std::string> decode_info(schema::PluginInfo::Reader in, PythonPluginInfo& out,
                                       std::size_t members = 0) {
  const auto api = in.getApi();
  out.api = api == schema::PluginApi::LEGACY ? "legacy" : api == schema::PluginApi::GROUP ? "group" : "sdk";
  if (api != schema::PluginApi::LEGACY && api != schema::PluginApi::SDK && api != schema::PluginApi::GROUP)
    return "unknown api";
  // A group describes exactly the members it was asked to load, each a plugin (never a group).
  if ((api == schema::PluginApi::GROUP) != (members > 0) || in.getMembers().size() != members)
    return members > 0 ? "not the group of " + std::to_string(members) + " plugins it was asked to load"
                       : "a group where one plugin was asked for";
  std::uint64_t latency_sum = 0;
  for (auto member : in.getMembers()) {
    PythonPluginInfo& m = out.members.emplace_back();
    if (auto problem = decode_info(member, m)) return "member " + std::to_string(out.members.size()) + ": " + *problem;
    latency_sum += m.latency;
  }
  if (members > 0 && latency_sum != in.getLatencyFrames()) return "a latency that is not its members' sum";
  switch (in.getRole()) {
    case schema::PluginRole::PROCESSOR:
      out.role = "processor";
      break;
    case schema::PluginRole::SOURCE:
      out.role = "source";
      break;
    case schema::PluginRole::SINK:
      out.role = "sink";
      break;
    default:
      return "unknown role";
  }
  out.name = clean(in.getName(), 256);
  out.version = clean(in.getVersion(), 64);
  out.description = clean(in.getDescription(), 4096);
  out.latency = in.getLatencyFrames();
  out.preloaded = in.getPreloaded();
  if (out.latency > max_latency_frames) return "latency of " + std::to_string(out.latency) + " frames";
  const auto params = in.getParams();
  if (params.size() > max_params) return "too many parameters";
  std::set<std::string> keys;
  for (auto p : params) {
    PythonParamInfo info;
    info.key = clean(p.getKey(), 128);
    if (info.key.empty() || !keys.insert(info.key).second) return "empty or repeated parameter key";
    info.label = clean(p.getLabel(), 256);
    info.unit = clean(p.getUnit(), 32);
    info.min = p.getMinValue();
    info.max = p.getMaxValue();
    const auto def = p.getDefault();
    switch (def.which()) {
      case schema::ParamValue::NUMBER:
        info.default_value = def.getNumber();
        break;
      case schema::ParamValue::BOOLEAN:
        info.default_value = def.getBoolean();
        break;
      case schema::ParamValue::TEXT:
        info.default_value = clean(def.getText(), 4096);
        break;
      default:
        return "parameter " + info.key + ": unknown default type";
    }
    const auto choices = p.getChoices();
    if (choices.size() > max_choices) return "parameter " + info.key + ": too many choices";
    for (auto c : choices) info.choices.push_back(clean(c, 256));
    switch (p.getKind()) {
      case schema::ParamInfo::Kind::NUMBER:
      case schema::ParamInfo::Kind::INTEGER: {
        info.kind = p.getKind() == schema::ParamInfo::Kind::NUMBER ? "number" : "integer";
        const auto* d = std::get_if<double>(&info.default_value);
        if (std::isnan(info.min) || std::isnan(info.max) || info.min > info.max) {
          return "parameter " + info.key + ": bad range";
        }
        if (d == nullptr || !(*d >= info.min && *d <= info.max)) {
          return "parameter " + info.key + ": default outside its range";
        }
        break;
      }
      case schema::ParamInfo::Kind::BOOLEAN:
        info.kind = "boolean";
        if (!std::holds_alternative<bool>(info.default_value))
          return "parameter " + info.key + ": bad default";
        break;
      case schema::ParamInfo::Kind::CHOICE: {
        info.kind = "choice";
        const auto* s = std::get_if<std::string>(&info.default_value);
        bool found = false;
        for (const auto& c : info.choices) found = found || (s != nullptr && c == *s);
        if (!found) return "parameter " + info.key + ": default is not one of its choices";
        break;
      }
      case schema::ParamInfo::Kind::TEXT:
        info.kind = "text";
        if (!std::holds_alternative<std::string>(info.default_value)) {
          return "parameter " + info.key + ": bad default";
        }
        break;
      default:
        return "parameter " + info.key + ": unknown kind";
    }
    out.params.push_back(std::move(info));
  }
  return std::nullopt;
}

}  // namespace

SandboxInstance::~SandboxInstance() {
  if (pid_ <= 0 || reaped_) return;
  if (!protocol_error_.empty() || phase_ != Phase::loaded) {
    kill_and_reap();  // broke the protocol, or never ran a plugin: nothing to shut down cleanly
    return;
  }
  const auto deadline = Clock::now() + launch_.shutdown_timeout;
  if (!eof_) {
    capnp::MallocMessageBuilder msg;
    msg.initRoot<schema::HostMessage>().setShutdown();
    if (send(msg, deadline)) notify();
  }
  // Deliver what the plugin prints while shutting down, until the sandbox exits.
  while (!reaped_ && Clock::now() < deadline) {
    // A closed socket would report POLLHUP forever: then only the pidfd_ is watched.
    pollfd pfds[2] = {{eof_ ? -1 : control_fd(), POLLIN, 0}, {pidfd_.get(), POLLIN, 0}};
    const int ms = remaining_ms(deadline);
    const int ready = ::poll(pfds, 2, pidfd_.get() >= 0 ? ms : (ms < 5 ? ms : 5));
    if (ready > 0 && (pfds[0].revents & (POLLIN | POLLHUP)) != 0) pump();
    wait_exit(Clock::now());
  }
  if (!reaped_) {
    emit(SandboxLogLevel::warning, "sandbox did not exit within " +
                                       std::to_string(launch_.shutdown_timeout.count()) + " ms; killing it");
    kill_and_reap();
  }
}

void SandboxInstance::emit(SandboxLogLevel level, std::string_view text) const {
  // One call per line: a sink may prefix each.
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t nl = text.find('\n', start);
    const std::string_view line = text.substr(start, nl == std::string_view::npos ? nl : nl - start);
    if (!line.empty() || nl != std::string_view::npos) log_(launch_.name, level, line);
    if (nl == std::string_view::npos) break;
    start = nl + 1;
    if (start == text.size()) break;
  }
}

std::uint32_t SandboxInstance::send(capnp::MessageBuilder& message, Clock::time_point deadline) {
  const std::uint32_t id = next_request_id_++;
  message.getRoot<schema::HostMessage>().setRequestId(id);
  if (channel_->send(message, remaining_ms(deadline))) return id;
  if (channel_->closed() && channel_->breach().empty()) eof_ = true;  // EPIPE / ECONNRESET: gone
  return 0;
}

void SandboxInstance::pump() {
  if (!protocol_error_.empty()) return;
  channel_->flush_now();  // what an earlier send left queued
  while (protocol_error_.empty()) {
    auto message = channel_->poll();
    if (!message) break;
    decode(*message);
  }
  if (protocol_error_.empty() && !channel_->breach().empty()) protocol_error_ = channel_->breach();
  if (channel_->closed() && channel_->breach().empty()) eof_ = true;
}

void SandboxInstance::decode(schema::ReceivedMessage& message) {
  try {
    const auto msg = message.root<SandboxMessage>();
    Reply r;
    r.request_id = msg.getRequestId();
    switch (msg.which()) {
      case SandboxMessage::LOG: {
        const auto log_msg = msg.getLog();
        SandboxLogLevel level = SandboxLogLevel::info;
        switch (log_msg.getLevel()) {
          case SandboxMessage::LogLevel::DEBUG:
            level = SandboxLogLevel::debug;
            break;
          case SandboxMessage::LogLevel::WARNING:
            level = SandboxLogLevel::warning;
            break;
          case SandboxMessage::LogLevel::ERROR:
            level = SandboxLogLevel::error;
            break;
          default:
            break;
        }
        log_(launch_.name, level, clean(log_msg.getText(), max_line));
        return;
      }
      case SandboxMessage::ERROR: {
        const auto e = msg.getError();
        r.kind = Reply::Kind::error;
        r.phase = e.getPhase();
        r.message = clean(e.getMessage(), max_line);
        r.traceback = clean(e.getTraceback(), max_traceback, true);
        r.member = e.getMember();
        if (r.phase == SandboxMessage::Phase::PROCESS) {
          // Not an answer to anything: the plugin raised in process(); the block went dry (a
          // group's member: its part of the block took its on-failure, the others played).
          // The sandbox sends each new message with its traceback, repeats as a count.
          ++process_errors_;
          std::string line = "exception in process(): " + r.message;
          std::string text = line + (r.traceback.empty() ? "" : "\n" + r.traceback);
          if (r.member >= 0 && static_cast<std::size_t>(r.member) < launch_.members.size()) {
            const auto m = static_cast<std::size_t>(r.member);
            member_process_errors_.resize(launch_.members.size());
            member_process_errors_[m] = text;
            line = "member " + launch_.members[m].name + ": " + line;
            text = "member " + launch_.members[m].name + ": " + text;
          }
          last_process_error_ = std::move(text);
          if (first_process_error_.empty()) first_process_error_ = last_process_error_;
          emit(SandboxLogLevel::error, line);
          if (!r.traceback.empty()) emit(SandboxLogLevel::error, r.traceback);
          return;
        }
        break;
      }
      case SandboxMessage::HELLO: {
        const auto h = msg.getHello();
        r.kind = Reply::Kind::hello;
        r.protocol_version = h.getProtocolVersion();
        r.shm_layout_version = h.getShmLayoutVersion();
        r.shm_header_size = h.getShmHeaderSize();
        r.python_version = clean(h.getPythonVersion(), 64);
        r.numpy_version = clean(h.getNumpyVersion(), 64);
        break;
      }
      case SandboxMessage::LOADED: {
        r.kind = Reply::Kind::loaded;
        if (auto problem = decode_info(msg.getLoaded(), r.info, launch_.members.size())) {
          protocol_error_ = "invalid plugin description: " + *problem;
          return;
        }
        break;
      }
      case SandboxMessage::PARAM_SET: {
        r.kind = Reply::Kind::param_set;
        r.key = clean(msg.getParamSet().getKey(), 128);
        r.member = static_cast<std::int32_t>(std::min<std::uint32_t>(msg.getParamSet().getMember(), 1u << 16));
        r.latency = msg.getParamSet().getLatencyFrames();
        if (msg.getParamSet().hasReadBack()) {
          const auto v = msg.getParamSet().getReadBack();
          if (v.isNumber() && std::isfinite(v.getNumber())) r.read_back = v.getNumber();
          if (v.isBoolean()) r.read_back = v.getBoolean();
          if (v.isText()) r.read_back = clean(v.getText(), 4096);
        }
        break;
      }
      case SandboxMessage::RATE_SET:
        r.kind = Reply::Kind::rate_set;
        r.latency = msg.getRateSet();
        break;
      case SandboxMessage::STATE: {
        r.kind = Reply::Kind::state;
        const auto data = msg.getState();
        r.state.assign(reinterpret_cast<const std::byte*>(data.begin()),
                       reinterpret_cast<const std::byte*>(data.end()));
        break;
      }
      case SandboxMessage::STATS: {
        const auto s = msg.getStats();
        r.kind = Reply::Kind::stats;
        r.stats = {s.getBlocks(),         s.getExceptions(),  s.getProcessNsLast(), s.getProcessNsMax(),
                   s.getProcessNsTotal(), s.getLogsDropped(), s.getGcCollections(), {}, {}};
        // A group's per-member counters: one per member it was asked to load, else none.
        if (s.getMemberExceptions().size() == launch_.members.size() &&
            s.getMemberProcessNs().size() == launch_.members.size()) {
          for (auto n : s.getMemberExceptions()) r.stats.member_exceptions.push_back(n);
          for (auto n : s.getMemberProcessNs()) r.stats.member_process_ns.push_back(n);
        }
        break;
      }
      default:
        protocol_error_ = "unknown message";
        return;
    }
    const auto pending = std::find_if(async_outstanding_.begin(), async_outstanding_.end(),
                                      [&](const Outstanding& o) { return o.id == r.request_id; });
    if (r.request_id != 0 && pending != async_outstanding_.end()) {
      // The answer to a request nobody waits for: filed for take_async_*() / param_results_.
      Outstanding asked = std::move(*pending);
      async_outstanding_.erase(pending);
      if (asked.kind == Request::state && r.kind == Reply::Kind::state) async_state_ = std::move(r.state);
      if (asked.kind == Request::stats && r.kind == Reply::Kind::stats) async_stats_ = r.stats;
      if (asked.kind == Request::param) {
        std::optional<std::string> refusal;
        if (r.kind == Reply::Kind::error)
          refusal = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
        param_results_.push_back({std::move(asked.setting), std::move(refusal), std::move(r.read_back)});
      }
      if (asked.kind == Request::rate) {
        RateResult result{asked.rate, std::nullopt, {}};
        if (r.kind == Reply::Kind::rate_set) {
          result.latency = r.latency;
          launch_.sample_rate = asked.rate;
        } else {
          result.error = r.kind == Reply::Kind::error
                             ? r.message + (r.traceback.empty() ? "" : "\n" + r.traceback)
                             : std::string("unexpected answer to setRate");
        }
        rate_result_ = std::move(result);
      }
      return;
    }
    replies_.push_back(std::move(r));
  } catch (const kj::Exception& e) {
    protocol_error_ = std::string("malformed message: ") + e.getDescription().cStr();
  }
}

std::optional<Reply> SandboxInstance::wait_reply(std::uint32_t id, Clock::time_point deadline) {
  for (;;) {
    while (!replies_.empty()) {
      Reply r = std::move(replies_.front());
      replies_.pop_front();
      if (r.request_id == id) return r;  // else the late answer to a request that timed out
    }
    if (eof_ || !protocol_error_.empty()) return std::nullopt;
    const int ms = remaining_ms(deadline);
    if (ms == 0) return std::nullopt;
    if (channel_->wait_readable(ms)) pump();
  }
}

/// True once the child has exited and was reaped (waits at most until `deadline`).
bool SandboxInstance::wait_exit(Clock::time_point deadline) {
  while (!reaped_) {
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      exit_status_ = status;
      break;
    }
    if (r < 0 && errno != EINTR) {  // not our child any more (someone else reaped_ it)
      reaped_ = true;
      break;
    }
    const int ms = remaining_ms(deadline);
    if (ms == 0) return false;
    if (pidfd_.get() >= 0) {
      pollfd pfd{pidfd_.get(), POLLIN, 0};
      ::poll(&pfd, 1, ms);
    } else {
      ::poll(nullptr, 0, ms < 5 ? ms : 5);  // NOTE: no pidfd_ (old kernel): short naps
    }
  }
  return true;
}

void SandboxInstance::kill_and_reap() {
  if (reaped_ || pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  int status = 0;
  while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  exit_status_ = status;
}

/// Why the sandbox stopped talking, for error messages.
std::string SandboxInstance::gone_reason() {
  if (!protocol_error_.empty()) return "broke the control protocol (" + protocol_error_ + ")";
  if (eof_) {
    wait_exit(Clock::now() + std::chrono::seconds(2));
    if (reaped_) return "sandbox " + describe_exit(exit_status_);
    return "sandbox closed its control socket";
  }
  return "sandbox did not answer in time";
}

std::unique_ptr<SandboxInstance> SandboxInstance::spawn(const SandboxLaunch& launch,
                                                        std::uint64_t generation) {
  std::optional<shm::Segment> segment;
  try {
    segment.emplace(shm::Segment::create(launch.geometry));
  } catch (const std::exception& e) {
    throw PluginError("python plugin \"" + launch.name + "\": shared memory: " + e.what());
  }
  std::unique_ptr<SandboxInstance> c(new SandboxInstance());
  c->link_ = std::make_unique<SandboxLink>(std::move(*segment), generation);
  if (launch.host_spin_ns) c->link_->endpoint.set_spin_ns(*launch.host_spin_ns);
  c->notify_endpoint_ = &c->link_->endpoint;
  c->generation_ = generation;
  c->launch_ = launch;
  c->log_ = launch.log ? launch.log : SandboxLogFn(log_to_stderr);
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    throw PluginError(std::string("python plugins: socketpair: ") + std::strerror(errno));
  }
  c->channel_ = std::make_unique<schema::ControlChannel>(kj::AutoCloseFd(pair[0]),
                                                         schema::ChannelLimits::from_sandbox());
  const kj::AutoCloseFd child_end(pair[1]);
  SandboxFds fds{child_end.get(), c->link_->segment.fd()};
  if (launch.input_edge != nullptr) {
    fds.input_edge = launch.input_edge->fd();
    c->bell_.emplace(c->link_->segment, *launch.input_edge);
  }
  if (launch.output_edge != nullptr) {
    fds.output_edge = launch.output_edge->fd();
    fds.output_to_host = launch.output_to_host;
  }
  c->pid_ = spawn_sandbox_process(launch, fds);
  c->pidfd_ = kj::AutoCloseFd(static_cast<int>(::syscall(SYS_pidfd_open, c->pid_, 0)));

  capnp::MallocMessageBuilder hello_msg;
  auto hello = hello_msg.initRoot<schema::HostMessage>().initHello();
  hello.setProtocolVersion(schema::PROTOCOL_VERSION);
  hello.setShmLayoutVersion(shm::layout_version);
  hello.setShmHeaderSize(shm::Segment::header_size());
  c->hello_id_ = c->send(hello_msg, Clock::now() + c->launch_.request_timeout);
  if (c->hello_id_ == 0) {
    c->phase_ = Phase::failed;
    c->failure_ = c->gone_reason();
  }
  return c;
}

std::string SandboxInstance::wait_loaded(Clock::time_point deadline) {
  while (phase_ == Phase::hello || phase_ == Phase::loading) {
    const int ms = remaining_ms(deadline);
    if (ms == 0) return "no answer to its load in time";
    channel_->wait_readable(ms);
    advance();
  }
  if (phase_ != Phase::loaded) return failure_.empty() ? gone_reason() : failure_;
  return {};
}

void SandboxInstance::fail(std::string why) {
  phase_ = Phase::failed;
  failure_ = std::move(why);
}

void SandboxInstance::advance() {
  pump();
  while (!replies_.empty() && phase_ != Phase::failed) {
    Reply r = std::move(replies_.front());
    replies_.pop_front();
    // An error answers the handshake request it names (or none: the sandbox could not read it).
    const bool for_handshake = r.request_id == 0 || r.request_id == hello_id_ || r.request_id == load_id_;
    if (r.kind == Reply::Kind::error && phase_ != Phase::loaded && for_handshake) {
      phase_ = Phase::failed;
      failure_ = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
    } else if (phase_ == Phase::hello && r.kind == Reply::Kind::hello) {
      // The versions first: a sandbox of another protocol may not know request ids.
      if (r.protocol_version != schema::PROTOCOL_VERSION || r.shm_layout_version != shm::layout_version ||
          r.shm_header_size != shm::Segment::header_size()) {
        phase_ = Phase::failed;
        failure_ = "version mismatch: sandbox speaks protocol " + std::to_string(r.protocol_version) +
                   " / shm layout " + std::to_string(r.shm_layout_version) + " (" +
                   std::to_string(r.shm_header_size) + "-byte header), host " +
                   std::to_string(schema::PROTOCOL_VERSION) + " / " + std::to_string(shm::layout_version) +
                   " (" + std::to_string(shm::Segment::header_size()) +
                   "); install matching sandpipe and sandpipe-sandbox";
      } else if (r.request_id != hello_id_) {
        phase_ = Phase::failed;
        failure_ = "unexpected message during the handshake";
      } else {
        python_version_ = r.python_version;
        numpy_version_ = r.numpy_version;
        phase_ = load_sent_ ? Phase::loading : Phase::ready;
      }
    } else if (phase_ == Phase::loading && r.kind == Reply::Kind::loaded && r.request_id == load_id_) {
      info_ = std::move(r.info);
      info_.python_version = python_version_;
      info_.numpy_version = numpy_version_;
      phase_ = Phase::loaded;
    } else if (phase_ != Phase::loaded) {
      phase_ = Phase::failed;
      failure_ = "unexpected message during the handshake";
    }
    // Once loaded, stray replies_ (to nothing asked) are dropped.
  }
  if ((phase_ == Phase::hello || phase_ == Phase::ready || phase_ == Phase::loading) && gone()) {
    phase_ = Phase::failed;
    failure_ = gone_reason();
  }
}

int detail::remaining_ms(std::chrono::steady_clock::time_point deadline) noexcept {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000 ? 1'000'000 : static_cast<int>(left);
}

}  // namespace sandpipe::host
