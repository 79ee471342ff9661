// NativeProcessor::process_rt must not touch the heap: this binary replaces operator new/delete and
// interposes malloc/calloc/realloc to count every allocation made on the testing thread while armed.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "native-test-util.h"

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

namespace sandpipe::test {
namespace {

using host::ParamSetting;

TEST(AllocationCounter, SeesNewAndMallocFromHereAndFromPlugins) {
  if (!SANDPIPE_TEST_COUNT_ALLOCATIONS) GTEST_SKIP() << "allocations are not counted under sanitizers";
  // A plugin's instantiate allocates with calloc (C) or new (C++): both must be seen.
  std::size_t counted = 0;
  {
    AllocationScope scope;
    void* volatile raw = std::malloc(16);
    std::free(raw);
    int* volatile boxed = new int(1);
    delete boxed;
    auto invert = make(library_spec("inv", fixture_path("invert.so")));  // calloc inside the plugin
    auto gain = make(builtin_spec("g", "gain"));                         // new inside the plugin
    counted = scope.count();
  }
  EXPECT_GE(counted, 4u);
}

TEST(NativeProcessor, ProcessRtAllocatesNothing) {
  if (!SANDPIPE_TEST_COUNT_ALLOCATIONS) GTEST_SKIP() << "allocations are not counted under sanitizers";
  constexpr std::uint32_t channels = 2;
  constexpr std::uint32_t max_frames = 512;
  std::vector<std::unique_ptr<host::Processor>> processors;
  auto add = [&](const host::PluginSpec& spec) {
    processors.push_back(make(spec, channels, test_rate, max_frames));
  };
  add(builtin_spec("g", "gain", {{"gain", 0.5}}));
  for (const char* type :
       {"lowpass", "highpass", "bandpass", "notch", "peaking", "lowshelf", "highshelf", "allpass"}) {
    add(builtin_spec("eq", "biquad", {{"type", std::string(type)}, {"gain", 3.0}}));
  }
  add(builtin_spec("d", "delay", {{"ms", 3.0}}));
  add(library_spec("inv", fixture_path("invert.so")));
  add(library_spec("p", fixture_path("poison.so"), {{"latency", 7.0}, {"period", 2.0}}));  // sanitize path

  // Buffers made before arming; every block size from 1 to max_frames appears.
  std::vector<std::vector<float>> in(channels, std::vector<float>(max_frames, 0.25f));
  std::vector<std::vector<float>> out(channels, std::vector<float>(max_frames));
  std::vector<const float*> in_ptrs = {in[0].data(), in[1].data()};
  std::vector<float*> out_ptrs = {out[0].data(), out[1].data()};
  const std::uint32_t sizes[] = {1, 2, 3, 5, 64, 127, 256, 511, 512};

  std::size_t counted = 0;
  {
    AllocationScope scope;
    for (int round = 0; round < 20; ++round) {
      for (std::uint32_t frames : sizes) {
        for (auto& processor : processors)
          (void)processor->process_rt(in_ptrs.data(), out_ptrs.data(), frames, {});
      }
    }
    counted = scope.count();
  }
  EXPECT_EQ(counted, 0u);
  EXPECT_GT(processors.back()->counters().sanitized_blocks, 0u);  // the sanitize path did run
}

}  // namespace
}  // namespace sandpipe::test
