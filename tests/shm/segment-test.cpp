// Segment: creation, attaching by fd, and every header check attach() makes.
#include "shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

#include "shm/layout.h"

namespace sandpipe::shm {
namespace {

Segment attach_or_fail(int fd) {
  auto attached = Segment::attach(fd);
  if (auto* error = std::get_if<std::string>(&attached)) {
    ADD_FAILURE() << *error;
    std::abort();
  }
  return std::move(std::get<Segment>(attached));
}

/// A copy of a valid segment's bytes, altered by `mutate`, in a new (unsealed) memfd of
/// `file_size` bytes (0: the original size).
int forged_segment_fd(const std::function<void(detail::SegmentHeader&)>& mutate, std::size_t file_size = 0) {
  Segment original = Segment::create(Geometry{2, 256, 4});
  std::vector<std::byte> bytes(original.size_bytes());
  std::memcpy(bytes.data(), original.base(), bytes.size());
  detail::SegmentHeader header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  mutate(header);
  std::memcpy(bytes.data(), &header, sizeof(header));
  if (file_size == 0) {
    file_size = bytes.size();
  }
  const int fd = ::memfd_create("forged", MFD_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(file_size)), 0);
  const std::size_t to_write = std::min(file_size, bytes.size());
  EXPECT_EQ(::pwrite(fd, bytes.data(), to_write, 0), static_cast<ssize_t>(to_write));
  return fd;
}

std::string attach_error(int fd) {
  auto attached = Segment::attach(fd);
  if (std::holds_alternative<Segment>(attached)) {
    return "";
  }
  return std::get<std::string>(attached);
}

TEST(Segment, AttachSeesTheCreatorsGeometryAndMemory) {
  Segment host = Segment::create(Geometry{3, 480, 8});
  Segment sandbox = attach_or_fail(::fcntl(host.fd(), F_DUPFD_CLOEXEC, 0));
  EXPECT_EQ(sandbox.geometry().channels, 3U);
  EXPECT_EQ(sandbox.geometry().max_frames, 480U);
  EXPECT_EQ(sandbox.geometry().slot_count, 8U);
  EXPECT_EQ(sandbox.size_bytes(), host.size_bytes());
  EXPECT_NE(sandbox.base(), host.base());  // two mappings of one file

  auto* host_bytes = static_cast<unsigned char*>(host.base());
  auto* sandbox_bytes = static_cast<unsigned char*>(sandbox.base());
  host_bytes[host.size_bytes() - 1] = 0x5a;
  EXPECT_EQ(sandbox_bytes[sandbox.size_bytes() - 1], 0x5a);
}

TEST(Segment, HeaderSizeIsTheInSegmentHeader) {
  EXPECT_EQ(Segment::header_size(), sizeof(detail::SegmentHeader));
  Segment segment = Segment::create(Geometry{});
  detail::SegmentHeader header;
  std::memcpy(&header, segment.base(), sizeof(header));
  EXPECT_EQ(header.magic, detail::segment_magic);
  EXPECT_EQ(header.layout_version, layout_version);
  EXPECT_EQ(header.header_size, Segment::header_size());
  EXPECT_EQ(header.total_size, segment.size_bytes());
}

TEST(Segment, CreateRejectsGeometryOutOfRange) {
  EXPECT_THROW((void)Segment::create(Geometry{0, 256, 4}), std::invalid_argument);
  EXPECT_THROW((void)Segment::create(Geometry{max_channels + 1, 256, 4}), std::invalid_argument);
  EXPECT_THROW((void)Segment::create(Geometry{2, 0, 4}), std::invalid_argument);
  EXPECT_THROW((void)Segment::create(Geometry{2, max_frames_limit + 1, 4}), std::invalid_argument);
  EXPECT_THROW((void)Segment::create(Geometry{2, 256, 1}), std::invalid_argument);
  EXPECT_THROW((void)Segment::create(Geometry{2, 256, 3}), std::invalid_argument);
  EXPECT_THROW((void)Segment::create(Geometry{2, 256, max_slots * 2}), std::invalid_argument);
  EXPECT_NO_THROW((void)Segment::create(Geometry{max_channels, max_frames_limit, max_slots}));
}

TEST(Segment, ChannelsAreCacheLineAligned) {
  Segment segment = Segment::create(Geometry{2, 37, 4});
  const detail::Layout layout = detail::compute_layout(segment.geometry());
  EXPECT_EQ(layout.channel_stride_bytes % cache_line_size, 0U);
  EXPECT_EQ(layout.slots % cache_line_size, 0U);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(segment.base()) % cache_line_size, 0U);
}

