// RAII for the pw_* handles the nodes and the session own, shared by host/node/pipewire-session.cpp,
// host/node/filter-node.cpp and host/stream-node.cpp. Main thread only.
#pragma once

#include <memory>
#include <string>
#include <system_error>

#include <pipewire/extensions/metadata.h>
#include <pipewire/filter.h>
#include <pipewire/pipewire.h>
#include <pipewire/stream.h>

namespace sandpipe::host::detail {

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
inline std::string errno_message(int err) { return std::error_code(err, std::generic_category()).message(); }

struct StreamDeleter {
  void operator()(pw_stream* stream) const noexcept { pw_stream_destroy(stream); }
};
using StreamPtr = std::unique_ptr<pw_stream, StreamDeleter>;

}  // namespace sandpipe::host::detail
