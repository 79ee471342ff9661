// Timing pieces shared by the benchmarks (tests/bench/sandpipe-bench, tests/sandbox/sandbox-bench):
// percentiles of per-block times, the raw futex ping-pong between two processes (the floor of any
// cross-process hop), and a Python plugin called in-process through embedded CPython on the
// calling thread (the earlier design, a baseline only).
//
// Header-only on purpose: each benchmark is one executable, and the in-process baseline needs
// the sandbox's PythonPlugin (sandbox_core_dep), which only the benchmarks link.
#pragma once

#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "sandbox/python-plugin.h"
#include "shm/clock.h"

namespace sandpipe::bench {

using shm::now_ns;

/// Per-block times of one row, in microseconds.
struct Stats {
  std::size_t n = 0;
  double p50 = 0, p99 = 0, p999 = 0, max = 0, mean = 0;
};

/// Adds `s` to the JSON object `row`: n, p50_us, p99_us, p999_us, max_us (in that order).
template <typename Json>
void put_stats(Json& row, const Stats& s) {
  row["n"] = s.n;
  row["p50_us"] = s.p50;
  row["p99_us"] = s.p99;
  row["p999_us"] = s.p999;
  row["max_us"] = s.max;
}

/// Nearest-rank percentiles of `ns` (sorted in place).
inline Stats summarize(std::vector<std::uint64_t>& ns) {
  Stats s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  auto at = [&](double q) {
    const auto i = static_cast<std::size_t>(q * static_cast<double>(ns.size() - 1) + 0.5);
    return static_cast<double>(ns[std::min(ns.size() - 1, i)]) / 1000.0;
  };
  double sum = 0;
  for (auto v : ns) sum += static_cast<double>(v);
  s.n = ns.size();
  s.p50 = at(0.5);
  s.p99 = at(0.99);
  s.p999 = at(0.999);
  s.max = static_cast<double>(ns.back()) / 1000.0;
  s.mean = sum / static_cast<double>(ns.size()) / 1000.0;
  return s;
}

/// Two processes waking each other through FUTEX_WAKE / FUTEX_WAIT on a shared word, no data:
/// two context switches per round trip, what any block hop to another process pays at least.
/// Not copyable; the destructor stops and reaps the child.
class FutexPingPong {
 public:
  FutexPingPong() {
    void* mem = ::mmap(nullptr, sizeof(Words), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
      throw std::runtime_error(std::string("futex bench: mmap: ") + std::strerror(errno));
    words_ = new (mem) Words;
    child_ = ::fork();
    if (child_ < 0) throw std::runtime_error(std::string("futex bench: fork: ") + std::strerror(errno));
    if (child_ == 0) serve();
  }
  ~FutexPingPong() {
    words_->ping.store(stop, std::memory_order_release);
    futex(&words_->ping, FUTEX_WAKE, 1);
    ::waitpid(child_, nullptr, 0);
    ::munmap(words_, sizeof(Words));
  }
  FutexPingPong(const FutexPingPong&) = delete;
  FutexPingPong& operator=(const FutexPingPong&) = delete;
  FutexPingPong(FutexPingPong&&) = delete;
  FutexPingPong& operator=(FutexPingPong&&) = delete;

  /// Wakes the child and sleeps until it answered; returns the round trip in ns. With
  /// `spin_ns`, first polls the answer that long before sleeping (as the rings' host side does
  /// by default, shm::HostEndpoint's 5 µs), so a quick answer costs one context switch, not two.
  std::uint64_t round_trip_ns(std::uint64_t spin_ns = 0) noexcept {
    const std::uint32_t i = ++seq_;
    const std::uint64_t t0 = now_ns();
    words_->ping.store(i, std::memory_order_release);
    futex(&words_->ping, FUTEX_WAKE, 1);
    std::uint32_t v = 0;
    if (spin_ns > 0)
      while (words_->pong.load(std::memory_order_acquire) != i && now_ns() - t0 < spin_ns) {
      }
    while ((v = words_->pong.load(std::memory_order_acquire)) != i) futex(&words_->pong, FUTEX_WAIT, v);
    return now_ns() - t0;
  }

 private:
  struct Words {
    std::atomic<std::uint32_t> ping{0};
    alignas(64) std::atomic<std::uint32_t> pong{0};
  };
  static constexpr std::uint32_t stop = ~0U;

  static long futex(std::atomic<std::uint32_t>* addr, int op, std::uint32_t val) noexcept {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast): the futex word is the atomic's storage
    return ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(addr), op, val, nullptr, nullptr, 0);
  }

  [[noreturn]] void serve() noexcept {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    std::uint32_t seen = 0;
    for (;;) {
      std::uint32_t v = 0;
      while ((v = words_->ping.load(std::memory_order_acquire)) == seen)
        futex(&words_->ping, FUTEX_WAIT, seen);
      if (v == stop) ::_exit(0);
      seen = v;
      words_->pong.store(v, std::memory_order_release);
      futex(&words_->pong, FUTEX_WAKE, 1);
    }
  }

  Words* words_ = nullptr;
  pid_t child_ = -1;
  std::uint32_t seq_ = 0;
};

/// A Python plugin run on the calling thread through embedded CPython (the earlier design:
/// no isolation, the GIL and the collector on the audio thread). One interpreter per process:
/// construct once, `load` as often as needed (each load replaces the plugin).
class InProcessPython {
 public:
  InProcessPython()
      : python_(std::filesystem::read_symlink("/proc/self/exe"), SANDPIPE_PYTHON_SOURCE_DIR,
                [](int, std::string_view line) {
                  std::fprintf(stderr, "%.*s\n", int(line.size()), line.data());
                }) {}

  /// Loads `file` for (channels, frames) at 48 kHz with `params` and binds one slot. Throws
  /// std::runtime_error with the Python traceback if the plugin does not load.
  void load(const std::filesystem::path& file,
            std::vector<std::pair<std::string, sandbox::ParamValue>> params, std::uint32_t channels,
            std::uint32_t frames) {
    sandbox::LoadRequest request;
    request.path = file;
    request.channels = channels;
    request.max_frames = frames;
    request.params = std::move(params);
    sandbox::PluginDescription info;
    if (auto error = python_.load(request, info))
      throw std::runtime_error("in-process load failed: " + error->message + "\n" + error->traceback);
    frames_ = frames;
    slot_.assign(std::size_t{channels} * frames, 0.0F);
    float* base = slot_.data();
    if (auto error = python_.bind_slots(std::span<float* const>(&base, 1), channels, frames, frames))
      throw std::runtime_error("in-process bind failed: " + error->message);
    python_.freeze_heap();
  }

  /// Copies `in` into the slot, runs the plugin, copies the slot to `out` (as the sandbox path
  /// copies in and out); `in` and `out` are planar, channels × frames contiguous.
  /// Returns false if the plugin raised.
  bool process(const float* in, float* out) noexcept {
    std::memcpy(slot_.data(), in, slot_.size() * sizeof(float));
    const bool ok = python_.process(0, frames_) != sandbox::BlockResult::failed;
    std::memcpy(out, slot_.data(), slot_.size() * sizeof(float));
    return ok;
  }

 private:
  sandbox::PythonPlugin python_;
  std::vector<float> slot_;
  std::uint32_t frames_ = 0;
};

}  // namespace sandpipe::bench
