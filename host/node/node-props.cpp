// The node's parameter table: PropInfo/Props pods, validation, and delivery of changes to the
// slots (native: a queue to the data thread; Python: the sandbox's control channel).
#include "host/node/node-props.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string_view>
#include <utility>

#include <spa/param/param.h>
#include <spa/param/props.h>
#include <spa/pod/builder.h>
#include <spa/pod/iter.h>
#include <spa/pod/parser.h>

#include "host/python/sandbox-client.h"
#include "host/python/supervisor.h"
#include "host/slot/log.h"

// What was set or refused: the node's log (host/slot/log.h), never its answer to `sandpipe set`
// (host/cli/set-command.cpp prints that).
#define PW_LOG_TOPIC_DEFAULT ::sandpipe::host::props_log

namespace sandpipe::host {
namespace {

/// [any] Shortest text that reads back as `value`.
std::string format_number(double value) {
  char buf[64];
  // A value that came in as a float reads best as one: 0.3, not 0.30000001192092896.
  const auto as_float = static_cast<float>(value);
  const auto res = static_cast<double>(as_float) == value ? std::to_chars(buf, buf + sizeof buf, as_float)
                                                           : std::to_chars(buf, buf + sizeof buf, value);
  return {buf, res.ptr};
}

std::string describe(const ParamValue& value) {
  if (const auto* d = std::get_if<double>(&value)) return format_number(*d);
  if (const auto* b = std::get_if<bool>(&value)) return *b ? "true" : "false";
  return '"' + std::get<std::string>(value) + '"';
}

}  // namespace

std::optional<ParamValue> param_value_from_pod(const spa_pod* pod) {
  if (float f = 0; spa_pod_get_float(pod, &f) >= 0) return static_cast<double>(f);
  if (double d = 0; spa_pod_get_double(pod, &d) >= 0) return d;
  if (std::int32_t i = 0; spa_pod_get_int(pod, &i) >= 0) return static_cast<double>(i);
  if (std::int64_t l = 0; spa_pod_get_long(pod, &l) >= 0) return static_cast<double>(l);
  if (bool b = false; spa_pod_get_bool(pod, &b) >= 0) return b;
  if (const char* s = nullptr; spa_pod_get_string(pod, &s) >= 0 && s != nullptr) return std::string(s);
  return std::nullopt;
}

namespace {

/// [main] A PythonParamInfo as the generic description.
ParamDescription from_python(const PythonParamInfo& p) {
  ParamDescription d;
  d.key = p.key;
  d.kind = p.kind;
  d.min = p.min;
  d.max = p.max;
  d.default_value = p.default_value;
  d.choices = p.choices;
  if (d.kind == "choice") {
    d.min = 0.0;
    d.max = d.choices.empty() ? 0.0 : static_cast<double>(d.choices.size() - 1);
  }
  return d;
}

}  // namespace

std::optional<ParamValue> normalise_param_value(const ParamDescription& d, const ParamValue& requested,
                                               std::string& error, std::string& note) {
  const auto* number = std::get_if<double>(&requested);
  const auto* flag = std::get_if<bool>(&requested);
  const auto* text = std::get_if<std::string>(&requested);
  const std::string range = "[" + format_number(d.min) + ", " + format_number(d.max) + "]";

  if (d.kind == "boolean") {
    if (flag != nullptr) return *flag;
    if (number != nullptr && std::isfinite(*number)) return *number != 0.0;
    error = "expects true or false, got " + describe(requested);
    return std::nullopt;
  }
  if (d.kind == "choice") {
    if (text != nullptr) {
      const auto it = std::find(d.choices.begin(), d.choices.end(), *text);
      if (it != d.choices.end()) return static_cast<double>(it - d.choices.begin());
    } else if (number != nullptr && std::isfinite(*number) && std::trunc(*number) == *number && *number >= 0 &&
               *number < static_cast<double>(d.choices.size())) {
      return *number;
    }
    std::string names;
    for (const auto& c : d.choices) names += (names.empty() ? "" : ", ") + c;
    error = "expects one of: " + names + " (or its index), got " + describe(requested);
    return std::nullopt;
  }
  if (d.kind == "text") {
    // Any scalar is text: `sandpipe set NODE fx:key 0.5` or `true` parses as a number or a
    // boolean, and pw-cli sends whatever the user typed.
    if (text != nullptr) return *text;
    if (flag != nullptr) return std::string(*flag ? "true" : "false");
    if (number != nullptr && std::isfinite(*number)) return format_number(*number);
    error = "expects a string, got " + describe(requested);
    return std::nullopt;
  }
  // number or integer
  if (number == nullptr || !std::isfinite(*number)) {
    error = "expects a number in " + range + ", got " + describe(requested);
    return std::nullopt;
  }
  double v = *number;
  if (d.kind == "integer") v = std::round(v);
  if (d.min < d.max) {
    const double clamped = std::clamp(v, d.min, d.max);
    if (clamped != v) note = describe(requested) + " is out of range " + range + ", clamped to " + format_number(clamped);
    v = clamped;
  }
  return v;
}

std::string unknown_param_error(const std::vector<std::string>& known) {
  std::string names;
  for (const auto& n : known) names += (names.empty() ? "" : ", ") + n;
  return "unknown parameter (known: " + (names.empty() ? std::string("none") : names) + ")";
}

std::string describe_param_value(const ParamValue& value) { return describe(value); }

NodeProps::NodeProps(const ChainConfig& config) : config_(config) {}
NodeProps::~NodeProps() = default;

void NodeProps::attach(const Chain& chain) {
  entries_.clear();
  const auto& slots = chain.slots();
  for (std::uint32_t s = 0; s < slots.size(); ++s) {
    const Processor& slot = *slots[s];
    const PluginSpec* spec = s < config_.plugins.size() ? &config_.plugins[s] : nullptr;
    const auto* sandboxed = dynamic_cast<const PythonSlot*>(&slot);
    const std::size_t first_entry = entries_.size();
    if (sandboxed == nullptr) {
      add_entries(Part{s, 0, std::string(slot.name()), true, false, spec}, slot.describe_params());
      continue;
    }
    // An earlier-API plugin's "default" is what its get_parameter() answered after the config's
    // values were set: the current value, which the published Props start from.
    const auto add = [&](std::uint32_t member, std::string name, const PythonPluginInfo& info) {
      std::vector<ParamDescription> descs;
      for (const auto& p : info.params) descs.push_back(from_python(p));
      add_entries(Part{s, member, std::move(name), false, info.api == "legacy", spec}, std::move(descs));
    };
    // A sandbox group's members and a relay's plugins (a group in it by its members) are named
    // as written (MEMBER:PARAM), as if each had its own slot; `member` counts them in order.
    std::uint32_t member = 0;
    const std::function<bool(const PluginSpec&, const PythonPluginInfo&)> add_plugins =
        [&](const PluginSpec& part, const PythonPluginInfo& info) {
          const std::vector<PluginSpec>& inner = is_group(part) ? part.members : part.stages;
          if (inner.empty()) {
            add(member++, part.name, info);
            return true;
          }
          if (info.members.size() != inner.size()) return false;
          for (std::size_t m = 0; m < inner.size(); ++m)
            if (!add_plugins(inner[m], info.members[m])) return false;
          return true;
        };
    if (spec == nullptr || (!is_group(*spec) && !is_relay(*spec)) || !add_plugins(*spec, sandboxed->info())) {
      entries_.erase(entries_.begin() + static_cast<std::ptrdiff_t>(first_entry),
                     entries_.end());  // not loaded as described: the slot's own params, if any
      add(0, std::string(slot.name()), sandboxed->info());
    }
  }
}

void NodeProps::add_entries(const Part& part, std::vector<ParamDescription> descs) {
  for (std::uint32_t i = 0; i < descs.size(); ++i) {
    Entry e;
    e.name = part.name + ":" + descs[i].key;
    e.slot = part.slot;
    e.index = i;
    e.member = part.member;
    e.native = part.native;
    e.read_back = part.read_back;
    e.desc = std::move(descs[i]);
    e.value = e.desc.default_value;
    if (part.spec != nullptr && !part.read_back) {
      for (const auto& setting : part.spec->params) {
        if (setting.key != e.desc.key || setting.member != part.member) continue;
        std::string error;
        std::string note;
        if (auto v = normalise_param_value(e.desc, setting.value, error, note)) e.value = *v;
      }
    }
    // A choice's default may be given by name: keep the index form.
    std::string error;
    std::string note;
    if (auto v = normalise_param_value(e.desc, e.value, error, note)) e.value = *v;
    entries_.push_back(std::move(e));
  }
}

void NodeProps::remember(const Entry& entry) {
  if (entry.slot >= config_.plugins.size()) return;
  ParamValue stored = entry.value;
  if (entry.desc.kind == "choice" && !entry.native) {
    // A Python plugin is loaded with the choice's name, as in a config file.
    const auto i = static_cast<std::size_t>(std::get<double>(entry.value));
    if (i < entry.desc.choices.size()) stored = entry.desc.choices[i];
  }
  auto& params = config_.plugins[entry.slot].params;
  for (auto& setting : params) {
    if (setting.key == entry.desc.key && setting.member == entry.member) {
      setting.value = std::move(stored);
      return;
    }
  }
  params.push_back(ParamSetting{entry.desc.key, std::move(stored), 0, entry.member});
}

std::optional<std::string> NodeProps::apply_one(const std::string& name, const ParamValue& value, Chain& chain,
                                                ParamQueue& queue) {
  const auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.name == name; });
  if (it == entries_.end()) {
    std::vector<std::string> known;
    for (const auto& e : entries_) known.push_back(e.name);
    return unknown_param_error(known);
  }
  Entry& entry = *it;
  std::string error;
  std::string note;
  const auto normalised = normalise_param_value(entry.desc, value, error, note);
  if (!normalised) return error;
  if (!note.empty()) pw_log_warn("\"%s\": %s", name.c_str(), note.c_str());

  if (entry.native) {
    float f = 0.0F;
    if (const auto* b = std::get_if<bool>(&*normalised)) {
      f = *b ? 1.0F : 0.0F;
    } else {
      f = static_cast<float>(std::get<double>(*normalised));
    }
    if (!queue.push(ParamChange{entry.slot, entry.index, f}))
      return "too many changes pending (is the node running?)";
  } else {
    auto* sandboxed = entry.slot < chain.slots().size()
                          ? dynamic_cast<PythonSlot*>(chain.slots()[entry.slot].get())
                          : nullptr;
    if (sandboxed == nullptr) return "slot is not a Python plugin any more";
    ParamValue sent = *normalised;
    if (entry.desc.kind == "choice") sent = entry.desc.choices.at(static_cast<std::size_t>(std::get<double>(sent)));
    try {
      if (auto refused = chain.supervisor().set_param(*sandboxed, ParamSetting{entry.desc.key, sent, 0, entry.member}))
        return "refused by the plugin: " + *refused;
    } catch (const PluginError& e) {
      return e.what();
    }
    if (entry.read_back) return std::nullopt;  // its value is what the plugin reads back
  }
  entry.value = *normalised;
  remember(entry);
  return std::nullopt;
}

