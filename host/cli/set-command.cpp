// `sandpipe set`: a small PipeWire client that finds a node by name and sends it Props.
#include "host/cli/set-command.h"

#include <algorithm>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <system_error>
#include <thread>

#include <spa/pod/iter.h>
#include <spa/pod/parser.h>

#include <pipewire/pipewire.h>
#include <spa/param/props.h>
#include <spa/pod/builder.h>

#include "host/node/node-props.h"

namespace sandpipe::host {
namespace {

/// [main] A PropInfo pod of a "SLOT:PARAM" parameter (`params = true`) as the description the
/// node validates against: its kind from the type pod (Bool → boolean, String → text, Int with
/// labels → choice, Int → integer, Float → number), the range, the choice names.
std::optional<ParamDescription> read_prop_info(const spa_pod* pod) {
  if (!spa_pod_is_object_type(pod, SPA_TYPE_OBJECT_PropInfo)) return std::nullopt;
  const auto* obj = reinterpret_cast<const spa_pod_object*>(pod);
  const spa_pod_prop* name_prop = spa_pod_object_find_prop(obj, nullptr, SPA_PROP_INFO_name);
  const spa_pod_prop* type_prop = spa_pod_object_find_prop(obj, nullptr, SPA_PROP_INFO_type);
  const spa_pod_prop* params_prop = spa_pod_object_find_prop(obj, nullptr, SPA_PROP_INFO_params);
  const spa_pod_prop* labels_prop = spa_pod_object_find_prop(obj, nullptr, SPA_PROP_INFO_labels);
  const char* name = nullptr;
  bool is_param = false;
  if (name_prop == nullptr || type_prop == nullptr || params_prop == nullptr ||
      spa_pod_get_string(&name_prop->value, &name) < 0 || name == nullptr ||
      spa_pod_get_bool(&params_prop->value, &is_param) < 0 || !is_param)
    return std::nullopt;
  ParamDescription d;
  d.key = name;
  std::uint32_t n_values = 0;
  std::uint32_t choice = SPA_CHOICE_None;
  const spa_pod* value = spa_pod_get_values(&type_prop->value, &n_values, &choice);
  const bool range = choice == SPA_CHOICE_Range && n_values >= 3;
  if (spa_pod_is_bool(value)) {
    d.kind = "boolean";
  } else if (spa_pod_is_string(value)) {
    d.kind = "text";
  } else if (spa_pod_is_int(value)) {
    d.kind = labels_prop != nullptr ? "choice" : "integer";
    const auto* v = static_cast<const std::int32_t*>(SPA_POD_BODY_CONST(value));
    if (range) {
      d.min = v[1];
      d.max = v[2];
    }
  } else if (spa_pod_is_float(value)) {
    d.kind = "number";
    const auto* v = static_cast<const float*>(SPA_POD_BODY_CONST(value));
    if (range) {
      d.min = v[1];
      d.max = v[2];
    }
  } else {
    return std::nullopt;
  }
  if (labels_prop != nullptr && spa_pod_is_struct(&labels_prop->value)) {
    spa_pod_parser parser{};
    spa_pod_frame frame{};
    spa_pod_parser_pod(&parser, &labels_prop->value);
    if (spa_pod_parser_push_struct(&parser, &frame) >= 0) {
      std::int32_t index = 0;
      const char* label = nullptr;
      while (spa_pod_parser_get_int(&parser, &index) >= 0 && spa_pod_parser_get_string(&parser, &label) >= 0 &&
             label != nullptr)
        d.choices.emplace_back(label);
    }
  }
  return d;
}

/// [main] The "SLOT:PARAM" values of a Props pod (its `params` struct) into `out`.
void read_props(const spa_pod* pod, std::vector<std::pair<std::string, ParamValue>>& out) {
  if (!spa_pod_is_object_type(pod, SPA_TYPE_OBJECT_Props)) return;
  const spa_pod_prop* prop =
      spa_pod_object_find_prop(reinterpret_cast<const spa_pod_object*>(pod), nullptr, SPA_PROP_params);
  if (prop == nullptr || !spa_pod_is_struct(&prop->value)) return;
  spa_pod_parser parser{};
  spa_pod_frame frame{};
  spa_pod_parser_pod(&parser, &prop->value);
  if (spa_pod_parser_push_struct(&parser, &frame) < 0) return;
  for (;;) {
    const char* name = nullptr;
    spa_pod* value = nullptr;
    if (spa_pod_parser_get_string(&parser, &name) < 0 || name == nullptr ||
        spa_pod_parser_get_pod(&parser, &value) < 0 || value == nullptr)
      break;
    if (auto v = param_value_from_pod(value)) out.emplace_back(name, std::move(*v));
  }
}

/// [any] Whether the node's published `have` is the normalised value `want` (numbers as the
/// float or int the node publishes).
bool same_value(const ParamValue& have, const ParamValue& want) {
  const auto* a = std::get_if<double>(&have);
  const auto* b = std::get_if<double>(&want);
  if (a != nullptr && b != nullptr) return std::fabs(*a - *b) <= 1e-6 * std::max(1.0, std::fabs(*b));
  return have == want;
}

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
  std::vector<ParamDescription> infos;               ///< the node's PropInfo ("SLOT:PARAM" keys)
  std::vector<std::pair<std::string, ParamValue>> props;  ///< the node's Props, as last read

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

