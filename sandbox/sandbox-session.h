// One sandbox's conversation with its host: handshake, load, then blocks and control messages.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "sandbox/confinement.h"
#include "sandbox/python-plugin.h"
#include "schemas/control-channel.h"
#include "shm/block-channel.h"
#include "shm/segment.h"

namespace sandpipe::sandbox {

struct SessionConfig {
  std::filesystem::path program;   ///< this executable (the interpreter's program name)
  std::filesystem::path sdk_dir;   ///< plugins-py: sandpipe/ and base_plugin.py
  std::filesystem::path writable;  ///< --allow-writes DIR: the one directory the plugin may write in
  std::uint64_t wake_lead_ns = shm::SandboxEndpoint::default_lead_ns;  ///< --wake-lead-us
  /// --keep-denormals (a bit-exact slot): no flush-to-zero / denormals-are-zero, so denormal
  /// patterns reach the plugin and leave it as they are.
  bool keep_denormals = false;
  /// The allow-list compiled by the zygote that forked this sandbox (null: compiled at confine()).
  const SyscallProgram* syscall_program = nullptr;
  /// A relay of sandboxes (shm::SandboxEndpoint::take_input_from / send_output_to): the edge
  /// the jobs come from, and the one the blocks go on to (null: the host's own rings). Attached
  /// by the caller, before confinement; they must outlive the Session.
  shm::Segment* input_edge = nullptr;
  shm::Segment* output_edge = nullptr;
  /// The output edge is the relay's tail: blocks go back to the host as completions.
  bool output_to_host = false;
};

/// Runs on the sandbox's one thread. Holds the GIL except while waiting for work, so Python
/// threads a plugin starts can run then (and the control socket, also used by their print()s
/// through the log hook, is only ever touched with the GIL held).
class Session {
 public:
  Session(schema::ControlChannel& control, shm::Segment& segment, SessionConfig config);
  /// With the interpreter already made (a zygote's child: sandbox/zygote.h).
  Session(schema::ControlChannel& control, shm::Segment& segment, SessionConfig config,
          std::unique_ptr<PythonPlugin> python);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  Session(Session&&) = delete;
  Session& operator=(Session&&) = delete;

  /// Handshake, load, serve. Returns the process exit code: 0 after a shutdown request or
  /// when the host closed the socket, 2 when the plugin failed to load, 3 when the handshake
  /// failed.
  int run();

  /// Sends an error before any handshake (e.g. the segment did not attach).
  static void report_early_error(schema::ControlChannel& control, const std::string& message);

 private:
  /// Checks the relay's edges, if any, fit the segment (init_error_ says why not); serve()
  /// binds the endpoint to them.
  void check_edges();
  bool handshake();
  bool load();
  /// Applies the confinement (once, before any plugin code runs) for the plugin files `paths`
  /// (a group's: every member's); false after reporting why. Once confined (a spare, for the
  /// file it preloaded), only checks that each of `paths` is in a folder the walls show.
  bool confine(const std::vector<std::string>& paths);
  void serve();
  void run_job(const shm::Job& job);
  /// Exceptions in process() of the plugin or of one group member: each new message is reported
  /// with its traceback, a repeat of the last one only as a count, at most once in a while.
  struct ErrorRepeats {
    std::string last_message;  ///< of the last one reported in full
    std::uint64_t last_report_ns = 0;
    std::uint64_t repeated = 0;  ///< repeats of it since, not yet reported
    std::uint64_t total = 0;
  };
  void report_process_error(ErrorRepeats& repeats, const PythonError& error, std::uint64_t seq);
  void drain_control();
  void handle(schema::ReceivedMessage& message);
  void send_log(int stream, std::string_view line);
  /// An error; `request_id` is the request it answers (0: none, an error in process()); `member`
  /// the group member it is about (-1: none).
  void send_error(int phase, const std::string& message, const std::string& traceback, bool lossy,
                  std::uint32_t request_id = 0, std::int32_t member = -1);

  schema::ControlChannel& control_;
  shm::Segment& segment_;
  shm::SandboxEndpoint endpoint_;
  SessionConfig config_;
  std::unique_ptr<PythonPlugin> python_;
  std::string init_error_;
  bool shutdown_ = false;
  bool confined_ = false;
  std::vector<std::filesystem::path> visible_;  ///< the folders shown read-only once confined
  std::uint32_t load_id_ = 0;                   ///< the load request's id, once it came
  ErrorRepeats process_errors_;                 ///< a single plugin's
  std::vector<ErrorRepeats> member_errors_;     ///< a group's, one per member

  struct Stats {
    std::uint64_t blocks = 0;
    std::uint64_t exceptions = 0;
    std::uint64_t last_ns = 0;
    std::uint64_t max_ns = 0;
    std::uint64_t total_ns = 0;
    std::uint64_t gc_collections = 0;
  } stats_;
};

}  // namespace sandpipe::sandbox