bool NodeProps::take_read_backs(const Chain& chain) {
  bool changed = false;
  for (auto& read_back : chain.supervisor().take_read_backs()) {
    const auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) {
      return !e.native && e.desc.key == read_back.key && e.member == read_back.member && e.slot < chain.slots().size() &&
             chain.slots()[e.slot].get() == read_back.slot;
    });
    if (it == entries_.end()) continue;
    std::string error;
    std::string note;
    auto value = normalise_param_value(it->desc, read_back.value, error, note);
    if (!value || *value == it->value) continue;
    pw_log_info("set %s = %s (what the plugin reads back)", it->name.c_str(), describe(*value).c_str());
    it->value = std::move(*value);
    remember(*it);
    changed = true;
  }
  return changed;
}

std::uint32_t NodeProps::apply(const spa_pod* props, Chain& chain, ParamQueue& queue) {
  if (props == nullptr || !spa_pod_is_object_type(props, SPA_TYPE_OBJECT_Props)) return 0;
  const auto* obj = reinterpret_cast<const spa_pod_object*>(props);
  const spa_pod_prop* prop = spa_pod_object_find_prop(obj, nullptr, SPA_PROP_params);
  if (prop == nullptr) return 0;
  if (!spa_pod_is_struct(&prop->value)) {
    pw_log_warn("Props: params must be a list [ \"SLOT:PARAM\" value ... ]");
    return 0;
  }
  spa_pod_parser parser{};
  spa_pod_frame frame{};
  spa_pod_parser_pod(&parser, &prop->value);
  if (spa_pod_parser_push_struct(&parser, &frame) < 0) return 0;
  std::uint32_t changed = 0;
  for (;;) {
    const char* name = nullptr;
    if (spa_pod_parser_get_string(&parser, &name) < 0 || name == nullptr) break;
    spa_pod* value_pod = nullptr;
    if (spa_pod_parser_get_pod(&parser, &value_pod) < 0 || value_pod == nullptr) {
      pw_log_warn("cannot set \"%s\": no value follows the name", name);
      break;
    }
    // A stream's adapter shares the params list ("channelmix.normalize", "resample.quality"):
    // ours are always SLOT:PARAM.
    if (std::string_view(name).find(':') == std::string_view::npos) continue;
    const auto value = param_value_from_pod(value_pod);
    if (!value) {
      pw_log_warn("cannot set \"%s\": the value must be a number, boolean or string", name);
      continue;
    }
    if (auto error = apply_one(name, *value, chain, queue)) {
      pw_log_warn("cannot set \"%s\": %s", name, error->c_str());
      continue;
    }
    const auto it = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.name == name; });
    if (it->read_back) {
      pw_log_info("sent %s to the plugin (Props show what it reads back)", name);
      continue;
    }
    std::string shown = describe(it->value);
    if (it->desc.kind == "choice") shown = it->desc.choices.at(static_cast<std::size_t>(std::get<double>(it->value)));
    pw_log_info("set %s = %s", name, shown.c_str());
    ++changed;
  }
  return changed;
}

