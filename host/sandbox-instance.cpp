// One sandbox process and its control conversation (host/sandbox-instance.h): spawn, the
// hello/preload/load handshake, requests matched to their answers by id, teardown.
#include "host/sandbox-instance.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
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
#include <cstdio>
#include <cstring>
#include <deque>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "schemas/control.capnp.h"
#include "schemas/param-value.h"

extern char** environ;  // NOLINT: POSIX

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

int remaining_ms(Clock::time_point deadline) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  return left > 1'000'000 ? 1'000'000 : static_cast<int>(left);
}

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

std::string describe_exit_impl(int status) {
  if (WIFEXITED(status)) {
    switch (WEXITSTATUS(status)) {
      case 2:
        return "exited after failing to load (status 2)";
      case 3:
        return "exited after a failed handshake (status 3)";
      case 71:
        return "exited: its parent was gone before it started (status 71)";
      default:
        return "exited with status " + std::to_string(WEXITSTATUS(status));
    }
  }
  if (WIFSIGNALED(status)) {
    const char* sig = ::sigabbrev_np(WTERMSIG(status));
    return std::string("killed by signal SIG") +
           (sig != nullptr ? sig : std::to_string(WTERMSIG(status)).c_str());
  }
  return "stopped";
}

/// Validates a plugin description; returns what is wrong, or nothing.
std::optional<std::string> decode_info(schema::PluginInfo::Reader in, PythonPluginInfo& out) {
  out.api = in.getApi() == schema::PluginApi::LEGACY ? "legacy" : "sdk";
  if (in.getApi() != schema::PluginApi::LEGACY && in.getApi() != schema::PluginApi::SDK) return "unknown api";
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

std::string describe_exit(int wait_status) { return describe_exit_impl(wait_status); }

void set_sandbox_priority(pid_t pid, int priority) {
  if (pid <= 0) return;
  sched_param param{};
  param.sched_priority = priority > 0 ? priority : 0;
  (void)::sched_setscheduler(pid, (priority > 0 ? SCHED_FIFO : SCHED_OTHER) | SCHED_RESET_ON_FORK, &param);
}

SandboxProcessor::Control::~Control() {
  if (pid <= 0 || reaped) return;
  if (!protocol_error.empty() || phase != Phase::loaded) {
    kill_and_reap();  // broke the protocol, or never ran a plugin: nothing to shut down cleanly
    return;
  }
  const auto deadline = Clock::now() + shutdown_timeout;
  if (!eof) {
    capnp::MallocMessageBuilder msg;
    msg.initRoot<schema::HostMessage>().setShutdown();
    if (send(msg, deadline) && notify_endpoint != nullptr) notify_endpoint->notify_control();
  }
  // Deliver what the plugin prints while shutting down, until the sandbox exits.
  while (!reaped && Clock::now() < deadline) {
    // A closed socket would report POLLHUP forever: then only the pidfd is watched.
    pollfd pfds[2] = {{eof ? -1 : control_fd(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
    const int ms = remaining_ms(deadline);
    const int ready = ::poll(pfds, 2, pidfd.get() >= 0 ? ms : (ms < 5 ? ms : 5));
    if (ready > 0 && (pfds[0].revents & (POLLIN | POLLHUP)) != 0) pump();
    wait_exit(Clock::now());
  }
  if (!reaped) {
    emit(SandboxLogLevel::warning,
         "sandbox did not exit within " + std::to_string(shutdown_timeout.count()) + " ms; killing it");
    kill_and_reap();
  }
}

void SandboxProcessor::Control::emit(SandboxLogLevel level, std::string_view text) const {
  // One call per line: a sink may prefix each.
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t nl = text.find('\n', start);
    const std::string_view line = text.substr(start, nl == std::string_view::npos ? nl : nl - start);
    if (!line.empty() || nl != std::string_view::npos) log(name, level, line);
    if (nl == std::string_view::npos) break;
    start = nl + 1;
    if (start == text.size()) break;
  }
}

std::uint32_t SandboxProcessor::Control::send(capnp::MessageBuilder& message, Clock::time_point deadline) {
  const std::uint32_t id = next_request_id++;
  message.getRoot<schema::HostMessage>().setRequestId(id);
  if (channel->send(message, remaining_ms(deadline))) return id;
  if (channel->closed() && channel->breach().empty()) eof = true;  // EPIPE / ECONNRESET: gone
  return 0;
}

void SandboxProcessor::Control::pump() {
  if (!protocol_error.empty()) return;
  channel->flush_now();  // what an earlier send left queued
  while (protocol_error.empty()) {
    auto message = channel->poll();
    if (!message) break;
    decode(*message);
  }
  if (protocol_error.empty() && !channel->breach().empty()) protocol_error = channel->breach();
  if (channel->closed() && channel->breach().empty()) eof = true;
}

void SandboxProcessor::Control::decode(schema::ReceivedMessage& message) {
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
        log(name, level, clean(log_msg.getText(), max_line));
        return;
      }
      case SandboxMessage::ERROR: {
        const auto e = msg.getError();
        r.kind = Reply::Kind::error;
        r.phase = e.getPhase();
        r.message = clean(e.getMessage(), max_line);
        r.traceback = clean(e.getTraceback(), max_traceback, true);
        if (r.phase == SandboxMessage::Phase::PROCESS) {
          // Not an answer to anything: the plugin raised in process(); the block went dry.
          // The sandbox sends each new message with its traceback, repeats as a count.
          ++process_errors;
          last_process_error =
              "exception in process(): " + r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
          if (first_process_error.empty()) first_process_error = last_process_error;
          emit(SandboxLogLevel::error, "exception in process(): " + r.message);
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
        if (auto problem = decode_info(msg.getLoaded(), r.info)) {
          protocol_error = "invalid plugin description: " + *problem;
          return;
        }
        break;
      }
      case SandboxMessage::PARAM_SET: {
        r.kind = Reply::Kind::param_set;
        r.key = clean(msg.getParamSet().getKey(), 128);
        r.latency = msg.getParamSet().getLatencyFrames();
        if (msg.getParamSet().hasReadBack()) {
          const auto v = msg.getParamSet().getReadBack();
          if (v.isNumber() && std::isfinite(v.getNumber())) r.read_back = v.getNumber();
          if (v.isBoolean()) r.read_back = v.getBoolean();
          if (v.isText()) r.read_back = clean(v.getText(), 4096);
        }
        break;
      }
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
                   s.getProcessNsTotal(), s.getLogsDropped(), s.getGcCollections()};
        break;
      }
      default:
        protocol_error = "unknown message";
        return;
    }
    const auto pending = std::find_if(async_outstanding.begin(), async_outstanding.end(),
                                      [&](const Outstanding& o) { return o.id == r.request_id; });
    if (r.request_id != 0 && pending != async_outstanding.end()) {
      // The answer to a request nobody waits for: filed for take_async_*() / param_results.
      Outstanding asked = std::move(*pending);
      async_outstanding.erase(pending);
      if (asked.kind == Async::state && r.kind == Reply::Kind::state) async_state = std::move(r.state);
      if (asked.kind == Async::stats && r.kind == Reply::Kind::stats) async_stats = r.stats;
      if (asked.kind == Async::param) {
        std::optional<std::string> refusal;
        if (r.kind == Reply::Kind::error)
          refusal = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
        param_results.push_back({std::move(asked.setting), std::move(refusal), std::move(r.read_back)});
      }
      return;
    }
    replies.push_back(std::move(r));
  } catch (const kj::Exception& e) {
    protocol_error = std::string("malformed message: ") + e.getDescription().cStr();
  }
}

