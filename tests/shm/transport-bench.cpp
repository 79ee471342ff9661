// Round-trip latency of one audio block host → child process → host, through the shm rings,
// side by side with the ways two processes can wake each other without shared rings:
//
//   futex       raw FUTEX_WAKE / FUTEX_WAIT ping-pong on a shared word (the physical floor)
//   eventfd     blocking read/write on two eventfds
//   pipe        blocking read/write of one byte on two pipes (PipeWire's classic node wake-up)
//   ring        HostEndpoint / SandboxEndpoint with their defaults (host spins 5 µs, sandbox
//               sleeps at once) carrying a 2×512 float32 block; the child applies a gain
//   ring-sleep  the same with no spinning anywhere (every hand-over through the futex)
//   ring-spin   the same with both sides spinning (no syscall at all; burns two cores)
//
// Every variant runs in the same invocation, each with a fresh child started by fork + exec of
// this binary (`--child MODE ...`). Nothing is pinned and no RT priority is asked for.
//
//   transport-bench [--iterations N] [--json FILE] [--host-spin-ns NS]
//
// --host-spin-ns replaces HostEndpoint's default spin in the `ring` row (for tuning it).
// --pin 0,1 pins the host to CPU 0 and every child to CPU 1 (off by default).
#include <fcntl.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "shm/block-channel.h"
#include "shm/futex.h"
#include "shm/segment.h"
#include "tests/shm/child-process.h"

namespace sandpipe::shm::bench {
namespace {

constexpr Geometry block_geometry{2, 512, 4};
constexpr std::uint64_t patience_ns = 2'000'000'000;
constexpr float gain = 0.5F;

// ---------------------------------------------------------------------------------------------
// Child side

Segment attach_or_exit(const char* fd_text) {
  auto attached = Segment::attach(std::atoi(fd_text));
  if (auto* error = std::get_if<std::string>(&attached)) {
    std::fprintf(stderr, "transport-bench child: %s\n", error->c_str());
    std::exit(3);
  }
  return std::move(std::get<Segment>(attached));
}

/// The shared word of the futex ping-pong: the first float of slot 0, which is cache-line
/// aligned (the segment is reused as a convenient shared page).
std::atomic<std::uint32_t>& ping_word(float* slot0) { return *reinterpret_cast<std::atomic<std::uint32_t>*>(slot0); }

[[noreturn]] void child_futex(const char* fd_text) {
  Segment segment = attach_or_exit(fd_text);
  SandboxEndpoint endpoint(segment);
  std::atomic<std::uint32_t>& word = ping_word(endpoint.channel(0, 0));
  // The host writes odd values, we answer with the next even one.
  for (std::uint32_t expect = 1;; expect += 2) {
    std::uint32_t seen = word.load(std::memory_order_acquire);
    while (seen != expect) {
      detail::futex_wait(word, seen, patience_ns);
      seen = word.load(std::memory_order_acquire);
    }
    word.store(expect + 1, std::memory_order_release);
    detail::futex_wake(word, 1);
  }
}

[[noreturn]] void child_fd_pair(int in_fd, int out_fd, std::size_t bytes) {
  std::uint64_t value = 1;
  for (;;) {
    if (::read(in_fd, &value, bytes) != static_cast<ssize_t>(bytes)) {
      std::exit(4);
    }
    value = 1;
    if (::write(out_fd, &value, bytes) != static_cast<ssize_t>(bytes)) {
      std::exit(4);
    }
  }
}

[[noreturn]] void child_ring(const char* fd_text, std::uint64_t spin_ns) {
  Segment segment = attach_or_exit(fd_text);
  SandboxEndpoint endpoint(segment);
  endpoint.set_spin_ns(spin_ns);
  for (;;) {
    Job job;
    if (endpoint.wait(job, patience_ns) != SandboxEndpoint::Wake::job) {
      continue;
    }
    for (std::uint32_t ch = 0; ch < endpoint.geometry().channels; ++ch) {
      float* samples = endpoint.channel(job.slot, ch);
      for (std::uint32_t i = 0; i < job.frames; ++i) {
        samples[i] *= gain;
      }
    }
    endpoint.complete(Completion{job.seq, job.slot, job.frames,
                                 static_cast<std::uint32_t>(CompletionStatus::processed)});
  }
}

// ---------------------------------------------------------------------------------------------
// Host side

struct Stats {
  std::string name;
  std::string description;
  std::uint64_t p50 = 0, p99 = 0, p999 = 0, max = 0, min = 0;
  double mean = 0.0;
  std::uint64_t count = 0;
  std::uint64_t failures = 0;
};

Stats summarize(std::string name, std::string description, std::vector<std::uint64_t>& samples,
                std::uint64_t failures) {
  Stats stats;
  stats.name = std::move(name);
  stats.description = std::move(description);
  stats.failures = failures;
  stats.count = samples.size();
  if (samples.empty()) {
    return stats;
  }
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) {
    const auto index = static_cast<std::size_t>(std::llround(q * static_cast<double>(samples.size() - 1)));
    return samples[std::min(index, samples.size() - 1)];
  };
  stats.min = samples.front();
  stats.p50 = at(0.50);
  stats.p99 = at(0.99);
  stats.p999 = at(0.999);
  stats.max = samples.back();
  double sum = 0.0;
  for (const std::uint64_t s : samples) {
    sum += static_cast<double>(s);
  }
  stats.mean = sum / static_cast<double>(samples.size());
  return stats;
}

std::string self_path() {
  char buffer[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n <= 0) {
    std::fprintf(stderr, "transport-bench: cannot find my own path\n");
    std::exit(1);
  }
  return std::string(buffer, static_cast<std::size_t>(n));
}

int inheritable_dup(int fd) { return ::fcntl(fd, F_DUPFD_CLOEXEC, 10); }

/// One way of doing a round trip, with its child process and its samples. Variants are measured
/// in interleaved chunks so that all of them see the same background noise of a shared machine.
class Variant {
 public:
  Variant(std::string name, std::string description) : name_(std::move(name)), description_(std::move(description)) {}
  Variant(const Variant&) = delete;
  Variant& operator=(const Variant&) = delete;
  Variant(Variant&&) = delete;
  Variant& operator=(Variant&&) = delete;
  virtual ~Variant() = default;

