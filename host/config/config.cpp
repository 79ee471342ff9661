// Chain config parsing: SPA-JSON read with spa_json, validated into a ChainConfig.
#include "host/config/config.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cfloat>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <iterator>
#include <optional>
#include <sstream>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "host/config/spa-json.h"

namespace sandpipe::host {

std::string_view to_string(PluginKind kind) noexcept {
  switch (kind) {
    case PluginKind::native_builtin:
      return "native (built-in)";
    case PluginKind::native_library:
      return "native (shared object)";
    case PluginKind::python:
      return "python (sandboxed)";
  }
  return "unknown";
}

std::string_view to_string(OnFailure policy) noexcept {
  return policy == OnFailure::mute ? "mute" : "bypass";
}

std::string_view to_string(SlotMode mode) noexcept {
  switch (mode) {
    case SlotMode::auto_select:
      return "auto";
    case SlotMode::sync:
      return "sync";
    case SlotMode::pipelined:
      return "pipelined";
  }
  return "unknown";
}

std::vector<std::string> channel_positions(std::uint32_t channels) {
  if (channels == 1) return {"MONO"};
  static constexpr std::array<const char*, 8> surround = {"FL", "FR", "FC", "LFE", "RL", "RR", "SL", "SR"};
  std::vector<std::string> names;
  for (std::uint32_t i = 0; i < channels && i < surround.size(); ++i) names.emplace_back(surround[i]);
  return names;
}

std::string_view to_string(NodeMode mode) noexcept {
  switch (mode) {
    case NodeMode::sink:
      return "sink";
    case NodeMode::source:
      return "source";
    case NodeMode::filter:
      break;
  }
  return "filter";
}

float max_level_linear(double max_level_db) noexcept {
  const double linear = std::pow(10.0, max_level_db / 20.0);
  return linear >= static_cast<double>(FLT_MAX) ? FLT_MAX : static_cast<float>(linear);
}

OnFailure effective_on_failure(const PluginSpec& spec, std::string_view api, std::string_view role) {
  // Only the default `bypass` gives way to fail-closed; `mute` set any way stays.
  if (spec.on_failure_given || spec.on_failure != OnFailure::bypass || spec.kind != PluginKind::python)
    return spec.on_failure;
  if (!api.empty()) return api == "legacy" && role == "processor" ? OnFailure::mute : OnFailure::bypass;
  // Never loaded (its api is unknown): fail closed for a file that defines create_plugin().
  std::ifstream in(spec.resolved.empty() ? std::filesystem::path(spec.path) : spec.resolved);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text.find("def create_plugin") != std::string::npos ? OnFailure::mute : OnFailure::bypass;
}

namespace {

using namespace std::string_view_literals;

/// One token of the config text, with where it came from.
struct Token {
  std::string_view text;
  int line = 0;
  [[nodiscard]] bool is_container() const { return !text.empty() && (text[0] == '{' || text[0] == '['); }
  [[nodiscard]] bool is_object() const { return !text.empty() && text[0] == '{'; }
  [[nodiscard]] bool is_array() const { return !text.empty() && text[0] == '['; }
  [[nodiscard]] bool is_quoted() const { return !text.empty() && text[0] == '"'; }
};

/// Walks spa_json tokens and knows how to turn a position into a "FILE:LINE:" prefix.
class Reader {
 public:
  Reader(std::string_view text, std::string file) : text_(text), file_(std::move(file)) {}

  /// Tokens come in text order, so the count of newlines goes on from the last one asked for:
  /// linear in the text over a whole parse (counting from the start each time made a config of
  /// 40 000 keys take 9 s).
  [[nodiscard]] int line_of(const char* p) const {
    const auto offset =
        std::min(static_cast<std::size_t>(std::max<std::ptrdiff_t>(0, p - text_.data())), text_.size());
    if (offset < counted_to_) {  // backwards (a container's start): count again from the top
      counted_to_ = 0;
      counted_lines_ = 0;
    }
    counted_lines_ += static_cast<int>(std::count(text_.begin() + static_cast<std::ptrdiff_t>(counted_to_),
                                                  text_.begin() + static_cast<std::ptrdiff_t>(offset), '\n'));
    counted_to_ = offset;
    return 1 + counted_lines_;
  }

