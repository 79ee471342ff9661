// Segment: a sealed memfd mapped with Boost.Interprocess, and its header.
#include "shm/segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <kj/io.h>

#include <boost/interprocess/mapped_region.hpp>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "shm/layout.h"

namespace sandpipe::shm {
namespace bip = boost::interprocess;

namespace {

/// Presents a memfd to bip::mapped_region, which maps anything that hands out a mapping handle
/// and a mode (the same interface as bip::shared_memory_object, which would need a name in
/// /dev/shm that other processes could open).
class MemfdMappable {
 public:
  explicit MemfdMappable(int fd) noexcept : fd_(fd) {}
  [[nodiscard]] bip::mapping_handle_t get_mapping_handle() const noexcept {
    bip::mapping_handle_t handle{};  // the public POSIX handle type: an fd, not a System V id
    handle.handle = fd_;
    handle.is_xsi = false;
    return handle;
  }
  [[nodiscard]] bip::mode_t get_mode() const noexcept { return bip::read_write; }

 private:
  int fd_;
};

/// Maps `size` bytes of `fd` read-write and shared, faulting every page in now so that the
/// real-time side never takes a page fault on first touch.
bip::mapped_region map_fd(int fd, std::size_t size) {
  return bip::mapped_region(MemfdMappable(fd), bip::read_write, 0, size, nullptr, MAP_POPULATE);
}

[[noreturn]] void throw_errno(const char* what) {
  throw std::system_error(errno, std::system_category(), what);
}

}  // namespace

struct Segment::Impl {
  kj::AutoCloseFd fd;
  Geometry geometry;
  detail::Layout layout;
  bip::mapped_region region;

