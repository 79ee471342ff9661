// A sandbox stand-in for the scheduler tests: the sandbox side of a segment served by a thread
// of the test process, multiplying every job by a gain.
#pragma once

#include <fcntl.h>

#include <atomic>
#include <optional>
#include <thread>
#include <variant>

#include "shm/block-channel.h"
#include "shm/segment.h"

namespace sandpipe::sandbox_test {

/// A sandbox stand-in in this process: a second mapping of the segment and a thread that
/// multiplies every job by `gain` and completes it.
class FakeSandbox {
 public:
  FakeSandbox(shm::Segment& host_segment, float gain) : gain_(gain) {
    auto attached = shm::Segment::attach(::fcntl(host_segment.fd(), F_DUPFD_CLOEXEC, 0));
    segment_.emplace(std::move(std::get<shm::Segment>(attached)));
    endpoint_.emplace(*segment_);
    thread_ = std::thread([this] { run(); });
  }
  FakeSandbox(const FakeSandbox&) = delete;
  FakeSandbox& operator=(const FakeSandbox&) = delete;
  ~FakeSandbox() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    while (!stop_) {
      shm::Job job;
      if (endpoint_->wait(job, 5'000'000) != shm::SandboxEndpoint::Wake::job) continue;
      for (std::uint32_t ch = 0; ch < endpoint_->geometry().channels; ++ch) {
        float* x = endpoint_->channel(job.slot, ch);
        for (std::uint32_t i = 0; i < job.frames; ++i) x[i] *= gain_;
      }
      endpoint_->complete(shm::Completion{job.seq, job.slot, job.frames, 0});
    }
  }

  float gain_;
  std::optional<shm::Segment> segment_;
  std::optional<shm::SandboxEndpoint> endpoint_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sandpipe::sandbox_test