  [[noreturn]] void fail(int line, const std::string& message) const {
    throw ConfigError(file_ + ":" + std::to_string(line) + ": " + message);
  }

  /// Next token of `it`, or nullopt at the end of the container. Throws on a syntax error.
  std::optional<Token> next(spa_json& it) const {
    const char* value = nullptr;
    const int len = spa_json_next(&it, &value);
    if (len < 0)
      fail(line_of(value != nullptr ? value : it.cur),
           "syntax error (unbalanced bracket, bad string or escape)");
    if (len == 0) return std::nullopt;
    return Token{std::string_view(value, static_cast<std::size_t>(len)), line_of(value)};
  }

  /// The value after `key`; a missing value is an error.
  Token value_of(spa_json& it, const Token& key) const {
    auto value = next(it);
    if (!value) fail(key.line, "\"" + unquote(key) + "\" has no value");
    return *value;
  }

  [[nodiscard]] std::string unquote(const Token& token) const {
    if (!token.is_quoted()) return std::string(token.text);
    std::string out(token.text.size() + 1, '\0');
    if (spa_json_parse_stringn(token.text.data(), static_cast<int>(token.text.size()), out.data(),
                               static_cast<int>(out.size())) < 0)
      fail(token.line, "malformed string " + std::string(token.text));
    out.resize(std::strlen(out.c_str()));
    return out;
  }

  /// A string value: quoted, or a bare word that is not a number, boolean or null.
  [[nodiscard]] std::string string_value(const Token& token, std::string_view key) const {
    if (token.is_container())
      fail(token.line,
           "\"" + std::string(key) + "\" must be a string, not a " + (token.is_object() ? "object" : "list"));
    return unquote(token);
  }

  /// A string value that must be one of `choices`: its meaning, or a failure listing them all
  /// ("KEY must be "a", "b" or "c", got "x"").
  template <typename T>
  [[nodiscard]] T choice_value(const Token& token, std::string_view key,
                               std::initializer_list<std::pair<std::string_view, T>> choices) const {
    const std::string text = string_value(token, key);
    std::string listed;
    std::size_t i = 0;
    for (const auto& [word, meaning] : choices) {
      if (text == word) return meaning;
      listed += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + ("\"" + std::string(word) + "\"");
      ++i;
    }
    fail(token.line, std::string(key) + " must be " + listed + ", got \"" + text + "\"");
  }

  [[nodiscard]] static std::optional<double> parse_number(std::string_view text) {
    if (text.empty() || text.size() > 64) return std::nullopt;
    const std::string copy(text);
    char* end = nullptr;
    errno = 0;
    const double value = std::strtod(copy.c_str(), &end);
    if (end != copy.c_str() + copy.size() || errno == ERANGE || !std::isfinite(value)) return std::nullopt;
    return value;
  }

  [[nodiscard]] double number_value(const Token& token, std::string_view key) const {
    if (!token.is_quoted() && !token.is_container()) {
      if (auto value = parse_number(token.text)) return *value;
    }
    fail(token.line,
         "\"" + std::string(key) + "\" must be a number, got " + std::string(token.text.substr(0, 40)));
  }

  [[nodiscard]] ParamValue param_value(const Token& token, std::string_view key) const {
    if (token.is_container())
      fail(token.line, "parameter \"" + std::string(key) + "\" must be a number, boolean or string");
    if (token.is_quoted()) return unquote(token);
    if (token.text == "true") return true;
    if (token.text == "false") return false;
    if (token.text == "null") fail(token.line, "parameter \"" + std::string(key) + "\" is null");
    if (auto number = parse_number(token.text)) return *number;
    return std::string(token.text);
  }

  void enter(spa_json& parent, spa_json& child) const { spa_json_enter(&parent, &child); }