  Impl(kj::AutoCloseFd fd_in, const Geometry& geometry_in, bip::mapped_region&& region_in) noexcept
      : fd(std::move(fd_in)), geometry(geometry_in), layout(detail::compute_layout(geometry_in)), region(std::move(region_in)) {}
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  Impl(Impl&&) = delete;
  Impl& operator=(Impl&&) = delete;
  ~Impl() = default;
};

Segment::Segment(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}
Segment::Segment(Segment&&) noexcept = default;
Segment& Segment::operator=(Segment&&) noexcept = default;
Segment::~Segment() = default;

Segment Segment::create(const Geometry& geometry) {
  if (!detail::geometry_valid(geometry)) {
    throw std::invalid_argument(
        "shm: geometry out of range (channels 1..8, max_frames 1..8192, slot_count a power of two "
        "in 2..16)");
  }
  const detail::Layout layout = detail::compute_layout(geometry);

  kj::AutoCloseFd fd(::memfd_create("sandpipe-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (fd.get() < 0) {
    throw_errno("memfd_create");
  }
  if (::ftruncate(fd.get(), static_cast<off_t>(layout.total_size)) != 0) {
    throw_errno("ftruncate");
  }
  // The sandbox receives this fd. Sealing the size means it cannot shrink the file under our
  // mapping, which would turn the host's next access into SIGBUS.
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    throw_errno("fcntl(F_ADD_SEALS)");
  }

  bip::mapped_region region;
  try {
    region = map_fd(fd.get(), layout.total_size);
  } catch (const bip::interprocess_exception& e) {
    throw std::system_error(e.get_native_error(), std::system_category(), "mapping the segment");
  }

  // A fresh memfd reads as zeros: every index, futex word and sample starts at 0.
  auto* base = static_cast<std::byte*>(region.get_address());
  detail::SegmentHeader header{};
  header.magic = detail::segment_magic;
  header.layout_version = layout_version;
  header.header_size = sizeof(detail::SegmentHeader);
  header.channels = geometry.channels;
  header.max_frames = geometry.max_frames;
  header.slot_count = geometry.slot_count;
  header.channel_stride_bytes = static_cast<std::uint32_t>(layout.channel_stride_bytes);
  header.total_size = layout.total_size;
  header.jobs_offset = layout.jobs_control;
  header.completions_offset = layout.completions_control;
  header.control_offset = layout.control;
  header.slots_offset = layout.slots;
  std::memcpy(base, &header, sizeof(header));
  new (base + layout.jobs_control) RingControl{};
  new (base + layout.completions_control) RingControl{};
  new (base + layout.control) detail::ControlNotify{};

  auto impl = std::make_unique<Impl>(std::move(fd), geometry, std::move(region));
  return Segment(std::move(impl));
}

std::variant<Segment, std::string> Segment::attach(int fd_in) {
  kj::AutoCloseFd fd(fd_in);
  if (fd_in < 0) {
    return std::string("shm: invalid fd");
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    return "shm: fstat failed: " + std::error_code(errno, std::system_category()).message();
  }
  if (!S_ISREG(st.st_mode)) {
    return std::string("shm: fd is not a memory file");
  }
  const auto file_size = static_cast<std::size_t>(st.st_size);
  if (st.st_size < 0 || file_size < sizeof(detail::SegmentHeader)) {
    return std::string("shm: segment truncated: ") + std::to_string(st.st_size) +
           " bytes, smaller than the header";
  }
  if (file_size > detail::max_segment_size) {
    return std::string("shm: segment larger than any valid geometry: ") + std::to_string(file_size) +
           " bytes";
  }

  bip::mapped_region region;
  try {
    region = map_fd(fd.get(), file_size);
  } catch (const bip::interprocess_exception& e) {
    return std::string("shm: cannot map the segment: ") + e.what();
  }

  // One copy, then every check on the copy: the creator could still be writing the shared one.
  detail::SegmentHeader header{};
  std::memcpy(&header, region.get_address(), sizeof(header));
  if (header.magic != detail::segment_magic) {
    return std::string("shm: bad magic (not a sandpipe segment)");
  }
  if (header.layout_version != layout_version) {
    return "shm: layout version " + std::to_string(header.layout_version) + ", this build knows " +
           std::to_string(layout_version);
  }
  if (header.header_size != sizeof(detail::SegmentHeader)) {
    return "shm: header size " + std::to_string(header.header_size) + ", this build knows " +
           std::to_string(sizeof(detail::SegmentHeader));
  }
  const Geometry geometry{header.channels, header.max_frames, header.slot_count};
  if (!detail::geometry_valid(geometry)) {
    return "shm: geometry out of range: channels " + std::to_string(header.channels) + ", max_frames " +
           std::to_string(header.max_frames) + ", slot_count " + std::to_string(header.slot_count);
  }
  const detail::Layout layout = detail::compute_layout(geometry);
  if (header.channel_stride_bytes != layout.channel_stride_bytes || header.jobs_offset != layout.jobs_control ||
      header.completions_offset != layout.completions_control || header.control_offset != layout.control ||
      header.slots_offset != layout.slots || header.total_size != layout.total_size) {
    return std::string("shm: header offsets or sizes disagree with its geometry");
  }
  if (file_size < layout.total_size) {
    return "shm: segment truncated: " + std::to_string(file_size) + " bytes, header says " +
           std::to_string(layout.total_size);
  }
  auto impl = std::make_unique<Impl>(std::move(fd), geometry, std::move(region));
  return Segment(std::move(impl));
}

int Segment::fd() const noexcept { return impl_->fd.get(); }
const Geometry& Segment::geometry() const noexcept { return impl_->geometry; }
void* Segment::base() const noexcept { return impl_->region.get_address(); }
std::size_t Segment::size_bytes() const noexcept { return impl_->layout.total_size; }
std::uint32_t Segment::header_size() noexcept { return sizeof(detail::SegmentHeader); }

namespace detail {

SegmentParts segment_parts(void* base, const Layout& layout) noexcept {
  auto* bytes = static_cast<std::byte*>(base);
  return SegmentParts{
      std::launder(reinterpret_cast<RingControl*>(bytes + layout.jobs_control)),
      reinterpret_cast<Job*>(bytes + layout.jobs_entries),
      std::launder(reinterpret_cast<RingControl*>(bytes + layout.completions_control)),
      reinterpret_cast<Completion*>(bytes + layout.completions_entries),
      std::launder(reinterpret_cast<ControlNotify*>(bytes + layout.control)),
      bytes + layout.slots,
  };
}

void set_ring_indices_for_testing(Segment& segment, std::uint32_t start) noexcept {
  const SegmentParts parts = segment_parts(segment.base(), compute_layout(segment.geometry()));
  for (RingControl* ring : {parts.jobs_control, parts.completions_control}) {
    ring->write.store(start, std::memory_order_relaxed);
    ring->read.store(start, std::memory_order_relaxed);
  }
}

}  // namespace detail
}  // namespace sandpipe::shm