  /// One timed round trip; false on a failure (not counted as a sample).
  virtual bool round_trip() = 0;
  /// Failures only visible at the end (e.g. the endpoint broke).
  virtual std::uint64_t final_failures() { return 0; }

  void reserve(std::size_t n) { samples_.reserve(n); }
  void run(std::uint32_t count, bool record) {
    for (std::uint32_t i = 0; i < count; ++i) {
      const std::uint64_t start = now_ns();
      const bool ok = round_trip();
      const std::uint64_t end = now_ns();
      if (!record) {
        continue;
      }
      if (ok) {
        samples_.push_back(end - start);
      } else {
        ++failures_;
      }
    }
  }
  Stats stats() { return summarize(name_, description_, samples_, failures_ + final_failures()); }

 private:
  std::string name_;
  std::string description_;
  std::vector<std::uint64_t> samples_;
  std::uint64_t failures_ = 0;
};

class FutexPingPong final : public Variant {
 public:
  FutexPingPong()
      : Variant("futex", "raw FUTEX_WAKE/FUTEX_WAIT ping-pong (floor)"),
        segment_(Segment::create(block_geometry)),
        host_(segment_),
        word_(ping_word(host_.channel_rt(0, 0))),
        child_(start(segment_)) {}

  bool round_trip() override {
    word_.store(value_, std::memory_order_release);
    detail::futex_wake(word_, 1);
    const std::uint64_t deadline = now_ns() + patience_ns;
    std::uint32_t seen = word_.load(std::memory_order_acquire);
    while (seen != value_ + 1) {
      const std::uint64_t now = now_ns();
      if (now >= deadline) {
        return false;
      }
      detail::futex_wait(word_, seen, deadline - now);
      seen = word_.load(std::memory_order_acquire);
    }
    value_ += 2;
    return true;
  }

 private:
  static std::unique_ptr<testing::ChildProcess> start(const Segment& segment) {
    const int fd = inheritable_dup(segment.fd());
    auto child = std::make_unique<testing::ChildProcess>(
        self_path(), std::vector<std::string>{"--child", "futex", std::to_string(fd)}, std::vector<int>{fd});
    ::close(fd);
    return child;
  }