 private:
  std::string_view text_;
  std::string file_;
  mutable std::size_t counted_to_ = 0;  ///< line_of: newlines before here are in counted_lines_
  mutable int counted_lines_ = 0;
};

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
  });
}

bool is_elf(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::array<char, 4> magic{};
  in.read(magic.data(), magic.size());
  return in.gcount() == 4 && magic[0] == 0x7f && magic[1] == 'E' && magic[2] == 'L' && magic[3] == 'F';
}

/// Type detection: what a plugin's `path` names, or a ConfigError saying why it names nothing usable.
void detect_kind(const Reader& reader, PluginSpec& spec, const std::filesystem::path& base_dir,
                 int path_line) {
  const std::string_view path = spec.path;
  const auto where = "plugin \"" + spec.name + "\": ";
  if (path.starts_with("builtin:")) {
    const auto builtin = path.substr(8);
    if (!valid_name(builtin))
      reader.fail(path_line, where + "\"" + spec.path + "\" does not name a built-in");
    spec.kind = PluginKind::native_builtin;
    return;
  }
  const bool is_so = ends_with(path, ".so") || path.find(".so.") != std::string_view::npos;
  const bool is_py = ends_with(path, ".py");
  if (!is_so && !is_py)
    reader.fail(path_line, where + "cannot tell the plugin type of \"" + spec.path +
                               "\": expected builtin:NAME, a native *.so or a Python *.py file");
  std::filesystem::path file(spec.path);
  if (file.is_relative()) file = base_dir / file;
  std::error_code ec;
  file = std::filesystem::weakly_canonical(file, ec);
  if (!std::filesystem::exists(file, ec)) reader.fail(path_line, where + "file not found: " + file.string());
  if (!std::filesystem::is_regular_file(file, ec))
    reader.fail(path_line, where + "not a regular file: " + file.string());
  spec.resolved = file;
  if (is_so) {
    if (!is_elf(file)) reader.fail(path_line, where + file.string() + " is not an ELF shared object");
    spec.kind = PluginKind::native_library;
  } else {
    spec.kind = PluginKind::python;
  }
}

void parse_params(const Reader& reader, spa_json& parent, const Token& open, PluginSpec& spec) {
  if (!open.is_object())
    reader.fail(open.line, "plugin \"" + spec.name + "\": params must be an object { key = value }");
  spa_json it{};
  reader.enter(parent, it);
  std::unordered_set<std::string> seen;  // a list scan per key was quadratic (700 000 params: minutes)
  while (auto key = reader.next(it)) {
    const auto name = reader.unquote(*key);
    if (key->is_container() || !valid_name(name))
      reader.fail(key->line, "bad parameter name " + std::string(key->text.substr(0, 40)));
    const auto value = reader.value_of(it, *key);
    if (!seen.insert(name).second) reader.fail(key->line, "parameter \"" + name + "\" given twice");
    spec.params.push_back(ParamSetting{name, reader.param_value(value, name), key->line});
  }
}

