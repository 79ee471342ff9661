// pw-probe: sends a known signal through a PipeWire node and reports what came back.
//
// Two nodes of its own, so the graph has no cycle and all three nodes run in the same cycle:
//   <name>-src  (output ports)  →  TARGET inputs,   TARGET outputs  →  <name>-sink (input ports)
// The signal is a function of the graph position (see probe-signal.h), so the capture side
// can tell exactly which input frame each output frame should be, whatever the quantum.
//
// Usage: pw-probe --target NODE_NAME [options], prints a JSON report (see --help).
#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <pipewire/filter.h>
#include <pipewire/link.h>
#include <pipewire/pipewire.h>
#include <sndfile.h>
#include <nlohmann/json.hpp>

#include "probe-signal.h"

namespace sandpipe::integration {
namespace {

constexpr std::string_view help_text = R"(pw-probe --target NODE [options]
Links its own source node to NODE's input ports and NODE's output ports to its own capture
node (port by port, matched on audio.channel), sends a known signal, captures what comes back
and prints a JSON report: delay in frames, gain, levels, max error after alignment, per-quantum
errors.

  --target NAME        node.name of the node under test (required)
  --channels N         ports to wait for on the target, per direction (default 2)
  --signal noise|tone  white noise (default) or a sine
  --freq HZ            tone frequency (default 1000)
  --amplitude A        peak level (default 0.5)
  --frames N           frames to capture once everything is linked (default 48000);
                       0: capture until SIGINT/SIGTERM (or --max-seconds is full)
  --max-seconds S      capture buffer size in seconds at 48 kHz (default 60)
  --settle-cycles N    cycles to skip after the links are active (default 8)
  --expect-gain G      measure errors against G (default: the fitted gain)
  --second-gain G      frames at gain G count as good too (a plugin reloaded with another gain)
  --dry-gain G         what a bypassed slot leaves (default 1: the input itself; 0.5 when another
                       slot of the chain halves it): frames at G are dry, crossfades run from it
  --cycle-times        also report each cycle's clock.nsec (CLOCK_MONOTONIC) as "cycle_nsec",
                       to line cycles up with other clocks (a test's stall watch)
  --max-delay N        longest delay searched, frames (default 8192)
  --timeout S          give up linking after S seconds (default 20)
  --name NAME          node name prefix (default sandpipe-probe)
  --json FILE          write the report there instead of stdout
  --wav FILE           also write the captured output (float WAV)
  --status FILE        keep a small JSON status there while capturing (frames, quanta seen)
Exit status: 0 report written, 1 linking or capture failed (report has "error"), 2 usage.
)";

constexpr std::uint32_t max_probe_channels = 64;

struct Options {
  std::string target;
  std::uint32_t channels = 2;
  SignalSpec signal;
  std::uint64_t frames = 48000;
  double max_seconds = 60;
  std::uint32_t settle_cycles = 8;
  double expect_gain = 0;
  double second_gain = 0;
  double dry_gain = 1.0;
  std::uint32_t max_delay = 8192;
  double timeout_s = 20;
  std::string name = "sandpipe-probe";
  bool cycle_times = false;
  std::string json_path, wav_path, status_path;
};

std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "pw-probe: %s needs a value\n", argv[i]);
        std::quick_exit(2);
      }
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(help_text.data(), stdout);
      std::fflush(stdout);
      std::quick_exit(0);
    } else if (arg == "--target") {
      o.target = value();
    } else if (arg == "--channels") {
      o.channels = static_cast<std::uint32_t>(std::strtoul(value(), nullptr, 10));
    } else if (arg == "--signal") {
      const std::string_view v = value();
      if (v == "noise") {
        o.signal.kind = SignalKind::noise;
      } else if (v == "tone") {
        o.signal.kind = SignalKind::tone;
      } else {
        std::fprintf(stderr, "pw-probe: unknown signal %s\n", v.data());
        return std::nullopt;
      }
    } else if (arg == "--freq") {
      o.signal.freq = std::strtod(value(), nullptr);
    } else if (arg == "--amplitude") {
      o.signal.amplitude = std::strtod(value(), nullptr);
    } else if (arg == "--frames") {
      o.frames = std::strtoull(value(), nullptr, 10);
    } else if (arg == "--max-seconds") {
      o.max_seconds = std::strtod(value(), nullptr);
    } else if (arg == "--settle-cycles") {
      o.settle_cycles = static_cast<std::uint32_t>(std::strtoul(value(), nullptr, 10));
    } else if (arg == "--expect-gain") {
      o.expect_gain = std::strtod(value(), nullptr);
    } else if (arg == "--second-gain") {
      o.second_gain = std::strtod(value(), nullptr);
    } else if (arg == "--dry-gain") {
      o.dry_gain = std::strtod(value(), nullptr);
    } else if (arg == "--max-delay") {
      o.max_delay = static_cast<std::uint32_t>(std::strtoul(value(), nullptr, 10));
    } else if (arg == "--cycle-times") {
      o.cycle_times = true;
    } else if (arg == "--timeout") {
      o.timeout_s = std::strtod(value(), nullptr);
    } else if (arg == "--name") {
      o.name = value();
    } else if (arg == "--json") {
      o.json_path = value();
    } else if (arg == "--wav") {
      o.wav_path = value();
    } else if (arg == "--status") {
      o.status_path = value();
    } else {
      std::fprintf(stderr, "pw-probe: unknown argument %s (see --help)\n", argv[i]);
      return std::nullopt;
    }
  }
  if (o.target.empty() || o.channels == 0 || o.channels > max_probe_channels) {
    std::fprintf(stderr, "pw-probe: --target is required and --channels must be 1..64\n");
    return std::nullopt;
  }
  return o;
}

