// One sandbox's conversation with its host: handshake, load, then blocks and control messages.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>

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
  bool handshake();
  bool load();
  /// Applies the confinement (once, before any plugin code runs) for the plugin file `path`;
  /// false after reporting why.
  bool confine(const std::string& path);
  void serve();
  void run_job(const shm::Job& job);
  void drain_control();
  void handle(schema::ReceivedMessage& message);
  void send_log(int stream, std::string_view line);
  /// An error; `request_id` is the request it answers (0: none, an error in process()).
  void send_error(int phase, const std::string& message, const std::string& traceback, bool lossy,
                  std::uint32_t request_id = 0);

  schema::ControlChannel& control_;
  shm::Segment& segment_;
  shm::SandboxEndpoint endpoint_;
  SessionConfig config_;
  std::unique_ptr<PythonPlugin> python_;
  std::string init_error_;
  bool shutdown_ = false;
  bool confined_ = false;
  std::uint32_t load_id_ = 0;       ///< the load request's id, once it came
  std::string last_error_message_;  ///< of the last exception in process() reported in full
  std::uint64_t last_error_report_ns_ = 0;
  std::uint64_t repeated_errors_ = 0;  ///< repeats of it since then, not yet reported

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