  Segment segment_;
  HostEndpoint host_;  // only to reach the shared page
  std::atomic<std::uint32_t>& word_;
  std::unique_ptr<testing::ChildProcess> child_;
  std::uint32_t value_ = 1;
};

class FdPingPong final : public Variant {
 public:
  explicit FdPingPong(bool use_eventfd)
      : Variant(use_eventfd ? "eventfd" : "pipe",
                use_eventfd ? "eventfd write/read ping-pong" : "pipe 1-byte write/read ping-pong"),
        bytes_(use_eventfd ? sizeof(std::uint64_t) : 1) {
    if (use_eventfd) {
      to_child_[0] = to_child_[1] = ::eventfd(0, EFD_CLOEXEC);
      to_host_[0] = to_host_[1] = ::eventfd(0, EFD_CLOEXEC);
    } else if (::pipe2(to_child_, O_CLOEXEC) != 0 || ::pipe2(to_host_, O_CLOEXEC) != 0) {
      std::perror("pipe2");
      std::exit(1);
    }
    child_ = std::make_unique<testing::ChildProcess>(
        self_path(),
        std::vector<std::string>{"--child", use_eventfd ? "eventfd" : "pipe", std::to_string(to_child_[0]),
                                 std::to_string(to_host_[1])},
        std::vector<int>{to_child_[0], to_host_[1]});
  }
  FdPingPong(const FdPingPong&) = delete;
  FdPingPong& operator=(const FdPingPong&) = delete;
  FdPingPong(FdPingPong&&) = delete;
  FdPingPong& operator=(FdPingPong&&) = delete;
  ~FdPingPong() override {
    child_.reset();
    for (const int fd : {to_child_[0], to_child_[1], to_host_[0], to_host_[1]}) {
      ::close(fd);  // an eventfd is both ends: its second close fails harmlessly
    }
  }

  bool round_trip() override {
    std::uint64_t value = 1;
    if (::write(to_child_[1], &value, bytes_) != static_cast<ssize_t>(bytes_)) {
      return false;
    }
    return ::read(to_host_[0], &value, bytes_) == static_cast<ssize_t>(bytes_);
  }

 private:
  std::size_t bytes_;
  int to_child_[2] = {-1, -1};
  int to_host_[2] = {-1, -1};
  std::unique_ptr<testing::ChildProcess> child_;
};

class RingRoundTrip final : public Variant {
 public:
  RingRoundTrip(std::string name, std::string description, std::uint64_t host_spin_ns, std::uint64_t child_spin_ns)
      : Variant(std::move(name), std::move(description)), segment_(Segment::create(block_geometry)), host_(segment_) {
    host_.set_spin_ns(host_spin_ns);
    const int fd = inheritable_dup(segment_.fd());
    child_ = std::make_unique<testing::ChildProcess>(
        self_path(), std::vector<std::string>{"--child", "ring", std::to_string(fd), std::to_string(child_spin_ns)},
        std::vector<int>{fd});
    ::close(fd);
  }

  bool round_trip() override {
    const Job job{seq_, seq_ & (block_geometry.slot_count - 1), block_geometry.max_frames, 0};
    ++seq_;
    // The host's part of a real block: write the input, then read the output back.
    for (std::uint32_t ch = 0; ch < block_geometry.channels; ++ch) {
      float* samples = host_.channel_rt(job.slot, ch);
      for (std::uint32_t i = 0; i < job.frames; ++i) {
        samples[i] = static_cast<float>(i + ch);
      }
    }
    if (!host_.submit_rt(job)) {
      return false;
    }
    Completion done;
    if (host_.wait_complete_rt(done, now_ns() + patience_ns) != WaitResult::ready || done.seq != job.seq) {
      return false;
    }
    float sum = 0.0F;
    for (std::uint32_t ch = 0; ch < block_geometry.channels; ++ch) {
      const float* samples = host_.channel_rt(done.slot, ch);
      for (std::uint32_t i = 0; i < done.frames; ++i) {
        sum += samples[i];
      }
    }
    checksum_ += sum;
    return true;
  }

  std::uint64_t final_failures() override {
    // A block that timed out stays in flight and breaks the order of all later ones.
    return (host_.failed() || host_.in_flight() != 0 || checksum_ <= 0.0) ? 1 : 0;
  }

 private:
  Segment segment_;
  HostEndpoint host_;
  std::unique_ptr<testing::ChildProcess> child_;
  std::uint32_t seq_ = 0;
  double checksum_ = 0.0;
};

// ---------------------------------------------------------------------------------------------
// Output

std::string machine_description() {
  std::string model = "unknown cpu";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 2);
      break;
    }
  }
  utsname uts{};
  ::uname(&uts);
  return model + ", " + std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)) + " cpus online, Linux " + uts.release;
}

