// `sandpipe status`: the status file read with nlohmann-json, printed as a table or as JSON.
#include "host/cli/status-command.h"

#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <iomanip>
#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "host/python/supervisor.h"

namespace sandpipe::host {
namespace {

using nlohmann::json;

/// [any] `v` as table text: strings bare, numbers as written, missing as "-".
std::string cell(const json& slot, const char* key) {
  const auto it = slot.find(key);
  if (it == slot.end() || it->is_null()) return "-";
  if (it->is_string()) return it->get<std::string>().empty() ? "-" : it->get<std::string>();
  if (it->is_boolean()) return it->get<bool>() ? "yes" : "no";
  return it->dump();
}

/// [main] The table: one row per slot, then each slot's last error (first line only; --json has
/// it whole, traceback included).
void print_table(const json& status, std::ostream& out) {
  out << "node " << status.value("node", std::string("?")) << " (pid " << status.value("pid", 0) << ")";
  if (const auto t = status.find("timing"); t != status.end() && t->is_object()) {
    out << ": " << t->value("cycles", 0ULL) << " cycles, " << t->value("overruns", 0ULL) << " overruns, longest "
        << t->value("longest_cycle_us", 0ULL) << " us";
  }
  out << "\n";
  static const std::vector<std::pair<const char*, const char*>> columns = {
      {"slot", "name"},         {"kind", "kind"},         {"state", "state"},
      {"blocks", "blocks"},     {"dry", "bypassed_blocks"}, {"misses", "deadline_misses"},
      {"exceptions", "exceptions"}, {"restarts", "restarts"}, {"mode", "mode"},
      {"latency", "latency_frames"}, {"pid", "pid"}};
  const json slots = status.value("slots", json::array());
  std::vector<std::vector<std::string>> rows;
  rows.emplace_back();
  for (const auto& [title, key] : columns) rows.back().emplace_back(title);
  const auto add_row = [&](const json& row) {
    rows.emplace_back();
    for (const auto& [title, key] : columns) {
      std::string text = cell(row, key);
      if (std::string_view(key) == "pid" && text == "-1") text = "-";
      rows.back().push_back(std::move(text));
    }
  };
  for (const auto& slot : slots) {
    if (slot.contains("relay")) {
      // A relay's stage: its own sandbox, state and restarts; the relay's blocks on the first.
      json row = slot;
      row["kind"] = "relay " + slot.value("relay", std::string("?"));
      add_row(row);
    } else {
      add_row(slot);
    }
    // A sandbox group's plugins (a relay's stage may be a group), under the slot or stage they
    // share (its process, state and blocks).
    for (const auto& member : slot.value("members", json::array())) {
      add_row(json{{"name", "+ " + member.value("name", std::string("?"))},
                   {"kind", "member"},
                   {"exceptions", member.value("exceptions", 0ULL)},
                   {"latency_frames", member.value("latency_frames", 0U)}});
    }
  }
  std::vector<std::size_t> width(columns.size(), 0);
  for (const auto& row : rows)
    for (std::size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  for (const auto& row : rows) {
    out << " ";
    for (std::size_t c = 0; c < row.size(); ++c) {
      const bool text_column = c < 3 || c == 8;  // left-aligned; numbers right-aligned
      out << " " << (text_column ? std::left : std::right) << std::setw(static_cast<int>(width[c])) << row[c];
    }
    out << std::right << "\n";
  }
  const auto print_error = [&](const json& row) {
    const std::string error = row.value("last_error", std::string());
    if (error.empty()) return;
    out << "  " << row.value("name", std::string("?")) << ": last error: " << error.substr(0, error.find('\n'))
        << "\n";
  };
  for (const auto& slot : slots) {
    print_error(slot);
    for (const auto& member : slot.value("members", json::array())) print_error(member);
  }
}

}  // namespace

int print_node_status(std::string_view node, bool as_json, std::ostream& out, std::ostream& err) {
  try {
    const auto path = status_file_path(node);
    std::ifstream in(path);
    if (!in) {
      err << "sandpipe: no node \"" << node << "\" is running (no " << path.string() << ")\n";
      return 1;
    }
    std::stringstream text;
    text << in.rdbuf();
    const json status = json::parse(text.str(), nullptr, false);
    if (status.is_discarded() || !status.is_object()) {
      err << "sandpipe: " << path.string() << " is not a status file (it does not parse as JSON)\n";
      return 1;
    }
    // A node that died without cleaning up leaves its file: check its pid.
    const long long pid = status.value("pid", -1LL);
    if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)) {
      err << "sandpipe: node \"" << node << "\" is not running (stale " << path.string() << ")\n";
      return 1;
    }
    if (as_json) {
      out << text.str();
    } else {
      print_table(status, out);
    }
    return 0;
  } catch (const std::exception& e) {
    err << "sandpipe: status of \"" << node << "\": " << e.what() << "\n";
    return 1;
  }
}

}  // namespace sandpipe::host
