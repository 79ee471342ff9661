// The virtual sink's main-thread part: the two streams, their formats and properties, Props.
#include "host/sink-node.h"

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>

#include <pipewire/pipewire.h>
#include <spa/param/audio/format-utils.h>
#include <spa/param/latency-utils.h>
#include <spa/param/props.h>
#include <spa/pod/builder.h>

#include "host/filter-node.h"
#include "host/node-props.h"
#include "host/port-latency.h"

namespace sandpipe::host {
namespace {

std::string errno_message(int err) { return std::error_code(err, std::generic_category()).message(); }

/// [any] SPA channel position for one of channel_positions()'s names.
std::uint32_t spa_position(const std::string& name) noexcept {
  static constexpr std::pair<const char*, std::uint32_t> table[] = {
      {"MONO", SPA_AUDIO_CHANNEL_MONO}, {"FL", SPA_AUDIO_CHANNEL_FL},   {"FR", SPA_AUDIO_CHANNEL_FR},
      {"FC", SPA_AUDIO_CHANNEL_FC},     {"LFE", SPA_AUDIO_CHANNEL_LFE}, {"RL", SPA_AUDIO_CHANNEL_RL},
      {"RR", SPA_AUDIO_CHANNEL_RR},     {"SL", SPA_AUDIO_CHANNEL_SL},   {"SR", SPA_AUDIO_CHANNEL_SR}};
  for (const auto& [n, pos] : table)
    if (name == n) return pos;
  return SPA_AUDIO_CHANNEL_UNKNOWN;
}

struct StreamDeleter {
  void operator()(pw_stream* s) const noexcept { pw_stream_destroy(s); }
};
using StreamPtr = std::unique_ptr<pw_stream, StreamDeleter>;

/// The sink and its chain. Not copyable; lives on run_sink_node's stack.
class SinkNode {
 public:
  /// [main] Builds the chain and creates (not yet connects) both streams. Throws PluginError or
  /// std::runtime_error.
  SinkNode(const ChainConfig& config, pw_main_loop* loop, pw_core* core)
      : config_(config), loop_(loop), props_(config) {
    ChainOptions options;
    options.block_frames = detail::default_quantum;  // pipelined slots: k × the usual quantum
    options.sandbox_rt_priority = live_sandbox_rt_priority;
    chain_ = std::make_unique<Chain>(props_.config(), static_cast<double>(detail::default_rate),
                                     detail::chain_block_frames, std::move(options));
    if (chain_->has_source() || chain_->has_sink()) {
      throw PluginError(std::string("mode = \"sink\" runs a processing chain, not one that ") +
                        (chain_->has_source() ? "starts with a source" : "ends with a sink") +
                        " plugin (with mode = \"filter\" the node is then an Audio/Source or Audio/Sink itself)");
    }
    props_.attach(*chain_);

    const std::string& name = config.node_name;
    const std::string description = config.node_description.empty() ? name : config.node_description;
    const std::string group = "sandpipe-" + name;
    capture_.reset(pw_stream_new(
        core, (name + " input").c_str(),
        pw_properties_new(PW_KEY_NODE_NAME, name.c_str(), PW_KEY_NODE_DESCRIPTION, description.c_str(),
                          PW_KEY_MEDIA_NAME, (description + " input").c_str(), PW_KEY_MEDIA_CLASS, "Audio/Sink",
                          PW_KEY_NODE_GROUP, group.c_str(), PW_KEY_NODE_LINK_GROUP, group.c_str(),
                          PW_KEY_NODE_VIRTUAL, "true", "resample.prefill", "true", nullptr)));
    if (!capture_) throw std::runtime_error("pw_stream_new (sink): " + errno_message(errno));
    playback_.reset(pw_stream_new(
        core, (name + " output").c_str(),
        pw_properties_new(PW_KEY_NODE_NAME, (name + ".output").c_str(), PW_KEY_NODE_DESCRIPTION,
                          (description + " output").c_str(), PW_KEY_MEDIA_NAME, (description + " output").c_str(),
                          PW_KEY_MEDIA_CLASS, "Stream/Output/Audio", PW_KEY_NODE_GROUP, group.c_str(),
                          PW_KEY_NODE_LINK_GROUP, group.c_str(), PW_KEY_NODE_VIRTUAL, "true", PW_KEY_NODE_PASSIVE,
                          "true", "resample.prefill", "true", nullptr)));
    if (!playback_) throw std::runtime_error("pw_stream_new (output): " + errno_message(errno));

    rt_.capture = capture_.get();
    rt_.playback = playback_.get();
    rt_.chain = chain_.get();
    rt_.channels = config.channels;
    rt_.rate = detail::default_rate;
    rt_.silence.assign(detail::max_quantum, 0.0F);

    static constexpr pw_stream_events capture_events = [] {
      pw_stream_events e{};
      e.version = PW_VERSION_STREAM_EVENTS;
      e.process = &detail::on_capture_process_rt;
      return e;
    }();
    static constexpr pw_stream_events playback_events = [] {
      pw_stream_events e{};
      e.version = PW_VERSION_STREAM_EVENTS;
      e.process = &detail::on_playback_process_rt;
      return e;
    }();
    static constexpr pw_stream_events main_events = [] {
      pw_stream_events e{};
      e.version = PW_VERSION_STREAM_EVENTS;
      e.state_changed = &SinkNode::on_state_changed;
      e.param_changed = &SinkNode::on_param_changed;
      return e;
    }();
    static constexpr pw_stream_events playback_main_events = [] {
      pw_stream_events e = main_events;
      e.param_changed = &SinkNode::on_playback_param_changed;
      return e;
    }();
    pw_stream_add_listener(capture_.get(), &capture_rt_hook_, &capture_events, &rt_);
    pw_stream_add_listener(playback_.get(), &playback_rt_hook_, &playback_events, &rt_);
    pw_stream_add_listener(capture_.get(), &capture_hook_, &main_events, this);
    pw_stream_add_listener(playback_.get(), &playback_hook_, &playback_main_events, this);
  }

