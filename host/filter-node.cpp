// The node's main-thread side: PipeWire setup, ports, the graph rate, chain swaps, teardown.
#include "host/filter-node.h"

#include <cassert>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include <pipewire/extensions/metadata.h>
#include <pipewire/filter.h>
#include <pipewire/pipewire.h>
#include <spa/param/latency-utils.h>
#include <spa/pod/builder.h>
#include <spa/utils/result.h>

#include "host/node-props.h"
#include "host/port-latency.h"

namespace sandpipe::host {
namespace {

// ---- RAII for the pw_* handles --------------------------------------------------------------

struct MainLoopDeleter {
  void operator()(pw_main_loop* loop) const noexcept { pw_main_loop_destroy(loop); }
};
struct ContextDeleter {
  void operator()(pw_context* context) const noexcept { pw_context_destroy(context); }
};
struct CoreDeleter {
  void operator()(pw_core* core) const noexcept { pw_core_disconnect(core); }
};
struct FilterDeleter {
  void operator()(pw_filter* filter) const noexcept { pw_filter_destroy(filter); }
};
template <typename T>
struct ProxyDeleter {
  void operator()(T* proxy) const noexcept { pw_proxy_destroy(reinterpret_cast<pw_proxy*>(proxy)); }
};
struct PropertiesDeleter {
  void operator()(pw_properties* props) const noexcept { pw_properties_free(props); }
};

using MainLoopPtr = std::unique_ptr<pw_main_loop, MainLoopDeleter>;
using ContextPtr = std::unique_ptr<pw_context, ContextDeleter>;
using CorePtr = std::unique_ptr<pw_core, CoreDeleter>;
using FilterPtr = std::unique_ptr<pw_filter, FilterDeleter>;
using RegistryPtr = std::unique_ptr<pw_registry, ProxyDeleter<pw_registry>>;
using MetadataPtr = std::unique_ptr<pw_metadata, ProxyDeleter<pw_metadata>>;
using PropertiesPtr = std::unique_ptr<pw_properties, PropertiesDeleter>;

/// A listener that unhooks itself: a destructor with one job.
class Hook {
 public:
  Hook() { spa_zero(hook_); }
  ~Hook() { remove(); }
  Hook(const Hook&) = delete;
  Hook& operator=(const Hook&) = delete;
  Hook(Hook&&) = delete;
  Hook& operator=(Hook&&) = delete;

  /// [main] The hook to hand to a `*_add_listener`; it is removed on destruction.
  spa_hook* get() noexcept {
    added_ = true;
    return &hook_;
  }
  void remove() noexcept {
    if (added_) {
      spa_hook_remove(&hook_);
      added_ = false;
    }
  }

 private:
  spa_hook hook_{};
  bool added_ = false;
};

/// A loop source (signal, timer) destroyed with its owner.
class LoopSource {
 public:
  LoopSource(pw_loop* loop, spa_source* source) noexcept : loop_(loop), source_(source) {}
  ~LoopSource() {
    if (source_ != nullptr) {
      pw_loop_destroy_source(loop_, source_);
    }
  }
  LoopSource(const LoopSource&) = delete;
  LoopSource& operator=(const LoopSource&) = delete;
  LoopSource(LoopSource&&) = delete;
  LoopSource& operator=(LoopSource&&) = delete;
  [[nodiscard]] spa_source* get() const noexcept { return source_; }

