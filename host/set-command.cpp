// `sandpipe set`: a small PipeWire client that finds a node by name and sends it Props.
#include "host/set-command.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <system_error>

#include <pipewire/pipewire.h>
#include <spa/param/props.h>
#include <spa/pod/builder.h>

namespace sandpipe::host {
namespace {

struct Session {
  pw_main_loop* loop = nullptr;
  pw_core* core = nullptr;
  pw_registry* registry = nullptr;
  std::string wanted;
  std::uint32_t node_id = SPA_ID_INVALID;
  std::vector<std::string> node_names;  ///< every node seen, for the "no such node" message
  int pending = 0;
  int error = 0;
  std::string error_message;

  static void on_global(void* data, std::uint32_t id, std::uint32_t /*permissions*/, const char* type,
                        std::uint32_t /*version*/, const spa_dict* props) {
    auto* self = static_cast<Session*>(data);
    if (std::string_view(type) != PW_TYPE_INTERFACE_Node || props == nullptr) return;
    const char* name = spa_dict_lookup(props, PW_KEY_NODE_NAME);
    if (name == nullptr) return;
    self->node_names.emplace_back(name);
    if (self->wanted == name && self->node_id == SPA_ID_INVALID) self->node_id = id;
  }

  static void on_done(void* data, std::uint32_t id, int seq) {
    auto* self = static_cast<Session*>(data);
    if (id == PW_ID_CORE && seq == self->pending) pw_main_loop_quit(self->loop);
  }

  static void on_error(void* data, std::uint32_t id, int /*seq*/, int res, const char* message) {
    auto* self = static_cast<Session*>(data);
    self->error = res;
    self->error_message = "object " + std::to_string(id) + ": " + (message != nullptr ? message : "") + " (" +
                          std::error_code(-res, std::generic_category()).message() + ")";
    if (id == PW_ID_CORE) pw_main_loop_quit(self->loop);
  }

