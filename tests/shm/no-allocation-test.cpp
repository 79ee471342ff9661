// Proves the host side of the block channel allocates nothing after setup: this binary replaces
// the global operator new (and, outside sanitizer builds, malloc and friends) with counting
// versions, then runs 100k submit/wait round trips against a real child process.
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "shm/block-channel.h"
#include "shm/segment.h"
#include "tests/shm/child-process.h"

namespace {
std::atomic<std::uint64_t> allocations{0};
}  // namespace

// ---- counting allocation functions (process-wide in this test binary) ----

void* operator new(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return operator new(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](std::size_t size, const std::nothrow_t& tag) noexcept { return operator new(size, tag); }
void* operator new(std::size_t size, std::align_val_t align) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  const auto alignment = static_cast<std::size_t>(align);
  if (void* p = std::aligned_alloc(alignment, (size + alignment - 1) / alignment * alignment)) {
    return p;
  }
  throw std::bad_alloc();
}
void* operator new[](std::size_t size, std::align_val_t align) { return operator new(size, align); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

// The C allocator too, so a malloc hidden in a library call would count. Sanitizer runtimes
// interpose malloc themselves, so there only operator new is counted.
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_calloc(count, size);
}
void* realloc(void* p, std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_realloc(p, size);
}
void* aligned_alloc(std::size_t alignment, std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, size);
}
void* memalign(std::size_t alignment, std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  return __libc_memalign(alignment, size);
}
int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  void* p = __libc_memalign(alignment, size);
  if (p == nullptr) {
    return ENOMEM;
  }
  *out = p;
  return 0;
}
void free(void* p) { __libc_free(p); }
}
inline constexpr bool counts_malloc = true;
#else
inline constexpr bool counts_malloc = false;
#endif

namespace sandpipe::shm {
namespace {

TEST(HostEndpoint, CountingAllocatorSeesAllocations) {
  const std::uint64_t before = allocations.load();
  auto* p = new int(3);
  delete p;
  EXPECT_GT(allocations.load(), before);
  if (counts_malloc) {
    const std::uint64_t after_new = allocations.load();
    void* q = std::malloc(16);
    std::free(q);
    EXPECT_GT(allocations.load(), after_new);
  }
}

TEST(HostEndpoint, AllocatesNothingAcrossRoundTrips) {
  Segment segment = Segment::create(Geometry{2, 512, 4});
  HostEndpoint host(segment);
  const int fd = ::fcntl(segment.fd(), F_DUPFD_CLOEXEC, 10);
  testing::ChildProcess child(SANDPIPE_SHM_TEST_CHILD, {"echo", std::to_string(fd)}, {fd});
  ::close(fd);

  constexpr std::uint32_t round_trips = 100'000;
  std::uint32_t failures = 0;
  std::uint32_t completed = 0;
  std::uint64_t allocations_during = 0;
  {
    const std::uint64_t before = allocations.load();
    for (std::uint32_t seq = 0; seq < round_trips && failures == 0; ++seq) {
      // Half the time sleep at once, to cover the futex path as well as the spin.
      host.set_spin_ns(seq % 2 == 0 ? HostEndpoint::default_spin_ns : 0);
      const Job job{seq, seq & 3, 512, 0};
      for (std::uint32_t ch = 0; ch < 2; ++ch) {
        float* samples = host.channel_rt(job.slot, ch);
        for (std::uint32_t i = 0; i < job.frames; ++i) {
          samples[i] = static_cast<float>(i);
        }
      }
      failures += host.submit_rt(job) ? 0 : 1;
      Completion done;
      WaitResult result = WaitResult::timeout;
      while (result == WaitResult::timeout) {
        result = host.wait_complete_rt(done, now_ns() + 1'000'000'000);
      }
      failures += (result == WaitResult::ready && done.seq == seq) ? 0 : 1;
      failures += host.channel_rt(done.slot, 1)[511] == 1023.0F ? 0 : 1;
      completed += 1;
    }
    allocations_during = allocations.load() - before;
  }
  EXPECT_EQ(failures, 0U);
  EXPECT_EQ(completed, round_trips);
  EXPECT_EQ(allocations_during, 0U);
  host.notify_control();
  (void)child.wait();
}

}  // namespace
}  // namespace sandpipe::shm