std::optional<Reply> SandboxProcessor::Control::wait_reply(std::uint32_t id, Clock::time_point deadline) {
  for (;;) {
    while (!replies.empty()) {
      Reply r = std::move(replies.front());
      replies.pop_front();
      if (r.request_id == id) return r;  // else the late answer to a request that timed out
    }
    if (eof || !protocol_error.empty()) return std::nullopt;
    const int ms = remaining_ms(deadline);
    if (ms == 0) return std::nullopt;
    if (channel->wait_readable(ms)) pump();
  }
}

std::uint32_t SandboxProcessor::Control::send_request(Async kind, const ParamSetting* setting,
                                                      Clock::time_point deadline) {
  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<schema::HostMessage>();
  if (kind == Async::param) {
    auto p = root.initSetParam();
    p.setKey(setting->key);
    schema::set_param_value(p.initValue(), setting->value);
  } else if (kind == Async::state) {
    root.setGetState();
  } else {
    root.setGetStats();
  }
  const std::uint32_t id = send(msg, deadline);
  if (id != 0 && notify_endpoint != nullptr) notify_endpoint->notify_control();
  return id;
}

std::optional<Reply> SandboxProcessor::Control::request(Async kind, const ParamSetting* setting,
                                                        Clock::time_point deadline) {
  const std::uint32_t id = send_request(kind, setting, deadline);
  if (id == 0) return std::nullopt;
  return wait_reply(id, deadline);
}