// ---- RAII for pw_* handles ------------------------------------------------------------------

struct MainLoopDeleter {
  void operator()(pw_main_loop* l) const noexcept { pw_main_loop_destroy(l); }
};
struct ContextDeleter {
  void operator()(pw_context* c) const noexcept { pw_context_destroy(c); }
};
struct CoreDeleter {
  void operator()(pw_core* c) const noexcept { pw_core_disconnect(c); }
};
struct FilterDeleter {
  void operator()(pw_filter* f) const noexcept { pw_filter_destroy(f); }
};
struct ProxyDeleter {
  void operator()(void* p) const noexcept { pw_proxy_destroy(static_cast<pw_proxy*>(p)); }
};

/// A proxy and the listener on it; the listener is removed before the proxy goes.
template <typename T>
struct Bound {
  std::unique_ptr<T, ProxyDeleter> proxy;
  spa_hook listener{};
  Bound() { spa_zero(listener); }
  ~Bound() {
    if (proxy) {
      spa_hook_remove(&listener);
    }
  }
  Bound(const Bound&) = delete;
  Bound& operator=(const Bound&) = delete;
  Bound(Bound&&) = delete;
  Bound& operator=(Bound&&) = delete;
};

// ---- what the registry told us --------------------------------------------------------------

struct PortInfo {
  std::uint32_t node = 0;
  std::uint32_t index = 0;  ///< port.id: its number on the node (global ids are reused, these are not)
  bool output = false;
  std::string channel;
  std::string name;
};

std::string dict_get(const spa_dict* props, const char* key) {
  const char* v = props != nullptr ? spa_dict_lookup(props, key) : nullptr;
  return v != nullptr ? v : "";
}

// ---- the two probe nodes --------------------------------------------------------------------

/// Shared by the src and capture callbacks (both on the data thread) and the main thread.
struct RtShared {
  SignalSpec signal;
  std::vector<void*> src_ports, cap_ports;
  std::atomic<bool> armed{false};  ///< main → rt: links are active, start counting
  std::atomic<bool> stop{false};   ///< main → rt: stop recording
  std::uint32_t settle_left = 0;   ///< rt only
  // Capture buffers, sized on the main thread before anything runs.
  std::vector<std::vector<float>> captured;
  std::vector<CapturedCycle> cycles;
  std::atomic<std::size_t> n_cycles{0};  ///< rt → main (release): cycles[0..n) are complete
  std::atomic<std::uint64_t> n_frames{0};
  std::atomic<bool> full{false};
  std::atomic<std::uint32_t> last_quantum{0};
  std::atomic<std::uint64_t> src_cycles{0};
};

