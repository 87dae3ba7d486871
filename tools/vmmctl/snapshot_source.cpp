// Snapshot sources and the schema check. See snapshot_source.hpp.
#include "tools/vmmctl/snapshot_source.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

// Internal: the live socket protocol and the snapshot schema version, not public API.
#include "allocator/observe/live_socket.hpp"
#include "allocator/observe/snapshot.hpp"
#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/pickle.hpp"
#include "tools/vmmctl/pytorch_snapshot.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

namespace vmmctl {

namespace {

// ------------------------------------------------------------ the check
// The fields vmmctl reads, by kind; a snapshot lacking one (or holding the
// wrong kind) is malformed. Fields the check does not name are ignored, so
// newer writers may add fields without a new schema version.

enum class Kind { uint, integer, string, boolean, array, object, object_or_null };

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::uint:
      return "a non-negative integer";
    case Kind::integer:
      return "an integer";
    case Kind::string:
      return "a string";
    case Kind::boolean:
      return "true or false";
    case Kind::array:
      return "an array";
    case Kind::object:
      return "an object";
    case Kind::object_or_null:
      return "an object or null";
  }
  return "?";
}

bool is_kind(const Json& v, Kind k) {
  switch (k) {
    case Kind::uint:
      return v.is_number_unsigned() || (v.is_number_integer() && v.get<long long>() >= 0);
    case Kind::integer:
      return v.is_number_integer();
    case Kind::string:
      return v.is_string();
    case Kind::boolean:
      return v.is_boolean();
    case Kind::array:
      return v.is_array();
    case Kind::object:
      return v.is_object();
    case Kind::object_or_null:
      return v.is_object() || v.is_null();
  }
  return false;
}

class Checker {
 public:
  explicit Checker(std::string origin) : origin_(std::move(origin)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw CliError(kMalformed, origin_ + ": malformed snapshot: " + path + " " + what);
  }

  const Json& field(const Json& obj, const std::string& path, const char* key, Kind kind) const {
    const std::string where = path.empty() ? key : path + "." + key;
    auto it = obj.find(key);
    if (it == obj.end()) fail(where, "is missing");
    if (!is_kind(*it, kind)) fail(where, std::string("is not ") + kind_name(kind));
    return *it;
  }

  void fields(const Json& obj, const std::string& path, std::initializer_list<const char*> keys,
              Kind kind) const {
    for (const char* k : keys) field(obj, path, k, kind);
  }

  // Each element of array `arr` must be an object; `each` checks it.
  template <typename F>
  void elements(const Json& arr, const std::string& path, F&& each) const {
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const std::string where = path + "[" + std::to_string(i) + "]";
      if (!arr[i].is_object()) fail(where, "is not an object");
      each(arr[i], where);
    }
  }

 private:
  std::string origin_;
};

void check_chunks(const Checker& c, const Json& arr, const std::string& path) {
  c.elements(arr, path, [&](const Json& ch, const std::string& p) {
    c.fields(ch, p, {"va", "bytes"}, Kind::uint);
    c.field(ch, p, "alias", Kind::boolean);
  });
}

