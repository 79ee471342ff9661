// PythonSlot::process_rt must not touch the heap during a reload hand-over either (two
// lanes, the wet → wet crossfade, the lane swap at its end): this binary counts every
// allocation made on the testing thread while armed (tests/alloc-counting.h).
#include <gtest/gtest.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "alloc-counting.h"
#include "fake-sandbox-thread.h"
#include "host/python/sandbox-client.h"
#include "host/python/sandbox-link.h"
#include "sandbox-test-util.h"

namespace sandpipe::sandbox_test {
namespace {

constexpr std::uint32_t channels = 2;

TEST(AllocationCounter, SeesNewFromHere) {
#if SANDPIPE_TEST_COUNT_ALLOCATIONS
  AllocationScope scope;
  auto* p = new int(1);  // NOLINT(cppcoreguidelines-owning-memory)
  delete p;              // NOLINT(cppcoreguidelines-owning-memory)
  EXPECT_GE(scope.count(), 1U);
#else
  GTEST_SKIP() << "a sanitizer owns malloc";
#endif
}

TEST(SandboxHandover, ProcessAllocatesNothingThroughAReload) {
#if !SANDPIPE_TEST_COUNT_ALLOCATIONS
  GTEST_SKIP() << "a sanitizer owns malloc";
#endif
  for (const std::uint32_t k : {0U, 1U}) {
    auto proc = start_one(python_spec("gain", examples_dir() / "gain.py", {{"gain", 0.5, 1}}), channels, 256);
    proc->set_pipeline(k, 256);
    const Signal in = test_signal(channels, 12 * 256, 31);
    Signal out(channels, in.frames);
    auto call = [&](std::uint32_t b) {
      const float* ins[channels] = {in.ch(0) + b * 256, in.ch(1) + b * 256};
      float* outs[channels] = {out.ch(0) + b * 256, out.ch(1) + b * 256};
      AllocationScope scope;
      const BlockStatus s = proc->process_rt(ins, outs, 256, host::ProcessContext{deadline_in(generous)});
      EXPECT_EQ(scope.count(), 0U) << "block " << b << ", k = " << k;
      return s;
    };
    for (std::uint32_t b = 0; b < 4; ++b) EXPECT_EQ(call(b), BlockStatus::processed);
    auto link = std::make_unique<host::SandboxLink>(shm::Segment::create(shm::Geometry{channels, 256, 4}),
                                                    proc->next_link_generation());
    FakeSandbox fake(link->segment, 0.25F);
    ASSERT_TRUE(proc->replace_link(std::move(link), host::LinkSwap::reload));
    bool handed_over = false;
    for (std::uint32_t b = 4; b < 12; ++b) {
      EXPECT_EQ(call(b), BlockStatus::processed);
      handed_over = handed_over || proc->handing_over();
    }
    // Sync: the whole hand-over (64 frames) happens inside the first call; pipelined it spans
    // the call that still reads the old version's block.
    if (k > 0) {
      EXPECT_TRUE(handed_over) << "the reload switched without a hand-over";
    }
    EXPECT_FALSE(proc->handing_over());
    EXPECT_EQ(proc->active_generation(), 2U);
    EXPECT_EQ(out.ch(0)[in.frames - 1], in.ch(0)[in.frames - 1 - k * 256] * 0.25F);
  }
}

}  // namespace
}  // namespace sandpipe::sandbox_test
