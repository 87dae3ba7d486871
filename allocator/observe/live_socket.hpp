// Live socket: each process using vmmalloc serves its current snapshot on a
// Unix stream socket, so `vmmctl` can inspect it while it runs.
//
// Naming (vmmctl finds processes by it; docs/snapshot.md#live-socket):
//   <live_socket_dir>/vmmalloc-<euid>/<pid>.sock
// live_socket_dir is a VMMALLOC_CONF key (default /tmp), read by vmmctl too.
// The per-user directory is made with mode 0700 and must be a directory
// owned by the user, not a link, with no group or other permissions, or the
// server does not start (and says why in the log). The socket is mode 0600.
// File modes do not stop root, so every connection's peer credentials
// (SO_PEERCRED) are checked too: only the process's own effective uid is
// served; anyone else gets an error reply and nothing more.
//
// Protocol: the client sends one request line, "snapshot\n" (the full
// snapshot) or "summary\n" (SnapshotDetail::summary), and reads the reply to
// end of file: the snapshot JSON, or an error object
//   {"error": "permission_denied" | "bad_request", "message": "..."}.
//
// The server is one thread that sleeps in poll() until a client connects;
// it never touches the allocation hot path (a snapshot takes the layers'
// locks briefly, as any snapshot does). It is started with the process's
// observability (start_process_observability) and stopped at exit, when its
// socket is removed.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace vmm::live {

inline constexpr std::string_view kRequestSnapshot = "snapshot";
inline constexpr std::string_view kRequestSummary = "summary";
inline constexpr std::string_view kErrorPermissionDenied = "permission_denied";
inline constexpr std::string_view kErrorBadRequest = "bad_request";

// <base>/vmmalloc-<uid>
std::string socket_directory(std::string_view base, uid_t uid);
// <directory>/<pid>.sock
std::string socket_path(std::string_view directory, pid_t pid);
// The pid in a socket file name "<pid>.sock", or nullopt.
std::optional<pid_t> pid_of_socket_name(std::string_view name);

// A server: one thread serving one socket. The process has one (see
// start_server); tests make their own, each in its own base directory.
class Server {
 public:
  Server();
  // stop().
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Makes or checks the per-user directory under `base`, binds
  // <dir>/<pid>.sock (replacing a socket left there by an earlier process
  // with this pid) and starts the thread. Returns the socket path, or
  // nullopt after logging why it could not. Never throws. A started server
  // returns its path again.
  std::optional<std::string> start(std::string_view base) noexcept;
  // Stops the thread and removes the socket; does nothing in a process
  // other than the one that started it (a forked child). Never throws.
  void stop() noexcept;
  // The socket path served, or "" if not started.
  std::string path() const;

 private:
  struct State;
  State* state_;
};

// Starts the process's server (once) and arranges for it to stop at exit.
// Returns its socket path, or nullopt (logged). Never throws.
std::optional<std::string> start_server(std::string_view base) noexcept;
// The process's socket path being served, or "" if none.
std::string served_path();

// Client side (vmmctl, tests).
struct Reply {
  enum class Status {
    ok,                 // body holds the reply (a snapshot, or an error object)
    no_socket,          // no such socket file
    permission_denied,  // the file system refused (another user's directory or socket)
    refused,            // nothing listens there (a stale socket: its process is gone)
    failed,             // another error; message says which
    timed_out,
  };
  Status status = Status::failed;
  std::string body;
  std::string message;  // for anything but ok: what failed, with the system error
};
// Sends `request` (a request word, without the newline) and reads the reply,
// waiting at most `timeout_ms` in all.
Reply request(const std::string& path, std::string_view request, int timeout_ms);

}  // namespace vmm::live
