// The streams' main-thread part: their properties and formats, Props, latency, scheduling.
#include "host/node/stream-node.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <pipewire/pipewire.h>
#include <spa/param/audio/format-utils.h>
#include <spa/param/latency-utils.h>
#include <spa/param/props.h>
#include <spa/pod/builder.h>

#include "host/node/filter-node.h"
#include "host/node/node-props.h"
#include "host/node/pw-handles.h"
#include "host/slot/log.h"

// The node's log (host/slot/log.h); only the exit summary (print_counters) is plain stderr.
#define PW_LOG_TOPIC_DEFAULT ::sandpipe::host::node_log

namespace sandpipe::host {
namespace {

using namespace detail;  // the pw_* handles, the node constants

/// The data thread's listener of a stream: only its process callback.
constexpr pw_stream_events rt_events(decltype(pw_stream_events::process) process) {
  pw_stream_events e{};
  e.version = PW_VERSION_STREAM_EVENTS;
  e.process = process;
  return e;
}

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

/// Which streams a chain becomes (see stream-node.h).
enum class Shape : std::uint8_t { virtual_sink, virtual_source, source, sink };

/// [main] The shape for `chain` under `config`; throws PluginError naming why none fits.
Shape shape_of(const ChainConfig& config, const Chain& chain) {
  if (config.mode == NodeMode::sink || config.mode == NodeMode::source) {
    const std::string mode(to_string(config.mode));
    if (chain.has_source() || chain.has_sink()) {
      throw PluginError("mode = \"" + mode + "\" runs a processing chain, not one that " +
                        (chain.has_source() ? "starts with a source" : "ends with a sink") + " plugin (without mode = \"" +
                        mode + "\" the node is then an Audio/Source or Audio/Sink itself)");
    }
    return config.mode == NodeMode::sink ? Shape::virtual_sink : Shape::virtual_source;
  }
  if (chain.has_source() && chain.has_sink()) {
    throw PluginError(
        "the chain starts with a source and ends with a sink: the node would have no ports "
        "(sandpipe render runs such a chain)");
  }
  if (chain.has_source()) return Shape::source;
  if (chain.has_sink()) return Shape::sink;
  throw std::logic_error("a processing chain outside sink mode is a filter node (host/node/filter-node.h)");
}

/// The streams and their chain. Not copyable; lives in run_with_pipewire.
class StreamNode final : public GraphNode {
 public:
  /// [main] Takes the chain and creates (not yet connects) the streams of its shape. Throws
  /// PluginError or std::runtime_error.
  StreamNode(const ChainConfig& config, const PipeWireEnv& env, std::unique_ptr<Chain> chain)
      : config_(config), loop_(env.main_loop), rate_(env.rate), props_(config), chain_(std::move(chain)) {
    shape_ = shape_of(config, *chain_);
    props_.attach(*chain_);
    publish_cycle_timing(*chain_, rt_.counters.timing);

    const std::string& name = config.node_name;
    const std::string description = config.node_description.empty() ? name : config.node_description;
    if (shape_ == Shape::virtual_source) {
      // The device side: captures the default input (or `target`), passive, so the microphone
      // runs only while something records from NODE.
      capture_.reset(pw_stream_new(env.core, (name + " input").c_str(),
                                   stream_props(name + ".input", description + " input", "Stream/Input/Audio", true)));
    } else if (shape_ != Shape::source) {
      capture_.reset(pw_stream_new(env.core, (name + " input").c_str(),
                                   stream_props(name, description, "Audio/Sink", false)));
    }
    if (shape_ != Shape::source && !capture_)
      throw std::runtime_error("pw_stream_new (input): " + errno_message(errno));
    if (shape_ == Shape::virtual_sink) {
      playback_.reset(pw_stream_new(env.core, (name + " output").c_str(),
                                    stream_props(name + ".output", description + " output", "Stream/Output/Audio", true)));
    } else if (shape_ == Shape::source || shape_ == Shape::virtual_source) {
      playback_.reset(pw_stream_new(env.core, (name + " output").c_str(),
                                    stream_props(name, description, "Audio/Source", false)));
    }
    if (shape_ != Shape::sink && !playback_)
      throw std::runtime_error("pw_stream_new (output): " + errno_message(errno));

    rt_.capture = capture_.get();
    rt_.playback = playback_.get();
    rt_.chain = chain_.get();
    rt_.channels = config.channels;
    rt_.rate = rate_;
    rt_.silence.assign(max_quantum, 0.0F);
    rt_.discard.assign(std::size_t{config.channels} * max_quantum, 0.0F);
    rt_.main_loop = pw_main_loop_get_loop(loop_);
    rt_.schedule.on_request = &StreamNode::on_schedule_request;
    rt_.schedule.data = this;
    rt_.schedule.chain_quantum.store(chain_->block_frames(), std::memory_order_relaxed);
    data_loop_ = pw_data_loop_get_loop(pw_context_get_data_loop(pw_core_get_context(env.core)));

    static constexpr pw_stream_events capture_rt_events = rt_events(&detail::on_capture_process_rt);
    static constexpr pw_stream_events playback_rt_events = rt_events(&detail::on_playback_process_rt);
    static const pw_stream_events capture_events =
        main_events(&StreamNode::on_capture_param_changed, &StreamNode::on_capture_io_changed);
    static const pw_stream_events playback_events =
        main_events(&StreamNode::on_playback_param_changed, &StreamNode::on_playback_io_changed);
    if (capture_) {
      pw_stream_add_listener(capture_.get(), capture_rt_hook_.get(), &capture_rt_events, &rt_);
      pw_stream_add_listener(capture_.get(), capture_hook_.get(), &capture_events, this);
    }
    if (playback_) {
      pw_stream_add_listener(playback_.get(), playback_rt_hook_.get(), &playback_rt_events, &rt_);
      pw_stream_add_listener(playback_.get(), playback_hook_.get(), &playback_events, this);
    }

    // The scheduler's review: auto slots with sustained deadline misses get deeper pipelines.
    review_timer_ = std::make_unique<LoopSource>(
        rt_.main_loop, pw_loop_add_timer(rt_.main_loop, &StreamNode::on_review, this));
    if (review_timer_->get() != nullptr) {
      timespec interval{static_cast<time_t>(schedule_review_ns / 1'000'000'000U), 0};
      pw_loop_update_timer(rt_.main_loop, review_timer_->get(), &interval, &interval, false);
    }
    // What earlier-API plugins read back after a live change (see FilterNode): the supervisor's
    // thread signals this event, Props are republished on the main loop.
    read_back_event_ = std::make_unique<LoopSource>(
        rt_.main_loop, pw_loop_add_event(rt_.main_loop, &StreamNode::on_read_back, this));
    if (spa_source* event = read_back_event_->get(); event != nullptr) {
      chain_->supervisor().set_read_back_listener(
          [main = rt_.main_loop, event] { pw_loop_signal_event(main, event); });
    }
  }

  ~StreamNode() override {
    // The status no longer reads rt_ (destroyed before the chain's supervisor thread stops).
    chain_->supervisor().set_node_status({});
    chain_->supervisor().set_read_back_listener({});
    // Streams first: after pw_stream_destroy no process callback runs, then the chain goes.
    review_timer_.reset();
    capture_rt_hook_.remove();
    playback_rt_hook_.remove();
    capture_hook_.remove();
    playback_hook_.remove();
    playback_.reset();
    capture_.reset();
    // A schedule request the data thread posted just before may still sit in the main loop's
    // queue, pointing at this object: flush it now, while it is harmless.
    closing_ = true;
    pw_loop_iterate(rt_.main_loop, 0);
  }
  StreamNode(const StreamNode&) = delete;
  StreamNode& operator=(const StreamNode&) = delete;
  StreamNode(StreamNode&&) = delete;
  StreamNode& operator=(StreamNode&&) = delete;

  /// [main] Connects the streams (NODE's with the PropInfo/Props and the Latency). Returns 0 or
  /// -errno.
  int connect() override {
    spa_audio_info_raw info{};
    info.format = SPA_AUDIO_FORMAT_F32P;
    info.rate = rate_;
    info.channels = config_.channels;
    const auto positions = channel_positions(config_.channels);
    for (std::uint32_t ch = 0; ch < config_.channels && ch < SPA_AUDIO_MAX_CHANNELS; ++ch)
      info.position[ch] = spa_position(positions.at(ch));

    const auto flags = static_cast<pw_stream_flags>(PW_STREAM_FLAG_AUTOCONNECT | PW_STREAM_FLAG_MAP_BUFFERS |
                                                    PW_STREAM_FLAG_RT_PROCESS);
    for (pw_stream* stream : {capture_.get(), playback_.get()}) {
      if (stream == nullptr) continue;
      std::vector<std::uint8_t> buffer(2048 + props_.pod_bytes());
      spa_pod_builder b{};
      spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
      std::vector<const spa_pod*> params{spa_format_audio_raw_build(&b, SPA_PARAM_EnumFormat, &info),
                                         latency_param(b, stream)};
      if (stream == props_stream())
        for (const spa_pod* p : props_.build_params(b)) params.push_back(p);
      const bool input = stream == capture_.get();
      // The pair's playback is driven by the capture's cycle (trigger), as in filter-chain.
      const auto stream_flags = paired() && !input
                                    ? static_cast<pw_stream_flags>(flags | PW_STREAM_FLAG_TRIGGER)
                                    : flags;
      const int res =
          pw_stream_connect(stream, input ? PW_DIRECTION_INPUT : PW_DIRECTION_OUTPUT, PW_ID_ANY, stream_flags,
                            params.data(), static_cast<std::uint32_t>(params.size()));
      if (res < 0) return res;
    }
    return 0;
  }

  /// [main]
  void disconnect() override {
    if (playback_) pw_stream_disconnect(playback_.get());
    if (capture_) pw_stream_disconnect(capture_.get());
  }

  [[nodiscard]] int failure() const noexcept override { return failure_; }

  /// [main] What the data thread counted, one line, then one line per slot.
  void print_counters() const override {
    const auto& c = rt_.counters;
    std::fprintf(stderr, "sandpipe: %s no-output-buffer=%llu no-input=%llu oversized=%llu\n",
                 c.timing.exit_fields().c_str(),
                 static_cast<unsigned long long>(c.no_output_buffer.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.no_input_buffer.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.oversized.load(std::memory_order_relaxed)));
    print_slot_counters(*chain_);
  }

 private:
  /// [main] Properties of one stream. `device_side`: the pair's stream that WirePlumber links
  /// to a device (the virtual sink's output, the virtual source's input), passive and aimed at
  /// `target` when the config names one.
  [[nodiscard]] pw_properties* stream_props(const std::string& node_name, const std::string& description,
                                            const char* media_class, bool device_side) const {
    pw_properties* p = pw_properties_new(
        PW_KEY_NODE_NAME, node_name.c_str(), PW_KEY_NODE_DESCRIPTION, description.c_str(), PW_KEY_MEDIA_NAME,
        description.c_str(), PW_KEY_MEDIA_CLASS, media_class, "resample.prefill", "true", nullptr);
    if (p != nullptr && paired()) {
      // One group (one driver, one cycle); the link group keeps WirePlumber from linking the
      // pair's streams to each other (the output back into the sink, the source into its input).
      const std::string group = "sandpipe-" + config_.node_name;
      pw_properties_set(p, PW_KEY_NODE_GROUP, group.c_str());
      pw_properties_set(p, PW_KEY_NODE_LINK_GROUP, group.c_str());
      pw_properties_set(p, PW_KEY_NODE_VIRTUAL, "true");
      if (device_side) {
        pw_properties_set(p, PW_KEY_NODE_PASSIVE, "true");
        // Without a target WirePlumber links the default device and moves the link when the
        // default changes.
        if (!config_.target.empty()) pw_properties_set(p, PW_KEY_TARGET_OBJECT, config_.target.c_str());
      }
    }
    return p;
  }

  /// [main] Two streams in one group: a virtual sink or a virtual source.
  [[nodiscard]] bool paired() const noexcept {
    return shape_ == Shape::virtual_sink || shape_ == Shape::virtual_source;
  }

  /// [main] The stream that is NODE (its Props, its name in the graph).
  [[nodiscard]] pw_stream* props_stream() const noexcept {
    return shape_ == Shape::source || shape_ == Shape::virtual_source ? playback_.get() : capture_.get();
  }

  /// [main] The port Latency of `stream`: the chain's latency on top of what the graph reported
  /// on the other stream of a pair. Capture: towards the device (input direction, what an
  /// application's playback waits); playback: from the application (output direction).
  const spa_pod* latency_param(spa_pod_builder& b, const pw_stream* stream) const {
    const bool input = stream == capture_.get();
    spa_latency_info info = input ? downstream_ : upstream_;
    info.direction = input ? SPA_DIRECTION_INPUT : SPA_DIRECTION_OUTPUT;
    info.min_rate += chain_->latency_frames();
    info.max_rate += chain_->latency_frames();
    return spa_latency_build(&b, SPA_PARAM_Latency, &info);
  }

  /// [main] Re-publishes every stream's Latency (the chain's latency or the graph's changed).
  void publish_latency() {
    for (pw_stream* stream : {capture_.get(), playback_.get()}) {
      if (stream == nullptr) continue;
      std::array<std::uint8_t, 256> buffer{};
      spa_pod_builder b{};
      spa_pod_builder_init(&b, buffer.data(), buffer.size());
      const spa_pod* params[1] = {latency_param(b, stream)};
      pw_stream_update_params(stream, params, 1);
    }
  }

  /// [main] Invoked on the main loop by the data thread when the quantum differs from the one
  /// the chain is scheduled for: pipelined slots take L = k × the new quantum.
  static int on_schedule_request(spa_loop* /*loop*/, bool /*async*/, std::uint32_t /*seq*/,
                                 const void* /*data*/, std::size_t /*size*/, void* user_data) noexcept {
    auto* self = static_cast<StreamNode*>(user_data);
    if (self->closing_) return 0;
    const std::uint32_t quantum = self->rt_.schedule.graph_quantum.load(std::memory_order_relaxed);
    if (reschedule_live_chain(*self->chain_, quantum)) self->latency_changed();
    self->rt_.schedule.chain_quantum.store(quantum, std::memory_order_relaxed);
    self->rt_.schedule.requested.store(false, std::memory_order_release);
    return 0;
  }

  /// [main] The periodic scheduler review (a main-loop timer).
  static void on_review(void* data, std::uint64_t /*expirations*/) {
    auto* self = static_cast<StreamNode*>(data);
    if (!self->closing_ && review_live_chain(*self->chain_)) self->latency_changed();
  }

  void latency_changed() {
    publish_latency();
    pw_log_info("latency now %u frames (quantum %u)", chain_->latency_frames(), chain_->block_frames());
  }

  /// The main thread's listener of a stream: state, format and io of one direction.
  static constexpr pw_stream_events main_events(decltype(pw_stream_events::param_changed) param_changed,
                                                decltype(pw_stream_events::io_changed) io_changed) {
    pw_stream_events e{};
    e.version = PW_VERSION_STREAM_EVENTS;
    e.state_changed = &StreamNode::on_state_changed;
    e.param_changed = param_changed;
    e.io_changed = io_changed;
    return e;
  }

  static void on_state_changed(void* data, pw_stream_state /*old*/, pw_stream_state state,
                               const char* error) {
    auto* self = static_cast<StreamNode*>(data);
    pw_stream* node = self->props_stream();
    if (state == PW_STREAM_STATE_ERROR) {
      pw_log_error("stream error: %s", error != nullptr ? error : "unknown");
      self->failure_ = 1;
      pw_main_loop_quit(self->loop_);
    } else if (state == PW_STREAM_STATE_PAUSED && !self->announced_ &&
               pw_stream_get_node_id(node) != SPA_ID_INVALID) {
      self->announced_ = true;
      const bool as_source = self->shape_ == Shape::source || self->shape_ == Shape::virtual_source;
      const char* pair = self->shape_ == Shape::virtual_sink     ? "; output stream \""
                         : self->shape_ == Shape::virtual_source ? "; input stream \""
                                                                 : "";
      const char* suffix = self->shape_ == Shape::virtual_sink     ? ".output\""
                           : self->shape_ == Shape::virtual_source ? ".input\""
                                                                   : "";
      pw_log_info("%s \"%s\" (id %u) ready, %u channels, chain at %u Hz, latency %u frames%s%s%s",
                  as_source ? "source" : "sink", self->config_.node_name.c_str(), pw_stream_get_node_id(node),
                  self->config_.channels, self->rate_, self->chain_->latency_frames(), pair,
                  self->paired() ? self->config_.node_name.c_str() : "", suffix);
    }
  }

  static void on_capture_param_changed(void* data, std::uint32_t id, const spa_pod* param) {
    static_cast<StreamNode*>(data)->on_param_changed(true, id, param);
  }
  static void on_playback_param_changed(void* data, std::uint32_t id, const spa_pod* param) {
    static_cast<StreamNode*>(data)->on_param_changed(false, id, param);
  }

  /// [main] Props on NODE ("SLOT:PARAM" values; others, a volume, are not ours) and the Latency
  /// the graph reports on a stream.
  void on_param_changed(bool capture, std::uint32_t id, const spa_pod* param) {
    if (id == SPA_PARAM_Latency) {
      // The graph's latency on the other side of this stream: the other stream of a pair adds
      // the chain's latency to it. pw_stream dropped our own Latency when it stored this one:
      // publish again.
      spa_latency_info info{};
      if (param != nullptr && spa_latency_parse(param, &info) >= 0 && paired()) {
        if (capture && info.direction == SPA_DIRECTION_OUTPUT) upstream_ = info;
        if (!capture && info.direction == SPA_DIRECTION_INPUT) downstream_ = info;
      }
      publish_latency();
      return;
    }
    if (id != SPA_PARAM_Props || param == nullptr || (capture != (props_stream() == capture_.get()))) return;
    apply_props(param, props_, *chain_, rt_.param_changes,
                [this](const spa_pod* props) { pw_stream_update_params(props_stream(), &props, 1); });
  }

  /// [main] read_back_event_: Props take what the plugins read back (NodeProps::take_read_backs).
  static void on_read_back(void* data, std::uint64_t /*count*/) {
    auto* self = static_cast<StreamNode*>(data);
    if (self->closing_) return;
    apply_read_backs(self->props_, *self->chain_, [self](const spa_pod* props) {
      pw_stream_update_params(self->props_stream(), &props, 1);
    });
  }

  static void on_capture_io_changed(void* data, std::uint32_t id, void* area, std::uint32_t size) {
    auto* self = static_cast<StreamNode*>(data);
    if (self->playback_ == nullptr) self->set_position(id, area, size);  // a sink chain runs on capture
  }
  static void on_playback_io_changed(void* data, std::uint32_t id, void* area, std::uint32_t size) {
    static_cast<StreamNode*>(data)->set_position(id, area, size);
  }

  /// [main] Hands the running stream's position to the data thread, on the data loop (as
  /// pw_stream does for its own copy), so a cycle never sees a stale one.
  void set_position(std::uint32_t id, void* area, std::uint32_t size) {
    if (id != SPA_IO_Position) return;
    auto* position =
        area != nullptr && size >= sizeof(spa_io_position) ? static_cast<spa_io_position*>(area) : nullptr;
    pw_loop_invoke(data_loop_, &StreamNode::do_set_position, 0, &position, sizeof(position), true, &rt_);
  }

  /// [rt] Runs on the data loop: installs the position pointer passed in `data`.
  static int do_set_position(spa_loop* /*loop*/, bool /*async*/, std::uint32_t /*seq*/, const void* data,
                             std::size_t size, void* user_data) noexcept {
    spa_io_position* position = nullptr;
    if (size == sizeof(position)) std::memcpy(&position, data, sizeof(position));  // may be unaligned
    static_cast<StreamRtState*>(user_data)->position = position;
    return 0;
  }

  const ChainConfig& config_;
  pw_main_loop* loop_;
  pw_loop* data_loop_ = nullptr;
  std::uint32_t rate_;
  Shape shape_ = Shape::virtual_sink;
  NodeProps props_;
  std::unique_ptr<Chain> chain_;  ///< destroyed after the streams (declared before them)
  StreamRtState rt_;
  spa_latency_info upstream_{};    ///< the pair's capture: latency from the applications
  spa_latency_info downstream_{};  ///< the pair's playback: latency to the device
  StreamPtr capture_;
  StreamPtr playback_;
  Hook capture_rt_hook_;
  Hook playback_rt_hook_;
  Hook capture_hook_;
  Hook playback_hook_;
  std::unique_ptr<LoopSource> review_timer_;
  std::unique_ptr<LoopSource> read_back_event_;  ///< signalled by the supervisor
  int failure_ = 0;
  bool announced_ = false;
  bool closing_ = false;
};

}  // namespace

std::unique_ptr<GraphNode> make_stream_node(const ChainConfig& config, const PipeWireEnv& env,
                                            std::unique_ptr<Chain> chain) {
  return std::make_unique<StreamNode>(config, env, std::move(chain));
}

}  // namespace sandpipe::host
