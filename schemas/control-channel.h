// Both ends of the control socketpair (schemas/control.capnp): Cap'n Proto's stream framing, one
// message a frame, over a non-blocking socket. The host and the sandbox use this same class; only
// the limits of what each accepts from the other differ, and they are all here.
//
// Single-threaded: one thread of each process owns its end. Nothing here blocks longer than the
// timeout a call is given.
#pragma once

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/array.h>
#include <kj/io.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace sandpipe::schema {

/// What one end accepts from the other. The sandbox is untrusted: the host's limits are tight.
struct ChannelLimits {
  std::size_t max_message_bytes = 0;  ///< larger frames are a protocol breach
  std::uint32_t max_segments = 0;     ///< frames of more segments are a protocol breach
  std::uint32_t nesting_limit = 0;    ///< capnp::ReaderOptions::nestingLimit
  /// capnp::ReaderOptions::traversalLimitInWords = this × the message's size (+ 1024 words).
  std::uint32_t traversal_factor = 0;

  /// The host reading a sandbox: a state reply is the largest legitimate message.
  static constexpr ChannelLimits from_sandbox() { return {8u << 20, 16, 8, 2}; }
  /// A sandbox reading its host: a load with a restored state is the largest.
  static constexpr ChannelLimits from_host() { return {16u << 20, 64, 16, 4}; }
};

/// One received message, kept with its words so it can be read while it lives.
class ReceivedMessage {
 public:
  ReceivedMessage(kj::Array<capnp::word> words, const ChannelLimits& limits);
  ReceivedMessage(const ReceivedMessage&) = delete;
  ReceivedMessage& operator=(const ReceivedMessage&) = delete;
  ReceivedMessage(ReceivedMessage&&) = delete;
  ReceivedMessage& operator=(ReceivedMessage&&) = delete;
  ~ReceivedMessage() = default;

  /// The root as `T`; throws kj::Exception on a malformed message.
  template <typename T>
  [[nodiscard]] typename T::Reader root() {
    return reader_.getRoot<T>();
  }

 private:
  kj::Array<capnp::word> words_;
  capnp::FlatArrayMessageReader reader_;
};

/// Owns one end of the socket. Outgoing frames go through a queue so that a frame is never
/// half-written: `send` flushes with a bounded wait, `send_lossy` drops whole frames when the peer
/// does not keep up. Incoming bytes are framed with capnp::expectedSizeInWordsFromPrefix.
class ControlChannel {
 public:
  /// Takes `fd` and makes it non-blocking.
  ControlChannel(kj::AutoCloseFd fd, ChannelLimits limits);
  ControlChannel(const ControlChannel&) = delete;
  ControlChannel& operator=(const ControlChannel&) = delete;
  ControlChannel(ControlChannel&&) = delete;
  ControlChannel& operator=(ControlChannel&&) = delete;
  ~ControlChannel() = default;

  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

  /// The next complete message already received, reading what the socket holds first without
  /// waiting. nullptr if none is complete (or the channel is closed or broken).
  [[nodiscard]] std::unique_ptr<ReceivedMessage> poll();
  /// Like poll(), waiting at most `timeout_ms` (-1: forever) for a message to complete.
  [[nodiscard]] std::unique_ptr<ReceivedMessage> receive(int timeout_ms);
  /// Waits at most `timeout_ms` for the socket to become readable (or hang up). False on timeout.
  bool wait_readable(int timeout_ms) const;

  /// Queues `message` and flushes everything, waiting at most `timeout_ms` for the peer to read.
  /// False if the peer is gone or did not read in time (the frame stays queued, whole).
  bool send(capnp::MessageBuilder& message, int timeout_ms);
  /// Queues a frame unless the queue already holds more than `lossy_queue_bytes`; then it is
  /// dropped and counted. Sends what the socket takes without waiting.
  void send_lossy(capnp::MessageBuilder& message);
  /// Writes everything queued, waiting at most `timeout_ms`. False if that was not possible.
  bool flush(int timeout_ms);
  /// Writes what the socket takes now, never waits.
  void flush_now();

  /// True once the peer closed its end (EOF or a hard error) or sent what cannot be framed.
  [[nodiscard]] bool closed() const noexcept { return closed_; }
  /// Why the peer's bytes cannot be framed (a frame too large, malformed), or empty.
  [[nodiscard]] const std::string& breach() const noexcept { return breach_; }
  /// Frames send_lossy() dropped.
  [[nodiscard]] std::uint64_t dropped() const noexcept { return dropped_; }

  /// Queue bound beyond which lossy frames are dropped.
  static constexpr std::size_t lossy_queue_bytes = 256u << 10;

 private:
  void read_available();
  void enqueue(capnp::MessageBuilder& message);
  void breach(std::string what);
  std::unique_ptr<ReceivedMessage> take();

  kj::AutoCloseFd fd_;
  ChannelLimits limits_;
  bool closed_ = false;
  std::string breach_;
  std::uint64_t dropped_ = 0;
  std::vector<capnp::word> in_;  ///< received bytes, word-aligned for the framing
  std::size_t in_bytes_ = 0;
  std::vector<unsigned char> out_;
  std::size_t out_sent_ = 0;
};

}  // namespace sandpipe::schema