/// [rt] Source node: the signal at this cycle's positions on every output port.
void on_src_process(void* data, spa_io_position* position) {
  auto& sh = *static_cast<RtShared*>(data);
  if (position == nullptr) {
    return;
  }
  const auto n = static_cast<std::uint32_t>(position->clock.duration);
  const std::uint64_t pos = position->clock.position;
  const std::uint32_t rate = position->clock.rate.denom != 0 ? position->clock.rate.denom : 48000;
  for (std::size_t ch = 0; ch < sh.src_ports.size(); ++ch) {
    auto* out = static_cast<float*>(pw_filter_get_dsp_buffer(sh.src_ports[ch], n));
    if (out == nullptr) {
      continue;
    }
    for (std::uint32_t i = 0; i < n; ++i) {
      out[i] = signal_sample(sh.signal, pos + i, static_cast<std::uint32_t>(ch), rate);
    }
  }
  sh.src_cycles.fetch_add(1, std::memory_order_relaxed);
}

/// [rt] Capture node: appends this cycle's input to the preallocated buffers.
void on_cap_process(void* data, spa_io_position* position) {
  auto& sh = *static_cast<RtShared*>(data);
  if (position == nullptr) {
    return;
  }
  const auto n = static_cast<std::uint32_t>(position->clock.duration);
  sh.last_quantum.store(n, std::memory_order_relaxed);
  std::array<const float*, max_probe_channels> in{};
  bool missing = false;
  for (std::size_t ch = 0; ch < sh.cap_ports.size(); ++ch) {
    in[ch] = static_cast<const float*>(pw_filter_get_dsp_buffer(sh.cap_ports[ch], n));
    missing = missing || in[ch] == nullptr;
  }
  if (!sh.armed.load(std::memory_order_acquire) || sh.stop.load(std::memory_order_relaxed) ||
      sh.full.load(std::memory_order_relaxed)) {
    return;
  }
  if (sh.settle_left > 0) {
    --sh.settle_left;
    return;
  }
  const std::size_t c = sh.n_cycles.load(std::memory_order_relaxed);
  const std::uint64_t offset = sh.n_frames.load(std::memory_order_relaxed);
  if (c >= sh.cycles.size() || offset + n > sh.captured[0].size()) {
    sh.full.store(true, std::memory_order_relaxed);
    return;
  }
  for (std::size_t ch = 0; ch < sh.cap_ports.size(); ++ch) {
    float* dst = sh.captured[ch].data() + offset;
    if (in[ch] != nullptr) {
      std::memcpy(dst, in[ch], n * sizeof(float));
    } else {
      std::memset(dst, 0, n * sizeof(float));
    }
  }
  sh.cycles[c] = CapturedCycle{position->clock.position, n, position->clock.rate.denom, offset, missing,
                               position->clock.nsec};
  sh.n_frames.store(offset + n, std::memory_order_relaxed);
  sh.n_cycles.store(c + 1, std::memory_order_release);
}

// ---- the probe ------------------------------------------------------------------------------

class Probe {
 public:
  explicit Probe(Options opts) : opts_(std::move(opts)) {}

  int run();

 private:
  enum class Phase { waiting_target, waiting_own_ports, linking, capturing, done };

  void fail(std::string message) {
    if (error_.empty()) {
      error_ = std::move(message);
    }
    pw_main_loop_quit(loop_.get());
  }

  static void on_global(void* data, std::uint32_t id, std::uint32_t, const char* type, std::uint32_t,
                        const spa_dict* props) {
    auto* self = static_cast<Probe*>(data);
    const std::string_view t = type;
    if (t == PW_TYPE_INTERFACE_Node) {
      self->nodes_[id] = dict_get(props, PW_KEY_NODE_NAME);
    } else if (t == PW_TYPE_INTERFACE_Port) {
      PortInfo p;
      p.node = static_cast<std::uint32_t>(std::strtoul(dict_get(props, PW_KEY_NODE_ID).c_str(), nullptr, 10));
      p.output = dict_get(props, PW_KEY_PORT_DIRECTION) == "out";
      p.index =
          static_cast<std::uint32_t>(std::strtoul(dict_get(props, PW_KEY_PORT_ID).c_str(), nullptr, 10));
      p.channel = dict_get(props, PW_KEY_AUDIO_CHANNEL);
      p.name = dict_get(props, PW_KEY_PORT_NAME);
      self->ports_[id] = p;
    }
    self->advance();
  }

  static void on_global_remove(void* data, std::uint32_t id) {
    auto* self = static_cast<Probe*>(data);
    if (self->phase_ >= Phase::linking && (id == self->target_id_ || self->linked_ports_.contains(id))) {
      self->fail("the target node or one of its ports went away");
    }
    self->nodes_.erase(id);
    self->ports_.erase(id);
  }