  /// [main] Runs the loop until the daemon answered everything sent so far.
  void round_trip() {
    pending = pw_core_sync(core, PW_ID_CORE, pending);
    pw_main_loop_run(loop);
  }
};

/// [main] Appends a value pod for a command-line value.
void add_value(spa_pod_builder& b, const ParamValue& value) {
  if (const auto* d = std::get_if<double>(&value)) {
    spa_pod_builder_float(&b, static_cast<float>(*d));
  } else if (const auto* flag = std::get_if<bool>(&value)) {
    spa_pod_builder_bool(&b, *flag);
  } else {
    spa_pod_builder_string(&b, std::get<std::string>(value).c_str());
  }
}

int run(const std::string& node_name, const std::vector<std::pair<std::string, ParamValue>>& params) {
  std::unique_ptr<pw_main_loop, decltype(&pw_main_loop_destroy)> loop(pw_main_loop_new(nullptr),
                                                                       &pw_main_loop_destroy);
  if (!loop) {
    std::fprintf(stderr, "sandpipe: cannot create a main loop\n");
    return 1;
  }
  std::unique_ptr<pw_context, decltype(&pw_context_destroy)> context(
      pw_context_new(pw_main_loop_get_loop(loop.get()), nullptr, 0), &pw_context_destroy);
  if (!context) {
    std::fprintf(stderr, "sandpipe: cannot create a PipeWire context\n");
    return 1;
  }
  std::unique_ptr<pw_core, decltype(&pw_core_disconnect)> core(pw_context_connect(context.get(), nullptr, 0),
                                                               &pw_core_disconnect);
  if (!core) {
    std::fprintf(stderr, "sandpipe: cannot connect to PipeWire: %s\n",
                 std::error_code(errno, std::generic_category()).message().c_str());
    return 1;
  }

  Session s;
  s.loop = loop.get();
  s.core = core.get();
  s.wanted = node_name;
  static constexpr pw_core_events core_events = [] {
    pw_core_events e{};
    e.version = PW_VERSION_CORE_EVENTS;
    e.done = &Session::on_done;
    e.error = &Session::on_error;
    return e;
  }();
  static constexpr pw_registry_events registry_events = [] {
    pw_registry_events e{};
    e.version = PW_VERSION_REGISTRY_EVENTS;
    e.global = &Session::on_global;
    return e;
  }();
  spa_hook core_hook{};
  spa_hook registry_hook{};
  pw_core_add_listener(core.get(), &core_hook, &core_events, &s);
  s.registry = pw_core_get_registry(core.get(), PW_VERSION_REGISTRY, 0);
  if (s.registry == nullptr) {
    spa_hook_remove(&core_hook);
    std::fprintf(stderr, "sandpipe: cannot get the PipeWire registry\n");
    return 1;
  }
  pw_registry_add_listener(s.registry, &registry_hook, &registry_events, &s);
  s.round_trip();  // every global is listed before the answer

  int status = 0;
  if (s.error != 0) {
    std::fprintf(stderr, "sandpipe: PipeWire error: %s\n", s.error_message.c_str());
    status = 1;
  } else if (s.node_id == SPA_ID_INVALID) {
    std::string names;
    for (const auto& n : s.node_names) names += (names.empty() ? "" : ", ") + n;
    std::fprintf(stderr, "sandpipe: no node named \"%s\" in the graph (nodes: %s)\n", node_name.c_str(),
                 names.empty() ? "none" : names.c_str());
    status = 1;
  } else {
    auto* node = static_cast<pw_node*>(
        pw_registry_bind(s.registry, s.node_id, PW_TYPE_INTERFACE_Node, PW_VERSION_NODE, 0));
    if (node == nullptr) {
      std::fprintf(stderr, "sandpipe: cannot bind node %u\n", s.node_id);
      status = 1;
    } else {
      std::vector<std::uint8_t> buffer(1024);
      for (const auto& [name, value] : params) {
        buffer.resize(buffer.size() + 64 + name.size() +
                      (std::holds_alternative<std::string>(value) ? std::get<std::string>(value).size() : 0));
      }
      spa_pod_builder b{};
      spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
      spa_pod_frame outer{};
      spa_pod_frame list{};
      spa_pod_builder_push_object(&b, &outer, SPA_TYPE_OBJECT_Props, SPA_PARAM_Props);
      spa_pod_builder_prop(&b, SPA_PROP_params, 0);
      spa_pod_builder_push_struct(&b, &list);
      for (const auto& [name, value] : params) {
        spa_pod_builder_string(&b, name.c_str());
        add_value(b, value);
      }
      spa_pod_builder_pop(&b, &list);
      const auto* pod = static_cast<const spa_pod*>(spa_pod_builder_pop(&b, &outer));
      pw_node_set_param(node, SPA_PARAM_Props, 0, pod);
      s.round_trip();
      if (s.error != 0) {
        std::fprintf(stderr, "sandpipe: node \"%s\" (id %u) refused the Props: %s\n", node_name.c_str(),
                     s.node_id, s.error_message.c_str());
        status = 1;
      } else {
        std::fprintf(stderr, "sandpipe: sent %zu parameter(s) to node \"%s\" (id %u); its log says whether each was accepted\n",
                     params.size(), node_name.c_str(), s.node_id);
      }
      pw_proxy_destroy(reinterpret_cast<pw_proxy*>(node));
    }
  }
  spa_hook_remove(&registry_hook);
  pw_proxy_destroy(reinterpret_cast<pw_proxy*>(s.registry));
  spa_hook_remove(&core_hook);
  return status;
}

}  // namespace

ParamValue parse_cli_value(const std::string& text) {
  if (text == "true") return true;
  if (text == "false") return false;
  if (!text.empty()) {
    char* end = nullptr;
    const double d = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size() && std::isfinite(d)) return d;
  }
  return text;
}

int set_node_params(const std::string& node_name, const std::vector<std::pair<std::string, ParamValue>>& params) {
  pw_init(nullptr, nullptr);
  int status = 1;
  try {
    status = run(node_name, params);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandpipe: %s\n", e.what());
  }
  pw_deinit();
  return status;
}

}  // namespace sandpipe::host
