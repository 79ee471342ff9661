// The sandbox half of the multi-process shm tests: attaches to the segment by fd and plays an
// honest, a dying, or a hostile sandbox.
//
//   shm-test-child echo FD [SPIN_NS]   out = 2 * in + 1 on every frame of every channel; exits on
//                                      a control notification
//   shm-test-child die-after N FD      as echo, but SIGKILLs itself holding job N (never completed)
//   shm-test-child scribble FD         overwrites the whole segment with random values, forever
//   shm-test-child chaos FD            half honest echo, half plausible and random scribbles
#include <signal.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <variant>

#include "shm/block-channel.h"
#include "shm/layout.h"
#include "shm/segment.h"

namespace {

using sandpipe::shm::Completion;
using sandpipe::shm::Job;
using sandpipe::shm::SandboxEndpoint;
using sandpipe::shm::Segment;

constexpr std::uint64_t poll_timeout_ns = 100'000'000;

int echo(Segment& segment, std::uint64_t spin_ns, std::uint64_t die_after) {
  SandboxEndpoint endpoint(segment);
  endpoint.set_spin_ns(spin_ns);
  std::uint64_t jobs = 0;
  for (;;) {
    Job job;
    switch (endpoint.wait(job, poll_timeout_ns)) {
      case SandboxEndpoint::Wake::timeout:
        continue;
      case SandboxEndpoint::Wake::control:
        return 0;
      case SandboxEndpoint::Wake::job:
        break;
    }
    if (jobs++ == die_after) {
      ::raise(SIGKILL);
    }
    for (std::uint32_t ch = 0; ch < endpoint.geometry().channels; ++ch) {
      float* samples = endpoint.channel(job.slot, ch);
      for (std::uint32_t i = 0; i < job.frames; ++i) {
        samples[i] = 2.0F * samples[i] + 1.0F;
      }
    }
    endpoint.complete(Completion{job.seq, job.slot, job.frames, 0});
  }
}

/// xorshift64: cheap, and different in every child.
class Random {
 public:
  Random() noexcept : state_(0x9e3779b97f4a7c15ULL ^ static_cast<std::uint64_t>(::getpid())) {}
  std::uint32_t operator()() noexcept {
    state_ ^= state_ << 13;
    state_ ^= state_ >> 7;
    state_ ^= state_ << 17;
    return static_cast<std::uint32_t>(state_ >> 11);
  }

 private:
  std::uint64_t state_;
};

/// `scribble`: random words at random places over the whole segment, as fast as it can.
/// `chaos`: a mix of honest echo steps, values that look almost right (indices near the real
/// ones, completions naming real slots and seqs) and random words, which gets further into the
/// host's checks than pure noise does.
[[noreturn]] void scribble(Segment& segment, bool chaos) {
  const auto parts = sandpipe::shm::detail::segment_parts(
      segment.base(), sandpipe::shm::detail::compute_layout(segment.geometry()));
  auto* words = static_cast<volatile std::uint32_t*>(segment.base());
  const std::size_t word_count = segment.size_bytes() / sizeof(std::uint32_t);
  const std::uint32_t slots = segment.geometry().slot_count;
  SandboxEndpoint endpoint(segment);
  Random next;
  for (;;) {
    // Chaos corrupts rarely (about once per 2000 steps), so host endpoints live a while first.
    const std::uint32_t choice = chaos ? (next() % 2000 == 0 ? next() % 40 + 60 : 0) : 99;
    if (choice < 60) {
      Job job;
      if (endpoint.wait(job, 0) == SandboxEndpoint::Wake::job) {
        endpoint.complete(Completion{job.seq, job.slot, job.frames, 0});
      }
    } else if (choice < 80) {
      auto& ring = *parts.completions_control;
      const std::uint32_t read = ring.read.load(std::memory_order_relaxed);
      parts.completions[next() % slots] =
          Completion{read + next() % 3 - 1, next() % (slots + 1), next() % 300, next() % 4};
      ring.write.store(read + next() % 7 - 2, std::memory_order_release);
      if (next() % 4 == 0) {
        sandpipe::shm::detail::futex_wake(ring.sleeping);
      }
    } else if (choice < 90) {
      parts.jobs_control->read.store(parts.jobs_control->write.load() + next() % 5 - 2);
    } else {
      words[next() % word_count] = next();
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s echo FD [SPIN_NS] | die-after N FD | scribble FD | chaos FD\n", argv[0]);
    return 2;
  }
  const std::string mode = argv[1];
  const int fd_arg = mode == "die-after" ? 3 : 2;
  if (argc <= fd_arg) {
    return 2;
  }
  auto attached = Segment::attach(std::atoi(argv[fd_arg]));
  if (auto* error = std::get_if<std::string>(&attached)) {
    std::fprintf(stderr, "shm-test-child: %s\n", error->c_str());
    return 3;
  }
  Segment& segment = std::get<Segment>(attached);
  if (mode == "echo") {
    return echo(segment, argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 0, UINT64_MAX);
  }
  if (mode == "die-after") {
    return echo(segment, 0, std::strtoull(argv[2], nullptr, 10));
  }
  if (mode == "scribble" || mode == "chaos") {
    scribble(segment, mode == "chaos");
  }
  return 2;
}
