#include "sandbox/control-socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace sandpipe::sandbox {
namespace {

std::int64_t monotonic_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::uint32_t read_u32_le(const unsigned char* p) {
  return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8) |
         (static_cast<std::uint32_t>(p[2]) << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

}  // namespace

capnp::FlatArrayMessageReader Frame::reader() const {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = words_.size() * 4 + 1024;
  options.nestingLimit = 16;
  return capnp::FlatArrayMessageReader(words_.asPtr(), options);
}

ControlSocket::ControlSocket(int fd) : fd_(fd) {
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0 || ::fcntl(fd_, F_SETFL, flags | O_NONBLOCK) < 0) {
    throw std::runtime_error(std::string("control socket: ") + std::strerror(errno));
  }
}

ControlSocket::~ControlSocket() { ::close(fd_); }

bool ControlSocket::read_available() {
  unsigned char chunk[16384];
  bool got = false;
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, MSG_DONTWAIT);
    if (n > 0) {
      in_.insert(in_.end(), chunk, chunk + n);
      got = true;
      if (in_.size() > max_frame_bytes + 4096) break;  // take_frame() decides what it is
      continue;
    }
    if (n == 0) {
      closed_ = true;
    } else if (errno == EINTR) {
      continue;
    } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
      closed_ = true;
    }
    return got;
  }
  return got;
}

std::optional<Frame> ControlSocket::take_frame() {
  if (in_.size() < 8) return std::nullopt;
  const std::uint64_t segments = std::uint64_t{read_u32_le(in_.data())} + 1;
  if (segments > 64) {
    closed_ = true;  // not a frame we can ever parse: treat the host as gone
    return std::nullopt;
  }
  const std::size_t header = ((4 + segments * 4) + 7) & ~std::size_t{7};
  if (in_.size() < header) return std::nullopt;
  std::uint64_t body_words = 0;
  for (std::uint64_t i = 0; i < segments; ++i) body_words += read_u32_le(in_.data() + 4 + i * 4);
  const std::uint64_t total = header + body_words * 8;
  if (total > max_frame_bytes) {
    closed_ = true;
    return std::nullopt;
  }
  if (in_.size() < total) return std::nullopt;
  auto words = kj::heapArray<capnp::word>(total / 8);
  std::memcpy(words.begin(), in_.data(), total);
  in_.erase(in_.begin(), in_.begin() + static_cast<std::ptrdiff_t>(total));
  return Frame(kj::mv(words));
}

std::optional<Frame> ControlSocket::receive(int timeout_ms) {
  const std::int64_t deadline = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
  for (;;) {
    if (auto frame = take_frame()) return frame;
    if (closed_) return std::nullopt;
    if (read_available()) continue;
    if (closed_) return std::nullopt;
    int wait_ms = -1;
    if (deadline >= 0) {
      const std::int64_t left = deadline - monotonic_ms();
      if (left <= 0) return std::nullopt;
      wait_ms = static_cast<int>(left);
    }
    pollfd pfd{fd_, POLLIN, 0};
    const int r = ::poll(&pfd, 1, wait_ms);
    if (r < 0 && errno != EINTR) {
      closed_ = true;
      return std::nullopt;
    }
  }
}

void ControlSocket::enqueue(capnp::MessageBuilder& message) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  out_.insert(out_.end(), bytes.begin(), bytes.end());
}

void ControlSocket::flush_now() {
  while (out_sent_ < out_.size() && !closed_) {
    const ssize_t n =
        ::send(fd_, out_.data() + out_sent_, out_.size() - out_sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_sent_ += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      closed_ = true;
    }
  }
  if (out_sent_ == out_.size()) {
    out_.clear();
    out_sent_ = 0;
  } else if (out_sent_ > (64u << 10)) {
    out_.erase(out_.begin(), out_.begin() + static_cast<std::ptrdiff_t>(out_sent_));
    out_sent_ = 0;
  }
}

bool ControlSocket::send(capnp::MessageBuilder& message, int timeout_ms) {
  enqueue(message);
  return flush(timeout_ms);
}

bool ControlSocket::flush(int timeout_ms) {
  const std::int64_t deadline = monotonic_ms() + timeout_ms;
  for (;;) {
    flush_now();
    if (out_.empty()) return true;
    if (closed_) return false;
    const std::int64_t left = deadline - monotonic_ms();
    if (left <= 0) return false;
    pollfd pfd{fd_, POLLOUT, 0};
    if (::poll(&pfd, 1, static_cast<int>(left)) < 0 && errno != EINTR) return false;
  }
}

void ControlSocket::send_lossy(capnp::MessageBuilder& message) {
  if (closed_) return;
  if (out_.size() - out_sent_ > lossy_queue_bytes) {
    ++dropped_;
    flush_now();
    return;
  }
  enqueue(message);
  flush_now();
}

}  // namespace sandpipe::sandbox
