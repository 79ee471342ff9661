// The session every node runs in: the main loop, signals, context, core, the graph rate.
#include "host/node/pipewire-session.h"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string_view>
#include <utility>

#include <pipewire/extensions/metadata.h>
#include <pipewire/pipewire.h>

#include "host/node/filter-node.h"
#include "host/node/pw-handles.h"
#include "host/slot/log.h"

// What the session says while the node runs is the node's log (host/slot/log.h); why it could
// not start is the command's answer, on stderr like a config error.
#define PW_LOG_TOPIC_DEFAULT ::sandpipe::host::node_log

namespace sandpipe::host {
namespace {

using namespace detail;  // the pw_* handles

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

/// Core events for run_with_pipewire: a dead daemon ends the loop with an error.
struct CoreWatch {
  pw_main_loop* loop = nullptr;
  int failure = 0;

  static void on_error(void* data, std::uint32_t id, int /*seq*/, int res, const char* message) {
    auto* self = static_cast<CoreWatch*>(data);
    if (id == PW_ID_CORE && res == -EPIPE) {
      pw_log_error("lost the PipeWire daemon: %s", message != nullptr ? message : "");
      self->failure = 1;
      pw_main_loop_quit(self->loop);
    }
  }
};

void on_quit_signal(void* data, int /*signal_number*/) {
  pw_main_loop_quit(static_cast<pw_main_loop*>(data));
}

/// [main] A line of the live chain's scheduler (ChainOptions::log) on sandpipe.chain: its
/// "WARNING:" lines (a slot too slow for its budget) as warnings, the decisions as info.
void log_chain_line(std::string_view slot, std::string_view line) {
  const spa_log_level level =
      line.find("WARNING:") != std::string_view::npos ? SPA_LOG_LEVEL_WARN : SPA_LOG_LEVEL_INFO;
  pw_logt(level, chain_log, "[%.*s] %.*s", static_cast<int>(slot.size()), slot.data(),
          static_cast<int>(line.size()), line.data());
}

/// [any] A line of the live node's Python side (SupervisorOptions::log: its supervisor, its
/// sandboxes and what their plugins print) on sandpipe.sandbox, at the level it came with.
void log_sandbox_line(std::string_view plugin, SandboxLogLevel level, std::string_view line) {
  spa_log_level pw_level = SPA_LOG_LEVEL_INFO;
  switch (level) {
    case SandboxLogLevel::debug:
      pw_level = SPA_LOG_LEVEL_DEBUG;
      break;
    case SandboxLogLevel::info:
      break;
    case SandboxLogLevel::warning:
      pw_level = SPA_LOG_LEVEL_WARN;
      break;
    case SandboxLogLevel::error:
      pw_level = SPA_LOG_LEVEL_ERROR;
      break;
  }
  pw_logt(pw_level, sandbox_log, "[%.*s] %.*s", static_cast<int>(plugin.size()), plugin.data(),
          static_cast<int>(line.size()), line.data());
}

int run_or_throw(const NodeBuilder& build) {
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
  ContextPtr context(
      pw_context_new(loop, pw_properties_new(PW_KEY_CONFIG_NAME, "client-rt.conf", nullptr), 0));
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

  PipeWireEnv env;
  env.main_loop = main_loop.get();
  env.core = core.get();
  env.rate = SettingsRateQuery(main_loop.get(), core.get()).run().value_or(detail::default_rate);
  if (watch.failure != 0) {
    return 1;
  }

  int status = 0;
  {
    const std::unique_ptr<GraphNode> node = build(env);
    if (const int res = node->connect(); res < 0) {
      std::fprintf(stderr, "sandpipe: cannot connect the node: %s\n", errno_message(-res).c_str());
      return 1;
    }
    pw_main_loop_run(main_loop.get());
    node->disconnect();
    node->print_counters();
    status = (node->failure() != 0 || watch.failure != 0) ? 1 : 0;
  }
  core_hook.remove();
  return status;
}

}  // namespace

int run_with_pipewire(const NodeBuilder& build) {
  pw_init(nullptr, nullptr);
  init_log_topics();
  int status = 1;
  try {
    status = run_or_throw(build);
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

std::unique_ptr<Chain> make_live_chain(const ChainConfig& config, double rate, std::uint32_t quantum) {
  ChainOptions options;
  options.block_frames = quantum != 0 ? quantum : detail::default_quantum;
  options.sandbox_rt_priority = live_sandbox_rt_priority;
  options.log = log_chain_line;
  options.supervision.log = log_sandbox_line;
  return std::make_unique<Chain>(config, rate, detail::chain_block_frames, std::move(options));
}

std::unique_ptr<Chain> make_live_chain(const ChainConfig& config, double rate, const Chain& previous) {
  return std::make_unique<Chain>(config, rate, previous);
}

bool reschedule_live_chain(Chain& chain, std::uint32_t quantum) noexcept {
  try {
    return quantum != 0 && chain.set_block_frames(quantum);
  } catch (const std::exception& e) {
    pw_logt(SPA_LOG_LEVEL_WARN, chain_log, "cannot re-schedule the chain for quantum %u: %s", quantum,
            e.what());
    return false;
  }
}

bool review_live_chain(Chain& chain) noexcept {
  try {
    return chain.review_schedule();
  } catch (const std::exception& e) {
    pw_logt(SPA_LOG_LEVEL_WARN, chain_log, "scheduler review failed: %s", e.what());
    return false;
  }
}

void print_slot_counters(const Chain& chain) {
  for (const auto& slot : chain.slots()) {
    const SlotCounters sc = slot->counters();
    std::fprintf(
        stderr, "sandpipe: slot %.*s: blocks=%llu deadline-misses=%llu bypassed=%llu sanitized=%llu\n",
        static_cast<int>(slot->name().size()), slot->name().data(),
        static_cast<unsigned long long>(sc.blocks), static_cast<unsigned long long>(sc.deadline_misses),
        static_cast<unsigned long long>(sc.bypassed_blocks),
        static_cast<unsigned long long>(sc.sanitized_blocks));
  }
}

}  // namespace sandpipe::host
