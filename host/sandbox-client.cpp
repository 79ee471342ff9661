// Main-thread side of Python plugins: spawning sandboxes, the control conversation, teardown.
#include "host/sandbox-client.h"

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

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <set>
#include <sstream>
#include <system_error>
#include <utility>

#include "host/pid-namespace-spawn.h"
#include "host/sandbox-instance.h"
#include "host/supervisor.h"
#include "host/zygote.h"  // ZYGOTE (issue 17)
#include "schemas/control.capnp.h"

extern char** environ;  // NOLINT: POSIX

namespace sandpipe::host {
namespace {

using Clock = std::chrono::steady_clock;
using schema::SandboxMessage;

/// Largest frame read from a sandbox: a state reply is the biggest legitimate one.
constexpr std::size_t max_frame_bytes = 8u << 20;
constexpr std::uint32_t max_frame_segments = 16;
constexpr std::uint32_t max_latency_frames = 1u << 18;
constexpr std::size_t max_params = 256;
constexpr std::size_t max_choices = 256;
constexpr std::size_t max_line = 16u << 10;
constexpr std::size_t max_traceback = 256u << 10;

using detail::Reply;
using detail::UniqueFd;

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

std::uint32_t read_u32_le(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
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

void set_value(schema::ParamValue::Builder b, const ParamValue& v) {
  if (const auto* d = std::get_if<double>(&v)) {
    b.setNumber(*d);
  } else if (const auto* f = std::get_if<bool>(&v)) {
    b.setBoolean(*f);
  } else {
    b.setText(std::get<std::string>(v));
  }
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

// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// SandboxProcessor::Control: one sandbox process and its conversation (sandbox-instance.h).

void detail::UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

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
    pollfd pfds[2] = {{eof ? -1 : sock.get(), POLLIN, 0}, {pidfd.get(), POLLIN, 0}};
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

bool SandboxProcessor::Control::send(capnp::MessageBuilder& message, Clock::time_point deadline) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  std::size_t sent = 0;
  while (sent < bytes.size()) {
    const ssize_t n =
        ::send(sock.get(), bytes.begin() + sent, bytes.size() - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{sock.get(), POLLOUT, 0};
      const int ms = remaining_ms(deadline);
      if (ms == 0 || ::poll(&pfd, 1, ms) == 0) return false;
      continue;
    }
    eof = true;  // EPIPE / ECONNRESET: the sandbox is gone
    return false;
  }
  return true;
}

void SandboxProcessor::Control::pump() {
  if (!protocol_error.empty()) return;
  unsigned char chunk[16384];
  while (!eof) {
    const ssize_t n = ::recv(sock.get(), chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      rx.insert(rx.end(), chunk, chunk + n);
      if (rx.size() > max_frame_bytes + sizeof chunk) break;  // decode before reading more
    } else if (n == 0) {
      eof = true;
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN && errno != EWOULDBLOCK) eof = true;
      break;
    }
  }
  decode_frames();
}

void SandboxProcessor::Control::decode_frames() {
  std::size_t offset = 0;
  while (protocol_error.empty() && rx.size() - offset >= 8) {
    const unsigned char* p = rx.data() + offset;
    const std::uint64_t segments = std::uint64_t{read_u32_le(p)} + 1;
    if (segments > max_frame_segments) {
      protocol_error = "frame with " + std::to_string(segments) + " segments";
      break;
    }
    const std::size_t header = (4 + segments * 4 + 7) & ~std::size_t{7};
    if (rx.size() - offset < header) break;
    std::uint64_t words = 0;
    for (std::uint64_t i = 0; i < segments; ++i) words += read_u32_le(p + 4 + i * 4);
    const std::uint64_t total = header + words * 8;
    if (total > max_frame_bytes) {
      protocol_error = "frame of " + std::to_string(total) + " bytes";
      break;
    }
    if (rx.size() - offset < total) break;
    auto aligned = kj::heapArray<capnp::word>(total / 8);
    std::memcpy(aligned.begin(), p, total);
    offset += total;
    decode(aligned);
  }
  rx.erase(rx.begin(), rx.begin() + static_cast<std::ptrdiff_t>(offset));
}

void SandboxProcessor::Control::decode(const kj::Array<capnp::word>& words) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = words.size() * 2 + 64;
  options.nestingLimit = 8;
  try {
    capnp::FlatArrayMessageReader reader(words.asPtr(), options);
    const auto msg = reader.getRoot<SandboxMessage>();
    Reply r;
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
    if (!async_outstanding.empty() && r.kind != Reply::Kind::hello && r.kind != Reply::Kind::loaded) {
      // The answer to the oldest request nobody waits for (requests are answered in order).
      const Async kind = async_outstanding.front();
      async_outstanding.pop_front();
      if (kind == Async::state && r.kind == Reply::Kind::state) async_state = std::move(r.state);
      if (kind == Async::stats && r.kind == Reply::Kind::stats) async_stats = r.stats;
      if (kind == Async::param && !async_params.empty()) {
        ParamSetting setting = std::move(async_params.front());
        async_params.pop_front();
        std::optional<std::string> refusal;
        if (r.kind == Reply::Kind::error)
          refusal = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
        param_results.push_back({std::move(setting), std::move(refusal), std::move(r.read_back)});
      }
      return;
    }
    if (unanswered > 0 && r.kind != Reply::Kind::hello && r.kind != Reply::Kind::loaded) {
      --unanswered;  // the late answer to a request that already timed out
      return;
    }
    replies.push_back(std::move(r));
  } catch (const kj::Exception& e) {
    protocol_error = std::string("malformed message: ") + e.getDescription().cStr();
  }
}

/// Waits for the next reply (logs are delivered meanwhile). nullopt: timeout, EOF or a
/// protocol error.
std::optional<Reply> SandboxProcessor::Control::wait_reply(Clock::time_point deadline) {
  for (;;) {
    if (!replies.empty()) {
      Reply r = std::move(replies.front());
      replies.pop_front();
      return r;
    }
    if (eof || !protocol_error.empty()) return std::nullopt;
    pollfd pfd{sock.get(), POLLIN, 0};
    const int ms = remaining_ms(deadline);
    if (ms == 0) return std::nullopt;
    const int ready = ::poll(&pfd, 1, ms);
    if (ready < 0 && errno != EINTR) return std::nullopt;
    if (ready > 0) pump();
  }
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

namespace detail {  // ZYGOTE (issue 17): host/zygote.cpp uses these two

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

}  // namespace detail
namespace {

pid_t spawn_sandbox(const SandboxLaunch& launch, int sock, int shm) {
  // ZYGOTE (issue 17): forked by the node's zygote when it has one (host/zygote.h); if that
  // fails, spawned as below.
  if (const pid_t pid = launch.zygote != nullptr ? fork_from_zygote(launch, sock, shm) : -1; pid > 0)
    return pid;
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
  std::vector<std::string> env_strings = detail::sandbox_environment();
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  // In its own PID namespace where the kernel allows (host/pid-namespace-spawn.h), else as before.
  const int keep[] = {sock, shm};
  int rc = 0;
  const PidNamespaceSpawn in_namespace{exe_s.c_str(), argv.data(), envp.data(), keep,
                                       (launch.executable.parent_path() / "sandpipe-pid-init").string()};
  if (spawn_in_pid_namespace(in_namespace, pid, rc) == PidNamespaceResult::unavailable)
    rc = ::posix_spawn(&pid, exe_s.c_str(), &actions, &attr, argv.data(), envp.data());
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
  c->sock.reset(pair[0]);
  UniqueFd child_end(pair[1]);
  c->pid = spawn_sandbox(launch, child_end.get(), c->link->segment.fd());
  c->pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, c->pid, 0)));