std::size_t NodeProps::pod_bytes() const noexcept {
  std::size_t bytes = 1024;
  for (const auto& e : entries_) {
    bytes += 256 + 2 * e.name.size();
    for (const auto& c : e.desc.choices) bytes += 32 + c.size();
    if (const auto* s = std::get_if<std::string>(&e.value)) bytes += 16 + s->size();
    if (const auto* s = std::get_if<std::string>(&e.desc.default_value)) bytes += 16 + s->size();
  }
  return bytes;
}

namespace {

/// [main] Appends one value pod for `value` as `kind` publishes it.
void add_value(spa_pod_builder& b, const std::string& kind, const ParamValue& value) {
  if (const auto* s = std::get_if<std::string>(&value)) {
    spa_pod_builder_string(&b, s->c_str());
  } else if (const auto* flag = std::get_if<bool>(&value)) {
    spa_pod_builder_bool(&b, *flag);
  } else if (kind == "integer" || kind == "choice") {
    spa_pod_builder_int(&b, static_cast<std::int32_t>(std::get<double>(value)));
  } else {
    spa_pod_builder_float(&b, static_cast<float>(std::get<double>(value)));
  }
}

}  // namespace

const spa_pod* NodeProps::build_props(spa_pod_builder& b) const {
  spa_pod_frame outer{};
  spa_pod_frame list{};
  spa_pod_builder_push_object(&b, &outer, SPA_TYPE_OBJECT_Props, SPA_PARAM_Props);
  spa_pod_builder_prop(&b, SPA_PROP_params, 0);
  spa_pod_builder_push_struct(&b, &list);
  for (const auto& e : entries_) {
    spa_pod_builder_string(&b, e.name.c_str());
    add_value(b, e.desc.kind, e.value);
  }
  spa_pod_builder_pop(&b, &list);
  auto* pod = static_cast<const spa_pod*>(spa_pod_builder_pop(&b, &outer));
  if (pod == nullptr || b.state.offset > b.size) throw std::runtime_error("Props: pod buffer too small");
  return pod;
}