void check_device(const Checker& c, const Json& d, const std::string& path, bool full) {
  c.field(d, path, "device", Kind::integer);
  c.field(d, path, "backend", Kind::string);
  c.field(d, path, "granularity", Kind::uint);
  const Json& totals = c.field(d, path, "totals", Kind::object);
  c.fields(totals, path + ".totals",
           {"in_use_bytes", "mapped_bytes", "cached_bytes", "pending_bytes", "physical_bytes",
            "reserved_va_bytes", "workspaces", "heap_segments"},
           Kind::uint);
  const Json& counters = c.field(d, path, "counters", Kind::object_or_null);
  if (counters.is_object()) {
    for (auto it = counters.begin(); it != counters.end(); ++it) {
      if (!is_kind(it.value(), Kind::uint))
        c.fail(path + ".counters." + it.key(), "is not a count");
    }
  }
  const Json& pool = c.field(d, path, "pool", Kind::object);
  c.fields(pool, path + ".pool", {"cache_limit", "created_bytes", "cached_bytes"}, Kind::uint);
  c.elements(c.field(pool, path + ".pool", "cached_chunks", Kind::array),
             path + ".pool.cached_chunks", [&](const Json& e, const std::string& p) {
               c.fields(e, p, {"bytes", "count"}, Kind::uint);
             });
  const Json& space = c.field(d, path, "address_space", Kind::object);
  c.fields(space, path + ".address_space", {"reserved_bytes", "reservation_count"}, Kind::uint);
  const Json& rec = c.field(d, path, "reclaimer", Kind::object);
  c.fields(rec, path + ".reclaimer", {"pending_bytes", "pending_entries"}, Kind::uint);
  if (!full) return;

  c.elements(c.field(space, path + ".address_space", "reservations", Kind::array),
             path + ".address_space.reservations", [&](const Json& r, const std::string& p) {
               c.fields(r, p, {"base", "bytes", "allocated_bytes"}, Kind::uint);
               c.field(r, p, "dedicated", Kind::boolean);
               c.elements(c.field(r, p, "free", Kind::array), p + ".free",
                          [&](const Json& f, const std::string& q) {
                            c.fields(f, q, {"base", "bytes"}, Kind::uint);
                          });
             });
  c.elements(c.field(rec, path + ".reclaimer", "pending", Kind::array), path + ".reclaimer.pending",
             [&](const Json& e, const std::string& p) {
               c.fields(e, p, {"ticket", "bytes"}, Kind::uint);
               c.field(e, p, "in_progress", Kind::boolean);
               c.elements(c.field(e, p, "fences", Kind::array), p + ".fences",
                          [&](const Json& f, const std::string& q) {
                            c.field(f, q, "complete", Kind::boolean);
                          });
               check_chunks(c, c.field(e, p, "mappings", Kind::array), p + ".mappings");
               const Json& range = c.field(e, p, "range", Kind::object_or_null);
               if (range.is_object()) c.fields(range, p + ".range", {"base", "bytes"}, Kind::uint);
             });
  c.elements(c.field(d, path, "regions", Kind::array), path + ".regions",
             [&](const Json& r, const std::string& p) {
               c.fields(r, p, {"id", "owner", "name"}, Kind::string);
               const std::string owner = r["owner"].get<std::string>();
               if (owner != "workspace" && owner != "heap") {
                 c.fail(p + ".owner", "is \"" + owner + "\", not \"workspace\" or \"heap\"");
               }
               c.fields(r, p, {"base", "capacity", "mapped_bytes", "in_use_bytes"}, Kind::uint);
               check_chunks(c, c.field(r, p, "chunks", Kind::array), p + ".chunks");
               if (owner == "workspace") {
                 c.field(r, p, "size", Kind::uint);
               } else {
                 c.elements(c.field(r, p, "blocks", Kind::array), p + ".blocks",
                            [&](const Json& b, const std::string& q) {
                              c.fields(b, q, {"addr", "size", "requested", "stream"}, Kind::uint);
                              const std::string state = c.field(b, q, "state", Kind::string);
                              if (state != "live" && state != "cached" && state != "free") {
                                c.fail(q + ".state",
                                       "is \"" + state + "\", not live, cached or free");
                              }
                            });
               }
             });
}

void check_snapshot(const Json& s, const std::string& origin) {
  const Checker c(origin);
  if (!s.is_object()) c.fail("the document", "is not a JSON object");
  auto schema = s.find("schema");
  if (schema == s.end() || !schema->is_string() || *schema != vmm::kSnapshotSchema) {
    throw CliError(kMalformed, origin + ": not a vmmalloc snapshot (no \"schema\": \"" +
                                   std::string(vmm::kSnapshotSchema) + "\")");
  }
  const Json& version = c.field(s, "", "version", Kind::integer);
  if (version.get<long long>() != vmm::kSnapshotSchemaVersion) {
    throw CliError(kUnknownVersion, origin + ": snapshot schema version " + version.dump() +
                                        " is unknown to this vmmctl (it reads version " +
                                        std::to_string(vmm::kSnapshotSchemaVersion) + ")");
  }
  const std::string detail = c.field(s, "", "detail", Kind::string);
  if (detail != "full" && detail != "summary") c.fail("detail", "is not \"full\" or \"summary\"");
  const bool full = detail == "full";
  c.field(s, "", "reason", Kind::string);
  c.field(s, "", "time_unix_ns", Kind::uint);
  const Json& process = c.field(s, "", "process", Kind::object);
  c.field(process, "process", "pid", Kind::integer);
  c.field(process, "process", "host", Kind::string);
  const Json& args = c.field(process, "process", "command_line", Kind::array);
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (!args[i].is_string())
      c.fail("process.command_line[" + std::to_string(i) + "]", "is not a string");
  }
  c.elements(c.field(s, "", "devices", Kind::array), "devices",
             [&](const Json& d, const std::string& p) { check_device(c, d, p, full); });
  const Json& ev = c.field(s, "", "events", Kind::object);
  c.fields(ev, "events", {"capacity", "recorded", "lost"}, Kind::uint);
  c.field(ev, "events", "allocation_events", Kind::boolean);
  if (full) {
    c.elements(c.field(ev, "events", "items", Kind::array), "events.items",
               [&](const Json& e, const std::string& p) {
                 c.fields(e, p, {"t_ns", "addr", "bytes"}, Kind::uint);
                 c.field(e, p, "kind", Kind::string);
                 c.field(e, p, "device", Kind::integer);
                 c.field(e, p, "mapped_after", Kind::integer);
               });
  }
}