  capnp::MallocMessageBuilder hello_msg;
  auto hello = hello_msg.initRoot<schema::HostMessage>().initHello();
  hello.setProtocolVersion(schema::PROTOCOL_VERSION);
  hello.setShmLayoutVersion(shm::layout_version);
  hello.setShmHeaderSize(shm::Segment::header_size());
  if (!c->send(hello_msg, Clock::now() + c->request_timeout)) {
    c->phase = Phase::failed;
    c->failure = c->gone_reason();
  }
  return c;
}

void SandboxProcessor::Control::send_preload() {
  if (phase == Phase::failed || load_sent) return;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<schema::HostMessage>().setPreload(file.string());
  if (!send(msg, Clock::now() + request_timeout)) {
    phase = Phase::failed;
    failure = gone_reason();
  }
}

void SandboxProcessor::Control::send_load(const std::vector<std::byte>& state) {
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
    set_value(out[k].initValue(), params[k].value);
  }
  if (!state.empty())
    load.setState(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(state.data()), state.size()));
  if (!send(load_msg, Clock::now() + request_timeout)) {
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
    if (r.kind == Reply::Kind::error) {
      phase = Phase::failed;
      failure = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
    } else if (phase == Phase::hello && r.kind == Reply::Kind::hello) {
      if (r.protocol_version != schema::PROTOCOL_VERSION || r.shm_layout_version != shm::layout_version ||
          r.shm_header_size != shm::Segment::header_size()) {
        phase = Phase::failed;
        failure = "version mismatch: sandbox speaks protocol " + std::to_string(r.protocol_version) +
                  " / shm layout " + std::to_string(r.shm_layout_version) + " (" +
                  std::to_string(r.shm_header_size) + "-byte header), host " +
                  std::to_string(schema::PROTOCOL_VERSION) + " / " + std::to_string(shm::layout_version) +
                  " (" + std::to_string(shm::Segment::header_size()) +
                  "); install matching sandpipe and sandpipe-sandbox";
      } else {
        python_version = r.python_version;
        numpy_version = r.numpy_version;
        phase = load_sent ? Phase::loading : Phase::ready;
      }
    } else if (phase == Phase::loading && r.kind == Reply::Kind::loaded) {
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
  capnp::MallocMessageBuilder msg;
  auto p = msg.initRoot<schema::HostMessage>().initSetParam();
  p.setKey(setting.key);
  set_value(p.initValue(), setting.value);
  if (!send(msg, Clock::now() + std::chrono::milliseconds(100))) return false;
  async_outstanding.push_back(Async::param);
  async_params.push_back(setting);
  if (notify_endpoint != nullptr) notify_endpoint->notify_control();
  return true;
}

void SandboxProcessor::Control::request_async(Async kind) {
  if (phase != Phase::loaded || gone()) return;
  for (const Async a : async_outstanding)
    if (a == kind) return;
  capnp::MallocMessageBuilder msg;
  auto root = msg.initRoot<schema::HostMessage>();
  if (kind == Async::state) {
    root.setGetState();
  } else {
    root.setGetStats();
  }
  // A full socket means a sandbox that does not read: the watchdog deals with that.
  if (!send(msg, Clock::now())) return;
  async_outstanding.push_back(kind);
  if (notify_endpoint != nullptr) notify_endpoint->notify_control();
}

// ---------------------------------------------------------------------------------------------

SandboxProcessor::SandboxProcessor(std::string name, std::unique_ptr<SandboxLink> link,
                                   std::uint32_t max_frames)
    : name_(std::move(name)),
      channels_(link->segment.geometry().channels),
      max_frames_(max_frames),
      control_(std::make_unique<Control>()) {
  init_rt(std::move(link));  // sandbox-processor.cpp: sizes the RT core
}

SandboxProcessor::~SandboxProcessor() {
  // Control's destructor: `shutdown`, a bounded wait, SIGKILL, reap. Null when a Supervisor
  // took the conversation over (it stops its sandboxes itself).
  control_.reset();
}

std::string SandboxProcessor::load_preloaded(std::chrono::milliseconds timeout) {
  if (!control_ || control_->phase != Control::Phase::ready) return "not a sandbox waiting for its load";
  Control& c = *control_;
  const auto deadline = Clock::now() + timeout;
  c.send_load({});
  while (c.phase == Control::Phase::loading) {
    pollfd pfd{c.sock.get(), POLLIN, 0};
    const int ms = remaining_ms(deadline);
    if (ms == 0) return "no answer to its load within " + std::to_string(timeout.count()) + " ms";
    if (::poll(&pfd, 1, ms) < 0 && errno != EINTR) return std::string("poll: ") + std::strerror(errno);
    c.advance();
  }
  if (c.phase != Control::Phase::loaded) return c.failure.empty() ? c.gone_reason() : c.failure;
  info_ = c.info;
  set_latency(info_.latency);
  return {};
}

pid_t SandboxProcessor::pid() const noexcept { return control_ ? control_->pid : -1; }
int SandboxProcessor::control_fd() const noexcept { return control_ ? control_->sock.get() : -1; }

bool SandboxProcessor::service_control() {
  if (!control_) return usable();
  Control& c = *control_;
  c.pump();
  c.replies.clear();  // nothing was asked: whatever is here is stray
  if ((c.eof || !c.protocol_error.empty()) && usable()) {
    usable_.store(false, std::memory_order_relaxed);
    c.emit(SandboxLogLevel::error, c.gone_reason() + "; its slot passes audio through from now on");
  }
  return usable();
}

std::optional<std::string> SandboxProcessor::set_param(const ParamSetting& setting) {
  if (!control_) {
    // Supervised: the change goes through the supervisor thread (kept for restarts); the
    // plugin's answer arrives later and a refusal is logged then.
    if (supervisor_ != nullptr) return supervisor_->set_param(*this, setting);
    throw PluginError(name_ + ": supervised: its control channel belongs to the supervisor");
  }
  Control& c = *control_;
  const auto deadline = Clock::now() + c.request_timeout;
  capnp::MallocMessageBuilder msg;
  auto p = msg.initRoot<schema::HostMessage>().initSetParam();
  p.setKey(setting.key);
  set_value(p.initValue(), setting.value);
  if (!c.send(msg, deadline)) throw PluginError(name_ + ": cannot send to the sandbox: " + c.gone_reason());
  link_for_main().endpoint.notify_control();
  auto reply = c.wait_reply(deadline);
  if (!reply) {
    if (!c.eof && c.protocol_error.empty()) ++c.unanswered;
    throw PluginError(name_ + ": setting " + setting.key + ": " + c.gone_reason());
  }
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
  if (!control_) throw PluginError(name_ + ": supervised: its control channel belongs to the supervisor");
  Control& c = *control_;
  const auto deadline = Clock::now() + c.request_timeout;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<schema::HostMessage>().setGetState();
  if (!c.send(msg, deadline)) throw PluginError(name_ + ": cannot send to the sandbox: " + c.gone_reason());
  link_for_main().endpoint.notify_control();
  auto reply = c.wait_reply(deadline);
  if (!reply) {
    if (!c.eof && c.protocol_error.empty()) ++c.unanswered;
    throw PluginError(name_ + ": get_state: " + c.gone_reason());
  }
  if (reply->kind == Reply::Kind::error)
    throw PluginError(name_ + ": get_state: " + reply->message + "\n" + reply->traceback);
  if (reply->kind != Reply::Kind::state) throw PluginError(name_ + ": unexpected answer to getState");
  return std::move(reply->state);
}

SandboxStats SandboxProcessor::stats() {
  if (!control_) throw PluginError(name_ + ": supervised: its control channel belongs to the supervisor");
  Control& c = *control_;
  const auto deadline = Clock::now() + c.request_timeout;
  capnp::MallocMessageBuilder msg;
  msg.initRoot<schema::HostMessage>().setGetStats();
  if (!c.send(msg, deadline)) throw PluginError(name_ + ": cannot send to the sandbox: " + c.gone_reason());
  link_for_main().endpoint.notify_control();
  auto reply = c.wait_reply(deadline);
  if (!reply) {
    if (!c.eof && c.protocol_error.empty()) ++c.unanswered;
    throw PluginError(name_ + ": stats: " + c.gone_reason());
  }
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
  using Control = SandboxProcessor::Control;
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
      options.sandbox_executable.empty() ? detail::default_sandbox_executable() : options.sandbox_executable;
  if (::access(exe.c_str(), X_OK) != 0) {
    throw PluginError("python plugins need " + exe.string() + ", which is missing or not executable");
  }
  const shm::Geometry geometry{channels, max_frames, options.slot_count};

  // 1. Spawn every sandbox before talking to any: their interpreters start in parallel.
  std::vector<std::unique_ptr<SandboxProcessor>> procs;
  procs.reserve(specs.size());
  for (const PluginSpec& spec : specs) {
    std::filesystem::path file = spec.resolved.empty() ? std::filesystem::path(spec.path) : spec.resolved;
    file = std::filesystem::absolute(file);
    if (!std::filesystem::is_regular_file(file)) {
      throw PluginError("python plugin \"" + spec.name + "\": " + file.string() + ": no such file");
    }
    std::optional<shm::Segment> segment;
    try {
      segment.emplace(shm::Segment::create(geometry));
    } catch (const std::exception& e) {
      throw PluginError("python plugin \"" + spec.name + "\": shared memory: " + e.what());
    }
    std::unique_ptr<SandboxProcessor> proc(
        new SandboxProcessor(spec.name, std::make_unique<SandboxLink>(std::move(*segment), 1), max_frames));
    proc->set_on_failure(spec.on_failure);  // until the load says which API it is
    proc->set_bit_exact(spec.bit_exact);
    proc->set_max_level(max_level_linear(spec.max_level_db));
    if (options.host_spin_ns) proc->link_for_main().endpoint.set_spin_ns(*options.host_spin_ns);
    Control& c = *proc->control_;
    c.name = spec.name;
    c.file = file;
    c.log = options.log ? options.log : SandboxLogFn(log_to_stderr);
    c.request_timeout = options.request_timeout;
    c.shutdown_timeout = options.shutdown_timeout;
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
      throw PluginError(std::string("python plugins: socketpair: ") + std::strerror(errno));
    }
    c.sock.reset(pair[0]);
    UniqueFd child_end(pair[1]);
    c.launch = SandboxLaunch{spec.name,
                             file,
                             exe,
                             geometry,
                             sample_rate,
                             spec.memory_mb,
                             options.host_spin_ns,
                             c.log,
                             options.request_timeout,
                             options.shutdown_timeout};
    c.launch.allow_writes = spec.allow_writes;
    c.launch.rt_priority = options.rt_priority;
    c.launch.wake_lead_us = spec.wake_lead_us;
    c.launch.keep_denormals = spec.bit_exact;
    c.launch.zygote = options.zygote;  // ZYGOTE (issue 17)
    c.params = spec.params;
    c.notify_endpoint = &proc->link_for_main().endpoint;
    c.pid = spawn_sandbox(c.launch, child_end.get(), proc->link_for_main().segment.fd());
    c.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, c.pid, 0)));
    procs.push_back(std::move(proc));
  }

  // 2. Hello and load, pipelined: the sandbox answers hello, then reads the load.
  enum class Phase : std::uint8_t { hello, load, done, failed };
  std::vector<Phase> phase(procs.size(), Phase::hello);
  std::vector<std::string> failure(procs.size());
  const auto deadline = Clock::now() + options.start_timeout;
  for (std::size_t i = 0; i < procs.size(); ++i) {
    Control& c = *procs[i]->control_;
    const PluginSpec& spec = specs[i];
    capnp::MallocMessageBuilder hello_msg;
    auto hello = hello_msg.initRoot<schema::HostMessage>().initHello();
    hello.setProtocolVersion(schema::PROTOCOL_VERSION);
    hello.setShmLayoutVersion(shm::layout_version);
    hello.setShmHeaderSize(shm::Segment::header_size());
    capnp::MallocMessageBuilder load_msg;
    auto load = load_msg.initRoot<schema::HostMessage>().initLoad();
    load.setPath(c.file.string());
    load.setInstanceName(spec.name);
    load.setSampleRate(sample_rate);
    load.setChannels(channels);
    load.setMaxFrames(max_frames);
    auto params = load.initParams(static_cast<unsigned>(spec.params.size()));
    for (unsigned k = 0; k < spec.params.size(); ++k) {
      params[k].setKey(spec.params[k].key);
      set_value(params[k].initValue(), spec.params[k].value);
    }
    if (!options.states.empty() && !options.states[i].empty()) {
      const auto& st = options.states[i];
      load.setState(capnp::Data::Reader(reinterpret_cast<const kj::byte*>(st.data()), st.size()));
    }
    load.setInspect(options.inspect);
    if (preload_only(i)) {
      // Hello and preload only: the plugin's module is imported, the plugin not made.
      const bool sent = c.send(hello_msg, deadline);
      if (sent) c.send_preload();
      if (!sent || c.phase == Control::Phase::failed) {
        phase[i] = Phase::failed;
        failure[i] = c.gone_reason();
      }
    } else if (!c.send(hello_msg, deadline) || !c.send(load_msg, deadline)) {
      phase[i] = Phase::failed;
      failure[i] = c.gone_reason();
    }
  }

  // 3. Wait for every answer, whichever comes first.
  for (;;) {
    std::vector<pollfd> pfds;
    std::vector<std::size_t> index;
    for (std::size_t i = 0; i < procs.size(); ++i) {
      if (phase[i] == Phase::hello || phase[i] == Phase::load) {
        pfds.push_back({procs[i]->control_->sock.get(), POLLIN, 0});
        index.push_back(i);
      }
    }
    if (pfds.empty()) break;
    const int ms = remaining_ms(deadline);
    if (ms == 0) {
      for (std::size_t i : index) {
        phase[i] = Phase::failed;
        failure[i] = "no answer within " + std::to_string(options.start_timeout.count() / 1000) + " s";
      }
      break;
    }
    if (::poll(pfds.data(), pfds.size(), ms) < 0 && errno != EINTR) {
      throw PluginError(std::string("python plugins: poll: ") + std::strerror(errno));
    }
    for (std::size_t k = 0; k < pfds.size(); ++k) {
      if (pfds[k].revents == 0) continue;
      const std::size_t i = index[k];
      SandboxProcessor& proc = *procs[i];
      Control& c = *proc.control_;
      c.pump();
      while ((phase[i] == Phase::hello || phase[i] == Phase::load) && !c.replies.empty()) {
        Reply r = std::move(c.replies.front());
        c.replies.pop_front();
        if (r.kind == Reply::Kind::error) {
          phase[i] = Phase::failed;
          failure[i] = r.message + (r.traceback.empty() ? "" : "\n" + r.traceback);
        } else if (phase[i] == Phase::hello && r.kind == Reply::Kind::hello) {
          if (r.protocol_version != schema::PROTOCOL_VERSION || r.shm_layout_version != shm::layout_version ||
              r.shm_header_size != shm::Segment::header_size()) {
            phase[i] = Phase::failed;
            failure[i] = "version mismatch: sandbox speaks protocol " + std::to_string(r.protocol_version) +
                         " / shm layout " + std::to_string(r.shm_layout_version) + " (" +
                         std::to_string(r.shm_header_size) + "-byte header), host " +
                         std::to_string(schema::PROTOCOL_VERSION) + " / " +
                         std::to_string(shm::layout_version) + " (" +
                         std::to_string(shm::Segment::header_size()) +
                         "); install matching sandpipe and sandpipe-sandbox";
          } else {
            proc.info_.python_version = r.python_version;
            proc.info_.numpy_version = r.numpy_version;
            c.python_version = r.python_version;
            c.numpy_version = r.numpy_version;
            phase[i] = preload_only(i) ? Phase::done : Phase::load;
          }
        } else if (phase[i] == Phase::load && r.kind == Reply::Kind::loaded) {
          r.info.python_version = proc.info_.python_version;
          r.info.numpy_version = proc.info_.numpy_version;
          proc.info_ = std::move(r.info);
          proc.set_latency(proc.info_.latency);
          phase[i] = Phase::done;
        } else {
          phase[i] = Phase::failed;
          failure[i] = "unexpected message during the handshake";
        }
      }
      if ((phase[i] == Phase::hello || phase[i] == Phase::load) && (c.eof || !c.protocol_error.empty())) {
        phase[i] = Phase::failed;
        failure[i] = c.gone_reason();
      }
    }
  }

  std::string errors;
  for (std::size_t i = 0; i < procs.size(); ++i) {
    Control& c = *procs[i]->control_;
    if (phase[i] == Phase::done) c.phase = preload_only(i) ? Control::Phase::ready : Control::Phase::loaded;
    // Earlier-API processors fail closed unless their entry says otherwise.
    const bool loaded = phase[i] == Phase::done;
    procs[i]->set_on_failure(
        effective_on_failure(specs[i], loaded ? procs[i]->info_.api : "", loaded ? procs[i]->info_.role : ""));
    // A sink passes what it received on (its `passthrough`): that is its output, not a bypass.
    procs[i]->sink_ = loaded && procs[i]->info_.role == "sink";
    if (phase[i] != Phase::failed) continue;
    std::string error = "python plugin \"" + specs[i].name + "\" (" + c.file.string() + "): " + failure[i];
    while (!error.empty() && error.back() == '\n') error.pop_back();
    if (options.keep_failed) {
      // Never fatal: the slot stays dry (or mute) for good; the error is logged and kept.
      c.phase = Control::Phase::failed;
      c.failure = error;
      c.kill_and_reap();
      procs[i]->mark_link_dead();
      c.emit(SandboxLogLevel::error, std::string("cannot load, the slot is ") +
                                         (procs[i]->on_failure() == OnFailure::mute ? "muted" : "bypassed") +
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
