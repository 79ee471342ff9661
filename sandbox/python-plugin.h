// The embedded CPython interpreter and the one plugin it runs, or the plugins of one sandbox
// group (sandbox process only).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace sandpipe::sandbox {

/// A parameter value as the control channel carries it.
using ParamValue = std::variant<double, bool, std::string>;

struct ParamSpec {
  std::string key;
  std::string label;
  std::string unit;
  std::string kind;  ///< number | integer | boolean | choice | text
  double min = 0.0;
  double max = 0.0;
  ParamValue default_value;
  std::vector<std::string> choices;
};

struct PluginDescription {
  std::string api;  ///< sdk | legacy | group
  std::string name;
  std::string version;
  std::string description;
  std::string role;  ///< processor | source | sink
  std::uint32_t latency = 0;
  std::vector<ParamSpec> params;
  bool preloaded = false;  ///< the module came from preload(), the load did not import it
  /// A sandbox group (api "group"): each member's own description, in order; the group's
  /// latency is their sum, its params are empty.
  std::vector<PluginDescription> members;
};

/// An exception raised by Python code: one line, then the formatted traceback (may be empty).
struct PythonError {
  std::string message;
  std::string traceback;
  /// A sandbox group: the member that raised, or that the error is about (-1: none, the group).
  std::int32_t member = -1;
};

/// What a group's member leaves in the block when it raises (GroupMember.onFailure); returning
/// False leaves the same.
enum class MemberFailure : std::uint8_t {
  automatic,  ///< mute for an earlier-API processor, else bypass
  bypass,     ///< the block as the member before left it
  mute,       ///< zeros
};

/// One plugin of a sandbox group (issue 17).
struct GroupMember {
  std::string name;  ///< the chain's name for it: its log lines' prefix, its errors
  std::filesystem::path path;
  std::vector<std::pair<std::string, ParamValue>> params;
  MemberFailure on_failure = MemberFailure::automatic;
};

struct LoadRequest {
  std::filesystem::path path;
  double sample_rate = 48000.0;
  std::uint32_t channels = 2;
  std::uint32_t max_frames = 512;
  std::vector<std::pair<std::string, ParamValue>> params;
  std::vector<std::byte> state;
  /// Construct and describe only (`sandpipe inspect`): none of the plugin's lifecycle runs.
  bool inspect = false;
  /// Non-empty: a sandbox group of these processors, run in order on each block (`path`,
  /// `params` and `inspect` are not used; `state` is a group's get_state()).
  std::vector<GroupMember> members;
  std::string instance_name;  ///< a group's name (its description's name)
};

enum class BlockResult : std::uint8_t { processed, passthrough, failed };

/// Owns the interpreter (at most one per process) and, once loaded, the plugin session (a
/// group's: _sandbox.GroupSession, its members called in order inside the one Python call).
/// Everything runs on the thread that constructed it, which holds the GIL except inside a
/// `GilRelease` scope. Numpy views on the audio slots are built once and cached, so a block
/// costs one Python call and no allocation on the C++ side.
class PythonPlugin {
 public:
  /// Receives each line the plugin writes: stream 1 = stdout, 2 = stderr.
  using LogFn = std::function<void(int stream, std::string_view line)>;

  /// Initialises an isolated interpreter (no user site, no PYTHON* variables, no bytecode
  /// writes) with `sdk_dir` first on sys.path, imports numpy and the sandbox glue, and routes
  /// sys.stdout/sys.stderr to `log`. Throws std::runtime_error.
  PythonPlugin(const std::filesystem::path& program, const std::filesystem::path& sdk_dir, LogFn log);
  ~PythonPlugin();
  PythonPlugin(const PythonPlugin&) = delete;
  PythonPlugin& operator=(const PythonPlugin&) = delete;
  PythonPlugin(PythonPlugin&&) = delete;
  PythonPlugin& operator=(PythonPlugin&&) = delete;

  /// Where the plugin's output goes from now on (a zygote's child takes over the interpreter
  /// the zygote made, whose output went to the zygote's stderr).
  void set_log(LogFn log);

  /// Around a fork of this process (sandbox/zygote.cpp): before_fork() in the parent, then
  /// after_fork_parent() there and after_fork_child() in the child, which also reseeds what
  /// would otherwise repeat in every child (numpy's global random state; `random` reseeds
  /// itself through its fork hook). Same thread, GIL held.
  static void before_fork() noexcept;
  static void after_fork_parent() noexcept;
  static void after_fork_child() noexcept;

