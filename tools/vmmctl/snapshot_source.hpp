// Where vmmctl's snapshots come from: a file (or "-" for stdin; a
// vmmalloc snapshot, or a PyTorch memory snapshot pickled or as JSON, read
// through pickle.hpp and pytorch_snapshot.hpp), a live
// process by PID (its socket, found by the naming of allocator/observe/live_socket.hpp),
// or a socket path given outright. Every snapshot is parsed and checked
// against the schema version vmmctl knows before any command reads it, so
// the commands can rely on the fields docs/snapshot.md promises.
//
// Nothing is trusted: input is read up to max_input bytes and parsed only
// if it nests at most kMaxDepth deep; a socket directory must be the
// user's own and writable by no one else, the server's credentials
// (SO_PEERCRED) must be that user's and, for a PID, that process's, and the
// snapshot must be of the process asked for.
//
// Errors are CliErrors with the exit codes of exit_codes.hpp: a malformed,
// truncated or over-large snapshot, or one of another process (kMalformed),
// an unknown schema version (kUnknownVersion), a PID that is not running
// (kNoProcess), a process, socket or socket directory of another user
// (kOtherUser), a process without a socket (kNotServing).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace vmmctl {

using Json = nlohmann::ordered_json;

// The most bytes of input read by default (--max-input, VMMCTL_MAX_INPUT).
inline constexpr std::size_t kDefaultMaxInput = std::size_t{256} << 20;
// Arrays and objects nested deeper than this are refused (a snapshot needs 7).
inline constexpr int kMaxDepth = 64;

struct SourceOptions {
  std::string socket_base;                 // live_socket_dir (VMMALLOC_CONF or --socket-dir)
  std::optional<std::string> socket_path;  // --socket PATH: this socket, no PID lookup
  int timeout_ms = 10000;
  std::size_t max_input = kDefaultMaxInput;  // --max-input, VMMCTL_MAX_INPUT
};

struct Snapshot {
  Json doc;
  std::string origin;  // "pid 1234", "file x.json", "socket /tmp/..."
};

// The options' socket base: --socket-dir if given, else live_socket_dir of
// VMMALLOC_CONF (default /tmp). Throws CliError(kUsage) for a bad VMMALLOC_CONF.
std::string default_socket_base();

// A byte count: digits with an optional K, M or G (binary; "KiB" and "KB"
// too); nullopt if it is not one or is 0.
std::optional<std::size_t> parse_byte_count(const std::string& text);
// VMMCTL_MAX_INPUT if set, else kDefaultMaxInput. Throws CliError(kUsage)
// for a bad value.
std::size_t default_max_input();

// Parses and checks a snapshot's text (nesting depth first). `origin`
// names it in messages.
Json parse_snapshot(const std::string& text, const std::string& origin);

// Loads `spec`: an existing file, "-" (stdin), or a PID (all digits, and no
// file of that name). `request` is "snapshot" or "summary" (live sources
// only; a file is what it is).
Snapshot load_snapshot(const std::string& spec, const SourceOptions& options,
                       std::string_view request = "snapshot");
// Asks a live process (`pid`, or options.socket_path if set).
Snapshot fetch_live(pid_t pid, const SourceOptions& options, std::string_view request);

// Sends a control request ("sleep offload TAGS", "wake TAGS", see
// allocator/observe/live_socket.hpp) to a live process, with the same checks
// as fetch_live; returns its {"ok": true, "report": {...}} reply. An error
// reply throws CliError(kError) with its message.
Json control_live(pid_t pid, const SourceOptions& options, std::string_view request);

// True if `spec` names a PID rather than a file.
bool is_pid_spec(const std::string& spec);

}  // namespace vmmctl
