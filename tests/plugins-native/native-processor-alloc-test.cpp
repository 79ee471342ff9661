// NativeProcessor::process_rt must not touch the heap: this binary replaces operator new/delete and
// interposes malloc/calloc/realloc (tests/alloc-counting.h) to count every allocation made on the
// testing thread while armed.
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "alloc-counting.h"
#include "native-test-util.h"

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