  static void on_link_info(void* data, const pw_link_info* info) {
    auto* self = static_cast<Probe*>(data);
    if (info == nullptr) {
      return;
    }
    self->link_states_[info->id] = info->state;
    if (info->state == PW_LINK_STATE_ERROR) {
      self->fail(std::string("link error: ") + (info->error != nullptr ? info->error : "?"));
    }
    self->advance();
  }

  static void on_core_error(void* data, std::uint32_t id, int, int res, const char* message) {
    auto* self = static_cast<Probe*>(data);
    if (id == PW_ID_CORE || self->phase_ == Phase::linking) {
      self->fail(std::string("PipeWire error: ") + (message != nullptr ? message : "") + " (" +
                 std::error_code(-res, std::generic_category()).message() + ")");
    }
  }

  static void on_tick(void* data, std::uint64_t) { static_cast<Probe*>(data)->tick(); }
  static void on_signal(void* data, int) {
    auto* self = static_cast<Probe*>(data);
    self->interrupted_ = true;
    pw_main_loop_quit(self->loop_.get());
  }

  std::optional<std::uint32_t> node_id(const std::string& name) const {
    for (const auto& [id, n] : nodes_) {
      if (n == name) {
        return id;
      }
    }
    return std::nullopt;
  }

  /// Ports of `node` in one direction, in the node's own order (port.id).
  std::vector<std::pair<std::uint32_t, const PortInfo*>> ports_of(std::uint32_t node, bool output) const {
    std::vector<std::pair<std::uint32_t, const PortInfo*>> v;
    for (const auto& [id, p] : ports_) {
      if (p.node == node && p.output == output) {
        v.emplace_back(id, &p);
      }
    }
    std::sort(v.begin(), v.end(),
              [](const auto& a, const auto& b) { return a.second->index < b.second->index; });
    return v;
  }

  void advance();
  void create_nodes();
  void create_links();
  void tick();
  void write_status() const;
  std::string report_json(const Report* rep) const;
  void write_wav() const;

  Options opts_;
  std::unique_ptr<pw_main_loop, MainLoopDeleter> loop_;
  std::unique_ptr<pw_context, ContextDeleter> context_;
  std::unique_ptr<pw_core, CoreDeleter> core_;
  spa_hook core_listener_{};
  Bound<pw_registry> registry_;
  RtShared shared_;
  std::unique_ptr<pw_filter, FilterDeleter> src_, cap_;
  spa_hook src_listener_{}, cap_listener_{};
  std::vector<std::unique_ptr<Bound<pw_link>>> links_;
  std::map<std::uint32_t, int> link_states_;
  std::map<std::uint32_t, std::string> nodes_;
  std::map<std::uint32_t, PortInfo> ports_;
  std::map<std::uint32_t, bool> linked_ports_;
  std::vector<std::string> positions_;
  std::uint32_t target_id_ = SPA_ID_INVALID;
  Phase phase_ = Phase::waiting_target;
  std::string error_;
  bool interrupted_ = false;
  std::uint64_t ticks_ = 0;
  std::uint64_t deadline_ticks_ = 0;
};

constexpr std::uint64_t tick_ms = 20;

void Probe::advance() {
  if (phase_ == Phase::waiting_target) {
    const auto id = node_id(opts_.target);
    if (!id) {
      return;
    }
    const auto ins = ports_of(*id, false);
    const auto outs = ports_of(*id, true);
    if (ins.size() < opts_.channels || outs.size() < opts_.channels) {
      return;
    }
    target_id_ = *id;
    for (std::uint32_t ch = 0; ch < opts_.channels; ++ch) {
      const PortInfo& p = *ins[ch].second;
      positions_.push_back(!p.channel.empty() ? p.channel : "CH" + std::to_string(ch));
    }
    create_nodes();
    phase_ = Phase::waiting_own_ports;
  }
  if (phase_ == Phase::waiting_own_ports) {
    const auto src = node_id(opts_.name + "-src");
    const auto cap = node_id(opts_.name + "-sink");
    if (!src || !cap || ports_of(*src, true).size() < opts_.channels ||
        ports_of(*cap, false).size() < opts_.channels) {
      return;
    }
    create_links();
    phase_ = Phase::linking;
  }
  if (phase_ == Phase::linking) {
    if (link_states_.size() < links_.size()) {
      return;
    }
    for (const auto& [id, state] : link_states_) {
      if (state != PW_LINK_STATE_ACTIVE) {
        return;
      }
    }
    shared_.armed.store(true, std::memory_order_release);
    phase_ = Phase::capturing;
    std::fprintf(stderr, "pw-probe: %zu links active, capturing\n", links_.size());
  }
}

