// Plugin parameters as PipeWire Props, the way module-filter-chain publishes its controls: every
// parameter is "SLOT:PARAM" (e.g. "trim:gain"), listed as one PropInfo object each (type with
// range and default, `params = true`) and, with its current value, in the node's Props under
// SPA_PROP_params as a struct of name/value pairs:
//
//   pw-cli set-param <node-id> Props '{ params = [ "trim:gain" 0.25 ] }'
//   pw-cli enum-params <node-id> Props      # and PropInfo for names, types and ranges
//
// Changes are validated and clamped on the main thread, then reach a native slot through a
// ParamQueue drained by the data thread at the start of a cycle, and a Python slot through the
// supervisor's queue to its sandbox's control channel (Supervisor::set_param, on the main thread).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "host/chain/chain.h"
#include "host/config/config.h"
#include "host/node/param-queue.h"
#include "host/slot/processor.h"

struct spa_pod;
struct spa_pod_builder;

namespace sandpipe::host {

/// The node's parameter table and its live values. Not copyable; [main] only.
///
/// It keeps its own copy of the chain config and writes every accepted change into it, so a
/// chain rebuilt later (a new graph rate) starts with the live values, not the file's.
class NodeProps {
 public:
  /// [main] Copies `config` (the live values start as the config's).
  explicit NodeProps(const ChainConfig& config);
  NodeProps(const NodeProps&) = delete;
  NodeProps& operator=(const NodeProps&) = delete;
  NodeProps(NodeProps&&) = delete;
  NodeProps& operator=(NodeProps&&) = delete;
  ~NodeProps();

  /// [main] Reads every slot's parameters from `chain` (built from config()). Values the config
  /// gives are the current ones, the declared defaults for the rest.
  void attach(const Chain& chain);

  /// [main] The config with the live values, for building a new chain.
  [[nodiscard]] const ChainConfig& config() const noexcept { return config_; }

  /// [main] One PropInfo pod per parameter followed by the Props pod, built in `b`. The pods
  /// live in b's buffer. Throws std::runtime_error if the buffer is too small.
  [[nodiscard]] std::vector<const spa_pod*> build_params(spa_pod_builder& b) const;
  /// [main] Only the Props pod (to republish after a change).
  [[nodiscard]] const spa_pod* build_props(spa_pod_builder& b) const;
  /// [main] Bytes a builder needs for build_params().
  [[nodiscard]] std::size_t pod_bytes() const noexcept;

  /// [main] Applies the "SLOT:PARAM" value pairs of a Props pod (from pw-cli set-param or
  /// `sandpipe set`): a native slot's change is pushed to `queue`, a Python slot's is sent to its
  /// sandbox. Each refused pair (unknown name, wrong type, no answer) is logged with the reason
  /// (sandpipe.props); others apply. Props without `params` (e.g. a volume) are ignored. Returns the
  /// number of parameters whose value changed (republish Props if > 0); an earlier-API slot's
  /// change is not among them: its value changes when the plugin reads it back.
  std::uint32_t apply(const spa_pod* props, Chain& chain, ParamQueue& queue);

  /// [main] Applies one change given as text (tests, tools). Returns the error, or nullopt.
  std::optional<std::string> apply_one(const std::string& name, const ParamValue& value, Chain& chain,
                                       ParamQueue& queue);

  /// [main] Takes what earlier-API plugins read back after live changes (the supervisor's
  /// take_read_backs()) as the current values of their parameters: Props publish what the plugin
  /// holds, not what was sent. Returns true if a value changed (republish Props).
  bool take_read_backs(const Chain& chain);

  /// [main] Number of parameters.
  [[nodiscard]] std::size_t size() const noexcept { return entries_.size(); }

 private:
  struct Entry {
    std::string name;  ///< "SLOT:PARAM"
    std::uint32_t slot = 0;
    std::uint32_t index = 0;  ///< native: the slot's parameter index
    std::uint32_t member = 0;  ///< a sandbox group's slot: the member whose parameter it is
    bool native = false;
    /// An earlier-API plugin's: a live change is published once the plugin has read it back
    /// (take_read_backs), not when it is sent.
    bool read_back = false;
    ParamDescription desc;
    ParamValue value;  ///< normalised: double for number/integer/choice, bool, or string (text)
  };

  /// One plugin's place in the chain: its slot, a sandbox group's member index (0 otherwise),
  /// the name its parameters go by, and its config entry (the slot's).
  struct Part {
    std::uint32_t slot = 0;
    std::uint32_t member = 0;
    std::string name;
    bool native = false;
    bool read_back = false;
    const PluginSpec* spec = nullptr;
  };
  /// Adds an entry per parameter of `part`, valued from its config entry.
  void add_entries(const Part& part, std::vector<ParamDescription> descs);
  void remember(const Entry& entry);

  ChainConfig config_;
  std::vector<Entry> entries_;
};

/// [any] The value `requested` becomes for a parameter described by `desc` (clamped, rounded, a
/// choice name → its index), or nullopt and `error` naming the problem (a wrong type, no such
/// choice). `note` says when a number was clamped. The node validates every live change with
/// it, and `sandpipe set` validates against the node's PropInfo with it before sending.
[[nodiscard]] std::optional<ParamValue> normalise_param_value(const ParamDescription& desc,
                                                              const ParamValue& requested, std::string& error,
                                                              std::string& note);

/// [any] A Props value pod as a ParamValue (float, double, int, long → number); nullopt for a
/// type no parameter takes.
[[nodiscard]] std::optional<ParamValue> param_value_from_pod(const spa_pod* pod);

/// [any] The refusal of a name the node does not have, listing the ones it has.
[[nodiscard]] std::string unknown_param_error(const std::vector<std::string>& known);

/// [any] `value` as a config or command line would write it: 0.25, true, "lowpass".
[[nodiscard]] std::string describe_param_value(const ParamValue& value);

/// [main] A node's Props handler: applies the "SLOT:PARAM" pairs of `param` (NodeProps::apply)
/// and, if a value changed, hands the new Props pod to `publish` (the node's update_params).
/// Logs what it set and what fails (sandpipe.props); never throws.
void apply_props(const spa_pod* param, NodeProps& props, Chain& chain, ParamQueue& queue,
                 const std::function<void(const spa_pod*)>& publish) noexcept;

/// [main] A node's handler for the supervisor's read-back signal: takes what earlier-API plugins
/// read back (NodeProps::take_read_backs) and, if a value changed, hands the new Props pod to
/// `publish`. Logs what fails (sandpipe.props); never throws.
void apply_read_backs(NodeProps& props, const Chain& chain,
                      const std::function<void(const spa_pod*)>& publish) noexcept;

/// [rt] Applies at most `max_changes` queued changes to `chain` (a bound, so a flood of
/// set-params cannot stretch one cycle). Changes for a slot or index the chain does not have
/// are dropped. Returns the number applied. Allocates nothing, locks nothing.
std::uint32_t drain_param_changes_rt(ParamQueue& queue, Chain& chain, std::uint32_t max_changes = 32) noexcept;

}  // namespace sandpipe::host
