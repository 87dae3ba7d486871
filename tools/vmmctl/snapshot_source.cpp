// Snapshot sources and the schema check. See snapshot_source.hpp.
#include "tools/vmmctl/snapshot_source.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

// Internal: the live socket protocol and the snapshot schema version, not public API.
#include "allocator/observe/live_socket.hpp"
#include "allocator/observe/snapshot.hpp"
#include "tools/vmmctl/exit_codes.hpp"
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

std::string read_all(std::istream& in) {
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
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

Json parse_snapshot(const std::string& text, const std::string& origin) {
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

Snapshot fetch_live(pid_t pid, const SourceOptions& options, std::string_view request) {
  std::string path;
  std::string origin;
  if (options.socket_path) {
    path = *options.socket_path;
    origin = "socket " + path;
  } else {
    origin = "pid " + std::to_string(pid);
    if (!running(pid))
      throw CliError(kNoProcess, "process " + std::to_string(pid) + " is not running");
    const uid_t me = ::geteuid();
    const uid_t owner = process_owner(pid).value_or(me);
    if (owner != me && me != 0) {
      throw CliError(kOtherUser, "process " + std::to_string(pid) + " belongs to uid " +
                                     std::to_string(owner) +
                                     ", and vmmalloc serves each "
                                     "process's snapshots to its own user only (you are uid " +
                                     std::to_string(me) + ")");
    }
    path = vmm::live::socket_path(vmm::live::socket_directory(options.socket_base, owner), pid);
  }
  const vmm::live::Reply reply = vmm::live::request(path, request, options.timeout_ms);
  using Status = vmm::live::Reply::Status;
  switch (reply.status) {
    case Status::ok:
      break;
    case Status::no_socket:
      if (!options.socket_path && !running(pid)) {
        throw CliError(kNoProcess, "process " + std::to_string(pid) + " is not running");
      }
      throw CliError(kNotServing,
                     origin + " has no vmmalloc socket at " + path +
                         " (it does not use vmmalloc, has not used a device yet, runs with "
                         "live_socket:off, or another live_socket_dir)");
    case Status::permission_denied:
      throw CliError(kOtherUser, origin + ": the socket " + path + " belongs to another user (" +
                                     reply.message + ")");
    case Status::refused:
      if (!options.socket_path && !running(pid)) {
        throw CliError(kNoProcess, "process " + std::to_string(pid) + " is not running");
      }
      throw CliError(kNotServing, origin + ": nothing answers on " + path +
                                      " (a socket left by an earlier process?)");
    case Status::timed_out:
    case Status::failed:
      throw CliError(kError, origin + ": " + reply.message);
  }
  // An error object rather than a snapshot?
  try {
    const Json j = Json::parse(reply.body);
    if (j.is_object() && j.contains("error") && j["error"].is_string()) {
      const std::string code = j["error"];
      const std::string msg = j.value("message", std::string());
      if (code == vmm::live::kErrorPermissionDenied) {
        throw CliError(kOtherUser, origin + ": refused: " + msg);
      }
      throw CliError(kError, origin + ": " + code + ": " + msg);
    }
  } catch (const Json::parse_error&) {
    // Not JSON at all: parse_snapshot says how.
  }
  return {parse_snapshot(reply.body, origin), origin};
}

Snapshot load_snapshot(const std::string& spec, const SourceOptions& options,
                       std::string_view request) {
  if (options.socket_path) return fetch_live(0, options, request);
  if (spec == "-") return {parse_snapshot(read_all(std::cin), "stdin"), "stdin"};
  if (is_pid_spec(spec)) return fetch_live(static_cast<pid_t>(std::stol(spec)), options, request);
  std::ifstream in(spec, std::ios::binary);
  if (!in) {
    throw CliError(kError, "cannot read " + spec + ": " + std::strerror(errno) +
                               " (give a snapshot file, - for stdin, or a PID)");
  }
  const std::string origin = "file " + spec;
  return {parse_snapshot(read_all(in), origin), origin};
}

}  // namespace vmmctl