PluginSpec parse_plugin(const Reader& reader, spa_json& parent, const Token& open,
                        const std::filesystem::path& base_dir) {
  if (!open.is_object())
    reader.fail(open.line, "each entry of plugins must be an object { name = ... path = ... }");
  PluginSpec spec;
  spec.line = open.line;
  int path_line = open.line;
  bool have_name = false;
  bool have_path = false;
  int mode_line = 0;
  int blocks_line = 0;
  int allow_writes_line = 0;
  int wake_lead_line = 0;
  int reload_line = 0;
  int max_level_line = 0;
  int sandbox_line = 0;
  spa_json it{};
  reader.enter(parent, it);
  while (auto key = reader.next(it)) {
    const auto name = reader.unquote(*key);
    const auto value = reader.value_of(it, *key);
    if (name == "name") {
      spec.name = reader.string_value(value, name);
      if (!valid_name(spec.name) || spec.name.find(':') != std::string::npos)
        reader.fail(value.line,
                    "plugin name \"" + spec.name + "\" must be 1-64 letters, digits, '_', '-' or '.'");
      have_name = true;
    } else if (name == "path") {
      spec.path = reader.string_value(value, name);
      path_line = value.line;
      have_path = true;
    } else if (name == "params") {
      parse_params(reader, it, value, spec);
    } else if (name == "on-failure") {
      spec.on_failure = reader.choice_value(
          value, name, {std::pair{"bypass"sv, OnFailure::bypass}, {"mute"sv, OnFailure::mute}});
      spec.on_failure_given = true;
    } else if (name == "bit-exact") {
      if (value.is_quoted() || (value.text != "true" && value.text != "false"))
        reader.fail(value.line, "bit-exact must be true or false");
      spec.bit_exact = value.text == "true";
    } else if (name == "max-level") {
      spec.max_level_db = reader.number_value(value, name);
      if (spec.max_level_db < -200.0 || spec.max_level_db > 800.0)
        reader.fail(value.line, "max-level must be between -200 and 800 (dBFS; 771 and above: only NaN and Inf)");
      max_level_line = value.line;
    } else if (name == "timeout-ms") {
      spec.timeout_ms = reader.number_value(value, name);
      if (spec.timeout_ms < 0.0 || spec.timeout_ms > 10000.0)
        reader.fail(value.line, "timeout-ms must be between 0 (automatic) and 10000");
    } else if (name == "mode") {
      mode_line = value.line;
      spec.mode = reader.choice_value(value, name,
                                      {std::pair{"auto"sv, SlotMode::auto_select},
                                       {"sync"sv, SlotMode::sync},
                                       {"pipelined"sv, SlotMode::pipelined}});
    } else if (name == "blocks") {
      const double k = reader.number_value(value, name);
      blocks_line = value.line;
      if (k != std::floor(k) || k < 0 || k > max_pipeline_blocks)
        reader.fail(value.line,
                    "blocks must be a whole number from 1 to " + std::to_string(max_pipeline_blocks) +
                        " (0 in a relay after its first plugin)");
      spec.blocks = static_cast<std::uint32_t>(k);
    } else if (name == "memory-mb") {
      const double mb = reader.number_value(value, name);
      if (mb != std::floor(mb) || (mb != 0 && (mb < 256 || mb > 1048576)))
        reader.fail(value.line, "memory-mb must be 0 (no limit) or a whole number from 256 to 1048576");
      spec.memory_mb = static_cast<std::uint32_t>(mb);
    } else if (name == "wake-lead-us") {
      const double us = reader.number_value(value, name);
      if (us != std::floor(us) || us < 0 || us > 2000)
        reader.fail(value.line, "wake-lead-us must be a whole number from 0 (off) to 2000");
      spec.wake_lead_us = static_cast<std::uint32_t>(us);
      wake_lead_line = value.line;
    } else if (name == "reload") {
      if (value.is_quoted() || (value.text != "true" && value.text != "false"))
        reader.fail(value.line, "reload must be true or false");
      spec.reload = value.text == "true";
      reload_line = value.line;
    } else if (name == "sandbox") {
      spec.sandbox = reader.string_value(value, name);
      sandbox_line = value.line;
      if (!valid_name(spec.sandbox) || spec.sandbox.find(':') != std::string::npos)
        reader.fail(value.line,
                    "sandbox \"" + spec.sandbox + "\" must be 1-64 letters, digits, '_', '-' or '.' (a group's name)");
    } else if (name == "allow-writes") {
      allow_writes_line = value.line;
      if (!value.is_quoted() && value.text == "false") continue;
      if (!value.is_quoted())
        reader.fail(value.line,
                    "allow-writes must name the one directory the plugin may write in, e.g. allow-writes = "
                    "\"/home/me/recordings\" (or false)");
      std::filesystem::path dir(reader.unquote(value));
      if (dir.is_relative()) dir = base_dir / dir;
      std::error_code ec;
      dir = std::filesystem::weakly_canonical(dir, ec);
      if (ec || !std::filesystem::is_directory(dir, ec))
        reader.fail(value.line, "allow-writes: " + dir.string() + " is not a directory");
      if (dir == dir.root_path())
        reader.fail(value.line, "allow-writes: the whole file system cannot be the writable directory");
      spec.allow_writes = dir;
    } else {
      reader.fail(key->line, "unknown plugin key \"" + name +
                                 "\" (known: name, path, params, on-failure, bit-exact, max-level, timeout-ms, "
                                 "memory-mb, allow-writes, reload, mode, blocks, wake-lead-us, sandbox)");
    }
  }
  if (!have_name) reader.fail(open.line, "plugin entry has no name");
  if (!have_path) reader.fail(open.line, "plugin \"" + spec.name + "\" has no path");
  // Params are parsed before we know the kind only syntactically; their meaning is the plugin's.
  detect_kind(reader, spec, base_dir, path_line);
  if (spec.bit_exact && max_level_line != 0)
    reader.fail(max_level_line, "max-level does not apply to a bit-exact slot (its output is never checked)");
  if (blocks_line != 0 && spec.mode != SlotMode::pipelined)
    reader.fail(blocks_line, "blocks applies to mode = \"pipelined\" only");
  if (spec.mode == SlotMode::pipelined && spec.blocks == 0 && blocks_line == 0) spec.blocks = 1;
  if (mode_line != 0 && spec.kind != PluginKind::python && spec.mode != SlotMode::auto_select)
    reader.fail(mode_line, "mode applies to Python plugins only (native plugins run in the audio thread)");
  if (reload_line != 0 && spec.kind != PluginKind::python)
    reader.fail(reload_line, "reload applies to Python plugins only (a native plugin is loaded once)");
  if (allow_writes_line != 0 && spec.kind != PluginKind::python)
    reader.fail(allow_writes_line,
                "allow-writes applies to Python plugins only (native plugins are not sandboxed)");
  if (wake_lead_line != 0 && spec.kind != PluginKind::python)
    reader.fail(wake_lead_line,
                "wake-lead-us applies to Python plugins only (native plugins are not sandboxed)");
  if (sandbox_line != 0 && spec.kind != PluginKind::python)
    reader.fail(sandbox_line, "sandbox applies to Python plugins only (native plugins run in the audio thread)");
  return spec;
}

}  // namespace

