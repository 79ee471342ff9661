// The integration tests' read-only view of a JSON document (pw-dump's output, pw-probe's reports,
// status files), parsed by nlohmann-json. A Json keeps its whole document alive, so members and
// elements taken from a temporary stay valid. Throws std::runtime_error on malformed input or
// on reading a value as the wrong type.
#pragma once

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace sandpipe::integration {

class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::map<std::string, Json, std::less<>>;

  /// A null.
  Json() = default;

  /// Parses a whole document.
  static Json parse(std::string_view text) {
    try {
      auto root = std::make_shared<const nlohmann::json>(nlohmann::json::parse(text));
      const nlohmann::json* top = root.get();
      return Json(std::move(root), top);
    } catch (const nlohmann::json::parse_error& e) {
      throw std::runtime_error(std::string("json: ") + e.what());
    }
  }

  [[nodiscard]] bool is_null() const { return v_ == nullptr || v_->is_null(); }
  [[nodiscard]] bool is_object() const { return v_ != nullptr && v_->is_object(); }
  [[nodiscard]] bool is_array() const { return v_ != nullptr && v_->is_array(); }
  [[nodiscard]] bool is_string() const { return v_ != nullptr && v_->is_string(); }
  [[nodiscard]] bool is_number() const { return v_ != nullptr && v_->is_number(); }

  [[nodiscard]] double num() const { return checked(is_number(), "number").get<double>(); }
  [[nodiscard]] bool boolean() const {
    return checked(v_ != nullptr && v_->is_boolean(), "boolean").get<bool>();
  }
  [[nodiscard]] const std::string& str() const {
    return checked(is_string(), "string").get_ref<const std::string&>();
  }
  /// The elements (each sharing this document).
  [[nodiscard]] Array arr() const {
    Array out;
    for (const nlohmann::json& e : checked(is_array(), "array")) out.push_back(Json(root_, &e));
    return out;
  }
  /// The members (each sharing this document).
  [[nodiscard]] Object obj() const {
    Object out;
    for (const auto& [k, e] : checked(is_object(), "object").items()) out.emplace(k, Json(root_, &e));
    return out;
  }

  /// Member `key` of an object; a null Json if absent (or if this is not an object).
  [[nodiscard]] Json operator[](std::string_view key) const {
    if (!is_object()) return {};
    const auto it = v_->find(key);
    return it == v_->end() ? Json() : Json(root_, &*it);
  }

  /// A string member as text, numbers and booleans rendered; "" if absent.
  [[nodiscard]] std::string text(std::string_view key) const {
    const Json v = (*this)[key];
    if (v.is_string()) return v.str();
    if (v.is_number()) {
      const double d = v.num();
      return d == static_cast<double>(static_cast<long long>(d)) ? std::to_string(static_cast<long long>(d))
                                                                 : std::to_string(d);
    }
    if (v.v_ != nullptr && v.v_->is_boolean()) return v.boolean() ? "true" : "false";
    return "";
  }

 private:
  Json(std::shared_ptr<const nlohmann::json> root, const nlohmann::json* v) : root_(std::move(root)), v_(v) {}

  const nlohmann::json& checked(bool ok, const char* what) const {
    if (!ok) throw std::runtime_error(std::string("json: not a ") + what);
    return *v_;
  }

  std::shared_ptr<const nlohmann::json> root_;  ///< the whole document
  const nlohmann::json* v_ = nullptr;           ///< this value in it (null: a null Json)
};

}  // namespace sandpipe::integration