// Reads `fd` to its end, at most `limit` bytes. It stops at once when the
// first byte that is not white space is not '{' (a snapshot is an object):
// /dev/zero or a stream of '[' fails after one read.
std::string read_bounded(int fd, const std::string& origin, std::size_t limit) {
  std::string text;
  char buf[65536];
  bool sniffed = false;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw CliError(kError, "cannot read " + origin + ": " + std::strerror(errno));
    }
    if (n == 0) return text;
    if (text.size() + static_cast<std::size_t>(n) > limit) {
      throw CliError(kMalformed, origin + ": the input is larger than " + std::to_string(limit) +
                                     " bytes (--max-input or VMMCTL_MAX_INPUT raises the limit)");
    }
    text.append(buf, static_cast<std::size_t>(n));
    if (sniffed) continue;
    const std::size_t first = text.find_first_not_of(" \t\r\n");
    if (first == std::string::npos) continue;
    sniffed = true;
    // A JSON object, or a pickle (PyTorch's memory snapshots) at byte 0.
    if (text[first] != '{' && !(first == 0 && static_cast<unsigned char>(text[0]) == 0x80)) {
      char what[16];
      std::snprintf(what, sizeof what, "byte 0x%02x",
                    static_cast<unsigned>(static_cast<unsigned char>(text[first])));
      throw CliError(
          kMalformed,
          origin + ": malformed snapshot: not a JSON object (it starts with " + what + ")");
    }
  }
}

// Refuses text that nests arrays and objects deeper than kMaxDepth before
// it is parsed: the parser would build every level (10 MiB of '[' took
// 790 MB).
void check_depth(const std::string& text, const std::string& origin) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (const char ch : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (ch == '\\') {
        escaped = true;
      } else if (ch == '"') {
        in_string = false;
      }
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > kMaxDepth) {
        throw CliError(kMalformed, origin + ": malformed snapshot: nested deeper than " +
                                       std::to_string(kMaxDepth) + " levels");
      }
    } else if (ch == ']' || ch == '}') {
      --depth;
    }
  }
}

// The socket of `pid` (a process of `owner`): the first of its candidate
// directories holding one. Every directory looked in must be `owner`'s and
// writable by no one else, or it is refused: anyone who can put a socket
// there can forge snapshots.
std::string find_socket(pid_t pid, const std::string& base, uid_t owner,
                        const std::string& origin) {
  const std::vector<std::string> dirs = vmm::live::socket_directories(base, owner);
  for (const std::string& dir : dirs) {
    const std::string problem = vmm::live::client_directory_problem(dir, owner);
    if (!problem.empty()) throw CliError(kOtherUser, origin + ": refused: " + problem);
    const std::string path = vmm::live::socket_path(dir, pid);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) return path;
  }
  return vmm::live::socket_path(dirs.back(), pid);  // none: the request says so
}

// The server must run as `uid` and, if `pid` is set, be that process.
void check_peer(const vmm::live::Reply& reply, uid_t uid, std::optional<pid_t> pid,
                const std::string& origin, const std::string& path) {
  if (!reply.peer_known) {
    throw CliError(kError, origin + ": cannot read the credentials of the server at " + path);
  }
  if (reply.peer_uid != uid) {
    throw CliError(kOtherUser, origin + ": refused: the socket " + path + " is served by uid " +
                                   std::to_string(reply.peer_uid) + " (pid " +
                                   std::to_string(reply.peer_pid) + "), not by uid " +
                                   std::to_string(uid));
  }
  if (pid && reply.peer_pid != *pid) {
    throw CliError(kNotServing, origin + ": the socket " + path + " is served by pid " +
                                    std::to_string(reply.peer_pid) + ", not by pid " +
                                    std::to_string(*pid) + " (left by another process, or forged)");
  }
}