ChainConfig parse_config(std::string_view text, const std::filesystem::path& file_for_messages,
                         const std::filesystem::path& base_dir) {
  const std::string where = file_for_messages.empty() ? std::string("<config>") : file_for_messages.string();
  if (text.size() > max_config_bytes)
    throw ConfigError(where + ": the config is " + std::to_string(text.size()) + " bytes, more than the " +
                      std::to_string(max_config_bytes >> 20) + " MiB a config may have");
  const Reader reader(text, where);
  ChainConfig config;
  config.file = file_for_messages;

  spa_json outer{};
  spa_json_init(&outer, text.data(), text.size());
  spa_json top{};
  // PipeWire config files are an object without its braces; accept both forms.
  {
    spa_json probe = outer;
    const char* value = nullptr;
    if (spa_json_next(&probe, &value) > 0 && *value == '{') {
      outer = probe;
      spa_json_enter(&outer, &top);
    } else {
      spa_json_init(&top, text.data(), text.size());
    }
  }

  bool have_channels = false;
  int target_line = 0;
  std::unordered_set<std::string> seen_keys;
  std::unordered_map<std::string, int> plugin_lines;  // name → line of its entry
  while (auto key = reader.next(top)) {
    if (key->is_container())
      reader.fail(key->line, "expected a key, found a " + std::string(key->is_object() ? "{" : "["));
    const auto name = reader.unquote(*key);
    if (!seen_keys.insert(name).second) reader.fail(key->line, "\"" + name + "\" given twice");
    const auto value = reader.value_of(top, *key);
    if (name == "node.name") {
      config.node_name = reader.string_value(value, name);
      if (!valid_name(config.node_name))
        reader.fail(value.line,
                    "node.name \"" + config.node_name + "\" must be 1-64 letters, digits, '_', '-' or '.'");
    } else if (name == "node.description") {
      config.node_description = reader.string_value(value, name);
    } else if (name == "channels") {
      const double channels = reader.number_value(value, name);
      if (channels < 1 || channels > 8 || channels != std::floor(channels))
        reader.fail(value.line, "channels must be a whole number from 1 to 8");
      config.channels = static_cast<std::uint32_t>(channels);
      have_channels = true;
    } else if (name == "mode") {
      config.mode = reader.choice_value(
          value, name,
          {std::pair{"filter"sv, NodeMode::filter}, {"sink"sv, NodeMode::sink}, {"source"sv, NodeMode::source}});
    } else if (name == "target") {
      config.target = reader.string_value(value, name);
      target_line = value.line;
    } else if (name == "latency.max-ms") {
      config.latency_max_ms = reader.number_value(value, name);
      if (config.latency_max_ms < 1.0 || config.latency_max_ms > 1000.0)
        reader.fail(value.line, "latency.max-ms must be between 1 and 1000");
    } else if (name == "sandbox.zygote") {
      if (value.is_quoted() || (value.text != "true" && value.text != "false"))
        reader.fail(value.line, "sandbox.zygote must be true or false");
      config.sandbox_zygote = value.text == "true";
    } else if (name == "sandbox.default") {
      config.sandbox_default = reader.choice_value(
          value, name,
          {std::pair{"isolated"sv, SandboxDefault::isolated}, {"shared"sv, SandboxDefault::shared}});
    } else if (name == "pipeline.handoff") {
      config.direct_handoff =
          reader.choice_value(value, name, {std::pair{"direct"sv, true}, {"host"sv, false}});
    } else if (name == "restart.max") {
      const double n = reader.number_value(value, name);
      if (n < 0 || n > 1000 || n != std::floor(n))
        reader.fail(value.line, "restart.max must be a whole number from 0 to 1000");
      config.restart_max = static_cast<std::uint32_t>(n);
    } else if (name == "restart.window-s") {
      config.restart_window_s = reader.number_value(value, name);
      if (config.restart_window_s < 1.0 || config.restart_window_s > 86400.0)
        reader.fail(value.line, "restart.window-s must be between 1 and 86400");
    } else if (name == "plugins") {
      if (!value.is_array()) reader.fail(value.line, "plugins must be a list [ { ... } ... ]");
      spa_json list{};
      reader.enter(top, list);
      while (auto entry = reader.next(list)) {
        auto spec = parse_plugin(reader, list, *entry, base_dir);
        if (const auto [at, fresh] = plugin_lines.emplace(spec.name, spec.line); !fresh)
          reader.fail(spec.line, "plugin name \"" + spec.name + "\" is already used on line " +
                                     std::to_string(at->second));
        config.plugins.push_back(std::move(spec));
      }
    } else {
      reader.fail(key->line, "unknown key \"" + name +
                                 "\" (known: node.name, node.description, channels, mode, target, latency.max-ms, "
                                 "sandbox.zygote, sandbox.default, pipeline.handoff, restart.max, restart.window-s, plugins)");
    }
  }
  if (target_line != 0 && config.mode == NodeMode::filter)
    reader.fail(target_line, "target applies to mode = \"sink\" or \"source\" (a filter node is patched by hand)");
  (void)have_channels;
  if (config.node_description.empty()) config.node_description = config.node_name;
  group_sandboxes(config, where);
  relay_pipelines(config, where);
  return config;
}

ChainConfig load_config(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ConfigError(file.string() + ": cannot open: " + std::strerror(errno));
  // Refused before it is read whole: a huge file (or /dev/zero) costs no memory.
  std::error_code ec;
  if (const auto size = std::filesystem::file_size(file, ec); !ec && size > max_config_bytes) {
    throw ConfigError(file.string() + ": the config is " + std::to_string(size) + " bytes, more than the " +
                      std::to_string(max_config_bytes >> 20) + " MiB a config may have");
  }
  std::ostringstream text;
  text << in.rdbuf();
  auto base = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  ec.clear();
  base = std::filesystem::absolute(base, ec);
  return parse_config(text.str(), file, base);
}

}  // namespace sandpipe::host
