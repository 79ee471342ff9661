// ParamQueue over spa_ringbuffer: first in, first out, full at its capacity, and still right
// after the free-running indices have wrapped around the array many times.
#include <gtest/gtest.h>

#include <thread>

#include "host/node/param-queue.h"

namespace sandpipe::host {
namespace {

ParamChange change(std::uint32_t n) { return {n % 7, n, static_cast<float>(n)}; }

TEST(ParamQueue, PopsInOrderAndRefusesPushesWhenFull) {
  ParamQueue q;
  ParamChange out;
  EXPECT_FALSE(q.pop(out));
  for (std::uint32_t i = 0; i < ParamQueue::capacity; ++i) ASSERT_TRUE(q.push(change(i))) << i;
  EXPECT_FALSE(q.push(change(ParamQueue::capacity)));
  for (std::uint32_t i = 0; i < ParamQueue::capacity; ++i) {
    ASSERT_TRUE(q.pop(out)) << i;
    EXPECT_EQ(out.index, i);
    EXPECT_EQ(out.slot, i % 7);
  }
  EXPECT_FALSE(q.pop(out));
}

TEST(ParamQueue, KeepsOrderAcrossWrapAroundsBetweenTwoThreads) {
  ParamQueue q;
  constexpr std::uint32_t total = ParamQueue::capacity * 64 + 3;
  std::thread producer([&q] {
    for (std::uint32_t i = 0; i < total;) {
      if (q.push(change(i))) {
        ++i;
      } else {
        std::this_thread::yield();
      }
    }
  });
  std::uint32_t next = 0;
  ParamChange out;
  while (next < total) {
    if (!q.pop(out)) {
      std::this_thread::yield();
      continue;
    }
    ASSERT_EQ(out.index, next);
    ASSERT_EQ(out.value, static_cast<float>(next));
    ++next;
  }
  producer.join();
  EXPECT_FALSE(q.pop(out));
}

}  // namespace
}  // namespace sandpipe::host
