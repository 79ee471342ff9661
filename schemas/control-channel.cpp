#include "schemas/control-channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <kj/exception.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "shm/clock.h"  // header-only: the one clock, no link to shm

namespace sandpipe::schema {
namespace {

std::int64_t monotonic_ms() { return static_cast<std::int64_t>(shm::now_ns() / 1'000'000U); }

/// Milliseconds left until `deadline` (monotonic_ms), or -1 for none.
int left_ms(std::int64_t deadline) {
  if (deadline < 0) return -1;
  const std::int64_t left = deadline - monotonic_ms();
  return left <= 0 ? 0 : static_cast<int>(left > 1'000'000 ? 1'000'000 : left);
}

capnp::ReaderOptions reader_options(std::size_t words, const ChannelLimits& limits) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = words * limits.traversal_factor + 1024;
  options.nestingLimit = static_cast<int>(limits.nesting_limit);
  return options;
}

}  // namespace

ReceivedMessage::ReceivedMessage(kj::Array<capnp::word> words, const ChannelLimits& limits)
    : words_(kj::mv(words)), reader_(words_.asPtr(), reader_options(words_.size(), limits)) {}

ControlChannel::ControlChannel(kj::AutoCloseFd fd, ChannelLimits limits) : fd_(kj::mv(fd)), limits_(limits) {
  const int flags = ::fcntl(fd_.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK) < 0) {
    throw std::runtime_error(std::string("control channel: ") + std::strerror(errno));
  }
}

void ControlChannel::read_available() {
  constexpr std::size_t chunk = 16384;
  while (!closed_ && breach_.empty()) {
    // Stop reading once more than one largest message is buffered: take() decides what it is.
    if (in_bytes_ > limits_.max_message_bytes + chunk) return;
    const std::size_t need_words = (in_bytes_ + chunk + sizeof(capnp::word) - 1) / sizeof(capnp::word);
    if (in_.size() < need_words) in_.resize(need_words);
    auto* at = reinterpret_cast<unsigned char*>(in_.data()) + in_bytes_;
    const ssize_t n = ::recv(fd_.get(), at, chunk, MSG_DONTWAIT);
    if (n > 0) {
      in_bytes_ += static_cast<std::size_t>(n);
    } else if (n == 0) {
      closed_ = true;
    } else if (errno == EINTR) {
      continue;
    } else {
      if (errno != EAGAIN && errno != EWOULDBLOCK) closed_ = true;
      return;
    }
  }
}

void ControlChannel::breach(std::string what) {
  breach_ = std::move(what);
  closed_ = true;  // nothing after it can be framed: the conversation is over
}

std::unique_ptr<ReceivedMessage> ControlChannel::take() {
  if (!breach_.empty()) return nullptr;
  const std::size_t have = in_bytes_ / sizeof(capnp::word);
  if (have == 0) return nullptr;
  // The segment count first: capnp's own arithmetic on it wraps for a count of 2^32.
  std::uint32_t count_field = 0;
  std::memcpy(&count_field, in_.data(), sizeof count_field);  // little-endian, as capnp's framing
  const std::uint64_t segments = std::uint64_t{count_field} + 1;
  if (segments > limits_.max_segments) {
    breach("frame with " + std::to_string(segments) + " segments");
    return nullptr;
  }
  const std::size_t expected = capnp::expectedSizeInWordsFromPrefix(kj::arrayPtr(in_.data(), have));
  const std::uint64_t bytes = std::uint64_t{expected} * sizeof(capnp::word);
  if (bytes > limits_.max_message_bytes) {
    breach("frame of " + std::to_string(bytes) + " bytes");
    return nullptr;
  }
  if (expected > have) return nullptr;
  auto words = kj::heapArray<capnp::word>(expected);
  std::memcpy(words.begin(), in_.data(), bytes);
  std::memmove(in_.data(), in_.data() + expected, in_bytes_ - bytes);
  in_bytes_ -= bytes;
  try {
    return std::make_unique<ReceivedMessage>(kj::mv(words), limits_);
  } catch (const kj::Exception& e) {
    breach(std::string("malformed message: ") + e.getDescription().cStr());
    return nullptr;
  }
}

std::unique_ptr<ReceivedMessage> ControlChannel::poll() {
  if (auto message = take()) return message;
  read_available();
  return take();
}

bool ControlChannel::wait_readable(int timeout_ms) const {
  pollfd pfd{fd_.get(), POLLIN, 0};
  return ::poll(&pfd, 1, timeout_ms) > 0;
}

std::unique_ptr<ReceivedMessage> ControlChannel::receive(int timeout_ms) {
  const std::int64_t deadline = timeout_ms < 0 ? -1 : monotonic_ms() + timeout_ms;
  for (;;) {
    if (auto message = poll()) return message;
    if (closed_ || !breach_.empty()) return nullptr;
    const int wait = left_ms(deadline);
    if (wait == 0) return nullptr;
    pollfd pfd{fd_.get(), POLLIN, 0};
    if (::poll(&pfd, 1, wait) < 0 && errno != EINTR) {
      closed_ = true;
      return nullptr;
    }
  }
}

void ControlChannel::flush_now() {
  while (out_sent_ < out_.size() && !closed_) {
    const ssize_t n =
        ::send(fd_.get(), out_.data() + out_sent_, out_.size() - out_sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_sent_ += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;
    } else {
      closed_ = true;  // EPIPE / ECONNRESET: the peer is gone
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

bool ControlChannel::flush(int timeout_ms) {
  const std::int64_t deadline = monotonic_ms() + (timeout_ms < 0 ? 0 : timeout_ms);
  for (;;) {
    flush_now();
    if (out_.empty()) return true;
    if (closed_) return false;
    const int wait = left_ms(deadline);
    if (wait == 0) return false;
    pollfd pfd{fd_.get(), POLLOUT, 0};
    if (::poll(&pfd, 1, wait) < 0 && errno != EINTR) return false;
  }
}

bool ControlChannel::send(capnp::MessageBuilder& message, int timeout_ms) {
  if (closed_) return false;
  enqueue(message);
  return flush(timeout_ms);
}

void ControlChannel::send_lossy(capnp::MessageBuilder& message) {
  if (closed_) return;
  if (out_.size() - out_sent_ > lossy_queue_bytes) {
    ++dropped_;
    flush_now();
    return;
  }
  enqueue(message);
  flush_now();
}

void ControlChannel::enqueue(capnp::MessageBuilder& message) {
  const kj::Array<capnp::word> words = capnp::messageToFlatArray(message);
  const auto bytes = words.asBytes();
  out_.insert(out_.end(), bytes.begin(), bytes.end());
}

}  // namespace sandpipe::schema