// The uid owning process `pid` (its /proc entry's owner); nullopt if unknown.
std::optional<uid_t> process_owner(pid_t pid) {
  struct stat st {};
  const std::string proc = "/proc/" + std::to_string(pid);
  if (::stat(proc.c_str(), &st) == 0) return st.st_uid;
  return std::nullopt;
}

bool running(pid_t pid) { return ::kill(pid, 0) == 0 || errno == EPERM; }

}  // namespace

std::string default_socket_base() {
  try {
    return vmm::Config::from_environment().live_socket_dir;
  } catch (const vmm::ConfigError& e) {
    throw CliError(kUsage, e.what());
  }
}

std::optional<std::size_t> parse_byte_count(const std::string& text) {
  std::size_t i = 0;
  std::size_t value = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (SIZE_MAX - 9) / 10) return std::nullopt;
    value = value * 10 + static_cast<std::size_t>(text[i] - '0');
  }
  if (i == 0) return std::nullopt;
  std::string unit = text.substr(i);
  for (char& ch : unit) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  int shift = -1;
  if (unit.empty() || unit == "B") shift = 0;
  for (const auto& [name, bits] : {std::pair{"K", 10}, std::pair{"M", 20}, std::pair{"G", 30}}) {
    if (unit == name || unit == std::string(name) + "B" || unit == std::string(name) + "IB") {
      shift = bits;
    }
  }
  if (shift < 0 || value == 0 || value > (SIZE_MAX >> shift)) return std::nullopt;
  return value << shift;
}

std::size_t default_max_input() {
  const char* env = std::getenv("VMMCTL_MAX_INPUT");
  if (env == nullptr || *env == '\0') return kDefaultMaxInput;
  const std::optional<std::size_t> n = parse_byte_count(env);
  if (!n) {
    throw CliError(kUsage,
                   std::string("VMMCTL_MAX_INPUT takes a byte count like 512M, not '") + env + "'");
  }
  return *n;
}

namespace {

Json parse_json(const std::string& text, const std::string& origin) {
  check_depth(text, origin);
  Json doc;
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    // An error at the very end of the text: it stopped early.
    if (text.empty() || e.byte >= text.size()) {
      throw CliError(kMalformed, origin + ": truncated snapshot (the JSON ends after " +
                                     std::to_string(text.size()) + " bytes)");
    }
    throw CliError(kMalformed,
                   origin + ": malformed snapshot: invalid JSON at byte " + std::to_string(e.byte));
  } catch (const Json::exception& e) {
    // Valid syntax the parser still refuses, e.g. a number beyond a double
    // (found by tests/fuzz/snapshot_fuzzer).
    throw CliError(kMalformed, origin + ": malformed snapshot: " + e.what());
  }
  return doc;
}

}  // namespace

Json parse_snapshot(const std::string& text, const std::string& origin) {
  Json doc = looks_like_pickle(text) ? read_pickle(text, origin) : parse_json(text, origin);
  if (is_pytorch_snapshot(doc)) doc = from_pytorch_snapshot(doc, origin);
  check_snapshot(doc, origin);
  return doc;
}

bool is_pid_spec(const std::string& spec) {
  if (spec.empty() || spec.size() > 9) return false;
  for (char ch : spec) {
    if (ch < '0' || ch > '9') return false;
  }
  struct stat st {};
  return ::stat(spec.c_str(), &st) != 0;  // a file of that name wins
}

