// Single-process semantics of the shared-memory SPSC ring: order, full, empty, wrap-around of the
// free-running 32-bit indices, and rejection of impossible peer indices.
#include "shm/spsc-ring.h"

#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <limits>

namespace sandpipe::shm {
namespace {

struct Entry {
  std::uint32_t a = 0;
  std::uint32_t b = 0;
};

/// A ring in ordinary memory, laid out as in a segment, with indices starting at `start`.
template <std::uint32_t Capacity>
struct TestRing {
  explicit TestRing(std::uint32_t start = 0) {
    control.write.store(start);
    control.read.store(start);
    producer = SpscProducer<Entry>(&control, entries.data(), Capacity);
    consumer = SpscConsumer<Entry>(&control, entries.data(), Capacity);
  }
  RingControl control{};
  std::array<Entry, Capacity> entries{};
  SpscProducer<Entry> producer;
  SpscConsumer<Entry> consumer;
};

TEST(SpscRing, PopsInPushOrder) {
  TestRing<4> ring;
  for (std::uint32_t i = 0; i < 3; ++i) {
    ASSERT_EQ(ring.producer.try_push({i, i * 10}), PushResult::ok);
  }
  for (std::uint32_t i = 0; i < 3; ++i) {
    Entry out;
    ASSERT_EQ(ring.consumer.try_pop(out), PopResult::ok);
    EXPECT_EQ(out.a, i);
    EXPECT_EQ(out.b, i * 10);
  }
}

TEST(SpscRing, PopFailsWhenEmpty) {
  TestRing<4> ring;
  Entry out{7, 7};
  EXPECT_EQ(ring.consumer.try_pop(out), PopResult::empty);
  EXPECT_EQ(out.a, 7U);
  ASSERT_EQ(ring.producer.try_push({1, 1}), PushResult::ok);
  ASSERT_EQ(ring.consumer.try_pop(out), PopResult::ok);
  EXPECT_EQ(ring.consumer.try_pop(out), PopResult::empty);
}

TEST(SpscRing, PushFailsWhenFull) {
  TestRing<4> ring;
  for (std::uint32_t i = 0; i < 4; ++i) {
    ASSERT_EQ(ring.producer.try_push({i, 0}), PushResult::ok);
  }
  EXPECT_EQ(ring.producer.try_push({99, 0}), PushResult::full);
  Entry out;
  ASSERT_EQ(ring.consumer.try_pop(out), PopResult::ok);
  EXPECT_EQ(out.a, 0U);
  EXPECT_EQ(ring.producer.try_push({4, 0}), PushResult::ok);
  EXPECT_EQ(ring.producer.try_push({5, 0}), PushResult::full);
}

TEST(SpscRing, WrapsAroundTheFreeRunningIndices) {
  constexpr std::uint32_t start = std::numeric_limits<std::uint32_t>::max() - 5;
  TestRing<4> ring(start);
  std::uint32_t next_pushed = 0;
  std::uint32_t next_popped = 0;
  // Walk the indices well past 2^32, alternating bursts that fill the ring and drain it.
  for (int round = 0; round < 8; ++round) {
    while (ring.producer.try_push({next_pushed, ~next_pushed}) == PushResult::ok) {
      ++next_pushed;
    }
    EXPECT_EQ(next_pushed - next_popped, 4U);
    Entry out;
    while (ring.consumer.try_pop(out) == PopResult::ok) {
      ASSERT_EQ(out.a, next_popped);
      ASSERT_EQ(out.b, ~next_popped);
      ++next_popped;
    }
  }
  EXPECT_EQ(next_popped, 32U);
  EXPECT_EQ(ring.control.write.load(), start + 32);  // wrapped: now a small number
  EXPECT_LT(ring.control.write.load(), start);
  EXPECT_EQ(ring.control.read.load(), ring.control.write.load());
}

TEST(SpscRing, PushReportsCorruptWhenReadIndexIsAhead) {
  TestRing<4> ring;
  ASSERT_EQ(ring.producer.try_push({1, 0}), PushResult::ok);
  ring.control.read.store(5);  // consumer claims to have read entries never pushed
  EXPECT_EQ(ring.producer.try_push({2, 0}), PushResult::corrupt);
}

TEST(SpscRing, PushReportsCorruptWhenReadIndexFallsTooFarBehind) {
  TestRing<4> ring(100);
  ring.control.read.store(100 - 5);  // would mean 5 entries used in a ring of 4
  ASSERT_EQ(ring.producer.try_push({1, 0}), PushResult::corrupt);
}

TEST(SpscRing, PopReportsCorruptWhenWriteIndexRunsTooFarAhead) {
  TestRing<4> ring;
  ring.control.write.store(5);
  Entry out;
  EXPECT_EQ(ring.consumer.try_pop(out), PopResult::corrupt);
}

TEST(SpscRing, PopReportsCorruptWhenWriteIndexMovesBackwards) {
  TestRing<4> ring(1000);
  ASSERT_EQ(ring.producer.try_push({1, 0}), PushResult::ok);
  ASSERT_EQ(ring.producer.try_push({2, 0}), PushResult::ok);
  Entry out;
  ASSERT_EQ(ring.consumer.try_pop(out), PopResult::ok);
  // Write index was seen at 1002; moving it back to 1001 still looks like "empty", but it went
  // backwards, which no honest producer does.
  ring.control.write.store(1001);
  EXPECT_EQ(ring.consumer.try_pop(out), PopResult::corrupt);
}

TEST(SpscRing, PopRespectsACallerBoundOnAvailableEntries) {
  TestRing<4> ring;
  ASSERT_EQ(ring.producer.try_push({1, 0}), PushResult::ok);
  ASSERT_EQ(ring.producer.try_push({2, 0}), PushResult::ok);
  Entry out;
  EXPECT_EQ(ring.consumer.try_pop(out, 1), PopResult::corrupt);
  EXPECT_EQ(ring.consumer.try_pop(out, 2), PopResult::ok);
}

TEST(SpscRing, ScribbledOwnIndexDoesNotMoveTheProducer) {
  TestRing<4> ring;
  ASSERT_EQ(ring.producer.try_push({1, 0}), PushResult::ok);
  ring.control.write.store(3);  // someone else overwrote the producer's published index
  ASSERT_EQ(ring.producer.try_push({2, 0}), PushResult::ok);
  EXPECT_EQ(ring.control.write.load(), 2U);  // republished from the private copy
}

TEST(SpscRing, WakeIsSkippedUnlessTheConsumerAnnouncedSleep) {
  TestRing<4> ring;
  ring.producer.wake_consumer();
  EXPECT_EQ(ring.control.sleeping.load(), 0U);
  ring.consumer.announce_sleep();
  EXPECT_EQ(ring.control.sleeping.load(), 1U);
  ring.producer.wake_consumer();  // clears the word (and makes the FUTEX_WAKE)
  EXPECT_EQ(ring.control.sleeping.load(), 0U);
  ring.consumer.sleep(0);  // word no longer 1: returns at once (EAGAIN)
}

TEST(SpscRing, LoadsUntrustedEntryFieldByField) {
  const Entry source{0xdeadbeef, 42};
  const Entry copy = detail::load_untrusted(&source);
  EXPECT_EQ(copy.a, source.a);
  EXPECT_EQ(copy.b, source.b);
}

}  // namespace
}  // namespace sandpipe::shm