TEST(Segment, AttachAcceptsAnUnalteredCopy) {
  EXPECT_EQ(attach_error(forged_segment_fd([](detail::SegmentHeader&) {})), "");
}

TEST(Segment, AttachRejectsBadMagic) {
  const std::string error = attach_error(forged_segment_fd([](auto& h) { h.magic ^= 1; }));
  EXPECT_NE(error.find("magic"), std::string::npos) << error;
}

TEST(Segment, AttachRejectsWrongLayoutVersion) {
  const std::string error = attach_error(forged_segment_fd([](auto& h) { h.layout_version = layout_version + 1; }));
  EXPECT_NE(error.find("layout version"), std::string::npos) << error;
}

TEST(Segment, AttachRejectsWrongHeaderSize) {
  const std::string error = attach_error(forged_segment_fd([](auto& h) { h.header_size = 64; }));
  EXPECT_NE(error.find("header size"), std::string::npos) << error;
}

TEST(Segment, AttachRejectsGeometryOutOfRange) {
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.channels = 0; })).find("geometry"), std::string::npos);
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.max_frames = 1U << 30; })).find("geometry"),
            std::string::npos);
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.slot_count = 3; })).find("geometry"), std::string::npos);
}

TEST(Segment, AttachRejectsOffsetsThatDisagreeWithTheGeometry) {
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.slots_offset += 64; })), "");
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.channel_stride_bytes = 4; })), "");
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.total_size = 1U << 20; })), "");
  // A geometry change that is in range but does not match the rest of the header.
  EXPECT_NE(attach_error(forged_segment_fd([](auto& h) { h.slot_count = 8; })), "");
}

TEST(Segment, AttachRejectsTruncatedFd) {
  const std::size_t full = Segment::create(Geometry{2, 256, 4}).size_bytes();
  const std::string error = attach_error(forged_segment_fd([](auto&) {}, full - 1));
  EXPECT_NE(error.find("truncated"), std::string::npos) << error;
  const std::string tiny = attach_error(forged_segment_fd([](auto&) {}, 16));
  EXPECT_NE(tiny.find("truncated"), std::string::npos) << tiny;
}

TEST(Segment, AttachRejectsAnEmptyFile) {
  const int fd = ::memfd_create("empty", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_NE(attach_error(fd).find("truncated"), std::string::npos);
}

TEST(Segment, AttachRejectsWhatIsNotAMemoryFile) {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  EXPECT_NE(attach_error(fds[0]), "");  // attach closes it
  ::close(fds[1]);
  EXPECT_NE(attach_error(-1), "");
}

TEST(Segment, SandboxCannotResizeTheSegment) {
  Segment segment = Segment::create(Geometry{});
  const int sandbox_fd = ::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 0);
  ASSERT_GE(sandbox_fd, 0);
  EXPECT_NE(::ftruncate(sandbox_fd, 0), 0);  // sealed: would SIGBUS the host's mapping
  EXPECT_EQ(errno, EPERM);
  EXPECT_NE(::ftruncate(sandbox_fd, static_cast<off_t>(segment.size_bytes() * 2)), 0);
  EXPECT_NE(::fcntl(sandbox_fd, F_ADD_SEALS, F_SEAL_WRITE), 0);  // cannot make it read-only either
  ::close(sandbox_fd);
}

TEST(Segment, MoveTransfersOwnership) {
  Segment first = Segment::create(Geometry{});
  void* base = first.base();
  const int fd = first.fd();
  Segment second = std::move(first);
  EXPECT_EQ(second.base(), base);
  EXPECT_EQ(second.fd(), fd);
  Segment third = Segment::create(Geometry{1, 64, 2});
  third = std::move(second);
  EXPECT_EQ(third.base(), base);
  EXPECT_EQ(third.geometry().max_frames, Geometry{}.max_frames);
}

}  // namespace
}  // namespace sandpipe::shm
