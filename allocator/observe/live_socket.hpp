// Live socket: each process using vmmalloc serves its current snapshot on a
// Unix stream socket, so `vmmctl` can inspect it while it runs.
//
// Naming (vmmctl finds processes by it; docs/snapshot.md#live-socket): the
// socket is <directory>/<pid>.sock, in the first usable of
//   $XDG_RUNTIME_DIR/vmmalloc   only with live_socket_dir at its default
//                               (/tmp) and XDG_RUNTIME_DIR set (absolute)
//   <live_socket_dir>/vmmalloc-<euid>
// live_socket_dir is a VMMALLOC_CONF key (default /tmp), read by vmmctl too,
// which looks in the same directories in the same order.
// The directory is made with mode 0700 and must be a directory owned by
// the user, not a link, with no group or other permissions, or the server
// does not use it (and says why in the log). The socket is mode 0600. File
// modes do not stop root, so every connection's peer credentials
// (SO_PEERCRED) are checked too: only the process's own effective uid is
// served; anyone else gets an error reply and nothing more.
//
// Clients check the other way round (client_directory_problem, and
// Reply::peer): the directory must be owned by the uid they expect and
// writable by no one else, and the server's credentials must be that uid's.
//
// Protocol: the client sends one request line, "snapshot\n" (the full
// snapshot) or "summary\n" (SnapshotDetail::summary), and reads the reply to
// end of file: the snapshot JSON, or an error object
//   {"error": "permission_denied" | "bad_request" | "failed" | "busy",
//    "message": "..."}.
// Control requests (docs/sleep.md, `vmmctl sleep` / `vmmctl wake`):
//   "sleep offload|discard TAG[,TAG...]\n"   "wake TAG[,TAG...] [keep_host]\n"
// are answered by the process's control handler (set_control_handler; the
// API layer installs one) on a thread of their own, one at a time (another
// meanwhile gets "busy"): {"ok": true, "report": {...}} or an error object.
// They have kControlDeadline instead of kConnectionDeadline. The server
// thread goes on accepting and answering meanwhile, though a snapshot waits
// for the locks a sleep holds while it copies. The thread is not joined at
// exit: a process that exits during a sleep ends it there.
//
// The server is one thread that sleeps in poll() on the listening socket and
// every open connection (at most kMaxConnections, none blocking): idle
// clients cost nothing, each connection has one absolute deadline, and the
// snapshot is streamed in pieces (SnapshotText) as the client reads. It
// never touches the allocation hot path (a snapshot takes the layers' locks
// briefly, as any snapshot does). It is started with the process's
// observability (start_process_observability) and stopped at exit, when its
// connections are cut (never waited for) and its socket is removed.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vmm::live {

inline constexpr std::string_view kRequestSnapshot = "snapshot";
inline constexpr std::string_view kRequestSummary = "summary";
inline constexpr std::string_view kErrorPermissionDenied = "permission_denied";
inline constexpr std::string_view kErrorBadRequest = "bad_request";
inline constexpr std::string_view kErrorFailed = "failed";
inline constexpr std::string_view kErrorBusy = "busy";
inline constexpr std::string_view kRequestSleep = "sleep";
inline constexpr std::string_view kRequestWake = "wake";

// Server limits (docs/snapshot.md#live-socket).
inline constexpr std::size_t kMaxRequest = 1024;  // bytes of a request line
inline constexpr int kMaxConnections = 16;      // open at once; the oldest idle one is dropped
inline constexpr std::chrono::milliseconds kRequestDeadline{2000};      // accept to request
inline constexpr std::chrono::milliseconds kConnectionDeadline{10000};  // accept to last byte
inline constexpr std::chrono::milliseconds kControlDeadline{600000};    // a sleep or wake's

// <base>/vmmalloc-<uid>
std::string socket_directory(std::string_view base, uid_t uid);
// Where the sockets of `uid`'s processes with live_socket_dir `base` may be,
// in the order the server tries them (see above).
std::vector<std::string> socket_directories(std::string_view base, uid_t uid);
// <directory>/<pid>.sock
std::string socket_path(std::string_view directory, pid_t pid);
// The pid in a socket file name "<pid>.sock", or nullopt.
std::optional<pid_t> pid_of_socket_name(std::string_view name);

// ------------------------------------------------------------ requests

// Collects one request line from the bytes a client sends, as they arrive.
class RequestReader {
 public:
  enum class State { reading, complete, too_long };
  // Takes more bytes; after complete or too_long, takes no more.
  State feed(std::string_view bytes);
  // The client finished sending: a line without its newline counts.
  State end_of_input();
  State state() const { return state_; }
  // The line, without the newline (complete only).
  const std::string& line() const { return line_; }

 private:
  State state_ = State::reading;
  std::string line_;
};

struct Request {
  enum class Kind { snapshot, summary, sleep, wake, bad };
  Kind kind = Kind::bad;
  std::string message;            // why it is bad
  std::vector<std::string> tags;  // sleep, wake: the tag names (checked by the handler)
  bool discard = false;           // sleep: discard (else offload)
  bool keep_host = false;         // wake
};
// What a request line asks for (trailing '\r' and spaces ignored).
Request parse_request(std::string_view line);

// Answers a sleep or wake request with a reply body (JSON). It may take
// long (copies) and may throw: the message goes back as a "failed" error.
using ControlHandler = std::string (*)(const Request& request);
// Installs the process's handler (nullptr: none; control requests are then
// refused as bad requests). Thread-safe.
void set_control_handler(ControlHandler handler) noexcept;
// An error object; always valid JSON (bytes that are not UTF-8 become U+FFFD).
std::string error_reply(std::string_view code, std::string_view message);

// ------------------------------------------------------------ server

// A server: one thread serving one socket. The process has one (see
// start_server); tests make their own, each in its own base directory.
class Server {
 public:
  Server();
  // stop().
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Makes or checks the directory (socket_directories(base, euid), the
  // first usable), binds <dir>/<pid>.sock (replacing a socket left there by
  // an earlier process with this pid) and starts the thread. Returns the
  // socket path, or nullopt after logging why it could not. Never throws. A
  // started server returns its path again.
  std::optional<std::string> start(std::string_view base) noexcept;
  // Cuts every connection, stops the thread and removes the socket; does
  // nothing in a process other than the one that started it (a forked
  // child: it takes no lock there). Never throws.
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

// ------------------------------------------------------------ client

// Why `dir` cannot be trusted as a socket directory of `uid` (a link, not a
// directory, owned by another uid, writable by group or others), or "" if
// it can. A directory that does not exist is "" too (nothing is read from it).
std::string client_directory_problem(const std::string& dir, uid_t uid);

struct Reply {
  enum class Status {
    ok,                 // body holds the reply (a snapshot, or an error object)
    no_socket,          // no such socket file
    permission_denied,  // the file system refused (another user's directory or socket)
    refused,            // nothing listens there (a stale socket: its process is gone)
    failed,             // another error; message says which
    timed_out,
    too_large,  // the reply went past max_bytes (the connection was closed)
  };
  Status status = Status::failed;
  std::string body;
  std::string message;  // for anything but ok: what failed, with the system error
  // The server's credentials (SO_PEERCRED) once connected.
  bool peer_known = false;
  pid_t peer_pid = 0;
  uid_t peer_uid = 0;
};
// Sends `request` (a request word, without the newline) and reads the reply,
// waiting at most `timeout_ms` in all and reading at most `max_bytes`.
Reply request(const std::string& path, std::string_view request, int timeout_ms,
              std::size_t max_bytes = std::size_t{256} << 20);

}  // namespace vmm::live
