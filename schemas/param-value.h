// A parameter's value as both ends hold it (a number, a flag or a text) in and out of the schema.
#pragma once

#include <string>
#include <variant>

#include "schemas/control.capnp.h"

namespace sandpipe::schema {

/// host::ParamValue and sandbox::ParamValue are this type.
using Value = std::variant<double, bool, std::string>;

/// Writes `value` into the schema's ParamValue union.
inline void set_param_value(ParamValue::Builder out, const Value& value) {
  if (const auto* d = std::get_if<double>(&value)) {
    out.setNumber(*d);
  } else if (const auto* b = std::get_if<bool>(&value)) {
    out.setBoolean(*b);
  } else {
    out.setText(std::get<std::string>(value));
  }
}

}  // namespace sandpipe::schema
