// The node's request socket: the supervisor's listening side and the CLI's client side.
#include "host/python/node-requests.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <system_error>

#include "host/python/supervisor.h"

namespace sandpipe::host {

namespace {

constexpr std::size_t max_request_bytes = 4096;
constexpr auto idle_limit = std::chrono::seconds(5);

/// [main] The address for `path`; throws if it does not fit sun_path.
sockaddr_un address_of(const std::filesystem::path& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string s = path.string();
  if (s.size() >= sizeof addr.sun_path)
    throw std::system_error(ENAMETOOLONG, std::generic_category(), "request socket path " + s);
  std::memcpy(addr.sun_path, s.c_str(), s.size() + 1);
  return addr;
}

std::uint64_t inode_of(const std::filesystem::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

/// [main] Writes all of `data` to a connected socket, waiting at most until `deadline`.
bool send_all(int fd, std::string_view data, std::chrono::steady_clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd, POLLOUT, 0};
    (void)::poll(&p, 1, static_cast<int>(left.count()));
  }
  return true;
}

}  // namespace

std::filesystem::path request_socket_path(std::string_view node_name) {
  std::filesystem::path p = status_file_path(node_name);
  p.replace_extension(".sock");
  return p;
}

RequestServer::RequestServer(std::filesystem::path path) : path_(std::move(path)) {
  std::error_code ec;
  std::filesystem::create_directories(path_.parent_path(), ec);
  const sockaddr_un addr = address_of(path_);
  listen_fd_ = kj::AutoCloseFd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (listen_fd_ < 0) throw std::system_error(errno, std::generic_category(), "request socket");
  // A socket file left there is an older chain of this node (a rate change builds a new one
  // before the old one goes) or a crashed run: the newest takes the name.
  (void)::unlink(path_.c_str());
  const mode_t old_mask = ::umask(0077);
  const int rc = ::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  ::umask(old_mask);
  if (rc != 0 || ::listen(listen_fd_, 8) != 0) {
    const int err = errno;
    listen_fd_ = nullptr;
    throw std::system_error(err, std::generic_category(), "request socket " + path_.string());
  }
  inode_ = inode_of(path_);
}

RequestServer::~RequestServer() {
  if (inode_ != 0 && inode_of(path_) == inode_) (void)::unlink(path_.c_str());
}

std::vector<int> RequestServer::fds() const {
  std::vector<int> out{listen_fd_.get()};
  for (const Connection& c : connections_)
    if (!c.complete) out.push_back(c.fd.get());
  return out;
}

void RequestServer::close_connection(std::size_t index) {
  connections_.erase(connections_.begin() + static_cast<std::ptrdiff_t>(index));
}

std::vector<RequestServer::Request> RequestServer::service() {
  const auto now = std::chrono::steady_clock::now();
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) break;
    connections_.push_back(Connection{kj::AutoCloseFd(fd), next_id_++, {}, false, now});
  }
  std::vector<Request> done;
  for (std::size_t i = 0; i < connections_.size();) {
    Connection& c = connections_[i];
    if (c.complete) {
      ++i;
      continue;
    }
    bool drop = false;
    char buf[512];
    for (;;) {
      const ssize_t n = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) {
        c.buffer.append(buf, static_cast<std::size_t>(n));
        if (c.buffer.size() > max_request_bytes) drop = true;
        if (drop || c.buffer.find('\n') != std::string::npos) break;
        continue;
      }
      if (n == 0) drop = c.buffer.find('\n') == std::string::npos;  // closed before a whole line
      if (n < 0 && errno == EINTR) continue;
      break;
    }
    const auto nl = c.buffer.find('\n');
    if (!drop && nl != std::string::npos) {
      c.complete = true;
      done.push_back(Request{c.id, c.buffer.substr(0, nl)});
    } else if (!drop && now - c.opened > idle_limit) {
      drop = true;
    }
    if (drop) {
      close_connection(i);
    } else {
      ++i;
    }
  }
  return done;
}

void RequestServer::reply(std::uint64_t id, bool ok, std::string_view text) {
  for (std::size_t i = 0; i < connections_.size(); ++i) {
    if (connections_[i].id != id) continue;
    std::string message = ok ? "ok\n" : "error\n";
    message += text;
    if (!message.ends_with('\n')) message += '\n';
    (void)send_all(connections_[i].fd, message, std::chrono::steady_clock::now() + std::chrono::seconds(1));
    close_connection(i);
    return;
  }
}

std::optional<RequestReply> send_node_request(std::string_view node_name, std::string_view line,
                                              std::chrono::milliseconds timeout, std::string& error) {
  const std::filesystem::path path = request_socket_path(node_name);
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    error = "no node \"" + std::string(node_name) + "\" is running (no " + path.string() + ")";
    return std::nullopt;
  }
  const kj::AutoCloseFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd < 0) {
    error = std::string("socket: ") + std::strerror(errno);
    return std::nullopt;
  }
  sockaddr_un addr{};
  try {
    addr = address_of(path);
  } catch (const std::exception& e) {
    error = e.what();
    return std::nullopt;
  }
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    error = errno == ECONNREFUSED
                ? "node \"" + std::string(node_name) + "\" is not running (stale " + path.string() + ")"
                : "cannot reach node \"" + std::string(node_name) + "\" at " + path.string() + ": " +
                      std::strerror(errno);
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  if (!send_all(fd, std::string(line) + "\n", deadline)) {
    error = "cannot send the request to node \"" + std::string(node_name) + "\": " + std::strerror(errno);
    return std::nullopt;
  }
  std::string answer;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      char seconds[32];
      std::snprintf(seconds, sizeof seconds, "%.1f", static_cast<double>(timeout.count()) / 1000.0);
      error = "no answer from node \"" + std::string(node_name) + "\" within " + seconds + " s";
      return std::nullopt;
    }
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno != EINTR) {
      error = std::string("poll: ") + std::strerror(errno);
      return std::nullopt;
    }
    if (r <= 0) continue;
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the node closes after its answer
    answer.append(buf, static_cast<std::size_t>(n));
  }
  const auto nl = answer.find('\n');
  const std::string head = answer.substr(0, nl);
  if (head != "ok" && head != "error") {
    error = "node \"" + std::string(node_name) + "\" closed the connection without an answer";
    return std::nullopt;
  }
  return RequestReply{head == "ok", nl == std::string::npos ? std::string() : answer.substr(nl + 1)};
}

int reload_node_plugin(std::string_view node_name, std::string_view slot, std::chrono::milliseconds timeout) {
  std::string error;
  const auto reply = send_node_request(node_name, "reload " + std::string(slot), timeout, error);
  if (!reply) {
    std::cerr << "sandpipe: " << error << "\n";
    return 1;
  }
  (reply->ok ? std::cout : std::cerr) << (reply->ok ? "" : "sandpipe: ") << reply->text;
  return reply->ok ? 0 : 1;
}

}  // namespace sandpipe::host
