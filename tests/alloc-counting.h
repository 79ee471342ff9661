// Counts heap allocations on the testing thread: replaces operator new/delete and interposes
// malloc/calloc/realloc for the whole process. Include it in exactly one file of a test binary
// of its own (tests that prove [rt] code never touches the heap).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANDPIPE_TEST_COUNT_ALLOCATIONS 0  // the sanitizer runtimes own malloc
#else
#define SANDPIPE_TEST_COUNT_ALLOCATIONS 1
#endif

namespace {

std::atomic<std::size_t> allocations{0};
thread_local bool armed = false;  // static TLS of the executable: reading it never allocates

/// Counts allocations on this thread for the scope's lifetime.
class AllocationScope {
 public:
  AllocationScope() noexcept {
    allocations.store(0);
    armed = true;
  }
  ~AllocationScope() { armed = false; }
  AllocationScope(const AllocationScope&) = delete;
  AllocationScope& operator=(const AllocationScope&) = delete;
  AllocationScope(AllocationScope&&) = delete;
  AllocationScope& operator=(AllocationScope&&) = delete;
  [[nodiscard]] std::size_t count() const noexcept { return allocations.load(); }
};

}  // namespace

#if SANDPIPE_TEST_COUNT_ALLOCATIONS
namespace {
void note_allocation() noexcept {
  if (armed) allocations.fetch_add(1, std::memory_order_relaxed);
}
}  // namespace

// NOLINTBEGIN(bugprone-reserved-identifier)
extern "C" {
void* __libc_malloc(std::size_t size);  // glibc's own allocator, under the interposable names
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* ptr, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
void __libc_free(void* ptr);
// NOLINTEND(bugprone-reserved-identifier)

void* malloc(std::size_t size) noexcept {
  note_allocation();
  return __libc_malloc(size);
}
void* calloc(std::size_t count, std::size_t size) noexcept {
  note_allocation();
  return __libc_calloc(count, size);
}
void* realloc(void* ptr, std::size_t size) noexcept {
  note_allocation();
  return __libc_realloc(ptr, size);
}
void free(void* ptr) noexcept { __libc_free(ptr); }
}

namespace {
void* counted_new(std::size_t size, std::size_t alignment = 0) {
  note_allocation();
  if (size == 0) size = 1;
  void* p = alignment > alignof(std::max_align_t) ? __libc_memalign(alignment, size) : __libc_malloc(size);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
void* counted_new_nothrow(std::size_t size, std::size_t alignment = 0) noexcept {
  try {
    return counted_new(size, alignment);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
}  // namespace

void* operator new(std::size_t size) { return counted_new(size); }
void* operator new[](std::size_t size) { return counted_new(size); }
void* operator new(std::size_t size, std::align_val_t al) {
  return counted_new(size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al) {
  return counted_new(size, static_cast<std::size_t>(al));
}
void* operator new(std::size_t size, const std::nothrow_t&) noexcept { return counted_new_nothrow(size); }
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept { return counted_new_nothrow(size); }
void* operator new(std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_new_nothrow(size, static_cast<std::size_t>(al));
}
void* operator new[](std::size_t size, std::align_val_t al, const std::nothrow_t&) noexcept {
  return counted_new_nothrow(size, static_cast<std::size_t>(al));
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { __libc_free(p); }
#endif
