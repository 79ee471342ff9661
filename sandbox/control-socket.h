// The sandbox's end of the control socketpair: Cap'n Proto stream framing, one message a frame.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sandpipe::sandbox {

/// One received frame; `reader()` parses it with limits suited to host messages.
class Frame {
 public:
  explicit Frame(kj::Array<capnp::word> words) noexcept : words_(kj::mv(words)) {}
  [[nodiscard]] capnp::FlatArrayMessageReader reader() const;

 private:
  kj::Array<capnp::word> words_;
};

/// Owns the socket. Outgoing frames go through a queue so that a frame is never half-written:
/// replies are flushed blocking (bounded), log lines are dropped whole when the host does not
/// keep up (a plugin printing every block must not stall the audio).
/// Single-threaded: the sandbox's processing thread does everything.
class ControlSocket {
 public:
  /// Takes ownership of `fd` and makes it non-blocking.
  explicit ControlSocket(int fd);
  ~ControlSocket();
  ControlSocket(const ControlSocket&) = delete;
  ControlSocket& operator=(const ControlSocket&) = delete;
  ControlSocket(ControlSocket&&) = delete;
  ControlSocket& operator=(ControlSocket&&) = delete;

  /// Returns the next complete frame, waiting at most `timeout_ms` (0: only what is buffered
  /// or readable now; -1: forever). nullopt on timeout or once the host closed its end.
  [[nodiscard]] std::optional<Frame> receive(int timeout_ms);

  /// Queues a reply and flushes everything, waiting at most `timeout_ms` for the host to read.
  /// False if the host is gone or did not read in time.
  bool send(capnp::MessageBuilder& message, int timeout_ms = 10000);

  /// Queues a frame unless the queue already holds more than its bound; then it is dropped
  /// and counted. Sends what the socket takes without waiting.
  void send_lossy(capnp::MessageBuilder& message);

  /// Writes everything queued, waiting at most `timeout_ms`. False if that was not possible.
  bool flush(int timeout_ms);

  /// Writes what the socket takes now, never waits.
  void flush_now();

  /// True once the host closed its end (EOF or a hard error).
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }
  [[nodiscard]] int fd() const noexcept { return fd_; }

  /// Largest frame accepted from the host (a load with a restored state is the largest).
  static constexpr std::size_t max_frame_bytes = 16u << 20;
  /// Queue bound beyond which lossy frames are dropped.
  static constexpr std::size_t lossy_queue_bytes = 256u << 10;

 private:
  void enqueue(capnp::MessageBuilder& message);
  bool read_available();
  std::optional<Frame> take_frame();

  int fd_;
  bool closed_ = false;
  std::uint64_t dropped_ = 0;
  std::vector<unsigned char> in_;
  std::vector<unsigned char> out_;
  std::size_t out_sent_ = 0;
};

}  // namespace sandpipe::sandbox