bool SandboxProcessor::Control::awaiting(Async kind) const noexcept {
  return std::any_of(async_outstanding.begin(), async_outstanding.end(),
                     [&](const Outstanding& o) { return o.kind == kind; });
}

/// True once the child has exited and was reaped (waits at most until `deadline`).
bool SandboxProcessor::Control::wait_exit(Clock::time_point deadline) {
  while (!reaped) {
    int status = 0;
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      reaped = true;
      exit_status = status;
      break;
    }
    if (r < 0 && errno != EINTR) {  // not our child any more (someone else reaped it)
      reaped = true;
      break;
    }
    const int ms = remaining_ms(deadline);
    if (ms == 0) return false;
    if (pidfd.get() >= 0) {
      pollfd pfd{pidfd.get(), POLLIN, 0};
      ::poll(&pfd, 1, ms);
    } else {
      ::poll(nullptr, 0, ms < 5 ? ms : 5);  // NOTE: no pidfd (old kernel): short naps
    }
  }
  return true;
}

void SandboxProcessor::Control::kill_and_reap() {
  if (reaped || pid <= 0) return;
  ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  reaped = true;
  exit_status = status;
}

/// Why the sandbox stopped talking, for error messages.
std::string SandboxProcessor::Control::gone_reason() {
  if (!protocol_error.empty()) return "broke the control protocol (" + protocol_error + ")";
  if (eof) {
    wait_exit(Clock::now() + std::chrono::seconds(2));
    if (reaped) return "sandbox " + describe_exit_impl(exit_status);
    return "sandbox closed its control socket";
  }
  return "sandbox did not answer in time";
}

namespace {

/// Starts the sandbox with `sock` and `shm` inherited (everything else of ours is CLOEXEC).
/// Own process group: a Ctrl-C in the terminal reaches the host, which shuts sandboxes down.
/// The sandbox's whole environment: nothing of the host's (tokens, session addresses, paths)
/// leaks into the plugin, but SANDPIPE_* (test doubles, debugging) and the sanitizers' options.
/// One BLAS thread: a plugin shares the machine with the audio thread.
std::vector<std::string> sandbox_environment() {
  std::vector<std::string> env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "OPENBLAS_NUM_THREADS=1",
                                  "OMP_NUM_THREADS=1", "MKL_NUM_THREADS=1"};
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view var(*e);
    if (var.starts_with("SANDPIPE_") || var.starts_with("ASAN_OPTIONS=") ||
        var.starts_with("UBSAN_OPTIONS=") || var.starts_with("LSAN_OPTIONS=")) {
      env.emplace_back(var);
    }
  }
  return env;
}