std::vector<const spa_pod*> NodeProps::build_params(spa_pod_builder& b) const {
  std::vector<std::uint32_t> offsets;
  for (const auto& e : entries_) {
    offsets.push_back(b.state.offset);
    spa_pod_frame f{};
    spa_pod_builder_push_object(&b, &f, SPA_TYPE_OBJECT_PropInfo, SPA_PARAM_PropInfo);
    spa_pod_builder_prop(&b, SPA_PROP_INFO_name, 0);
    spa_pod_builder_string(&b, e.name.c_str());
    spa_pod_builder_prop(&b, SPA_PROP_INFO_description, 0);
    spa_pod_builder_string(&b, (e.name + " (" + e.desc.kind + ")").c_str());
    const auto& def = e.desc.default_value;
    if (e.desc.kind == "boolean") {
      const bool d = std::holds_alternative<bool>(def) ? std::get<bool>(def) : false;
      spa_pod_builder_add(&b, SPA_PROP_INFO_type, SPA_POD_CHOICE_Bool(d), 0);
    } else if (e.desc.kind == "text") {
      spa_pod_builder_prop(&b, SPA_PROP_INFO_type, 0);
      spa_pod_builder_string(&b, std::holds_alternative<std::string>(def) ? std::get<std::string>(def).c_str() : "");
    } else if (e.desc.kind == "integer" || e.desc.kind == "choice") {
      std::int32_t d = std::holds_alternative<double>(def) ? static_cast<std::int32_t>(std::get<double>(def)) : 0;
      if (const auto* name = std::get_if<std::string>(&def)) {
        const auto it = std::find(e.desc.choices.begin(), e.desc.choices.end(), *name);
        d = it == e.desc.choices.end() ? 0 : static_cast<std::int32_t>(it - e.desc.choices.begin());
      }
      spa_pod_builder_add(&b, SPA_PROP_INFO_type, SPA_POD_CHOICE_RANGE_Int(d, static_cast<std::int32_t>(e.desc.min),
                                                        static_cast<std::int32_t>(e.desc.max)),
                          0);
    } else {
      const float d = std::holds_alternative<double>(def) ? static_cast<float>(std::get<double>(def)) : 0.0F;
      spa_pod_builder_add(&b, SPA_PROP_INFO_type,
                          SPA_POD_CHOICE_RANGE_Float(d, static_cast<float>(e.desc.min), static_cast<float>(e.desc.max)),
                          0);
    }
    if (e.desc.kind == "choice") {
      spa_pod_frame labels{};
      spa_pod_builder_prop(&b, SPA_PROP_INFO_labels, 0);
      spa_pod_builder_push_struct(&b, &labels);
      for (std::size_t i = 0; i < e.desc.choices.size(); ++i) {
        spa_pod_builder_int(&b, static_cast<std::int32_t>(i));
        spa_pod_builder_string(&b, e.desc.choices[i].c_str());
      }
      spa_pod_builder_pop(&b, &labels);
    }
    spa_pod_builder_prop(&b, SPA_PROP_INFO_params, 0);
    spa_pod_builder_bool(&b, true);
    spa_pod_builder_pop(&b, &f);
  }
  offsets.push_back(b.state.offset);
  (void)build_props(b);
  if (b.state.offset > b.size) throw std::runtime_error("PropInfo: pod buffer too small");
  std::vector<const spa_pod*> pods;
  pods.reserve(offsets.size());
  for (const std::uint32_t off : offsets) pods.push_back(static_cast<const spa_pod*>(spa_pod_builder_deref(&b, off)));
  return pods;
}

namespace {

/// [main] Builds the Props pod of `props` and hands it to `publish`.
void publish_props(const NodeProps& props, const std::function<void(const spa_pod*)>& publish) {
  std::vector<std::uint8_t> buffer(props.pod_bytes());
  spa_pod_builder b{};
  spa_pod_builder_init(&b, buffer.data(), static_cast<std::uint32_t>(buffer.size()));
  publish(props.build_props(b));
}

}  // namespace

void apply_props(const spa_pod* param, NodeProps& props, Chain& chain, ParamQueue& queue,
                 const std::function<void(const spa_pod*)>& publish) noexcept {
  try {
    if (props.apply(param, chain, queue) > 0) publish_props(props, publish);
  } catch (const std::exception& e) {
    pw_log_error("cannot apply Props: %s", e.what());
  }
}

void apply_read_backs(NodeProps& props, const Chain& chain,
                      const std::function<void(const spa_pod*)>& publish) noexcept {
  try {
    if (props.take_read_backs(chain)) publish_props(props, publish);
  } catch (const std::exception& e) {
    pw_log_error("cannot publish Props: %s", e.what());
  }
}

}  // namespace sandpipe::host