void Probe::create_nodes() {
  static constexpr pw_filter_events src_events = [] {
    pw_filter_events e{};
    e.version = PW_VERSION_FILTER_EVENTS;
    e.process = &on_src_process;
    return e;
  }();
  static constexpr pw_filter_events cap_events = [] {
    pw_filter_events e{};
    e.version = PW_VERSION_FILTER_EVENTS;
    e.process = &on_cap_process;
    return e;
  }();
  auto make = [&](const std::string& name, const pw_filter_events* events, spa_hook* listener) {
    pw_properties* props = pw_properties_new(PW_KEY_MEDIA_TYPE, "Audio", PW_KEY_MEDIA_CATEGORY, "Filter",  //
                                             PW_KEY_MEDIA_ROLE, "DSP", PW_KEY_NODE_NAME, name.c_str(),     //
                                             PW_KEY_NODE_AUTOCONNECT, "false", nullptr);
    pw_filter* f = pw_filter_new(core_.get(), name.c_str(), props);
    if (f != nullptr) {
      pw_filter_add_listener(f, listener, events, &shared_);
    }
    return f;
  };
  src_.reset(make(opts_.name + "-src", &src_events, &src_listener_));
  cap_.reset(make(opts_.name + "-sink", &cap_events, &cap_listener_));
  if (!src_ || !cap_) {
    fail("cannot create the probe nodes");
    return;
  }
  for (const std::string& pos : positions_) {
    auto port = [&](pw_filter* f, pw_direction dir, const std::string& pname) {
      return pw_filter_add_port(
          f, dir, PW_FILTER_PORT_FLAG_MAP_BUFFERS, sizeof(std::uint64_t),
          pw_properties_new(PW_KEY_FORMAT_DSP, "32 bit float mono audio", PW_KEY_PORT_NAME, pname.c_str(),
                            PW_KEY_AUDIO_CHANNEL, pos.c_str(), nullptr),
          nullptr, 0);
    };
    shared_.src_ports.push_back(port(src_.get(), PW_DIRECTION_OUTPUT, "output_" + pos));
    shared_.cap_ports.push_back(port(cap_.get(), PW_DIRECTION_INPUT, "input_" + pos));
  }
  if (pw_filter_connect(src_.get(), PW_FILTER_FLAG_RT_PROCESS, nullptr, 0) < 0 ||
      pw_filter_connect(cap_.get(), PW_FILTER_FLAG_RT_PROCESS, nullptr, 0) < 0) {
    fail("cannot connect the probe nodes");
  }
}

void Probe::create_links() {
  static constexpr pw_link_events link_events = [] {
    pw_link_events e{};
    e.version = PW_VERSION_LINK_EVENTS;
    e.info = &on_link_info;
    return e;
  }();
  const std::uint32_t src = *node_id(opts_.name + "-src");
  const std::uint32_t cap = *node_id(opts_.name + "-sink");
  auto find = [&](std::uint32_t node, bool output,
                  const std::string& channel) -> std::optional<std::uint32_t> {
    for (const auto& [id, p] : ports_of(node, output)) {
      if (p->channel == channel || p->name == (output ? "output_" : "input_") + channel) {
        return id;
      }
    }
    return std::nullopt;
  };
  auto link = [&](std::uint32_t out_node, std::uint32_t out_port, std::uint32_t in_node,
                  std::uint32_t in_port) {
    pw_properties* props = pw_properties_new(nullptr, nullptr);
    pw_properties_setf(props, PW_KEY_LINK_OUTPUT_NODE, "%u", out_node);
    pw_properties_setf(props, PW_KEY_LINK_OUTPUT_PORT, "%u", out_port);
    pw_properties_setf(props, PW_KEY_LINK_INPUT_NODE, "%u", in_node);
    pw_properties_setf(props, PW_KEY_LINK_INPUT_PORT, "%u", in_port);
    pw_properties_set(props, PW_KEY_OBJECT_LINGER, "false");
    auto bound = std::make_unique<Bound<pw_link>>();
    bound->proxy.reset(static_cast<pw_link*>(pw_core_create_object(
        core_.get(), "link-factory", PW_TYPE_INTERFACE_Link, PW_VERSION_LINK, &props->dict, 0)));
    pw_properties_free(props);
    if (!bound->proxy) {
      fail("cannot create a link");
      return;
    }
    pw_link_add_listener(bound->proxy.get(), &bound->listener, &link_events, this);
    links_.push_back(std::move(bound));
    linked_ports_[out_port] = true;
    linked_ports_[in_port] = true;
  };
  for (const std::string& pos : positions_) {
    const auto src_out = find(src, true, pos);
    const auto tgt_in = find(target_id_, false, pos);
    const auto tgt_out = find(target_id_, true, pos);
    const auto cap_in = find(cap, false, pos);
    if (!src_out || !tgt_in || !tgt_out || !cap_in) {
      fail("no port for channel " + pos + " on the target or the probe");
      return;
    }
    link(src, *src_out, target_id_, *tgt_in);
    link(target_id_, *tgt_out, cap, *cap_in);
  }
}