 private:
  pw_loop* loop_;
  spa_source* source_;
};

/// [any] Text for an errno value (std::strerror is not thread safe).
std::string errno_message(int err) { return std::error_code(err, std::generic_category()).message(); }

/// [any] The rate a chain was built for, as the graph writes it.
std::uint32_t chain_rate(const Chain& chain) noexcept {
  return static_cast<std::uint32_t>(std::lround(chain.sample_rate()));
}

std::uint32_t parse_rate(const char* value) {
  if (value == nullptr) {
    return 0;
  }
  char* end = nullptr;
  const unsigned long v = std::strtoul(value, &end, 10);
  return (end != value && v >= 8000 && v <= 768000) ? static_cast<std::uint32_t>(v) : 0;
}

// ---- the graph rate from the "settings" metadata ------------------------------------------

/// Asks the daemon for `clock.force-rate` / `clock.rate` in the "settings" metadata, so the
/// first chain is built for the rate the graph will run at. Blocks the main loop for two
/// round trips (at most `timeout`).
class SettingsRateQuery {
 public:
  /// [main]
  SettingsRateQuery(pw_main_loop* loop, pw_core* core) : loop_(loop), core_(core) {}

  /// [main] The forced rate, else the default rate, else nullopt (no metadata, timeout).
  std::optional<std::uint32_t> run() {
    static constexpr pw_core_events core_events = [] {
      pw_core_events e{};
      e.version = PW_VERSION_CORE_EVENTS;
      e.done = &SettingsRateQuery::on_core_done;
      e.error = &SettingsRateQuery::on_core_error;
      return e;
    }();
    static constexpr pw_registry_events registry_events = [] {
      pw_registry_events e{};
      e.version = PW_VERSION_REGISTRY_EVENTS;
      e.global = &SettingsRateQuery::on_global;
      return e;
    }();

    pw_core_add_listener(core_, core_hook_.get(), &core_events, this);
    registry_.reset(pw_core_get_registry(core_, PW_VERSION_REGISTRY, 0));
    if (!registry_) {
      return std::nullopt;
    }
    pw_registry_add_listener(registry_.get(), registry_hook_.get(), &registry_events, this);
    pending_seq_ = pw_core_sync(core_, PW_ID_CORE, 0);

    pw_loop* loop = pw_main_loop_get_loop(loop_);
    LoopSource timer(loop, pw_loop_add_timer(loop, &SettingsRateQuery::on_timeout, this));
    if (timer.get() != nullptr) {
      timespec timeout{2, 0};
      pw_loop_update_timer(loop, timer.get(), &timeout, nullptr, false);
    }
    pw_main_loop_run(loop_);

    metadata_hook_.remove();
    metadata_.reset();
    registry_hook_.remove();
    registry_.reset();
    core_hook_.remove();
    if (force_rate_ != 0) {
      return force_rate_;
    }
    if (rate_ != 0) {
      return rate_;
    }
    return std::nullopt;
  }

 private:
  static void on_global(void* data, std::uint32_t id, std::uint32_t /*permissions*/, const char* type,
                        std::uint32_t /*version*/, const spa_dict* props) {
    auto* self = static_cast<SettingsRateQuery*>(data);
    if (self->metadata_ || std::string_view(type) != PW_TYPE_INTERFACE_Metadata || props == nullptr) {
      return;
    }
    const char* name = spa_dict_lookup(props, PW_KEY_METADATA_NAME);
    if (name == nullptr || std::string_view(name) != "settings") {
      return;
    }
    static constexpr pw_metadata_events metadata_events = [] {
      pw_metadata_events e{};
      e.version = PW_VERSION_METADATA_EVENTS;
      e.property = &SettingsRateQuery::on_property;
      return e;
    }();
    self->metadata_.reset(static_cast<pw_metadata*>(
        pw_registry_bind(self->registry_.get(), id, PW_TYPE_INTERFACE_Metadata, PW_VERSION_METADATA, 0)));
    if (self->metadata_) {
      pw_metadata_add_listener(self->metadata_.get(), self->metadata_hook_.get(), &metadata_events, self);
    }
  }

  static int on_property(void* data, std::uint32_t subject, const char* key, const char* /*type*/,
                         const char* value) {
    auto* self = static_cast<SettingsRateQuery*>(data);
    if (subject != PW_ID_CORE || key == nullptr) {
      return 0;
    }
    if (std::string_view(key) == "clock.force-rate") {
      self->force_rate_ = parse_rate(value);
    } else if (std::string_view(key) == "clock.rate") {
      self->rate_ = parse_rate(value);
    }
    return 0;
  }

