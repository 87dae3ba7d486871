// Where vmmctl's snapshots come from: a file (or "-" for stdin), a live
// process by PID (its socket, found by the naming of allocator/observe/live_socket.hpp),
// or a socket path given outright. Every snapshot is parsed and checked
// against the schema version vmmctl knows before any command reads it, so
// the commands can rely on the fields docs/snapshot.md promises.
//
// Errors are CliErrors with the exit codes of exit_codes.hpp: a malformed or
// truncated snapshot (kMalformed), an unknown schema version
// (kUnknownVersion), a PID that is not running (kNoProcess), a process or
// socket of another user (kOtherUser), a process without a socket
// (kNotServing).
#pragma once

#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace vmmctl {

using Json = nlohmann::ordered_json;

struct SourceOptions {
  std::string socket_base;                 // live_socket_dir (VMMALLOC_CONF or --socket-dir)
  std::optional<std::string> socket_path;  // --socket PATH: this socket, no PID lookup
  int timeout_ms = 10000;
};

struct Snapshot {
  Json doc;
  std::string origin;  // "pid 1234", "file x.json", "socket /tmp/..."
};

// The options' socket base: --socket-dir if given, else live_socket_dir of
// VMMALLOC_CONF (default /tmp). Throws CliError(kUsage) for a bad VMMALLOC_CONF.
std::string default_socket_base();

// Parses and checks a snapshot's text. `origin` names it in messages.
Json parse_snapshot(const std::string& text, const std::string& origin);

// Loads `spec`: an existing file, "-" (stdin), or a PID (all digits, and no
// file of that name). `request` is "snapshot" or "summary" (live sources
// only; a file is what it is).
Snapshot load_snapshot(const std::string& spec, const SourceOptions& options,
                       std::string_view request = "snapshot");
// Asks a live process (`pid`, or options.socket_path if set).
Snapshot fetch_live(pid_t pid, const SourceOptions& options, std::string_view request);

// True if `spec` names a PID rather than a file.
bool is_pid_spec(const std::string& spec);

}  // namespace vmmctl