std::string today() {
  const std::time_t t = std::time(nullptr);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%d", std::gmtime(&t));
  return buffer;
}

double us(std::uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

const Stats* find(const std::vector<Stats>& all, const std::string& name) {
  for (const Stats& s : all) {
    if (s.name == name) {
      return &s;
    }
  }
  return nullptr;
}

double ratio(std::uint64_t a, std::uint64_t b) { return b == 0 ? 0.0 : static_cast<double>(a) / static_cast<double>(b); }

struct RunConfig {
  std::uint32_t iterations = 0;
  std::uint64_t host_spin_ns = 0;
  int host_cpu = -1;
  int child_cpu = -1;
};

std::string pinning(const RunConfig& config) {
  return config.host_cpu < 0 ? "not pinned"
                             : "host pinned to cpu " + std::to_string(config.host_cpu) + ", children to cpu " +
                                   std::to_string(config.child_cpu);
}

void print_table(const std::vector<Stats>& all, const RunConfig& config) {
  const std::uint32_t iterations = config.iterations;
  std::printf("transport round trip, 1 block of %u ch x %u frames float32 where a block is carried\n",
              block_geometry.channels, block_geometry.max_frames);
  std::printf("%s; %u round trips per variant; %s; %s\n\n", machine_description().c_str(), iterations,
              pinning(config).c_str(), today().c_str());
  std::printf("| variant    |  p50 µs |  p99 µs | p99.9 µs |  max µs | mean µs | failures | what\n");
  std::printf("|------------|--------:|--------:|---------:|--------:|--------:|---------:|-----\n");
  for (const Stats& s : all) {
    std::printf("| %-10s | %7.2f | %7.2f | %8.2f | %7.1f | %7.2f | %8" PRIu64 " | %s\n", s.name.c_str(), us(s.p50),
                us(s.p99), us(s.p999), us(s.max), s.mean / 1000.0, s.failures, s.description.c_str());
  }
  const Stats* futex = find(all, "futex");
  std::printf("\n");
  for (const char* name : {"ring", "ring-sleep", "ring-spin"}) {
    const Stats* ring = find(all, name);
    if (futex != nullptr && ring != nullptr) {
      std::printf("%-10s / futex: p50 %.2fx (target <= 1.5), p99.9 %.2fx (target <= 2)\n", name,
                  ratio(ring->p50, futex->p50), ratio(ring->p999, futex->p999));
    }
  }
}

std::string json(const std::vector<Stats>& all, const RunConfig& config) {
  nlohmann::ordered_json results = nlohmann::ordered_json::object();
  for (const Stats& s : all) {
    results[s.name] = {{"p50_ns", s.p50},  {"p99_ns", s.p99},       {"p999_ns", s.p999},
                       {"max_ns", s.max},  {"min_ns", s.min},       {"mean_ns", std::llround(s.mean)},
                       {"count", s.count}, {"failures", s.failures}};
  }
  nlohmann::ordered_json ratios = nlohmann::ordered_json::object();
  const Stats* futex = find(all, "futex");
  for (const char* name : {"ring", "ring-sleep", "ring-spin"}) {
    const Stats* ring = find(all, name);
    if (futex != nullptr && ring != nullptr) {
      std::string key = name;
      std::replace(key.begin(), key.end(), '-', '_');
      ratios[key + "_futex_p50"] = ratio(ring->p50, futex->p50);
      ratios[key + "_futex_p999"] = ratio(ring->p999, futex->p999);
    }
  }
  const nlohmann::ordered_json document = {
      {"benchmark", "transport"},
      {"date", today()},
      {"machine", machine_description()},
      {"iterations", config.iterations},
      {"host_spin_ns", config.host_spin_ns},
      {"host_cpu", config.host_cpu},
      {"child_cpu", config.child_cpu},
      {"block", {{"channels", block_geometry.channels}, {"frames", block_geometry.max_frames}}},
      {"results", std::move(results)},
      {"ratios", std::move(ratios)},
  };
  return document.dump(2) + "\n";
}

bool pin_to(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (::sched_setaffinity(0, sizeof(set), &set) != 0) {
    std::perror("sched_setaffinity");
    return false;
  }
  return true;
}

int host_main(int argc, char** argv) {
  std::uint32_t iterations = 100'000;
  std::uint64_t host_spin_ns = HostEndpoint::default_spin_ns;
  int host_cpu = -1;
  int child_cpu = -1;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) {
      iterations = static_cast<std::uint32_t>(std::strtoul(argv[++i], nullptr, 10));
    } else if (arg == "--host-spin-ns" && i + 1 < argc) {
      host_spin_ns = std::strtoull(argv[++i], nullptr, 10);
    } else if (arg == "--pin" && i + 1 < argc) {
      if (std::sscanf(argv[++i], "%d,%d", &host_cpu, &child_cpu) != 2) {
        std::fprintf(stderr, "--pin wants HOST_CPU,CHILD_CPU\n");
        return 2;
      }
    } else if (arg == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--iterations N] [--json FILE] [--host-spin-ns NS] [--pin HOST_CPU,CHILD_CPU]\n", argv[0]);
      return 2;
    }
  }
  if (iterations == 0) {
    iterations = 1;
  }

  // Children inherit the affinity they are forked with: pin for them first, then for us.
  if (host_cpu >= 0 && !pin_to(child_cpu)) {
    return 1;
  }
  std::vector<std::unique_ptr<Variant>> variants;
  variants.push_back(std::make_unique<FutexPingPong>());
  variants.push_back(std::make_unique<FdPingPong>(true));
  variants.push_back(std::make_unique<FdPingPong>(false));
  variants.push_back(std::make_unique<RingRoundTrip>(
      "ring", "shm rings, host spins " + std::to_string(host_spin_ns / 1000) + " us, sandbox sleeps (default)",
      host_spin_ns, SandboxEndpoint::default_spin_ns));
  variants.push_back(
      std::make_unique<RingRoundTrip>("ring-sleep", "shm rings, no spinning (futex every hand-over)", 0, 0));
  variants.push_back(
      std::make_unique<RingRoundTrip>("ring-spin", "shm rings, both sides spin (100 us)", 100'000, 100'000));

  if (host_cpu >= 0 && !pin_to(host_cpu)) {
    return 1;
  }

  // Interleaved chunks of about 500 round trips: every variant sees the same phases of the
  // machine's background load, so a burst of noise does not land on one variant only.
  const std::uint32_t chunks = std::clamp<std::uint32_t>(iterations / 500, 1, 400);
  for (auto& variant : variants) {
    variant->reserve(iterations);
    variant->run(std::max<std::uint32_t>(200, iterations / 50), false);  // warm up
  }
  for (std::uint32_t chunk = 0; chunk < chunks; ++chunk) {
    const std::uint32_t count = iterations / chunks + (chunk < iterations % chunks ? 1 : 0);
    for (auto& variant : variants) {
      variant->run(std::min<std::uint32_t>(50, count), false);  // re-warm after the others ran
      variant->run(count, true);
    }
  }
  std::vector<Stats> all;
  all.reserve(variants.size());
  for (auto& variant : variants) {
    all.push_back(variant->stats());
  }
  variants.clear();  // stops the children

  const RunConfig config{iterations, host_spin_ns, host_cpu, child_cpu};
  print_table(all, config);
  const std::string document = json(all, config);
  if (json_path.empty()) {
    std::printf("\n%s", document.c_str());
  } else {
    std::ofstream(json_path) << document;
  }
  std::uint64_t failures = 0;
  for (const Stats& s : all) {
    failures += s.failures;
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace sandpipe::shm::bench

int main(int argc, char** argv) {
  using namespace sandpipe::shm::bench;
  if (argc >= 3 && std::strcmp(argv[1], "--child") == 0) {
    const std::string mode = argv[2];
    if (mode == "futex" && argc == 4) {
      child_futex(argv[3]);
    }
    if ((mode == "eventfd" || mode == "pipe") && argc == 5) {
      child_fd_pair(std::atoi(argv[3]), std::atoi(argv[4]), mode == "eventfd" ? sizeof(std::uint64_t) : 1);
    }
    if (mode == "ring" && argc == 5) {
      child_ring(argv[3], std::strtoull(argv[4], nullptr, 10));
    }
    std::fprintf(stderr, "transport-bench: bad child arguments\n");
    return 2;
  }
  return host_main(argc, argv);
}