  static void on_core_done(void* data, std::uint32_t id, int seq) {
    auto* self = static_cast<SettingsRateQuery*>(data);
    if (id != PW_ID_CORE || seq != self->pending_seq_) {
      return;
    }
    if (self->metadata_ && !self->synced_metadata_) {
      // The first round trip listed the globals; the second one delivers the bound
      // metadata's properties.
      self->synced_metadata_ = true;
      self->pending_seq_ = pw_core_sync(self->core_, PW_ID_CORE, self->pending_seq_);
      return;
    }
    pw_main_loop_quit(self->loop_);
  }

  static void on_core_error(void* data, std::uint32_t id, int /*seq*/, int /*res*/, const char* /*message*/) {
    auto* self = static_cast<SettingsRateQuery*>(data);
    if (id == PW_ID_CORE) {
      pw_main_loop_quit(self->loop_);
    }
  }

  static void on_timeout(void* data, std::uint64_t /*expirations*/) {
    pw_main_loop_quit(static_cast<SettingsRateQuery*>(data)->loop_);
  }

  pw_main_loop* loop_;
  pw_core* core_;
  RegistryPtr registry_;
  MetadataPtr metadata_;
  Hook core_hook_;
  Hook registry_hook_;
  Hook metadata_hook_;
  int pending_seq_ = 0;
  bool synced_metadata_ = false;
  std::uint32_t rate_ = 0;
  std::uint32_t force_rate_ = 0;
};

// ---- the node -------------------------------------------------------------------------------

/// The filter node and the chain it runs. Not copyable; lives on run_node's stack.
///
/// Ownership: the main thread owns the chain (`chain_`); the data thread only sees the raw
/// pointer in `rt_.chain`, which is written on the data loop so a swap never lands mid-cycle.
class FilterNode {
 public:
  /// [main] Builds the chain at `rate` and creates (not yet connects) the filter with its ports.
  /// Throws PluginError or std::runtime_error.
  FilterNode(const ChainConfig& config, pw_main_loop* main_loop, pw_core* core, std::uint32_t rate)
      : config_(config), main_loop_(main_loop), props_(config) {
    if (config.channels == 0 || config.channels > Chain::max_channels) {
      throw std::runtime_error("channels must be 1.." + std::to_string(Chain::max_channels));
    }
    chain_ = make_chain(static_cast<double>(rate));
    props_.attach(*chain_);
    if (chain_->channels() != config.channels) {
      throw std::runtime_error("chain has " + std::to_string(chain_->channels()) + " channels, config " +
                               std::to_string(config.channels));
    }

    pw_context* context = pw_core_get_context(core);
    data_loop_ = pw_data_loop_get_loop(pw_context_get_data_loop(context));

    const std::string description =
        config.node_description.empty() ? config.node_name : config.node_description;
    // A chain that starts with a source has no input ports, one that ends with a sink no output
    // ports (see Chain::has_source); the graph sees a source or a sink device.
    if (chain_->has_source() && chain_->has_sink()) {
      throw PluginError("the chain starts with a source and ends with a sink: the node would have no ports "
                        "(sandpipe render runs such a chain)");
    }
    const char* media_class = chain_->has_source() ? "Audio/Source"
                              : chain_->has_sink() ? "Audio/Sink"
                                                   : "Audio/Filter";
    const char* category = chain_->has_source() ? "Capture" : chain_->has_sink() ? "Playback" : "Filter";
    PropertiesPtr props(pw_properties_new(PW_KEY_MEDIA_TYPE, "Audio",                  //
                                          PW_KEY_MEDIA_CATEGORY, category,             //
                                          PW_KEY_MEDIA_ROLE, "DSP",                    //
                                          PW_KEY_MEDIA_CLASS, media_class,             //
                                          PW_KEY_NODE_NAME, config.node_name.c_str(),  //
                                          PW_KEY_NODE_DESCRIPTION, description.c_str(),
                                          PW_KEY_NODE_AUTOCONNECT, "false", nullptr));
    filter_.reset(pw_filter_new(core, config.node_name.c_str(), props.release()));
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
      if (!chain_->has_source()) rt_.in_ports[ch] = add_port(PW_DIRECTION_INPUT, "input_" + pos, pos);
      if (!chain_->has_sink()) rt_.out_ports[ch] = add_port(PW_DIRECTION_OUTPUT, "output_" + pos, pos);
    }

