// `sandpipe set NODE SLOT:PARAM VALUE [SLOT:PARAM VALUE ...]`: the same Props a
// `pw-cli set-param <id> Props '{ params = [ "SLOT:PARAM" VALUE ] }'` sends, with the node found
// by its node.name instead of its id.
#pragma once

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "host/config/config.h"

namespace sandpipe::host {

/// [main] Parses a command-line value: true/false, a number, else the text itself.
[[nodiscard]] ParamValue parse_cli_value(const std::string& text);

/// [main] Connects to PipeWire, finds the node whose node.name is `node_name` through the
/// registry and reads its PropInfo and Props. Each (SLOT:PARAM, text) pair of `params` is
/// validated against the PropInfo as the node validates it (normalise_param_value): a refused
/// one (unknown name, wrong type, no such choice) is printed with the reason and not sent; a
/// clamped one gets a note. The others go to the node in one Props param (as
/// `pw-cli set-param ID Props '{ params = [ ... ] }'`), and its Props are read back until they
/// hold every value sent (at most `confirm_timeout`). Returns 0 when every value was taken, 1
/// when one was refused or not taken, or on a PipeWire failure or no such node (the message
/// names it). Never throws.
[[nodiscard]] int set_node_params(const std::string& node_name,
                                  const std::vector<std::pair<std::string, std::string>>& params,
                                  std::chrono::milliseconds confirm_timeout = std::chrono::seconds(5));

}  // namespace sandpipe::host
