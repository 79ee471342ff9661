// API CONTRACT (shm/ implements it). One shared-memory segment per sandbox: a memfd mapped with
// Boost.Interprocess in both processes. No other process can open it by name; the host passes
// the fd to the sandbox it spawns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <variant>

#include "shm/block-channel.h"

namespace sandpipe::shm {

/// Owns the memfd and the mapping (RAII, move-only). Layout: see block-channel.h.
class Segment {
 public:
  /// [main] Host side: creates, sizes and maps a new segment for `geometry` and writes its header.
  /// Throws std::invalid_argument for a geometry out of range, std::system_error if the kernel says no.
  [[nodiscard]] static Segment create(const Geometry& geometry);

  /// [main] Sandbox side: maps the segment behind `fd` (takes ownership of it) and validates its header
  /// (magic, layout version, header size, geometry ranges, total size against the fd's size).
  /// Returns the segment, or a message naming what is wrong.
  [[nodiscard]] static std::variant<Segment, std::string> attach(int fd);

  Segment(Segment&&) noexcept;
  Segment& operator=(Segment&&) noexcept;
  Segment(const Segment&) = delete;
  Segment& operator=(const Segment&) = delete;
  ~Segment();

  /// [any] The memfd (owned; still open). The host clears FD_CLOEXEC on a dup of it when spawning.
  [[nodiscard]] int fd() const noexcept;
  /// [any] The geometry this process created or validated (a private copy, not the header).
  [[nodiscard]] const Geometry& geometry() const noexcept;
  /// [any] Where this process mapped the segment.
  [[nodiscard]] void* base() const noexcept;
  /// [any] Bytes in use (header to the end of the last slot).
  [[nodiscard]] std::size_t size_bytes() const noexcept;

  /// [any] Size of the segment header as this build knows it (exchanged in the control handshake).
  [[nodiscard]] static std::uint32_t header_size() noexcept;

 private:
  struct Impl;
  explicit Segment(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sandpipe::shm