    port_latency_ =
        PortLatency(chain_->has_source() ? 0 : config.channels, chain_->has_sink() ? 0 : config.channels);

    rt_.silence.assign(detail::max_quantum, 0.0F);
    rt_.discard.assign(std::size_t{config.channels} * detail::max_quantum, 0.0F);
    rt_.chain = chain_.get();
    rt_.main_loop = pw_main_loop_get_loop(main_loop);
    rt_.on_rebuild_request = &FilterNode::on_rebuild_request;
    rt_.rebuild_request_data = this;
    rt_.on_schedule_request = &FilterNode::on_schedule_request;
    rt_.chain_quantum.store(chain_->block_frames(), std::memory_order_relaxed);

    // The scheduler's review: auto slots with sustained deadline misses get deeper pipelines.
    pw_loop* main = pw_main_loop_get_loop(main_loop);
    review_timer_ = std::make_unique<LoopSource>(main, pw_loop_add_timer(main, &FilterNode::on_review, this));
    if (review_timer_->get() != nullptr) {
      timespec interval{static_cast<time_t>(detail::schedule_review_ns / 1'000'000'000U), 0};
      pw_loop_update_timer(main, review_timer_->get(), &interval, &interval, false);
    }
  }

  ~FilterNode() {
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
  int connect() {
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
  void disconnect() {
    if (filter_) {
      pw_filter_disconnect(filter_.get());
    }
  }

  /// [main] Nonzero once the filter went into an error state.
  [[nodiscard]] int failure() const noexcept { return failure_; }

  /// [main] One line of what the data thread counted.
  void print_counters() const {
    const auto& c = rt_.counters;
    std::fprintf(stderr,
                 "sandpipe: cycles=%llu oversized=%llu missing-buffers=%llu partial=%llu no-chain=%llu "
                 "rate-mismatch=%llu rebuilds=%u\n",
                 static_cast<unsigned long long>(c.cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.oversized_cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.missing_buffers.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.partial_cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.no_chain_cycles.load(std::memory_order_relaxed)),
                 static_cast<unsigned long long>(c.rate_mismatch_cycles.load(std::memory_order_relaxed)),
                 rebuilds_);
    for (const auto& slot : chain_->slots()) {
      const SlotCounters sc = slot->counters();
      std::fprintf(
          stderr, "sandpipe: slot %.*s: blocks=%llu deadline-misses=%llu bypassed=%llu sanitized=%llu\n",
          static_cast<int>(slot->name().size()), slot->name().data(),
          static_cast<unsigned long long>(sc.blocks), static_cast<unsigned long long>(sc.deadline_misses),
          static_cast<unsigned long long>(sc.bypassed_blocks),
          static_cast<unsigned long long>(sc.sanitized_blocks));
    }
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
  }

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
        std::fprintf(stderr, "sandpipe: graph rate is %u Hz, rebuilding the chain (was %.0f Hz)\n", rate,
                     self->chain_->sample_rate());
        self->swap_chain(self->make_chain(static_cast<double>(rate)));
        self->rt_.chain_quantum.store(self->chain_->block_frames(), std::memory_order_relaxed);
        ++self->rebuilds_;
        self->publish_latency();
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sandpipe: cannot rebuild the chain at %u Hz, keeping the old one: %s\n", rate,
                   e.what());
      self->rt_.rejected_rate.store(rate, std::memory_order_relaxed);
    }
    self->rt_.rebuild_requested.store(false, std::memory_order_release);
    return 0;
  }