namespace {

// Where to ask, who must answer, and how to name it in messages.
struct Target {
  std::string path;
  std::string origin;
  uid_t uid = 0;             // the server's uid
  std::optional<pid_t> pid;  // the server's pid (asked by PID)
};

Target locate(pid_t pid, const SourceOptions& options) {
  Target t;
  t.uid = ::geteuid();
  if (options.socket_path) {
    t.path = *options.socket_path;
    t.origin = "socket " + t.path;
    return t;
  }
  t.origin = "pid " + std::to_string(pid);
  t.pid = pid;
  if (!running(pid))
    throw CliError(kNoProcess, "process " + std::to_string(pid) + " is not running");
  const uid_t owner = process_owner(pid).value_or(t.uid);
  if (owner != t.uid && t.uid != 0) {
    throw CliError(kOtherUser, "process " + std::to_string(pid) + " belongs to uid " +
                                   std::to_string(owner) +
                                   ", and vmmalloc serves each "
                                   "process's snapshots to its own user only (you are uid " +
                                   std::to_string(t.uid) + ")");
  }
  t.uid = owner;  // root asks as the owner's peer; the server refuses root itself
  t.path = find_socket(pid, options.socket_base, owner, t.origin);
  return t;
}

// Throws the CliError for a request that got no reply.
void check_status(const vmm::live::Reply& reply, const Target& t) {
  using Status = vmm::live::Reply::Status;
  const bool gone = t.pid && !running(*t.pid);
  switch (reply.status) {
    case Status::ok:
      return;
    case Status::no_socket:
      if (gone) throw CliError(kNoProcess, "process " + std::to_string(*t.pid) + " is not running");
      throw CliError(kNotServing,
                     t.origin + " has no vmmalloc socket at " + t.path +
                         " (it does not use vmmalloc, has not used a device yet, runs with "
                         "live_socket:off, or another live_socket_dir)");
    case Status::permission_denied:
      throw CliError(kOtherUser, t.origin + ": the socket " + t.path +
                                     " belongs to another user (" + reply.message + ")");
    case Status::refused:
      if (gone) throw CliError(kNoProcess, "process " + std::to_string(*t.pid) + " is not running");
      throw CliError(kNotServing, t.origin + ": nothing answers on " + t.path +
                                      " (a socket left by an earlier process?)");
    case Status::too_large:
      throw CliError(kMalformed, t.origin + ": " + reply.message +
                                     " (--max-input or VMMCTL_MAX_INPUT raises the limit)");
    case Status::timed_out:
    case Status::failed:
      break;
  }
  throw CliError(kError, t.origin + ": " + reply.message);
}

}  // namespace

namespace {

// Sends `request` to the process `t` names and checks who answered; returns
// the reply parsed, or throws the CliError an error object or a failure
// means.
Json ask(const Target& t, const SourceOptions& options, std::string_view request,
         vmm::live::Reply& reply) {
  reply = vmm::live::request(t.path, request, options.timeout_ms, options.max_input);
  check_status(reply, t);
  check_peer(reply, t.uid, t.pid, t.origin, t.path);
  const Json doc = parse_json(reply.body, t.origin);
  // An error object rather than a snapshot?
  if (doc.is_object() && doc.contains("error") && doc["error"].is_string()) {
    const std::string code = doc["error"];
    const std::string msg = doc.contains("message") && doc["message"].is_string()
                                ? doc["message"].get<std::string>()
                                : std::string();
    if (code == vmm::live::kErrorPermissionDenied) {
      throw CliError(kOtherUser, t.origin + ": refused: " + msg);
    }
    throw CliError(kError, t.origin + ": " + code + ": " + msg);
  }
  return doc;
}

}  // namespace

Json control_live(pid_t pid, const SourceOptions& options, std::string_view request) {
  const Target t = locate(pid, options);
  vmm::live::Reply reply;
  const Json doc = ask(t, options, request, reply);
  if (!doc.is_object() || !doc.value("ok", false) || !doc.contains("report") ||
      !doc["report"].is_object()) {
    throw CliError(kMalformed, t.origin + ": the reply to \"" + std::string(request) +
                                   "\" is not a report");
  }
  return doc;
}

Snapshot fetch_live(pid_t pid, const SourceOptions& options, std::string_view request) {
  const Target t = locate(pid, options);
  vmm::live::Reply reply;
  const Json doc = ask(t, options, request, reply);
  check_snapshot(doc, t.origin);
  // The snapshot of the process asked for (or of the one serving the socket).
  const long long want = t.pid ? *t.pid : reply.peer_pid;
  const long long got = doc["process"]["pid"].get<long long>();
  if (got != want) {
    throw CliError(kMalformed, t.origin + ": the socket " + t.path + " holds the snapshot of pid " +
                                   std::to_string(got) + ", not of pid " + std::to_string(want));
  }
  return {doc, t.origin};
}

Snapshot load_snapshot(const std::string& spec, const SourceOptions& options,
                       std::string_view request) {
  if (options.socket_path) return fetch_live(0, options, request);
  if (spec == "-") {
    return {parse_snapshot(read_bounded(STDIN_FILENO, "stdin", options.max_input), "stdin"),
            "stdin"};
  }
  if (is_pid_spec(spec)) return fetch_live(static_cast<pid_t>(std::stol(spec)), options, request);
  const int fd = ::open(spec.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    throw CliError(kError, "cannot read " + spec + ": " + std::strerror(errno) +
                               " (give a snapshot file, - for stdin, or a PID)");
  }
  const std::string origin = "file " + spec;
  std::string text;
  try {
    text = read_bounded(fd, origin, options.max_input);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  return {parse_snapshot(text, origin), origin};
}

}  // namespace vmmctl
