// Just enough JSON for the integration tests: pw-dump's output and pw-probe's reports.
// Throws std::runtime_error on malformed input; no streaming, no comments, UTF-8 passed through.
#pragma once

#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace sandpipe::integration {

class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::map<std::string, Json, std::less<>>;

  Json() = default;

  /// Parses a whole document.
  static Json parse(std::string_view text) {
    std::size_t i = 0;
    Json v = parse_value(text, i);
    skip_ws(text, i);
    if (i != text.size()) {
      throw std::runtime_error("json: trailing characters at " + std::to_string(i));
    }
    return v;
  }

  [[nodiscard]] bool is_null() const { return std::holds_alternative<std::monostate>(v_); }
  [[nodiscard]] bool is_object() const { return std::holds_alternative<std::shared_ptr<Object>>(v_); }
  [[nodiscard]] bool is_array() const { return std::holds_alternative<std::shared_ptr<Array>>(v_); }
  [[nodiscard]] bool is_string() const { return std::holds_alternative<std::string>(v_); }
  [[nodiscard]] bool is_number() const { return std::holds_alternative<double>(v_); }

  [[nodiscard]] double num() const { return get<double>("number"); }
  [[nodiscard]] bool boolean() const { return get<bool>("boolean"); }
  [[nodiscard]] const std::string& str() const { return get<std::string>("string"); }
  [[nodiscard]] const Array& arr() const { return *get<std::shared_ptr<Array>>("array"); }
  [[nodiscard]] const Object& obj() const { return *get<std::shared_ptr<Object>>("object"); }

  /// Member `key` of an object; a null Json if absent (or if this is not an object).
  [[nodiscard]] const Json& operator[](std::string_view key) const {
    static const Json null;
    if (!is_object()) {
      return null;
    }
    const auto it = obj().find(key);
    return it == obj().end() ? null : it->second;
  }

  /// A string member as text, numbers and booleans rendered; "" if absent.
  [[nodiscard]] std::string text(std::string_view key) const {
    const Json& v = (*this)[key];
    if (v.is_string()) {
      return v.str();
    }
    if (v.is_number()) {
      const double d = v.num();
      return d == static_cast<double>(static_cast<long long>(d)) ? std::to_string(static_cast<long long>(d))
                                                                 : std::to_string(d);
    }
    if (std::holds_alternative<bool>(v.v_)) {
      return v.boolean() ? "true" : "false";
    }
    return "";
  }

 private:
  template <typename T>
  const T& get(const char* what) const {
    if (const T* p = std::get_if<T>(&v_)) {
      return *p;
    }
    throw std::runtime_error(std::string("json: not a ") + what);
  }

  static void skip_ws(std::string_view s, std::size_t& i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\n' || s[i] == '\r' || s[i] == '\t')) {
      ++i;
    }
  }

  static void expect(std::string_view s, std::size_t& i, std::string_view word) {
    if (s.substr(i, word.size()) != word) {
      throw std::runtime_error("json: expected " + std::string(word) + " at " + std::to_string(i));
    }
    i += word.size();
  }

  static std::string parse_string(std::string_view s, std::size_t& i) {
    expect(s, i, "\"");
    std::string out;
    while (i < s.size() && s[i] != '"') {
      char c = s[i++];
      if (c == '\\') {
        if (i >= s.size()) {
          break;
        }
        c = s[i++];
        switch (c) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case 'u': {
            // Keep it simple: code points below 0x80 decoded, others replaced.
            const unsigned cp =
                static_cast<unsigned>(std::strtoul(std::string(s.substr(i, 4)).c_str(), nullptr, 16));
            out += cp < 0x80 ? static_cast<char>(cp) : '?';
            i += 4;
            break;
          }
          default:
            out += c;
            break;
        }
      } else {
        out += c;
      }
    }
    expect(s, i, "\"");
    return out;
  }

  static Json parse_value(std::string_view s, std::size_t& i) {
    skip_ws(s, i);
    if (i >= s.size()) {
      throw std::runtime_error("json: unexpected end");
    }
    Json v;
    const char c = s[i];
    if (c == '{') {
      auto o = std::make_shared<Object>();
      ++i;
      skip_ws(s, i);
      if (i < s.size() && s[i] == '}') {
        ++i;
      } else {
        for (;;) {
          skip_ws(s, i);
          std::string key = parse_string(s, i);
          skip_ws(s, i);
          expect(s, i, ":");
          (*o)[key] = parse_value(s, i);
          skip_ws(s, i);
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          expect(s, i, "}");
          break;
        }
      }
      v.v_ = std::move(o);
    } else if (c == '[') {
      auto a = std::make_shared<Array>();
      ++i;
      skip_ws(s, i);
      if (i < s.size() && s[i] == ']') {
        ++i;
      } else {
        for (;;) {
          a->push_back(parse_value(s, i));
          skip_ws(s, i);
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          expect(s, i, "]");
          break;
        }
      }
      v.v_ = std::move(a);
    } else if (c == '"') {
      v.v_ = parse_string(s, i);
    } else if (c == 't') {
      expect(s, i, "true");
      v.v_ = true;
    } else if (c == 'f') {
      expect(s, i, "false");
      v.v_ = false;
    } else if (c == 'n') {
      expect(s, i, "null");
    } else {
      const std::string rest(s.substr(i, 64));
      char* end = nullptr;
      const double d = std::strtod(rest.c_str(), &end);
      if (end == rest.c_str()) {
        throw std::runtime_error("json: bad value at " + std::to_string(i));
      }
      i += static_cast<std::size_t>(end - rest.c_str());
      v.v_ = d;
    }
    return v;
  }

  std::variant<std::monostate, bool, double, std::string, std::shared_ptr<Array>, std::shared_ptr<Object>> v_;
};

}  // namespace sandpipe::integration
