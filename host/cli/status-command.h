// `sandpipe status NODE [--json]`: the running node's status file, as a table for people or
// as JSON for programs.
#pragma once

#include <iosfwd>
#include <string_view>

namespace sandpipe::host {

/// [main] Reads NODE's status file (status_file_path), checks that the node that wrote it is
/// alive, and prints it to `out`: the JSON as the node wrote it (`json`), else a table with one
/// row per slot and the last errors below it. Returns 0, or 1 with a message on `err` when NODE
/// is not running (no file, a stale one, one that does not parse). Never throws.
[[nodiscard]] int print_node_status(std::string_view node, bool json, std::ostream& out, std::ostream& err);

}  // namespace sandpipe::host
