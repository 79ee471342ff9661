// The node's main-thread side: PipeWire setup, ports, the graph rate, chain swaps, teardown.
#include "host/node/filter-node.h"

#include <cassert>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include <pipewire/filter.h>
#include <pipewire/pipewire.h>
#include <spa/param/latency-utils.h>
#include <spa/pod/builder.h>
#include <spa/utils/result.h>

#include "host/node/node-props.h"
#include "host/node/port-latency.h"
#include "host/node/pw-handles.h"
#include "host/slot/log.h"
#include "shm/clock.h"

// The node's log (host/slot/log.h); only the exit summary (print_counters) is plain stderr.
#define PW_LOG_TOPIC_DEFAULT ::sandpipe::host::node_log

namespace sandpipe::host {
namespace {

using namespace detail;  // the pw_* handles (host/node/pw-handles.h)

/// [any] The rate a chain was built for, as the graph writes it.
std::uint32_t chain_rate(const Chain& chain) noexcept {
  return static_cast<std::uint32_t>(std::lround(chain.sample_rate()));
}

// ---- the node -------------------------------------------------------------------------------

/// The filter node and the chain it runs. Not copyable; lives in run_with_pipewire.
///
/// Ownership: the main thread owns the chain (`chain_`); the data thread only sees the raw
/// pointer in `rt_.chain`, which is written on the data loop so a swap never lands mid-cycle.
class FilterNode final : public GraphNode {
 public:
  /// [main] Takes `chain` (built from `config` by make_live_chain) and creates (not yet
  /// connects) the filter with its ports. Throws PluginError or std::runtime_error.
  FilterNode(const ChainConfig& config, const PipeWireEnv& env, std::unique_ptr<Chain> chain)
      : config_(config), main_loop_(env.main_loop), props_(config), chain_(std::move(chain)) {
    if (config.channels == 0 || config.channels > Chain::max_channels) {
      throw std::runtime_error("channels must be 1.." + std::to_string(Chain::max_channels));
    }
    if (chain_->has_source() || chain_->has_sink()) {
      throw std::logic_error("a source or sink chain is published as a stream (host/node/stream-node.h)");
    }
    props_.attach(*chain_);
    publish_timing();
    if (chain_->channels() != config.channels) {
      throw std::runtime_error("chain has " + std::to_string(chain_->channels()) + " channels, config " +
                               std::to_string(config.channels));
    }

    pw_context* context = pw_core_get_context(env.core);
    data_loop_ = pw_data_loop_get_loop(pw_context_get_data_loop(context));

    const std::string description =
        config.node_description.empty() ? config.node_name : config.node_description;
    PropertiesPtr props(pw_properties_new(PW_KEY_MEDIA_TYPE, "Audio",                  //
                                          PW_KEY_MEDIA_CATEGORY, "Filter",             //
                                          PW_KEY_MEDIA_ROLE, "DSP",                    //
                                          PW_KEY_MEDIA_CLASS, "Audio/Filter",          //
                                          PW_KEY_NODE_NAME, config.node_name.c_str(),  //
                                          PW_KEY_NODE_DESCRIPTION, description.c_str(),
                                          PW_KEY_NODE_AUTOCONNECT, "false", nullptr));
    filter_.reset(pw_filter_new(env.core, config.node_name.c_str(), props.release()));
    if (!filter_) {
      throw std::runtime_error(std::string("pw_filter_new: ") + errno_message(errno));
    }
    // Two listeners: the process callback gets the RtState, state changes get this object.
    static constexpr pw_filter_events state_events = [] {
      pw_filter_events e{};
      e.version = PW_VERSION_FILTER_EVENTS;
      e.state_changed = &FilterNode::on_state_changed;
      e.param_changed = &FilterNode::on_param_changed;
      return e;
    }();
    pw_filter_add_listener(filter_.get(), state_hook_.get(), &state_events, this);
    static constexpr pw_filter_events process_events = [] {
      pw_filter_events e{};
      e.version = PW_VERSION_FILTER_EVENTS;
      e.process = &detail::on_process_rt;
      return e;
    }();
    pw_filter_add_listener(filter_.get(), filter_hook_.get(), &process_events, &rt_);

    const std::vector<std::string> positions = channel_positions(config.channels);
    rt_.channels = config.channels;
    for (std::uint32_t ch = 0; ch < config.channels; ++ch) {
      const std::string& pos = positions.at(ch);
      rt_.in_ports[ch] = add_port(PW_DIRECTION_INPUT, "input_" + pos, pos);
      rt_.out_ports[ch] = add_port(PW_DIRECTION_OUTPUT, "output_" + pos, pos);
    }

    port_latency_ =
        PortLatency(chain_->has_source() ? 0 : config.channels, chain_->has_sink() ? 0 : config.channels);

    rt_.silence.assign(detail::max_quantum, 0.0F);
    rt_.discard.assign(std::size_t{config.channels} * detail::max_quantum, 0.0F);
    rt_.chain = chain_.get();
    rt_.main_loop = pw_main_loop_get_loop(main_loop_);
    rt_.on_rebuild_request = &FilterNode::on_rebuild_request;
    rt_.rebuild_request_data = this;
    rt_.schedule.on_request = &FilterNode::on_schedule_request;
    rt_.schedule.data = this;
    rt_.schedule.chain_quantum.store(chain_->block_frames(), std::memory_order_relaxed);

    // The scheduler's review: auto slots with sustained deadline misses get deeper pipelines.
    pw_loop* main = pw_main_loop_get_loop(main_loop_);
    review_timer_ = std::make_unique<LoopSource>(main, pw_loop_add_timer(main, &FilterNode::on_review, this));
    if (review_timer_->get() != nullptr) {
      timespec interval{static_cast<time_t>(detail::schedule_review_ns / 1'000'000'000U), 0};
      pw_loop_update_timer(main, review_timer_->get(), &interval, &interval, false);
    }
    // What earlier-API plugins read back after a live change arrives on the supervisor's
    // thread, which only signals this event: Props are republished here, on the main loop.
    read_back_event_ =
        std::make_unique<LoopSource>(main, pw_loop_add_event(main, &FilterNode::on_read_back, this));
    listen_read_backs();
  }

  ~FilterNode() override {
    // The status no longer reads rt_ (destroyed before the chain's supervisor thread stops).
    chain_->supervisor().set_node_status({});
    chain_->supervisor().set_read_back_listener({});
    // The filter goes first: after pw_filter_destroy no process callback runs, so the chain
    // (destroyed after, as a member declared earlier) is no longer in use.
    state_hook_.remove();
    filter_hook_.remove();
    filter_.reset();
    // A rebuild request the data thread posted just before the filter went may still sit in
    // the main loop's queue, pointing at this object: flush it now, while it is harmless.
    closing_ = true;
    pw_loop_iterate(pw_main_loop_get_loop(main_loop_), 0);
  }
  FilterNode(const FilterNode&) = delete;
  FilterNode& operator=(const FilterNode&) = delete;
  FilterNode(FilterNode&&) = delete;
  FilterNode& operator=(FilterNode&&) = delete;

  /// [main] Connects with the RT_PROCESS flag, the chain's ProcessLatency and the ports' Latency
  /// (CUSTOM_LATENCY: we run PipeWire's port latency algorithm ourselves, see port-latency.h).
  /// Returns 0 or -errno.
  int connect() override {
    std::vector<std::uint8_t> buffer(256 + props_.pod_bytes());
    spa_pod_builder b{};
    spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
    std::vector<const spa_pod*> params{latency_param(b)};
    // PropInfo and Props: the plugins' parameters as "SLOT:PARAM" (see node-props.h).
    for (const spa_pod* p : props_.build_params(b)) params.push_back(p);
    const auto flags =
        static_cast<pw_filter_flags>(PW_FILTER_FLAG_RT_PROCESS | PW_FILTER_FLAG_CUSTOM_LATENCY);
    const int res =
        pw_filter_connect(filter_.get(), flags, params.data(), static_cast<std::uint32_t>(params.size()));
    if (res >= 0) {
      publish_port_latency(SPA_DIRECTION_OUTPUT);
      publish_port_latency(SPA_DIRECTION_INPUT);
    }
    return res;
  }

  /// [main] Disconnects from the graph (the node disappears); the filter stays until destruction.
  void disconnect() override {
    if (filter_) {
      pw_filter_disconnect(filter_.get());
    }
  }

  /// [main] Nonzero once the filter went into an error state.
  [[nodiscard]] int failure() const noexcept override { return failure_; }

  /// [main] One line of what the data thread counted.
  void print_counters() const override {
    const auto& c = rt_.counters;
    std::fprintf(stderr,
                 "sandpipe: %s oversized=%llu missing-buffers=%llu partial=%llu no-chain=%llu "
                 "rate-mismatch=%llu rebuilds=%u\n",
                 c.timing.exit_fields().c_str(),
                 static_cast<unsigned long long>(c.oversized_cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.missing_buffers.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.partial_cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.no_chain_cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.rate_mismatch_cycles.load(std::memory_order_relaxed)),
                 rebuilds_);
    print_slot_counters(*chain_);
  }

 private:
  void* add_port(pw_direction direction, const std::string& name, const std::string& position) {
    PropertiesPtr props(pw_properties_new(PW_KEY_FORMAT_DSP, "32 bit float mono audio",  //
                                          PW_KEY_PORT_NAME, name.c_str(),                //
                                          PW_KEY_AUDIO_CHANNEL, position.c_str(), nullptr));
    // Port data is unused (the RtState indexes ports by channel), but must not be empty.
    void* port = pw_filter_add_port(filter_.get(), direction, PW_FILTER_PORT_FLAG_MAP_BUFFERS,
                                    sizeof(std::uint64_t), props.release(), nullptr, 0);
    if (port == nullptr) {
      throw std::runtime_error("pw_filter_add_port " + name + ": " + errno_message(errno));
    }
    return port;
  }

  [[nodiscard]] const spa_pod* latency_param(spa_pod_builder& b) const {
    spa_process_latency_info info{};
    info.rate = chain_->latency_frames();  // frames at the graph rate, added to the ports' latency
    return spa_process_latency_build(&b, SPA_PARAM_ProcessLatency, &info);
  }

  /// [main] Sets the Latency param of every port of `direction`: what the graph adds on the
  /// other side of us plus the chain's latency now.
  void publish_port_latency(spa_direction direction) {
    const spa_latency_info info = port_latency_.published(direction, chain_->latency_frames());
    const auto& ports = direction == SPA_DIRECTION_OUTPUT ? rt_.out_ports : rt_.in_ports;
    for (std::uint32_t ch = 0; ch < rt_.channels; ++ch) {
      if (ports[ch] == nullptr) continue;
      std::array<std::uint8_t, 256> buffer{};
      spa_pod_builder b{};
      spa_pod_builder_init(&b, buffer.data(), buffer.size());
      const spa_pod* params[1] = {spa_latency_build(&b, SPA_PARAM_Latency, &info)};
      pw_filter_update_params(filter_.get(), ports[ch], params, 1);
    }
  }

  /// [main] Publishes the chain's latency now: the node's ProcessLatency and the ports' Latency.
  void publish_latency() {
    std::array<std::uint8_t, 256> buffer{};
    spa_pod_builder b{};
    spa_pod_builder_init(&b, buffer.data(), buffer.size());
    const spa_pod* params[1] = {latency_param(b)};
    pw_filter_update_params(filter_.get(), nullptr, params, 1);
    publish_port_latency(SPA_DIRECTION_OUTPUT);
    publish_port_latency(SPA_DIRECTION_INPUT);
  }

  /// [main] The graph told port `port_data` the latency of its peers (CUSTOM_LATENCY hands it
  /// to us): the ports on the other side of the node re-publish theirs.
  void on_port_latency(void* port_data, const spa_pod* param) {
    spa_latency_info info{};
    if (param == nullptr || spa_latency_parse(param, &info) < 0) return;
    for (std::uint32_t ch = 0; ch < rt_.channels; ++ch) {
      std::optional<spa_direction> changed;
      if (port_data == rt_.in_ports[ch]) changed = port_latency_.peer_latency(SPA_DIRECTION_INPUT, ch, info);
      if (port_data == rt_.out_ports[ch])
        changed = port_latency_.peer_latency(SPA_DIRECTION_OUTPUT, ch, info);
      if (changed) publish_port_latency(*changed);
    }
  }

  /// [main] Swaps `next` in on the data loop (between two cycles) and frees the old chain here.
  void swap_chain(std::unique_ptr<Chain> next) {
    assert(std::this_thread::get_id() == main_thread_ && "[main] swap_chain");
    const SwapMessage msg{next.get()};
    const int res = pw_loop_invoke(data_loop_, &FilterNode::do_swap_chain, 0, &msg, sizeof(msg), true, &rt_);
    if (res < 0) {
      throw std::runtime_error(std::string("chain swap failed: ") + errno_message(-res));
    }
    std::swap(chain_, next);
    // `next` now holds the old chain, which the data thread no longer sees.
    publish_timing();
    listen_read_backs();
  }

  /// [main] The chain's supervisor signals read_back_event_ when a plugin read a value back.
  void listen_read_backs() {
    spa_source* event = read_back_event_ ? read_back_event_->get() : nullptr;
    if (event == nullptr) return;
    pw_loop* main = pw_main_loop_get_loop(main_loop_);
    chain_->supervisor().set_read_back_listener([main, event] { pw_loop_signal_event(main, event); });
  }

  /// [main] Publishes the node's Props (the live values) after a change.
  void publish_props(const spa_pod* props) { pw_filter_update_params(filter_.get(), nullptr, &props, 1); }

  /// [main] read_back_event_: Props take what the plugins read back (NodeProps::take_read_backs).
  static void on_read_back(void* data, std::uint64_t /*count*/) {
    auto* self = static_cast<FilterNode*>(data);
    if (self->closing_) return;
    apply_read_backs(self->props_, *self->chain_,
                     [self](const spa_pod* props) { self->publish_props(props); });
  }

  /// [main] The data thread's cycle timing goes into the chain's status (overruns with their
  /// times: what a test or a soak lines up with the machine's stalls).
  void publish_timing() { publish_cycle_timing(*chain_, rt_.counters.timing); }

  /// [rt] Runs on the data loop: installs the chain pointer passed in `data`.
  static int do_swap_chain(spa_loop* /*loop*/, bool /*async*/, std::uint32_t /*seq*/, const void* data,
                           std::size_t size, void* user_data) noexcept {
    SwapMessage msg{};
    if (size == sizeof(msg)) {
      std::memcpy(&msg, data, sizeof(msg));  // the loop's copy may be unaligned
    }
    static_cast<detail::RtState*>(user_data)->chain = msg.chain;
    return 0;
  }

  /// What swap_chain sends to the data loop (copied into the loop's queue).
  struct SwapMessage {
    Chain* chain;
  };

  /// [main] Invoked on the main loop by the data thread when the graph rate differs from the
  /// chain's: builds a chain for the latest rate and swaps it in.
  static int on_rebuild_request(spa_loop* /*loop*/, bool /*async*/, std::uint32_t /*seq*/,
                                const void* /*data*/, std::size_t /*size*/, void* user_data) noexcept {
    auto* self = static_cast<FilterNode*>(user_data);
    assert(std::this_thread::get_id() == self->main_thread_ && "[main] rebuild request");
    if (self->closing_) {
      return 0;
    }
    const std::uint32_t rate = self->rt_.graph_rate.load(std::memory_order_relaxed);
    try {
      if (rate != 0 && rate != chain_rate(*self->chain_)) {
        pw_log_info("graph rate is %u Hz, rebuilding the chain (was %.0f Hz)", rate,
                    self->chain_->sample_rate());
        const std::uint64_t start_ns = shm::now_ns();
        self->swap_chain(self->make_chain(static_cast<double>(rate)));
        self->rt_.schedule.chain_quantum.store(self->chain_->block_frames(), std::memory_order_relaxed);
        ++self->rebuilds_;
        self->publish_latency();
        pw_log_info("chain rebuilt for %u Hz and swapped in after %.1f ms on the main loop", rate,
                    static_cast<double>(shm::now_ns() - start_ns) / 1e6);
      }
    } catch (const std::exception& e) {
      pw_log_warn("cannot rebuild the chain at %u Hz, keeping the old one: %s", rate, e.what());
      self->rt_.rejected_rate.store(rate, std::memory_order_relaxed);
    }
    self->rt_.rebuild_requested.store(false, std::memory_order_release);
    return 0;
  }

  /// [main] The chain for `rate`: the running one's Python slots and sandboxes kept (they
  /// prepare their plugins for the rate between two blocks), its native plugins made anew. No
  /// sandbox starts and nothing is calibrated on this loop.
  [[nodiscard]] std::unique_ptr<Chain> make_chain(double rate) const {
    return make_live_chain(props_.config(), rate, *chain_);
  }

  /// [main] Publishes the chain's current latency (ProcessLatency, the ports' Latency), after a
  /// mode or quantum change.
  void report_latency() {
    publish_latency();
    pw_log_info("latency now %u frames (quantum %u)", chain_->latency_frames(), chain_->block_frames());
  }

  /// [main] Invoked on the main loop by the data thread when the quantum differs from the one
  /// the chain is scheduled for: pipelined slots take L = k × the new quantum.
  static int on_schedule_request(spa_loop* /*loop*/, bool /*async*/, std::uint32_t /*seq*/,
                                 const void* /*data*/, std::size_t /*size*/, void* user_data) noexcept {
    auto* self = static_cast<FilterNode*>(user_data);
    if (self->closing_) {
      return 0;
    }
    const std::uint32_t quantum = self->rt_.schedule.graph_quantum.load(std::memory_order_relaxed);
    if (reschedule_live_chain(*self->chain_, quantum)) self->report_latency();
    self->rt_.schedule.chain_quantum.store(quantum, std::memory_order_relaxed);
    self->rt_.schedule.requested.store(false, std::memory_order_release);
    return 0;
  }

  /// [main] The periodic scheduler review (a main-loop timer).
  static void on_review(void* data, std::uint64_t /*expirations*/) {
    auto* self = static_cast<FilterNode*>(data);
    if (!self->closing_ && review_live_chain(*self->chain_)) self->report_latency();
  }

  /// [main] pw-cli set-param / `sandpipe set`: node Props with "SLOT:PARAM" values; a port's
  /// Latency from the graph.
  static void on_param_changed(void* data, void* port_data, std::uint32_t id, const spa_pod* param) {
    auto* self = static_cast<FilterNode*>(data);
    if (port_data != nullptr && id == SPA_PARAM_Latency) {
      self->on_port_latency(port_data, param);
      return;
    }
    if (port_data != nullptr || id != SPA_PARAM_Props || param == nullptr) {
      return;
    }
    apply_props(param, self->props_, *self->chain_, self->rt_.param_changes,
                [self](const spa_pod* props) { self->publish_props(props); });
  }

  static void on_state_changed(void* data, pw_filter_state /*old*/, pw_filter_state state,
                               const char* error) {
    auto* self = static_cast<FilterNode*>(data);
    switch (state) {
      case PW_FILTER_STATE_ERROR:
        pw_log_error("filter error: %s", error != nullptr ? error : "unknown");
        self->failure_ = 1;
        pw_main_loop_quit(self->main_loop_);
        break;
      case PW_FILTER_STATE_PAUSED:
        if (!self->announced_) {
          self->announced_ = true;
          pw_log_info("node \"%s\" (id %u) ready, %u channels, chain at %.0f Hz, latency %u frames",
                      self->config_.node_name.c_str(), pw_filter_get_node_id(self->filter_.get()),
                      self->config_.channels, self->chain_->sample_rate(), self->chain_->latency_frames());
        }
        break;
      default:
        break;
    }
  }

  const ChainConfig& config_;
  pw_main_loop* main_loop_;
  pw_loop* data_loop_ = nullptr;
  NodeProps props_;               ///< the live parameter values; the config chains are built from
  std::unique_ptr<Chain> chain_;  ///< destroyed after filter_ (declared before it)
  detail::RtState rt_;
  PortLatency port_latency_{0, 0};  ///< what the ports' peers reported (set once the ports exist)
  FilterPtr filter_;
  Hook filter_hook_;
  Hook state_hook_;
  int failure_ = 0;
  unsigned rebuilds_ = 0;
  bool announced_ = false;
  bool closing_ = false;
  std::thread::id main_thread_ = std::this_thread::get_id();  ///< for the debug thread checks
  std::unique_ptr<LoopSource> review_timer_;                  ///< the scheduler's periodic review
  std::unique_ptr<LoopSource> read_back_event_;               ///< signalled by the supervisor
};

}  // namespace

std::unique_ptr<GraphNode> make_filter_node(const ChainConfig& config, const PipeWireEnv& env,
                                            std::unique_ptr<Chain> chain) {
  return std::make_unique<FilterNode>(config, env, std::move(chain));
}

}  // namespace sandpipe::host