  ~SinkNode() {
    // Streams first: after pw_stream_destroy no process callback runs, then the chain goes.
    spa_hook_remove(&capture_rt_hook_);
    spa_hook_remove(&playback_rt_hook_);
    spa_hook_remove(&capture_hook_);
    spa_hook_remove(&playback_hook_);
    playback_.reset();
    capture_.reset();
  }
  SinkNode(const SinkNode&) = delete;
  SinkNode& operator=(const SinkNode&) = delete;
  SinkNode(SinkNode&&) = delete;
  SinkNode& operator=(SinkNode&&) = delete;

  /// [main] Connects both streams (capture with the PropInfo/Props). Returns 0 or -errno.
  int connect() {
    spa_audio_info_raw info{};
    info.format = SPA_AUDIO_FORMAT_F32P;
    info.rate = detail::default_rate;
    info.channels = config_.channels;
    const auto positions = channel_positions(config_.channels);
    for (std::uint32_t ch = 0; ch < config_.channels && ch < SPA_AUDIO_MAX_CHANNELS; ++ch)
      info.position[ch] = spa_position(positions.at(ch));

    std::vector<std::uint8_t> buffer(1024 + props_.pod_bytes());
    spa_pod_builder b{};
    spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
    std::vector<const spa_pod*> params{spa_format_audio_raw_build(&b, SPA_PARAM_EnumFormat, &info)};
    for (const spa_pod* p : props_.build_params(b)) params.push_back(p);
    const auto flags = static_cast<pw_stream_flags>(PW_STREAM_FLAG_AUTOCONNECT | PW_STREAM_FLAG_MAP_BUFFERS |
                                                    PW_STREAM_FLAG_RT_PROCESS);
    int res = pw_stream_connect(capture_.get(), PW_DIRECTION_INPUT, PW_ID_ANY, flags, params.data(),
                                static_cast<std::uint32_t>(params.size()));
    if (res < 0) return res;
    res = pw_stream_connect(playback_.get(), PW_DIRECTION_OUTPUT, PW_ID_ANY,
                            static_cast<pw_stream_flags>(flags | PW_STREAM_FLAG_TRIGGER), params.data(), 1);
    if (res >= 0) {
      publish_latency(SPA_DIRECTION_OUTPUT);
      publish_latency(SPA_DIRECTION_INPUT);
    }
    return res;
  }

  /// [main]
  void disconnect() {
    pw_stream_disconnect(playback_.get());
    pw_stream_disconnect(capture_.get());
  }

  [[nodiscard]] int failure() const noexcept { return failure_; }

