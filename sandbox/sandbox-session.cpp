#include "sandbox/sandbox-session.h"

#include <unistd.h>

#include <capnp/message.h>
#include <kj/exception.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <string_view>
#include <utility>
#include <vector>

#include "sandbox/confinement.h"
#include "sandbox/fp-env.h"
#include "schemas/control.capnp.h"
#include "schemas/param-value.h"

namespace sandpipe::sandbox {
namespace {

using schema::SandboxMessage;

constexpr int hello_timeout_ms = 30'000;
/// How long a reply may wait for the host to read it.
constexpr int reply_timeout_ms = 10'000;
/// A spare sandbox (interpreter and numpy ready) waits for its load until the host needs it,
/// or closes the socket, or dies (PR_SET_PDEATHSIG).
constexpr int load_timeout_ms = -1;
/// No job for this long counts as idle: time for a garbage collection.
constexpr std::uint64_t idle_ns = 200'000'000;
/// Exceptions in process(): each new message is reported with its traceback; a repeat of the
/// last one only as a count, at most once in this long.
constexpr std::uint64_t process_error_repeat_ns = 5'000'000'000;

std::string text(capnp::Text::Reader t) { return {t.begin(), t.size()}; }

ParamValue param_value(schema::ParamValue::Reader v) {
  switch (v.which()) {
    case schema::ParamValue::NUMBER:
      return v.getNumber();
    case schema::ParamValue::BOOLEAN:
      return v.getBoolean();
    case schema::ParamValue::TEXT:
      return text(v.getText());
  }
  return std::string{};
}

schema::ParamInfo::Kind kind_of(const std::string& kind) {
  if (kind == "integer") return schema::ParamInfo::Kind::INTEGER;
  if (kind == "boolean") return schema::ParamInfo::Kind::BOOLEAN;
  if (kind == "choice") return schema::ParamInfo::Kind::CHOICE;
  if (kind == "text") return schema::ParamInfo::Kind::TEXT;
  return schema::ParamInfo::Kind::NUMBER;
}

std::vector<std::pair<std::string, ParamValue>> params_of(capnp::List<schema::ParamSetting>::Reader list) {
  std::vector<std::pair<std::string, ParamValue>> params;
  for (auto p : list) params.emplace_back(text(p.getKey()), param_value(p.getValue()));
  return params;
}

GroupMember member_of(schema::GroupMember::Reader in) {
  GroupMember member;
  member.name = text(in.getName());
  member.path = text(in.getPath());
  member.params = params_of(in.getParams());
  switch (in.getOnFailure()) {
    case schema::GroupMember::MemberFailure::BYPASS:
      member.on_failure = MemberFailure::bypass;
      break;
    case schema::GroupMember::MemberFailure::MUTE:
      member.on_failure = MemberFailure::mute;
      break;
    default:
      member.on_failure = MemberFailure::automatic;
      break;
  }
  return member;
}

/// The loaded reply's PluginInfo (a group's with its members').
void fill_info(schema::PluginInfo::Builder out, const PluginDescription& info) {
  out.setName(info.name);
  out.setVersion(info.version);
  out.setDescription(info.description);
  out.setApi(info.api == "legacy"  ? schema::PluginApi::LEGACY
             : info.api == "group" ? schema::PluginApi::GROUP
                                   : schema::PluginApi::SDK);
  out.setRole(info.role == "source" ? schema::PluginRole::SOURCE
              : info.role == "sink" ? schema::PluginRole::SINK
                                    : schema::PluginRole::PROCESSOR);
  out.setLatencyFrames(info.latency);
  out.setPreloaded(info.preloaded);
  auto params = out.initParams(static_cast<unsigned>(info.params.size()));
  for (unsigned i = 0; i < info.params.size(); ++i) {
    const ParamSpec& spec = info.params[i];
    auto p = params[i];
    p.setKey(spec.key);
    p.setLabel(spec.label);
    p.setUnit(spec.unit);
    p.setKind(kind_of(spec.kind));
    p.setMinValue(spec.min);
    p.setMaxValue(spec.max);
    schema::set_param_value(p.initDefault(), spec.default_value);
    auto choices = p.initChoices(static_cast<unsigned>(spec.choices.size()));
    for (unsigned c = 0; c < spec.choices.size(); ++c) choices.set(c, spec.choices[c]);
  }
  if (info.members.empty()) return;
  auto members = out.initMembers(static_cast<unsigned>(info.members.size()));
  for (unsigned i = 0; i < info.members.size(); ++i) fill_info(members[i], info.members[i]);
}

/// True if `path` lies under one of `folders` (compared as written, made lexically normal).
bool is_under(const std::filesystem::path& path, const std::vector<std::filesystem::path>& folders) {
  const std::filesystem::path p = path.lexically_normal();
  return std::any_of(folders.begin(), folders.end(), [&](const std::filesystem::path& folder) {
    const std::filesystem::path f = folder.lexically_normal();
    auto [fi, pi] = std::mismatch(f.begin(), f.end(), p.begin(), p.end());
    return fi == f.end() || (std::next(fi) == f.end() && fi->empty());  // "a/b/" holds "a/b/c"
  });
}

}  // namespace

Session::Session(schema::ControlChannel& control, shm::Segment& segment, SessionConfig config)
    : control_(control), segment_(segment), endpoint_(segment), config_(std::move(config)) {
  endpoint_.set_lead_ns(config_.wake_lead_ns);
  check_edges();
  try {
    python_ =
        std::make_unique<PythonPlugin>(config_.program, config_.sdk_dir,
                                       [this](int stream, std::string_view line) { send_log(stream, line); });
  } catch (const std::exception& e) {
    init_error_ = e.what();
  }
}

Session::Session(schema::ControlChannel& control, shm::Segment& segment, SessionConfig config,
                 std::unique_ptr<PythonPlugin> python)
    : control_(control),
      segment_(segment),
      endpoint_(segment),
      config_(std::move(config)),
      python_(std::move(python)) {
  endpoint_.set_lead_ns(config_.wake_lead_ns);
  if (python_) {
    python_->set_log([this](int stream, std::string_view line) { send_log(stream, line); });
  } else {
    init_error_ = "no Python interpreter";
  }
  check_edges();
}

void Session::check_edges() {
  const shm::Geometry& ours = segment_.geometry();
  for (const shm::Segment* edge : {config_.input_edge, config_.output_edge}) {
    if (edge == nullptr || !init_error_.empty()) continue;
    const shm::Geometry& theirs = edge->geometry();
    if (theirs.channels != ours.channels || theirs.max_frames != ours.max_frames ||
        theirs.slot_count != ours.slot_count) {
      init_error_ = std::string("shared memory: the ") + (edge == config_.input_edge ? "input" : "output") +
                    " edge's geometry differs from the sandbox's segment";
    }
  }
}

Session::~Session() = default;

void Session::report_early_error(schema::ControlChannel& control, const std::string& message) {
  capnp::MallocMessageBuilder msg;
  auto error = msg.initRoot<SandboxMessage>().initError();
  error.setPhase(SandboxMessage::Phase::HANDSHAKE);
  error.setMessage(message);
  control.send(msg, 2000);
}

void Session::send_log(int stream, std::string_view line) {
  capnp::MallocMessageBuilder msg;
  auto log = msg.initRoot<SandboxMessage>().initLog();
  log.setLevel(stream == 2 ? SandboxMessage::LogLevel::WARNING : SandboxMessage::LogLevel::INFO);
  log.setStream(stream == 2 ? SandboxMessage::LogStream::STDERR : SandboxMessage::LogStream::STDOUT);
  log.setText(capnp::Text::Reader(std::string(line)));
  control_.send_lossy(msg);
}

void Session::send_error(int phase, const std::string& message, const std::string& traceback, bool lossy,
                         std::uint32_t request_id, std::int32_t member) {
  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<SandboxMessage>();
  root.setRequestId(request_id);
  auto error = root.initError();
  error.setPhase(static_cast<SandboxMessage::Phase>(phase));
  error.setMessage(message);
  error.setTraceback(traceback);
  if (member >= 0) error.setMember(member);
  if (lossy) {
    control_.send_lossy(msg);
  } else {
    control_.send(msg, reply_timeout_ms);
  }
}

bool Session::handshake() {
  auto frame = control_.receive(hello_timeout_ms);
  if (!frame) return false;
  auto host = frame->root<schema::HostMessage>();
  const std::uint32_t id = host.getRequestId();
  if (host.which() != schema::HostMessage::HELLO) {
    send_error(static_cast<int>(SandboxMessage::Phase::HANDSHAKE), "expected hello from the host", {}, false,
               id);
    return false;
  }
  const auto hello = host.getHello();

  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<SandboxMessage>();
  root.setRequestId(id);
  auto reply = root.initHello();
  reply.setProtocolVersion(schema::PROTOCOL_VERSION);
  reply.setShmLayoutVersion(shm::layout_version);
  reply.setShmHeaderSize(shm::Segment::header_size());
  reply.setPid(static_cast<std::int32_t>(::getpid()));
  if (python_) {
    reply.setPythonVersion(python_->python_version());
    reply.setNumpyVersion(python_->numpy_version());
  }
  control_.send(msg, reply_timeout_ms);

  std::string problem;
  if (hello.getProtocolVersion() != schema::PROTOCOL_VERSION) {
    problem = "control protocol mismatch: host speaks version " + std::to_string(hello.getProtocolVersion()) +
              ", this sandbox version " + std::to_string(schema::PROTOCOL_VERSION);
  } else if (hello.getShmLayoutVersion() != shm::layout_version ||
             hello.getShmHeaderSize() != shm::Segment::header_size()) {
    problem = "shared-memory layout mismatch: host has layout " +
              std::to_string(hello.getShmLayoutVersion()) + " with a " +
              std::to_string(hello.getShmHeaderSize()) + "-byte header, this sandbox layout " +
              std::to_string(shm::layout_version) + " with " + std::to_string(shm::Segment::header_size()) +
              " bytes (host and sandbox come from different builds)";
  } else if (!python_) {
    problem = init_error_;
  }
  if (!problem.empty()) {
    send_error(static_cast<int>(SandboxMessage::Phase::HANDSHAKE), problem, {}, false, id);
    return false;
  }
  return true;
}

bool Session::confine(const std::vector<std::string>& paths) {
  if (confined_) {
    // A spare confined for the file it preloaded: what the load names must be behind its walls.
    for (const std::string& path : paths) {
      if (is_under(std::filesystem::path(path).parent_path(), visible_)) continue;
      send_error(static_cast<int>(SandboxMessage::Phase::LOAD),
                 "cannot load " + path + ": this sandbox is confined to the folders of the plugin it preloaded",
                 {}, false, load_id_);
      return false;
    }
    return true;
  }
  // The plugin files are the untrusted part: every wall goes up before they are imported.
  ConfinementPolicy policy;
  policy.self = ::getpid();
  auto show = [&policy](const std::filesystem::path& dir) {
    if (std::find(policy.read_only.begin(), policy.read_only.end(), dir) == policy.read_only.end())
      policy.read_only.push_back(dir);
  };
  for (const std::string& path : paths) {
    // As the plugin names it (the import resolves that path inside the new root).
    const std::filesystem::path folder = std::filesystem::path(path).parent_path();
    // The earlier pipeline's layout: processors in examples/ put the folder above theirs on
    // sys.path (its base_plugin.py, helper packages, sibling plugins), so that folder is visible
    // read-only too, unless it is the root or a top-level folder such as /home.
    const std::filesystem::path above = folder.lexically_normal().parent_path();
    // "/", "a", "b": /a/b and deeper; before the folder it holds.
    if (std::distance(above.begin(), above.end()) >= 3) show(above);
    show(folder);
    policy.plugins.emplace_back(path);
  }
  policy.read_only.push_back(config_.sdk_dir);
  visible_ = policy.read_only;
  policy.writable = config_.writable;
  policy.syscall_program = config_.syscall_program;
  ConfinementReport report;
  const std::uint64_t t0 = shm::now_ns();
  if (auto problem = sandbox::confine(policy, report)) {
    send_error(static_cast<int>(SandboxMessage::Phase::LOAD), "cannot confine the sandbox: " + *problem, {},
               false, load_id_);
    return false;
  }
  for (const std::string& missing : report.missing) send_log(2, "confinement layer missing: " + missing);
  // SANDPIPE_CONFINE_TIMING (benchmarks): what the walls cost this sandbox's start-up.
  if (std::getenv("SANDPIPE_CONFINE_TIMING") != nullptr)
    send_log(2, "confined in " + std::to_string((shm::now_ns() - t0) / 1000) + " us (seccomp " +
                    std::to_string(report.seccomp_ns / 1000) + " us, " +
                    (report.seccomp_precompiled ? "precompiled" : "compiled here") + ")");
  // The plugin sees one floating-point environment from its import on; a bit-exact slot keeps
  // denormals (DAZ would read a denormal input as zero in any arithmetic the plugin does).
  if (!config_.keep_denormals) flush_denormals();
  confined_ = true;
  return true;
}

bool Session::load() {
  auto frame = control_.receive(load_timeout_ms);
  if (!frame) return false;
  if (frame->root<schema::HostMessage>().which() == schema::HostMessage::PRELOAD) {
    // A spare: import the plugin now, under the same confinement as the load, then wait for it.
    // A failed import is forgotten here; the load imports again and reports the error.
    const std::string path = text(frame->root<schema::HostMessage>().getPreload());
    if (!confine({path})) return false;
    // What the import left is collected and frozen now, so the load's collection scans only
    // what the plugin's instance adds (scipy's heap took 13 ms to walk at the load).
    if (python_->preload(path)) python_->freeze_heap();
    frame = control_.receive(load_timeout_ms);
    if (!frame) return false;
  }
  auto host = frame->root<schema::HostMessage>();
  const std::uint32_t id = host.getRequestId();
  const int phase = static_cast<int>(SandboxMessage::Phase::LOAD);
  if (host.which() != schema::HostMessage::LOAD) {
    send_error(phase, "expected load from the host", {}, false, id);
    return false;
  }
  const auto load = host.getLoad();
  const shm::Geometry& geometry = endpoint_.geometry();
  LoadRequest request;
  request.path = text(load.getPath());
  request.sample_rate = load.getSampleRate();
  request.channels = load.getChannels();
  request.max_frames = load.getMaxFrames();
  request.params = params_of(load.getParams());
  request.instance_name = text(load.getInstanceName());
  std::vector<std::string> paths{request.path};
  if (load.getMembers().size() > 0) {  // a sandbox group: its members' files, not `path`
    paths.clear();
    for (auto m : load.getMembers()) {
      request.members.push_back(member_of(m));
      paths.push_back(request.members.back().path);
    }
  }
  const auto state = load.getState();
  request.state.assign(reinterpret_cast<const std::byte*>(state.begin()),
                       reinterpret_cast<const std::byte*>(state.end()));
  request.inspect = load.getInspect() && request.members.empty();
  if (request.channels != geometry.channels || request.max_frames == 0 ||
      request.max_frames > geometry.max_frames || !std::isfinite(request.sample_rate) ||
      request.sample_rate <= 0.0) {
    send_error(phase, "load request does not fit the shared segment (channels/max frames/rate)", {}, false,
               id);
    return false;
  }

  load_id_ = id;  // confine() reports a failure as the load's answer
  if (!confine(paths)) return false;
  PluginDescription info;
  if (auto error = python_->load(request, info)) {
    python_->shutdown();  // flushes what the plugin printed before failing
    send_error(phase, error->message, error->traceback, false, id);
    return false;
  }
  std::vector<float*> slots;
  for (std::uint32_t s = 0; s < geometry.slot_count; ++s) slots.push_back(endpoint_.channel(s, 0));
  if (auto error =
          python_->bind_slots(slots, geometry.channels, request.max_frames, endpoint_.channel_stride())) {
    send_error(phase, "cannot map the audio slots: " + error->message, error->traceback, false, id);
    return false;
  }
  python_->freeze_heap();

  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<SandboxMessage>();
  root.setRequestId(id);
  fill_info(root.initLoaded(), info);
  member_errors_.assign(python_->member_count(), ErrorRepeats{});
  return control_.send(msg, reply_timeout_ms);
}

void Session::run_job(const shm::Job& job) {
  const std::uint64_t t0 = shm::now_ns();
  const BlockResult result = python_->process(job.slot, job.frames);
  shm::Completion done{job.seq, job.slot, job.frames, 0};
  done.status =
      static_cast<std::uint32_t>(result == BlockResult::processed     ? shm::CompletionStatus::processed
                                 : result == BlockResult::passthrough ? shm::CompletionStatus::passthrough
                                                                      : shm::CompletionStatus::failed);
  endpoint_.complete(done);
  // Bookkeeping after the completion is out: the host is not kept waiting for it.
  const std::uint64_t ns = shm::now_ns() - t0;
  ++stats_.blocks;
  stats_.last_ns = ns;
  stats_.total_ns += ns;
  if (ns > stats_.max_ns) stats_.max_ns = ns;
  if (result == BlockResult::failed) {
    ++stats_.exceptions;
    report_process_error(process_errors_, python_->last_error(), job.seq);
  }
  // A group's members that raised: the block went out processed, each with its on-failure.
  for (const PythonError& e : python_->member_errors()) {
    ++stats_.exceptions;
    if (e.member >= 0 && static_cast<std::size_t>(e.member) < member_errors_.size())
      report_process_error(member_errors_[static_cast<std::size_t>(e.member)], e, job.seq);
  }
  if (python_->collect_if_needed(false)) ++stats_.gc_collections;
}

void Session::report_process_error(ErrorRepeats& repeats, const PythonError& e, std::uint64_t seq) {
  ++repeats.total;
  const std::uint64_t now = shm::now_ns();
  const int phase = static_cast<int>(SandboxMessage::Phase::PROCESS);
  if (e.message != repeats.last_message) {
    std::string message = e.message + " (block " + std::to_string(seq) + ")";
    if (repeats.repeated > 0)
      message += "; the previous error repeated " + std::to_string(repeats.repeated) + " more times";
    send_error(phase, message, e.traceback, true, 0, e.member);
    repeats.last_message = e.message;
    repeats.last_report_ns = now;
    repeats.repeated = 0;
  } else if (++repeats.repeated, now - repeats.last_report_ns >= process_error_repeat_ns) {
    send_error(phase,
               e.message + " (repeated " + std::to_string(repeats.repeated) + " times; " +
                   std::to_string(repeats.total) + " exceptions in all)",
               {}, true, 0, e.member);
    repeats.last_report_ns = now;
    repeats.repeated = 0;
  }
}

void Session::handle(schema::ReceivedMessage& message) {
  auto host = message.root<schema::HostMessage>();
  const std::uint32_t id = host.getRequestId();
  capnp::MallocMessageBuilder msg;
  auto out = msg.initRoot<SandboxMessage>();
  out.setRequestId(id);
  switch (host.which()) {
    case schema::HostMessage::SET_PARAM: {
      const auto setting = host.getSetParam();
      const std::string key = text(setting.getKey());
      const std::uint32_t member = setting.getMember();
      auto result = python_->set_param(key, param_value(setting.getValue()), member);
      if (const auto* e = std::get_if<PythonError>(&result)) {
        // A group's error names the member and the key already.
        send_error(static_cast<int>(SandboxMessage::Phase::SET_PARAM),
                   python_->member_count() > 0 ? e->message : key + ": " + e->message, e->traceback, false,
                   id, e->member);
        return;
      }
      const auto& done = std::get<PythonPlugin::ParamSet>(result);
      auto reply = out.initParamSet();
      reply.setKey(key);
      reply.setMember(member);
      reply.setLatencyFrames(done.latency);
      if (done.read_back) schema::set_param_value(reply.initReadBack(), *done.read_back);
      break;
    }
    case schema::HostMessage::SET_RATE: {
      const double rate = host.getSetRate();
      if (!(rate > 0.0 && rate <= 1'000'000.0)) {
        send_error(static_cast<int>(SandboxMessage::Phase::SET_RATE), "bad sample rate " + std::to_string(rate),
                   {}, false, id);
        return;
      }
      auto result = python_->set_rate(rate);
      if (const auto* e = std::get_if<PythonError>(&result)) {
        send_error(static_cast<int>(SandboxMessage::Phase::SET_RATE), e->message, e->traceback, false, id,
                   e->member);
        return;
      }
      out.setRateSet(std::get<std::uint32_t>(result));
      break;
    }
    case schema::HostMessage::GET_STATE: {
      auto result = python_->get_state();
      if (const auto* e = std::get_if<PythonError>(&result)) {
        send_error(static_cast<int>(SandboxMessage::Phase::STATE), e->message, e->traceback, false, id,
                   e->member);
        return;
      }
      const auto& bytes = std::get<std::vector<std::byte>>(result);
      out.setState(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(bytes.data()), bytes.size()));
      break;
    }
    case schema::HostMessage::GET_STATS: {
      auto s = out.initStats();
      s.setBlocks(stats_.blocks);
      s.setExceptions(stats_.exceptions);
      s.setProcessNsLast(stats_.last_ns);
      s.setProcessNsMax(stats_.max_ns);
      s.setProcessNsTotal(stats_.total_ns);
      s.setLogsDropped(control_.dropped());
      s.setGcCollections(stats_.gc_collections);
      if (python_->member_count() > 0) {
        const auto members = python_->member_stats();
        auto exceptions = s.initMemberExceptions(static_cast<unsigned>(members.size()));
        auto ns = s.initMemberProcessNs(static_cast<unsigned>(members.size()));
        for (unsigned i = 0; i < members.size(); ++i) {
          exceptions.set(i, members[i].exceptions);
          ns.set(i, members[i].process_ns);
        }
      }
      break;
    }
    case schema::HostMessage::SHUTDOWN:
      python_->shutdown();
      shutdown_ = true;
      return;
    case schema::HostMessage::HELLO:
    case schema::HostMessage::LOAD:
    case schema::HostMessage::PRELOAD:
    default:
      send_error(static_cast<int>(SandboxMessage::Phase::HANDSHAKE), "unexpected message after loading", {},
                 false, id);
      return;
  }
  control_.send(msg, reply_timeout_ms);
}

