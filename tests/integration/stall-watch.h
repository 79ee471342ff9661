// StallWatch: notices when the machine itself, not the code under test, stops running real-time
// threads in time.
//
// On a shared VM a vCPU can be descheduled by the hypervisor for milliseconds; a PipeWire graph
// then loses a cycle whatever its nodes do (seen here: a graph of one native gain node lost
// 0.27 % of its cycles on an idle 2-vCPU machine, while a SCHED_FIFO thread sleeping 0.5 ms woke
// up to 10 ms late). One thread per CPU, pinned there at a SCHED_FIFO priority above the
// graph's, sleeps to absolute deadlines every `period`; waking more than `threshold` late means
// that CPU ran nothing real-time in the meantime. A test can then tell a cycle the graph lost
// to such a stall from one the node under test lost.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "shm/clock.h"

namespace sandpipe::integration {

/// A span in which one CPU ran no real-time thread for longer than the watch's threshold:
/// between its watcher's previous wake-up and the late one (CLOCK_MONOTONIC, ns).
struct Stall {
  std::uint64_t begin_ns = 0, end_ns = 0;
  int cpu = 0;
};

class StallWatch {
 public:
  /// Starts one watcher per CPU this process may run on. Without permission for SCHED_FIFO the
  /// watchers still run, at normal priority (their stalls then include ordinary preemption:
  /// `realtime()` tells).
  /// The defaults see every stall of 1.5 ms or more (a wake-up 1 ms late, deadlines 0.5 ms
  /// apart), at ~2000 wake-ups a second per CPU.
  explicit StallWatch(std::chrono::microseconds threshold = std::chrono::milliseconds(1),
                      std::chrono::microseconds period = std::chrono::microseconds(500), int priority = 95)
      : threshold_ns_(static_cast<std::uint64_t>(threshold.count()) * 1000),
        period_ns_(static_cast<std::uint64_t>(period.count()) * 1000) {
    cpu_set_t allowed;
    CPU_ZERO(&allowed);
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) CPU_SET(0, &allowed);
    stalls_.reserve(4096);
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (CPU_ISSET(cpu, &allowed)) threads_.emplace_back([this, cpu, priority] { watch(cpu, priority); });
    }
  }
  StallWatch(const StallWatch&) = delete;
  StallWatch& operator=(const StallWatch&) = delete;
  ~StallWatch() {
    stop_.store(true);
    for (std::thread& t : threads_) t.join();
  }

  /// Every stall so far, in no particular order.
  std::vector<Stall> stalls() const {
    std::lock_guard lock(mutex_);
    return stalls_;
  }
  /// Whether some CPU stalled at any moment of [begin_ns, end_ns].
  bool stalled_during(std::uint64_t begin_ns, std::uint64_t end_ns) const {
    std::lock_guard lock(mutex_);
    return std::any_of(stalls_.begin(), stalls_.end(),
                       [&](const Stall& s) { return s.begin_ns <= end_ns && s.end_ns >= begin_ns; });
  }
  /// Whether every watcher got its real-time priority.
  bool realtime() const { return !priority_refused_.load(); }

 private:
  void watch(int cpu, int priority) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pthread_setaffinity_np(pthread_self(), sizeof(one), &one);
    sched_param sp{};
    sp.sched_priority = priority;
    if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) priority_refused_.store(true);
    std::uint64_t last = shm::now_ns();
    std::uint64_t deadline = last + period_ns_;
    while (!stop_.load(std::memory_order_relaxed)) {
      timespec ts{static_cast<time_t>(deadline / 1'000'000'000ULL),
                  static_cast<long>(deadline % 1'000'000'000ULL)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr);
      const std::uint64_t woke = shm::now_ns();
      if (woke > deadline + threshold_ns_) {
        std::lock_guard lock(mutex_);
        stalls_.push_back({last, woke, cpu});
      }
      last = woke;
      deadline = std::max(deadline + period_ns_, woke + period_ns_ / 2);
    }
  }

  const std::uint64_t threshold_ns_, period_ns_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> priority_refused_{false};
  mutable std::mutex mutex_;
  std::vector<Stall> stalls_;
  std::vector<std::thread> threads_;
};

}  // namespace sandpipe::integration