  static void on_param(void* data, int /*seq*/, std::uint32_t id, std::uint32_t /*index*/, std::uint32_t /*next*/,
                       const spa_pod* param) {
    auto* self = static_cast<Session*>(data);
    if (param == nullptr) return;
    if (id == SPA_PARAM_PropInfo) {
      // A stream's adapter publishes its own ("channelmix.normalize"): ours are SLOT:PARAM.
      auto info = read_prop_info(param);
      if (info && info->key.find(':') != std::string::npos) self->infos.push_back(std::move(*info));
    } else if (id == SPA_PARAM_Props) {
      read_props(param, self->props);
    }
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

/// [main] Reads `node`'s PropInfo and Props, validates `params` against them, sends the ones it
/// takes and reads Props back until they hold them. Returns the exit status.
int set_on_node(Session& s, pw_node* node, const std::string& node_name,
                const std::vector<std::pair<std::string, std::string>>& params,
                std::chrono::milliseconds confirm_timeout) {
  static constexpr pw_node_events node_events = [] {
    pw_node_events e{};
    e.version = PW_VERSION_NODE_EVENTS;
    e.param = &Session::on_param;
    return e;
  }();
  spa_hook node_hook{};
  pw_node_add_listener(node, &node_hook, &node_events, &s);
  pw_node_enum_params(node, 0, SPA_PARAM_PropInfo, 0, UINT32_MAX, nullptr);
  pw_node_enum_params(node, 0, SPA_PARAM_Props, 0, UINT32_MAX, nullptr);
  s.round_trip();
  const std::string who = "node \"" + node_name + "\" (id " + std::to_string(s.node_id) + ")";

  // Validate as the node does; send only what it takes.
  int status = 0;
  std::vector<std::pair<std::string, ParamValue>> sent;     // as given (the node clamps itself)
  std::vector<std::pair<std::string, ParamValue>> expected;  // as the node will publish it
  for (const auto& [name, text] : params) {
    const auto info = std::find_if(s.infos.begin(), s.infos.end(),
                                   [&](const ParamDescription& d) { return d.key == name; });
    if (info == s.infos.end()) {
      std::vector<std::string> known;
      for (const auto& d : s.infos) known.push_back(d.key);
      std::fprintf(stderr, "sandpipe: %s refused \"%s\": %s\n", who.c_str(), name.c_str(),
                   unknown_param_error(known).c_str());
      status = 1;
      continue;
    }
    // A text parameter takes the words as written ("0.5" stays a string).
    const ParamValue value = info->kind == "text" ? ParamValue{text} : parse_cli_value(text);
    std::string error;
    std::string note;
    const auto normalised = normalise_param_value(*info, value, error, note);
    if (!normalised) {
      std::fprintf(stderr, "sandpipe: %s refused \"%s\": %s\n", who.c_str(), name.c_str(), error.c_str());
      status = 1;
      continue;
    }
    if (!note.empty()) std::fprintf(stderr, "sandpipe: note: \"%s\": %s\n", name.c_str(), note.c_str());
    sent.emplace_back(name, value);
    expected.emplace_back(name, *normalised);
  }
  if (sent.empty() || s.error != 0) {
    if (s.error != 0) std::fprintf(stderr, "sandpipe: PipeWire error: %s\n", s.error_message.c_str());
    spa_hook_remove(&node_hook);
    return 1;
  }

  std::vector<std::uint8_t> buffer(1024);
  for (const auto& [name, value] : sent) {
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
  for (const auto& [name, value] : sent) {
    spa_pod_builder_string(&b, name.c_str());
    add_value(b, value);
  }
  spa_pod_builder_pop(&b, &list);
  const auto* pod = static_cast<const spa_pod*>(spa_pod_builder_pop(&b, &outer));
  pw_node_set_param(node, SPA_PARAM_Props, 0, pod);
  s.round_trip();
  if (s.error != 0) {
    std::fprintf(stderr, "sandpipe: %s refused the Props: %s\n", who.c_str(), s.error_message.c_str());
    spa_hook_remove(&node_hook);
    return 1;
  }

  // The node applies Props on its own main loop: read them back until they hold every value, or
  // (an earlier-API plugin, whose Props publish what its get_parameter() reads back) a new one.
  const auto before = s.props;
  const auto deadline = std::chrono::steady_clock::now() + confirm_timeout;
  std::vector<bool> taken(expected.size(), false);
  std::vector<std::optional<ParamValue>> read_back(expected.size());
  for (;;) {
    s.props.clear();
    pw_node_enum_params(node, 0, SPA_PARAM_Props, 0, UINT32_MAX, nullptr);
    s.round_trip();
    bool all = true;
    for (std::size_t i = 0; i < expected.size(); ++i) {
      const auto it = std::find_if(s.props.begin(), s.props.end(),
                                   [&](const auto& p) { return p.first == expected[i].first; });
      // A name given twice ends with its last value: only that one can be read back.
      const bool superseded = std::any_of(expected.begin() + static_cast<std::ptrdiff_t>(i) + 1, expected.end(),
                                          [&](const auto& later) { return later.first == expected[i].first; });
      const auto was = std::find_if(before.begin(), before.end(),
                                    [&](const auto& p) { return p.first == expected[i].first; });
      read_back[i].reset();
      if (it != s.props.end() && !same_value(it->second, expected[i].second) && was != before.end() &&
          !same_value(it->second, was->second))
        read_back[i] = it->second;
      taken[i] =
          superseded || read_back[i] || (it != s.props.end() && same_value(it->second, expected[i].second));
      all = all && taken[i];
    }
    if (all || s.error != 0 || std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    if (taken[i] && read_back[i]) {
      std::printf("%s = %s (what the plugin reads back; sent %s)\n", expected[i].first.c_str(),
                  describe_param_value(*read_back[i]).c_str(), describe_param_value(sent[i].second).c_str());
    } else if (taken[i]) {
      // Clamped numbers as the node holds them; choice names as given.
      const ParamValue& shown =
          std::holds_alternative<std::string>(sent[i].second) ? sent[i].second : expected[i].second;
      std::printf("%s = %s\n", expected[i].first.c_str(), describe_param_value(shown).c_str());
    } else {
      std::fprintf(stderr, "sandpipe: %s did not take \"%s\" = %s within %.1f s (its log says why)\n", who.c_str(),
                   expected[i].first.c_str(), describe_param_value(sent[i].second).c_str(),
                   static_cast<double>(confirm_timeout.count()) / 1000.0);
      status = 1;
    }
  }
  spa_hook_remove(&node_hook);
  return status;
}

int run(const std::string& node_name, const std::vector<std::pair<std::string, std::string>>& params,
        std::chrono::milliseconds confirm_timeout) {
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
      status = set_on_node(s, node, node_name, params, confirm_timeout);
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

int set_node_params(const std::string& node_name, const std::vector<std::pair<std::string, std::string>>& params,
                    std::chrono::milliseconds confirm_timeout) {
  pw_init(nullptr, nullptr);
  int status = 1;
  try {
    status = run(node_name, params, confirm_timeout);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandpipe: %s\n", e.what());
  }
  pw_deinit();
  return status;
}

}  // namespace sandpipe::host
