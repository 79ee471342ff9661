// Requests to a running node that PipeWire's Props cannot answer: `sandpipe reload NODE SLOT`
// must wait for the outcome (the new version playing, or the load error with its traceback).
//
// A Unix stream socket beside the status file, $XDG_RUNTIME_DIR/sandpipe/NODE.sock (mode 0600,
// in the user's runtime directory). One request per connection: the client sends one line
// ("reload SLOT\n"); the node answers with "ok\n" or "error\n", then free text (the message,
// a traceback), and closes. The node's side is served by its supervisor thread (host/python/supervisor.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <kj/io.h>

namespace sandpipe::host {

/// [any] NODE's request socket: status_file_path(NODE) with ".sock" for ".status".
[[nodiscard]] std::filesystem::path request_socket_path(std::string_view node_name);

/// The listening side, owned by a Supervisor and driven from its thread. Not copyable.
class RequestServer {
 public:
  struct Request {
    std::uint64_t id = 0;  ///< reply with this
    std::string line;      ///< without the newline
  };

  /// [main] Binds `path` (replacing a socket left there: a newer chain of the same node takes
  /// the name over). Throws std::system_error if it cannot.
  explicit RequestServer(std::filesystem::path path);
  /// [main] Closes every connection; removes the socket file if it is still ours.
  ~RequestServer();
  RequestServer(const RequestServer&) = delete;
  RequestServer& operator=(const RequestServer&) = delete;
  RequestServer(RequestServer&&) = delete;
  RequestServer& operator=(RequestServer&&) = delete;

  /// [main] The fds to poll for input (the listening socket, then each open connection).
  [[nodiscard]] std::vector<int> fds() const;
  /// [main] Accepts, reads without blocking, and returns every request line completed now.
  /// Connections that send more than a line's worth, or nothing for 5 s, are closed.
  std::vector<Request> service();
  /// [main] Answers request `id` ("ok" or "error", then `text`) and closes its connection.
  void reply(std::uint64_t id, bool ok, std::string_view text);

 private:
  struct Connection {
    kj::AutoCloseFd fd;
    std::uint64_t id = 0;
    std::string buffer;
    bool complete = false;  ///< the line arrived: waiting for reply()
    std::chrono::steady_clock::time_point opened;
  };
  void close_connection(std::size_t index);

  std::filesystem::path path_;
  kj::AutoCloseFd listen_fd_;
  std::uint64_t inode_ = 0;  ///< of the socket file we bound: only that one is removed
  std::uint64_t next_id_ = 1;
  std::vector<Connection> connections_;
};

/// The answer to one request.
struct RequestReply {
  bool ok = false;
  std::string text;
};

/// [main] Sends `line` to NODE's socket and waits (at most `timeout`) for the answer.
/// nullopt and a message in `error` when there is no such node (no socket, or nobody
/// listening: a stale one) or no answer in time.
[[nodiscard]] std::optional<RequestReply> send_node_request(std::string_view node_name, std::string_view line,
                                                            std::chrono::milliseconds timeout,
                                                            std::string& error);

/// [main] `sandpipe reload NODE SLOT`: asks the node to hot-reload SLOT now, prints the outcome
/// (stdout on success, stderr otherwise). Returns 0 when the new version runs, 1 otherwise.
[[nodiscard]] int reload_node_plugin(std::string_view node_name, std::string_view slot,
                                     std::chrono::milliseconds timeout);

}  // namespace sandpipe::host