  /// [main] A chain for `rate`, its pipelined slots prepared for the graph's quantum as last
  /// seen (PipeWire's default before the first cycle).
  [[nodiscard]] std::unique_ptr<Chain> make_chain(double rate) const {
    ChainOptions options;
    const std::uint32_t quantum = rt_.graph_quantum.load(std::memory_order_relaxed);
    options.block_frames = quantum != 0 ? quantum : detail::default_quantum;
    options.sandbox_rt_priority = live_sandbox_rt_priority;
    auto chain = std::make_unique<Chain>(props_.config(), rate, detail::chain_block_frames, std::move(options));
    if (chain_ && (chain->has_source() != chain_->has_source() || chain->has_sink() != chain_->has_sink())) {
      throw PluginError("a source or sink plugin changed its role: the node's ports cannot follow");
    }
    return chain;
  }

  /// [main] Publishes the chain's current latency (ProcessLatency, the ports' Latency), after a
  /// mode or quantum change.
  void report_latency() {
    publish_latency();
    std::fprintf(stderr, "sandpipe: latency now %u frames (quantum %u)\n", chain_->latency_frames(),
                 chain_->block_frames());
  }

  /// [main] Invoked on the main loop by the data thread when the quantum differs from the one
  /// the chain is scheduled for: pipelined slots take L = k × the new quantum.
  static int on_schedule_request(spa_loop* /*loop*/, bool /*async*/, std::uint32_t /*seq*/,
                                 const void* /*data*/, std::size_t /*size*/, void* user_data) noexcept {
    auto* self = static_cast<FilterNode*>(user_data);
    if (self->closing_) {
      return 0;
    }
    const std::uint32_t quantum = self->rt_.graph_quantum.load(std::memory_order_relaxed);
    try {
      if (quantum != 0 && self->chain_->set_block_frames(quantum)) {
        self->report_latency();
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sandpipe: cannot re-schedule the chain for quantum %u: %s\n", quantum, e.what());
    }
    self->rt_.chain_quantum.store(quantum, std::memory_order_relaxed);
    self->rt_.schedule_requested.store(false, std::memory_order_release);
    return 0;
  }

  /// [main] The periodic scheduler review (a main-loop timer).
  static void on_review(void* data, std::uint64_t /*expirations*/) {
    auto* self = static_cast<FilterNode*>(data);
    try {
      if (!self->closing_ && self->chain_->review_schedule()) {
        self->report_latency();
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sandpipe: scheduler review failed: %s\n", e.what());
    }
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
    try {
      if (self->props_.apply(param, *self->chain_, self->rt_.param_changes) > 0) {
        std::vector<std::uint8_t> buffer(self->props_.pod_bytes());
        spa_pod_builder b{};
        spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
        const spa_pod* params[1] = {self->props_.build_props(b)};
        pw_filter_update_params(self->filter_.get(), nullptr, params, 1);
      }
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sandpipe: cannot apply Props: %s\n", e.what());
    }
  }

  static void on_state_changed(void* data, pw_filter_state /*old*/, pw_filter_state state,
                               const char* error) {
    auto* self = static_cast<FilterNode*>(data);
    switch (state) {
      case PW_FILTER_STATE_ERROR:
        std::fprintf(stderr, "sandpipe: filter error: %s\n", error != nullptr ? error : "unknown");
        self->failure_ = 1;
        pw_main_loop_quit(self->main_loop_);
        break;
      case PW_FILTER_STATE_PAUSED:
        if (!self->announced_) {
          self->announced_ = true;
          std::fprintf(
              stderr,
              "sandpipe: node \"%s\" (id %u) ready, %u channels, chain at %.0f Hz, latency %u frames\n",
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
  NodeProps props_;  ///< the live parameter values; the config chains are built from
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
  std::unique_ptr<LoopSource> review_timer_;  ///< the scheduler's periodic review
};

/// Core events for run_node: a dead daemon ends the loop with an error.
struct CoreWatch {
  pw_main_loop* loop = nullptr;
  int failure = 0;

  static void on_error(void* data, std::uint32_t id, int /*seq*/, int res, const char* message) {
    auto* self = static_cast<CoreWatch*>(data);
    if (id == PW_ID_CORE && res == -EPIPE) {
      std::fprintf(stderr, "sandpipe: lost the PipeWire daemon: %s\n", message != nullptr ? message : "");
      self->failure = 1;
      pw_main_loop_quit(self->loop);
    }
  }
};

void on_quit_signal(void* data, int /*signal_number*/) {
  pw_main_loop_quit(static_cast<pw_main_loop*>(data));
}

int run_node_or_throw(const ChainConfig& config) {
  MainLoopPtr main_loop(pw_main_loop_new(nullptr));
  if (!main_loop) {
    std::fprintf(stderr, "sandpipe: cannot create a main loop: %s\n", errno_message(errno).c_str());
    return 1;
  }
  pw_loop* loop = pw_main_loop_get_loop(main_loop.get());
  const LoopSource sigint(loop, pw_loop_add_signal(loop, SIGINT, &on_quit_signal, main_loop.get()));
  const LoopSource sigterm(loop, pw_loop_add_signal(loop, SIGTERM, &on_quit_signal, main_loop.get()));

  // client-rt.conf loads module-rt: the data thread that runs the chain gets SCHED_FIFO (directly
  // when permitted, else through RTKit), as every PipeWire audio client should.
  ContextPtr context(pw_context_new(loop, pw_properties_new(PW_KEY_CONFIG_NAME, "client-rt.conf", nullptr), 0));
  if (!context) {
    std::fprintf(stderr, "sandpipe: cannot create a PipeWire context: %s\n", errno_message(errno).c_str());
    return 1;
  }
  CorePtr core(pw_context_connect(context.get(), nullptr, 0));
  if (!core) {
    std::fprintf(stderr, "sandpipe: cannot connect to PipeWire: %s\n", errno_message(errno).c_str());
    return 1;
  }
  CoreWatch watch{main_loop.get(), 0};
  Hook core_hook;
  static constexpr pw_core_events core_events = [] {
    pw_core_events e{};
    e.version = PW_VERSION_CORE_EVENTS;
    e.error = &CoreWatch::on_error;
    return e;
  }();
  pw_core_add_listener(core.get(), core_hook.get(), &core_events, &watch);

  const std::uint32_t rate =
      SettingsRateQuery(main_loop.get(), core.get()).run().value_or(detail::default_rate);
  if (watch.failure != 0) {
    return 1;
  }

  int status = 0;
  {
    FilterNode node(config, main_loop.get(), core.get(), rate);
    if (const int res = node.connect(); res < 0) {
      std::fprintf(stderr, "sandpipe: cannot connect the filter: %s\n", errno_message(-res).c_str());
      return 1;
    }
    pw_main_loop_run(main_loop.get());
    node.disconnect();
    node.print_counters();
    status = (node.failure() != 0 || watch.failure != 0) ? 1 : 0;
  }
  core_hook.remove();
  return status;
}

}  // namespace

int run_node(const ChainConfig& config) {
  pw_init(nullptr, nullptr);
  int status = 1;
  try {
    status = run_node_or_throw(config);
  } catch (const PluginError& e) {
    std::fprintf(stderr, "sandpipe: plugin error: %s\n", e.what());
    status = 2;  // like a config error: nothing was started
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandpipe: %s\n", e.what());
    status = 1;
  }
  pw_deinit();
  return status;
}

}  // namespace sandpipe::host