void Session::drain_control() {
  while (!shutdown_) {
    auto frame = control_.poll();
    if (!frame) return;
    try {
      handle(*frame);
    } catch (const kj::Exception& e) {
      send_error(static_cast<int>(SandboxMessage::Phase::HANDSHAKE),
                 std::string("malformed control message: ") + e.getDescription().cStr(), {}, false);
    }
  }
}

void Session::serve() {
  // A relay's sandbox takes the edges' ring indices as they are now (check_edges() checked
  // their geometry): a spare that waited for its load starts where the one before it stopped.
  if (config_.input_edge != nullptr) (void)endpoint_.take_input_from(*config_.input_edge);
  if (config_.output_edge != nullptr) (void)endpoint_.send_output_to(*config_.output_edge, config_.output_to_host);
  std::uint64_t jobs = 0;
  while (!shutdown_ && !control_.closed()) {
    control_.flush_now();
    shm::Job job;
    shm::SandboxEndpoint::Wake wake;
    {
      PythonPlugin::GilRelease unlocked;
      wake = endpoint_.wait(job, idle_ns);
    }
    switch (wake) {
      case shm::SandboxEndpoint::Wake::job:
        run_job(job);
        // A notification may have been merged into a job wake-up: look now and then.
        if ((++jobs & 31u) == 0) drain_control();
        break;
      case shm::SandboxEndpoint::Wake::control:
        drain_control();
        break;
      case shm::SandboxEndpoint::Wake::timeout:
        if (python_->collect_if_needed(true)) ++stats_.gc_collections;
        drain_control();
        break;
    }
  }
}

int Session::run() {
  try {
    if (!handshake()) return 3;
    if (!load()) return 2;
    serve();
    control_.flush(2000);  // the last log lines and replies
  } catch (const kj::Exception& e) {
    report_early_error(control_, std::string("malformed control message: ") + e.getDescription().cStr());
    return 3;
  }
  return 0;
}

}  // namespace sandpipe::sandbox
