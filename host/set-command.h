// `sandpipe set NODE SLOT:PARAM VALUE [SLOT:PARAM VALUE ...]`: the same Props a
// `pw-cli set-param <id> Props '{ params = [ "SLOT:PARAM" VALUE ] }'` sends, with the node found
// by its node.name instead of its id.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "host/config.h"

namespace sandpipe::host {

/// [main] Parses a command-line value: true/false, a number, else the text itself.
[[nodiscard]] ParamValue parse_cli_value(const std::string& text);

/// [main] Connects to PipeWire, finds the node whose node.name is `node_name` through the
/// registry, sends it one Props param with every (name, value) pair under `params`, and waits
/// for the daemon to have forwarded it (a core round trip). The node logs whether it accepted
/// each value. Returns 0, 1 on a PipeWire failure or no such node (the message names it).
/// Never throws.
[[nodiscard]] int set_node_params(const std::string& node_name,
                                  const std::vector<std::pair<std::string, ParamValue>>& params);

}  // namespace sandpipe::host