  [[nodiscard]] std::string python_version() const;
  [[nodiscard]] std::string numpy_version() const;

  /// Imports the plugin file ahead of its load (a spare sandbox) and keeps the module: a load of
  /// the same path, with the file unchanged since, only instantiates it. Nothing but the module's
  /// top level runs: no instance, no lifecycle call until the load. False when the import
  /// failed: nothing is kept, the load imports again and reports the error.
  bool preload(const std::string& path) noexcept;

  /// Imports the plugin file (or takes the preloaded module), detects its API and runs its
  /// lifecycle up to the first block (docs/architecture.md, "What a plugin sees"); with
  /// `request.inspect` only constructs and describes it.
  std::optional<PythonError> load(const LoadRequest& request, PluginDescription& out);

  /// Builds the (channels, frames) float32 views on `slots[i]` (channel c at
  /// slots[i] + c * channel_stride). Views for `max_frames` are made now; other frame counts
  /// on first use, then kept.
  std::optional<PythonError> bind_slots(std::span<float* const> slots, std::uint32_t channels,
                                        std::uint32_t max_frames, std::size_t channel_stride);

  /// Runs the plugin on a bound slot. On `failed`, `last_error()` says why. A group's block is
  /// `processed` even when members raised: each left its on-failure in the block, and
  /// `member_errors()` lists them.
  BlockResult process(std::uint32_t slot, std::uint32_t frames) noexcept;
  [[nodiscard]] const PythonError& last_error() const noexcept { return last_error_; }
  /// A group, after process(): an error per member that raised in that block (`member` set), in
  /// member order; empty otherwise. Every exception is listed: the caller rate-limits reports.
  [[nodiscard]] const std::vector<PythonError>& member_errors() const noexcept { return member_errors_; }

  /// Members of the loaded group (0: a single plugin).
  [[nodiscard]] std::size_t member_count() const noexcept;
  struct MemberStats {
    std::uint64_t exceptions = 0;  ///< raised in process()
    std::uint64_t process_ns = 0;  ///< time in its process() in all
  };
  /// A group: each member's counters since the load (empty for a single plugin).
  [[nodiscard]] std::vector<MemberStats> member_stats();

  /// What a live parameter change left: the plugin's latency, and what an earlier-API plugin's
  /// get_parameter() answers for the key now (nullopt: nothing, or an SDK plugin).
  struct ParamSet {
    std::uint32_t latency = 0;
    std::optional<ParamValue> read_back;
  };
  /// Applies a live parameter change to the plugin, or to a group's member `member` (then the
  /// latency is that member's, and an error's message names the member and the key). A single
  /// plugin refuses a member other than 0.
  std::variant<ParamSet, PythonError> set_param(const std::string& key, const ParamValue& value,
                                                std::uint32_t member = 0);
  /// Prepares the loaded plugin (a group: each member) for a new sample rate (parameters and
  /// state kept); returns its latency in frames at that rate (a group: the members' sum).
  std::variant<std::uint32_t, PythonError> set_rate(double rate);
  /// The plugin's state; a group's holds every member's (_sandbox.pack_group_state).
  std::variant<std::vector<std::byte>, PythonError> get_state();
  /// Calls the plugin's stop/shutdown hooks (legacy) and flushes its output.
  void shutdown() noexcept;

  /// After loading: collects, freezes what survived (never scanned again) and disables the
  /// automatic collector, which would otherwise run at arbitrary points inside process().
  void freeze_heap() noexcept;
  /// A collection the sandbox runs when it has time (idle, or between blocks when much garbage
  /// piled up). Returns true if one ran.
  bool collect_if_needed(bool idle) noexcept;

  /// Releases the GIL for the scope (while the sandbox sleeps, so plugin threads can run).
  class GilRelease {
   public:
    GilRelease() noexcept;
    ~GilRelease();
    GilRelease(const GilRelease&) = delete;
    GilRelease& operator=(const GilRelease&) = delete;
    GilRelease(GilRelease&&) = delete;
    GilRelease& operator=(GilRelease&&) = delete;

   private:
    void* state_;
  };

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  PythonError last_error_;
  std::vector<PythonError> member_errors_;
};

}  // namespace sandpipe::sandbox