pid_t spawn_sandbox(const SandboxLaunch& launch, int sock, int shm) {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  // dup2 of an fd onto itself clears FD_CLOEXEC in the child only (glibc >= 2.29).
  posix_spawn_file_actions_adddup2(&actions, sock, sock);
  posix_spawn_file_actions_adddup2(&actions, shm, shm);
  sigset_t none;
  sigset_t defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGALRM}) {
    sigaddset(&defaults, sig);
  }
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETPGROUP);

  const std::string exe_s = launch.executable.string();
  const std::string sock_s = std::to_string(sock);
  const std::string shm_s = std::to_string(shm);
  const std::string parent_s = std::to_string(::getpid());
  const std::string memory_s = std::to_string(launch.memory_mb);
  const std::string lead_s = std::to_string(launch.wake_lead_us);
  std::vector<char*> argv = {const_cast<char*>(exe_s.c_str()),    const_cast<char*>("--control-fd"),
                             const_cast<char*>(sock_s.c_str()),   const_cast<char*>("--shm-fd"),
                             const_cast<char*>(shm_s.c_str()),    const_cast<char*>("--parent-pid"),
                             const_cast<char*>(parent_s.c_str()), const_cast<char*>("--memory-mb"),
                             const_cast<char*>(memory_s.c_str()), const_cast<char*>("--wake-lead-us"),
                             const_cast<char*>(lead_s.c_str()),   nullptr};
  const std::string writable_s = launch.allow_writes.string();
  if (!launch.allow_writes.empty())
    argv.insert(argv.end() - 1, {const_cast<char*>("--allow-writes"), const_cast<char*>(writable_s.c_str())});
  if (launch.keep_denormals)
    argv.insert(argv.end() - 1, {const_cast<char*>("--keep-denormals"), const_cast<char*>("1")});
  pid_t pid = -1;
  std::vector<std::string> env_strings = sandbox_environment();
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const int rc = ::posix_spawn(&pid, exe_s.c_str(), &actions, &attr, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw PluginError("cannot start " + exe_s + ": " + std::strerror(rc));
  // The sandbox computes what the RT thread waits for: give it real-time scheduling too, below
  // PipeWire's data threads. A runaway plugin loses it (Supervisor) and is killed by the hang
  // watchdog.
  if (launch.rt_priority > 0) set_sandbox_priority(pid, launch.rt_priority);
  return pid;
}

}  // namespace

std::filesystem::path default_sandbox_executable() {
  std::error_code ec;
  const std::string self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  const std::string root = SANDPIPE_BUILD_ROOT;
  if (!ec && self.size() > root.size() && self.compare(0, root.size(), root) == 0 &&
      self[root.size()] == '/') {
    return SANDPIPE_SANDBOX_BUILD_PATH;
  }
  return SANDPIPE_SANDBOX_INSTALL_PATH;
}

std::unique_ptr<SandboxProcessor::Control> SandboxProcessor::Control::spawn(const SandboxLaunch& launch,
                                                                            std::uint64_t generation) {
  std::optional<shm::Segment> segment;
  try {
    segment.emplace(shm::Segment::create(launch.geometry));
  } catch (const std::exception& e) {
    throw PluginError("python plugin \"" + launch.name + "\": shared memory: " + e.what());
  }
  auto c = std::make_unique<Control>();
  c->link = std::make_unique<SandboxLink>(std::move(*segment), generation);
  if (launch.host_spin_ns) c->link->endpoint.set_spin_ns(*launch.host_spin_ns);
  c->notify_endpoint = &c->link->endpoint;
  c->generation = generation;
  c->launch = launch;
  c->name = launch.name;
  c->file = launch.file;
  c->log = launch.log ? launch.log : SandboxLogFn(log_to_stderr);
  c->request_timeout = launch.request_timeout;
  c->shutdown_timeout = launch.shutdown_timeout;
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    throw PluginError(std::string("python plugins: socketpair: ") + std::strerror(errno));
  }
  c->channel = std::make_unique<schema::ControlChannel>(kj::AutoCloseFd(pair[0]),
                                                        schema::ChannelLimits::from_sandbox());
  const kj::AutoCloseFd child_end(pair[1]);
  c->pid = spawn_sandbox(launch, child_end.get(), c->link->segment.fd());
  c->pidfd = kj::AutoCloseFd(static_cast<int>(::syscall(SYS_pidfd_open, c->pid, 0)));

  capnp::MallocMessageBuilder hello_msg;
  auto hello = hello_msg.initRoot<schema::HostMessage>().initHello();
  hello.setProtocolVersion(schema::PROTOCOL_VERSION);
  hello.setShmLayoutVersion(shm::layout_version);
  hello.setShmHeaderSize(shm::Segment::header_size());
  c->hello_id = c->send(hello_msg, Clock::now() + c->request_timeout);
  if (c->hello_id == 0) {
    c->phase = Phase::failed;
    c->failure = c->gone_reason();
  }
  return c;
}

void SandboxProcessor::Control::send_preload() {
  if (phase == Phase::failed || load_sent) return;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<schema::HostMessage>().setPreload(file.string());
  if (send(msg, Clock::now() + request_timeout) == 0) {
    phase = Phase::failed;
    failure = gone_reason();
  }
}