void Probe::tick() {
  ++ticks_;
  if (phase_ != Phase::capturing && ticks_ >= deadline_ticks_) {
    fail(phase_ == Phase::waiting_target ? "timed out waiting for node " + opts_.target + " and its ports"
                                         : "timed out linking");
    return;
  }
  if (phase_ == Phase::capturing) {
    const std::uint64_t frames = shared_.n_frames.load(std::memory_order_relaxed);
    if ((opts_.frames > 0 && frames >= opts_.frames) || shared_.full.load(std::memory_order_relaxed)) {
      phase_ = Phase::done;
      pw_main_loop_quit(loop_.get());
    }
  }
  if (!opts_.status_path.empty() && ticks_ % 5 == 0) {
    write_status();
  }
}

void Probe::write_status() const {
  const std::size_t n = shared_.n_cycles.load(std::memory_order_acquire);
  std::map<std::uint32_t, std::uint64_t> frames_by_quantum;
  for (std::size_t c = 0; c < n; ++c) {
    frames_by_quantum[shared_.cycles[c].frames] += shared_.cycles[c].frames;
  }
  nlohmann::ordered_json by_quantum = nlohmann::ordered_json::object();
  for (const auto& [q, f] : frames_by_quantum) by_quantum[std::to_string(q)] = f;
  const nlohmann::ordered_json status = {{"capturing", phase_ == Phase::capturing},
                                         {"frames", shared_.n_frames.load(std::memory_order_relaxed)},
                                         {"cycles", n},
                                         {"quantum", shared_.last_quantum.load(std::memory_order_relaxed)},
                                         {"frames_by_quantum", std::move(by_quantum)}};
  // Indent 0: one member a line with ": " between key and value, which host/cli/sandpipe-demo.sh
  // greps for ("capturing": true) and seds ("frames": N).
  const std::string s = status.dump(0) + "\n";
  // Replace atomically so a reader never sees half a file.
  const std::string tmp = opts_.status_path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << s;
  }
  std::rename(tmp.c_str(), opts_.status_path.c_str());
}