  /// [main] What the data thread counted, one line, then one line per slot.
  void print_counters() const {
    const auto& c = rt_.counters;
    std::fprintf(stderr, "sandpipe: cycles=%llu no-output-buffer=%llu no-input=%llu oversized=%llu\n",
                 static_cast<unsigned long long>(c.cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.no_output_buffer.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.no_input_buffer.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.oversized.load(std::memory_order_relaxed)));
    for (const auto& slot : chain_->slots()) {
      const SlotCounters sc = slot->counters();
      std::fprintf(stderr, "sandpipe: slot %.*s: blocks=%llu deadline-misses=%llu bypassed=%llu sanitized=%llu\n",
                   static_cast<int>(slot->name().size()), slot->name().data(),
                   static_cast<unsigned long long>(sc.blocks), static_cast<unsigned long long>(sc.deadline_misses),
                   static_cast<unsigned long long>(sc.bypassed_blocks),
                   static_cast<unsigned long long>(sc.sanitized_blocks));
    }
  }

 private:
  static void on_state_changed(void* data, pw_stream_state /*old*/, pw_stream_state state, const char* error) {
    auto* self = static_cast<SinkNode*>(data);
    if (state == PW_STREAM_STATE_ERROR) {
      std::fprintf(stderr, "sandpipe: stream error: %s\n", error != nullptr ? error : "unknown");
      self->failure_ = 1;
      pw_main_loop_quit(self->loop_);
    } else if (state == PW_STREAM_STATE_PAUSED && !self->announced_ &&
               pw_stream_get_node_id(self->capture_.get()) != SPA_ID_INVALID) {
      self->announced_ = true;
      std::fprintf(stderr,
                   "sandpipe: sink \"%s\" (id %u) ready, %u channels, chain at %u Hz, latency %u frames; "
                   "output stream \"%s.output\"\n",
                   self->config_.node_name.c_str(), pw_stream_get_node_id(self->capture_.get()),
                   self->config_.channels, detail::default_rate, self->chain_->latency_frames(),
                   self->config_.node_name.c_str());
    }
  }

  /// [main] The chain's latency on the streams' ports, as module-filter-chain forwards a
  /// latency from one stream to the other, plus the chain's: SPA_DIRECTION_OUTPUT (from the
  /// applications, via the sink) on the playback stream, INPUT (to the device, via the playback
  /// stream) on the sink. The chain's latency is fixed (it is scheduled for default_quantum).
  void publish_latency(spa_direction direction) {
    const spa_latency_info info = port_latency_.published(direction, chain_->latency_frames());
    std::array<std::uint8_t, 256> buffer{};
    spa_pod_builder b{};
    spa_pod_builder_init(&b, buffer.data(), buffer.size());
    const spa_pod* params[1] = {spa_latency_build(&b, SPA_PARAM_Latency, &info)};
    pw_stream_update_params(direction == SPA_DIRECTION_OUTPUT ? playback_.get() : capture_.get(), params, 1);
  }

  /// [main] A stream's port got its peers' latency: the other stream re-publishes.
  void on_latency(spa_direction port_direction, const spa_pod* param) {
    spa_latency_info info{};
    if (param == nullptr || spa_latency_parse(param, &info) < 0) return;
    if (const auto changed = port_latency_.peer_latency(port_direction, 0, info)) publish_latency(*changed);
  }

  /// [main] The playback stream's params: its latency to the device; Props as on the sink.
  static void on_playback_param_changed(void* data, std::uint32_t id, const spa_pod* param) {
    if (id == SPA_PARAM_Latency) {
      static_cast<SinkNode*>(data)->on_latency(SPA_DIRECTION_OUTPUT, param);
      return;
    }
    on_param_changed(data, id, param);
  }