void SandboxProcessor::Control::send_load(const std::vector<std::byte>& state, bool inspect) {
  if (phase == Phase::failed) return;
  capnp::MallocMessageBuilder load_msg;
  auto load = load_msg.initRoot<schema::HostMessage>().initLoad();
  load.setPath(file.string());
  load.setInstanceName(name);
  load.setSampleRate(launch.sample_rate);
  load.setChannels(launch.geometry.channels);
  load.setMaxFrames(launch.geometry.max_frames);
  auto out = load.initParams(static_cast<unsigned>(params.size()));
  for (unsigned k = 0; k < params.size(); ++k) {
    out[k].setKey(params[k].key);
    schema::set_param_value(out[k].initValue(), params[k].value);
  }
  if (!state.empty())
    load.setState(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(state.data()), state.size()));
  load.setInspect(inspect);
  load_id = send(load_msg, Clock::now() + request_timeout);
  if (load_id == 0) {
    phase = Phase::failed;
    failure = gone_reason();
    return;
  }
  if (phase == Phase::ready) phase = Phase::loading;
  load_sent = true;
}

void SandboxProcessor::Control::advance() {
  pump();
  while (!replies.empty() && phase != Phase::failed) {
    Reply r = std::move(replies.front());
    replies.pop_front();
    // An error answers the handshake request it names (or none: the sandbox could not read it).
    const bool for_handshake = r.request_id == 0 || r.request_id == hello_id || r.request_id == load_id;
    if (r.kind == Reply::Kind::error && phase != Phase::loaded && for_handshake) {
      phase = Phase::failed;
      failure = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
    } else if (phase == Phase::hello && r.kind == Reply::Kind::hello) {
      // The versions first: a sandbox of another protocol may not know request ids.
      if (r.protocol_version != schema::PROTOCOL_VERSION || r.shm_layout_version != shm::layout_version ||
          r.shm_header_size != shm::Segment::header_size()) {
        phase = Phase::failed;
        failure = "version mismatch: sandbox speaks protocol " + std::to_string(r.protocol_version) +
                  " / shm layout " + std::to_string(r.shm_layout_version) + " (" +
                  std::to_string(r.shm_header_size) + "-byte header), host " +
                  std::to_string(schema::PROTOCOL_VERSION) + " / " + std::to_string(shm::layout_version) +
                  " (" + std::to_string(shm::Segment::header_size()) +
                  "); install matching sandpipe and sandpipe-sandbox";
      } else if (r.request_id != hello_id) {
        phase = Phase::failed;
        failure = "unexpected message during the handshake";
      } else {
        python_version = r.python_version;
        numpy_version = r.numpy_version;
        phase = load_sent ? Phase::loading : Phase::ready;
      }
    } else if (phase == Phase::loading && r.kind == Reply::Kind::loaded && r.request_id == load_id) {
      info = std::move(r.info);
      info.python_version = python_version;
      info.numpy_version = numpy_version;
      phase = Phase::loaded;
    } else if (phase != Phase::loaded) {
      phase = Phase::failed;
      failure = "unexpected message during the handshake";
    }
    // Once loaded, stray replies (to nothing asked) are dropped.
  }
  if ((phase == Phase::hello || phase == Phase::ready || phase == Phase::loading) && gone()) {
    phase = Phase::failed;
    failure = gone_reason();
  }
}

bool SandboxProcessor::Control::request_set_param(const ParamSetting& setting) {
  if (phase != Phase::loaded || gone()) return false;
  const std::uint32_t id =
      send_request(Async::param, &setting, Clock::now() + std::chrono::milliseconds(100));
  if (id == 0) return false;
  async_outstanding.push_back({id, Async::param, setting});
  return true;
}

void SandboxProcessor::Control::request_async(Async kind) {
  if (phase != Phase::loaded || gone() || awaiting(kind)) return;
  // A full socket means a sandbox that does not read: the watchdog deals with that.
  const std::uint32_t id = send_request(kind, nullptr, Clock::now());
  if (id != 0) async_outstanding.push_back({id, kind, {}});
}

}  // namespace sandpipe::host