std::string Probe::report_json(const Report* rep) const {
  using nlohmann::ordered_json;
  ordered_json j;  // non-finite numbers dump as null
  j["ok"] = rep != nullptr && error_.empty();
  j["error"] = error_;
  j["target"] = opts_.target;
  j["signal"] = opts_.signal.kind == SignalKind::noise ? "noise" : "tone";
  j["freq"] = opts_.signal.freq;
  j["amplitude"] = opts_.signal.amplitude;
  j["src_cycles"] = shared_.src_cycles.load();
  if (rep == nullptr) {
    j["frames"] = 0;
    return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  }
  j["rate"] = rep->rate;
  j["frames"] = rep->frames;
  j["cycles"] = rep->cycles;
  j["missing_cycles"] = rep->missing_cycles;
  j["silent_cycles"] = rep->silent_cycles;
  j["position_gaps"] = rep->position_gaps;
  j["gap_cycles"] = rep->gap_cycles;
  if (opts_.cycle_times) j["cycle_nsec"] = rep->cycle_nsec;
  j["delay_frames"] = rep->delay_frames;
  j["delay_reliable"] = rep->delay_reliable;
  j["correlation"] = rep->correlation;
  j["gain"] = rep->gain;
  j["gain_db"] = rep->gain_db;
  j["reference_gain"] = rep->reference_gain;
  j["max_abs_error"] = rep->max_abs_error;
  j["rms_error"] = rep->rms_error;
  j["input_rms"] = rep->input_rms;
  j["input_peak"] = rep->input_peak;
  j["output_rms"] = rep->output_rms;
  j["output_peak"] = rep->output_peak;
  j["quanta"] = ordered_json::array();
  for (const QuantumReport& r : rep->quanta)
    j["quanta"].push_back({{"quantum", r.quantum},
                           {"cycles", r.cycles},
                           {"frames", r.frames},
                           {"stale_cycles", r.stale_cycles},
                           {"silent_cycles", r.silent_cycles},
                           {"dry_cycles", r.dry_cycles},
                           {"wrong_cycles", r.wrong_cycles},
                           {"max_abs_error", r.max_abs_error}});
  j["good_cycles"] = rep->good_cycles;
  j["stale_cycles"] = rep->stale_cycles;
  j["dry_cycles"] = rep->dry_cycles;
  j["dry_frames"] = rep->dry_frames;
  j["wrong_cycles"] = rep->wrong_cycles;
  j["crossfade_cycles"] = rep->crossfade_cycles;
  j["xrun_adjacent_cycles"] = rep->xrun_adjacent_cycles;
  j["verdicts"] = rep->verdicts;
  j["first_bad_cycles"] = ordered_json::array();
  for (const BadCycle& r : rep->first_bad)
    j["first_bad_cycles"].push_back({{"index", r.index},
                                     {"position", r.position},
                                     {"frames", r.frames},
                                     {"previous_end", r.previous_end},
                                     {"max_abs_error", r.max_abs_error},
                                     {"matched_shift", r.matched_shift},
                                     {"off_frames", r.off_frames},
                                     {"dry", r.dry}});
  j["channels"] = ordered_json::array();
  for (const ChannelReport& r : rep->channels)
    j["channels"].push_back({{"position", r.position},
                             {"gain", r.gain},
                             {"input_rms", r.input_rms},
                             {"output_rms", r.output_rms},
                             {"input_peak", r.input_peak},
                             {"output_peak", r.output_peak},
                             {"max_abs_error", r.max_abs_error}});
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void Probe::write_wav() const {
  const std::size_t n = shared_.n_frames.load();
  const std::size_t n_ch = shared_.captured.size();
  SF_INFO info{};
  info.samplerate = static_cast<int>(shared_.n_cycles.load() > 0 ? shared_.cycles[0].rate : 48000);
  info.channels = static_cast<int>(n_ch);
  info.format = SF_FORMAT_WAV | SF_FORMAT_FLOAT;
  SNDFILE* f = sf_open(opts_.wav_path.c_str(), SFM_WRITE, &info);
  if (f == nullptr) {
    std::fprintf(stderr, "pw-probe: cannot write %s: %s\n", opts_.wav_path.c_str(), sf_strerror(nullptr));
    return;
  }
  std::vector<float> interleaved(n * n_ch);
  for (std::size_t j = 0; j < n; ++j) {
    for (std::size_t ch = 0; ch < n_ch; ++ch) {
      interleaved[j * n_ch + ch] = shared_.captured[ch][j];
    }
  }
  sf_writef_float(f, interleaved.data(), static_cast<sf_count_t>(n));
  sf_close(f);
}

int Probe::run() {
  shared_.signal = opts_.signal;
  shared_.settle_left = opts_.settle_cycles;
  const auto capacity = static_cast<std::size_t>(
      opts_.frames > 0 ? opts_.frames + 8192 : static_cast<std::uint64_t>(opts_.max_seconds * 48000.0));
  shared_.captured.assign(opts_.channels, std::vector<float>(capacity, 0.0F));
  shared_.cycles.resize(capacity / 16 + 64);

  loop_.reset(pw_main_loop_new(nullptr));
  pw_loop* loop = pw_main_loop_get_loop(loop_.get());
  spa_source* sigint = pw_loop_add_signal(loop, SIGINT, &on_signal, this);
  spa_source* sigterm = pw_loop_add_signal(loop, SIGTERM, &on_signal, this);
  // client-rt.conf (module-rt): the probe's data thread gets SCHED_FIFO like the node under test
  // and every audio client, so on a busy machine it does not lose cycles to ordinary processes
  // (which the analysis would have to tell apart from the node's own losses).
  context_.reset(pw_context_new(loop, pw_properties_new(PW_KEY_CONFIG_NAME, "client-rt.conf", nullptr), 0));
  core_.reset(context_ ? pw_context_connect(context_.get(), nullptr, 0) : nullptr);
  if (!core_) {
    error_ = std::string("cannot connect to PipeWire: ") +
             std::error_code(errno, std::generic_category()).message();
  } else {
    static constexpr pw_core_events core_events = [] {
      pw_core_events e{};
      e.version = PW_VERSION_CORE_EVENTS;
      e.error = &on_core_error;
      return e;
    }();
    static constexpr pw_registry_events registry_events = [] {
      pw_registry_events e{};
      e.version = PW_VERSION_REGISTRY_EVENTS;
      e.global = &on_global;
      e.global_remove = &on_global_remove;
      return e;
    }();
    spa_zero(core_listener_);
    pw_core_add_listener(core_.get(), &core_listener_, &core_events, this);
    registry_.proxy.reset(pw_core_get_registry(core_.get(), PW_VERSION_REGISTRY, 0));
    pw_registry_add_listener(registry_.proxy.get(), &registry_.listener, &registry_events, this);

    spa_source* timer = pw_loop_add_timer(loop, &on_tick, this);
    timespec interval{0, static_cast<long>(tick_ms * 1'000'000)};
    pw_loop_update_timer(loop, timer, &interval, &interval, false);
    deadline_ticks_ = static_cast<std::uint64_t>(opts_.timeout_s * 1000.0 / static_cast<double>(tick_ms));

    pw_main_loop_run(loop_.get());

    shared_.stop.store(true);
    pw_loop_destroy_source(loop, timer);
    if (src_) {
      pw_filter_disconnect(src_.get());
    }
    if (cap_) {
      pw_filter_disconnect(cap_.get());
    }
  }

  const std::size_t n_cycles = shared_.n_cycles.load(std::memory_order_acquire);
  std::optional<Report> rep;
  if (error_.empty() && n_cycles == 0) {
    error_ = interrupted_ ? "interrupted before anything was captured" : "nothing captured";
  }
  if (n_cycles > 0) {
    std::vector<CapturedCycle> cycles(shared_.cycles.begin(),
                                      shared_.cycles.begin() + static_cast<long>(n_cycles));
    std::vector<std::vector<float>> captured;
    const std::uint64_t frames = shared_.n_frames.load();
    for (const auto& ch : shared_.captured) {
      captured.emplace_back(ch.begin(), ch.begin() + static_cast<long>(frames));
    }
    rep = analyze(opts_.signal, positions_, captured, cycles, opts_.expect_gain, opts_.max_delay, 1e-6,
                  opts_.second_gain, opts_.dry_gain);
  }
  const std::string json = report_json(rep ? &*rep : nullptr);
  if (opts_.json_path.empty()) {
    std::fputs(json.c_str(), stdout);
  } else {
    std::ofstream(opts_.json_path, std::ios::trunc) << json;
  }
  if (!opts_.wav_path.empty() && n_cycles > 0) {
    write_wav();
  }
  if (!opts_.status_path.empty()) {
    write_status();
  }

  // Teardown in reverse: links, nodes, registry, core.
  links_.clear();
  if (src_) {
    spa_hook_remove(&src_listener_);
  }
  if (cap_) {
    spa_hook_remove(&cap_listener_);
  }
  src_.reset();
  cap_.reset();
  if (registry_.proxy) {
    spa_hook_remove(&registry_.listener);
    registry_.proxy.reset();
  }
  if (core_) {
    spa_hook_remove(&core_listener_);
  }
  core_.reset();
  context_.reset();
  pw_loop_destroy_source(loop, sigint);
  pw_loop_destroy_source(loop, sigterm);
  loop_.reset();
  return error_.empty() ? 0 : 1;
}

}  // namespace
}  // namespace sandpipe::integration

int main(int argc, char** argv) {
  pw_init(&argc, &argv);
  auto opts = sandpipe::integration::parse_args(argc, argv);
  if (!opts) {
    return 2;
  }
  const int status = sandpipe::integration::Probe(std::move(*opts)).run();
  pw_deinit();
  return status;
}