  /// [main] Props on the sink node ("SLOT:PARAM" values); others (a volume) are not ours. Its
  /// latency from the applications.
  static void on_param_changed(void* data, std::uint32_t id, const spa_pod* param) {
    auto* self = static_cast<SinkNode*>(data);
    if (id == SPA_PARAM_Latency) {
      self->on_latency(SPA_DIRECTION_INPUT, param);
      return;
    }
    if (id != SPA_PARAM_Props || param == nullptr) return;
    try {
      if (self->props_.apply(param, *self->chain_, self->rt_.param_changes) > 0) {
        std::vector<std::uint8_t> buffer(self->props_.pod_bytes());
        spa_pod_builder b{};
        spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
        const spa_pod* params[1] = {self->props_.build_props(b)};
        pw_stream_update_params(self->capture_.get(), params, 1);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sandpipe: cannot apply Props: %s\n", e.what());
    }
  }

  const ChainConfig& config_;
  pw_main_loop* loop_;
  NodeProps props_;
  std::unique_ptr<Chain> chain_;  ///< destroyed after the streams (declared before them)
  detail::SinkRtState rt_;
  PortLatency port_latency_{1, 1};  ///< the sink's (input) and the playback stream's (output) peers
  StreamPtr capture_;
  StreamPtr playback_;
  spa_hook capture_rt_hook_{};
  spa_hook playback_rt_hook_{};
  spa_hook capture_hook_{};
  spa_hook playback_hook_{};
  int failure_ = 0;
  bool announced_ = false;
};

struct Watch {
  pw_main_loop* loop = nullptr;
  int failure = 0;
  static void on_error(void* data, std::uint32_t id, int /*seq*/, int res, const char* message) {
    auto* self = static_cast<Watch*>(data);
    if (id == PW_ID_CORE && res == -EPIPE) {
      std::fprintf(stderr, "sandpipe: lost the PipeWire daemon: %s\n", message != nullptr ? message : "");
      self->failure = 1;
      pw_main_loop_quit(self->loop);
    }
  }
};

void on_quit_signal(void* data, int /*signal_number*/) { pw_main_loop_quit(static_cast<pw_main_loop*>(data)); }

int run(const ChainConfig& config) {
  std::unique_ptr<pw_main_loop, decltype(&pw_main_loop_destroy)> loop(pw_main_loop_new(nullptr),
                                                                       &pw_main_loop_destroy);
  if (!loop) {
    std::fprintf(stderr, "sandpipe: cannot create a main loop: %s\n", errno_message(errno).c_str());
    return 1;
  }
  pw_loop* l = pw_main_loop_get_loop(loop.get());
  spa_source* sigint = pw_loop_add_signal(l, SIGINT, &on_quit_signal, loop.get());
  spa_source* sigterm = pw_loop_add_signal(l, SIGTERM, &on_quit_signal, loop.get());
  int status = 1;
  {
    std::unique_ptr<pw_context, decltype(&pw_context_destroy)> context(
        pw_context_new(l, pw_properties_new(PW_KEY_CONFIG_NAME, "client-rt.conf", nullptr), 0),
                                                                       &pw_context_destroy);
    std::unique_ptr<pw_core, decltype(&pw_core_disconnect)> core(
        context ? pw_context_connect(context.get(), nullptr, 0) : nullptr, &pw_core_disconnect);
    if (!core) {
      std::fprintf(stderr, "sandpipe: cannot connect to PipeWire: %s\n", errno_message(errno).c_str());
    } else {
      Watch watch{loop.get(), 0};
      spa_hook core_hook{};
      static constexpr pw_core_events core_events = [] {
        pw_core_events e{};
        e.version = PW_VERSION_CORE_EVENTS;
        e.error = &Watch::on_error;
        return e;
      }();
      pw_core_add_listener(core.get(), &core_hook, &core_events, &watch);
      {
        SinkNode node(config, loop.get(), core.get());
        if (const int res = node.connect(); res < 0) {
          std::fprintf(stderr, "sandpipe: cannot connect the sink streams: %s\n", errno_message(-res).c_str());
        } else {
          pw_main_loop_run(loop.get());
          node.disconnect();
          node.print_counters();
          status = (node.failure() != 0 || watch.failure != 0) ? 1 : 0;
        }
      }
      spa_hook_remove(&core_hook);
    }
  }
  pw_loop_destroy_source(l, sigterm);
  pw_loop_destroy_source(l, sigint);
  return status;
}

}  // namespace

int run_sink_node(const ChainConfig& config) {
  pw_init(nullptr, nullptr);
  int status = 1;
  try {
    status = run(config);
  } catch (const PluginError& e) {
    std::fprintf(stderr, "sandpipe: plugin error: %s\n", e.what());
    status = 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandpipe: %s\n", e.what());
    status = 1;
  }
  pw_deinit();
  return status;
}

}  // namespace sandpipe::host
