// Config: the option table and the VMMALLOC_CONF parser.
//
// Every option is one row of kOptions: what the docs show (OptionInfo: name,
// type, default, description), what error messages say it accepts, and three
// functions - parse a value into a Config, check the Config's fields, print
// them back in the grammar. set(), apply(), parse(), validate(), to_string()
// and config_options() only walk the table, so an option is added in one place
// (plus its field in config.hpp and its row in docs/configuration.md, which a
// test checks).
//
// Values are checked twice by the same code: set() checks the value it
// parsed, validate() checks fields that code may have set directly. Numbers
// go through std::from_chars/to_chars, not strtod/printf, so parsing does
// not depend on the host application's locale.
#include "vmmalloc/config.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <string>
#include <utility>

#include "allocator/base/config_values.hpp"
#include "allocator/base/units.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

using namespace config_values;

constexpr const char* kEnvVar = "VMMALLOC_CONF";
// Device granularity: every chunk class and reservation is a multiple of it.
constexpr std::size_t kGranularity = 2 * MiB;
constexpr std::size_t kMaxChunkClasses = 24;
constexpr double kMaxReservationFactor = 64.0;
constexpr std::size_t kMaxHostDeviceMemory = 1024 * TiB;

template <typename E>
struct EnumName {
  const char* name;
  E value;
};

constexpr std::array<EnumName<BackendKind>, 3> kBackendNames{{
    {"auto", BackendKind::automatic},
    {"cuda", BackendKind::cuda},
    {"host", BackendKind::host},
}};

constexpr std::array<EnumName<LogLevel>, 5> kLogLevelNames{{
    {"off", LogLevel::off},
    {"error", LogLevel::error},
    {"warn", LogLevel::warn},
    {"info", LogLevel::info},
    {"debug", LogLevel::debug},
}};

constexpr std::array<EnumName<CudaFreeMode>, 3> kCudaFreeNames{{
    {"fence", CudaFreeMode::fence},
    {"sync", CudaFreeMode::sync},
    {"order", CudaFreeMode::order},
}};

// The value of `table` named `text` (any case, blanks around it ignored).
template <typename E, std::size_t N>
E parse_named(const std::array<EnumName<E>, N>& table, std::string_view text) {
  for (const auto& entry : table) {
    if (equals_nocase(trim(text), entry.name)) return entry.value;
  }
  throw BadValue{""};
}

// The name of `value` in `table`, or null if it has none (a value set from
// code that validate() rejects).
template <typename E, std::size_t N>
const char* name_in(const std::array<EnumName<E>, N>& table, E value) noexcept {
  for (const auto& entry : table) {
    if (entry.value == value) return entry.name;
  }
  return nullptr;
}

template <typename E, std::size_t N>
std::string format_named(const std::array<EnumName<E>, N>& table, E value) {
  const char* name = name_in(table, value);
  return name != nullptr ? name : std::to_string(static_cast<int>(value));
}

LogLevel parse_log_level(std::string_view text) { return parse_named(kLogLevelNames, text); }

constexpr std::size_t kMaxIpcTimeoutMs = 3600000;  // an hour
constexpr std::size_t kMinEventRing = 16;
constexpr std::size_t kMaxEventRing = std::size_t{1} << 24;

// ---------------------------------------------------- per-option checks

void check_chunk_sizes(const std::vector<std::size_t>& sizes) {
  if (sizes.empty()) throw BadValue{"no chunk size given"};
  if (sizes.size() > kMaxChunkClasses) {
    throw BadValue{std::to_string(sizes.size()) + " sizes given, at most " +
                   std::to_string(kMaxChunkClasses) + " allowed"};
  }
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const std::size_t s = sizes[i];
    if (!is_power_of_two(s)) throw BadValue{format_size(s) + " is not a power of two"};
    if (s % kGranularity != 0) throw BadValue{format_size(s) + " is not a multiple of 2 MiB"};
    if (i > 0 && s <= sizes[i - 1]) {
      throw BadValue{format_size(s) + " follows " + format_size(sizes[i - 1]) + " (not ascending)"};
    }
  }
}

void check_memory_cap(const Config& c) {
  if (c.memory_cap_bytes != 0 && c.memory_cap_fraction != 0.0) {
    throw BadValue{"memory_cap_bytes and memory_cap_fraction are both set (set one, the other 0)"};
  }
  if (c.memory_cap_bytes != 0 && c.memory_cap_bytes < kGranularity) {
    throw BadValue{format_size(c.memory_cap_bytes) +
                   " is less than 2 MiB (a fraction needs a decimal point: 1.0 is all of the "
                   "device's memory)"};
  }
  if (!(c.memory_cap_fraction >= 0.0 && c.memory_cap_fraction <= 1.0)) {
    throw BadValue{"fraction " + format_number(c.memory_cap_fraction) + " is not in (0, 1]"};
  }
}

void parse_memory_cap(Config& c, std::string_view text) {
  text = trim(text);
  bool overflowed = false;
  if (const auto bytes = parse_size(text, &overflowed)) {
    c.memory_cap_bytes = *bytes;
    c.memory_cap_fraction = 0.0;
    return;
  }
  if (overflowed) throw BadValue{std::string(text) + " does not fit in 64 bits"};
  const auto fraction = parse_number(text);
  if (!fraction) throw BadValue{""};
  c.memory_cap_bytes = 0;
  c.memory_cap_fraction = *fraction == 0.0 ? 0.0 : *fraction;  // -0.0 is no cap too
}

std::string format_memory_cap(const Config& c) {
  if (c.memory_cap_bytes != 0) return format_size(c.memory_cap_bytes);
  if (c.memory_cap_fraction == 0.0) return "0";
  std::string text = format_number(c.memory_cap_fraction);
  // A fraction must not read back as a size: "1" would be one byte.
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  return text;
}

// ------------------------------------------------------------ the table

struct Option {
  OptionInfo info;
  const char* accepted;  // completes "expected ..." in error messages
  void (*parse)(Config&, std::string_view);
  void (*check)(const Config&);
  std::string (*print)(const Config&);
};

constexpr Option kOptions[] = {
    {{"chunk_sizes", "size list", "2M+4M+8M+16M+32M+64M+128M+256M+512M+1G",
      "Physical chunk classes: 1 to 24 sizes, each a power of two and a multiple of 2 MiB, "
      "strictly ascending; a grow maps as few chunks as these classes allow."},
     "sizes like 2M+32M+512M (powers of two, multiples of 2 MiB, ascending)",
     [](Config& c, std::string_view v) { c.chunk_sizes = parse_size_list(v); },
     [](const Config& c) { check_chunk_sizes(c.chunk_sizes); },
     [](const Config& c) { return format_size_list(c.chunk_sizes); }},

    {{"pool_cache_limit", "size", "1G",
      "Free physical chunks kept cached for reuse instead of being released to the device, in "
      "bytes; 0 caches nothing."},
     "a size like 512M or 1G (0: cache nothing)",
     [](Config& c, std::string_view v) { c.pool_cache_limit = parse_size_value(v); },
     [](const Config&) {},
     [](const Config& c) { return format_size(c.pool_cache_limit); }},

    {{"fenced_free_limit", "size", "1G",
      "Free memory that no stream may take until other streams' work completes (a block used "
      "on several streams, record_stream, a cudaFree under the LD_PRELOAD interposer), in "
      "bytes: above it, an allocation that would map new memory first waits for the oldest of "
      "that work; 0 never waits (maps new memory instead)."},
     "a size like 256M or 1G (0: never wait)",
     [](Config& c, std::string_view v) { c.fenced_free_limit = parse_size_value(v); },
     [](const Config&) {},
     [](const Config& c) { return format_size(c.fenced_free_limit); }},

    {{"memory_cap", "size or fraction", "0",
      "Cap on the physical memory created on each device: a size (at least 2M), a fraction of "
      "the device's total memory written with a decimal point (0 < f <= 1: 0.9, 1.0), or 0 for "
      "no cap; going over it is an out-of-memory error."},
     "a size like 40G (at least 2M), a fraction of device memory like 0.9 (0 < f <= 1), or 0 "
     "for no cap",
     parse_memory_cap,
     check_memory_cap,
     format_memory_cap},

    {{"va_reservation_size", "size",
#ifdef VMMALLOC_SANITIZER_BUILD
      "8G",
#else
      "0",
#endif
      "Size of each virtual address reservation, a multiple of 2 MiB; more are added as needed. "
      "0 (the default) means va_reservation_factor times the device's total memory; sanitizer "
      "builds default to 8G because their runtimes cannot map huge PROT_NONE ranges."},
     "a multiple of 2 MiB like 64G, or 0 for va_reservation_factor x device memory",
     [](Config& c, std::string_view v) { c.va_reservation_size = parse_size_value(v); },
     [](const Config& c) {
       if (c.va_reservation_size % kGranularity != 0) {
         throw BadValue{format_size(c.va_reservation_size) + " is not a multiple of 2 MiB"};
       }
     },
     [](const Config& c) { return format_size(c.va_reservation_size); }},

    {{"va_reservation_factor", "number", "4",
      "When va_reservation_size is 0, each reservation is this many times the device's total "
      "memory, rounded up to 1 GiB; greater than 0, at most 64."},
     "a number > 0 and <= 64, like 4 or 2.5",
     [](Config& c, std::string_view v) {
       const auto factor = parse_number(trim(v));
       if (!factor) throw BadValue{""};
       c.va_reservation_factor = *factor;
     },
     [](const Config& c) {
       if (!(c.va_reservation_factor > 0.0 && c.va_reservation_factor <= kMaxReservationFactor)) {
         throw BadValue{""};
       }
     },
     [](const Config& c) { return format_number(c.va_reservation_factor); }},

    {{"log_level", "off/error/warn/info/debug", "warn",
      "Messages written to stderr: each level includes the more severe ones; off writes none."},
     "one of off, error, warn, info, debug",
     [](Config& c, std::string_view v) { c.log_level = parse_log_level(v); },
     [](const Config& c) {
       if (static_cast<unsigned>(c.log_level) > static_cast<unsigned>(LogLevel::debug)) {
         throw BadValue{"not a log level"};
       }
     },
     [](const Config& c) -> std::string {
       const LogLevel level = c.log_level;
       const char* name = log_level_name(level);
       return name[0] == '?' ? std::to_string(static_cast<int>(level)) : name;
     }},

    {{"backend", "auto/cuda/host", "auto",
      "auto: the CUDA driver where a GPU is usable, else the host backend; cuda: fail if no GPU "
      "is usable; host: host memory standing in for a device (tests, machines without a GPU)."},
     "one of auto, cuda, host",
     [](Config& c, std::string_view v) { c.backend = parse_named(kBackendNames, v); },
     [](const Config& c) {
       if (static_cast<unsigned>(c.backend) > static_cast<unsigned>(BackendKind::host)) {
         throw BadValue{"not a backend"};
       }
     },
     [](const Config& c) { return format_named(kBackendNames, c.backend); }},

    {{"host_device_memory", "size", "16G",
      "Total memory of the device the host backend simulates; 2M to 1024T."},
     "a size from 2M to 1024T, like 16G",
     [](Config& c, std::string_view v) { c.host_device_memory = parse_size_value(v); },
     [](const Config& c) {
       if (c.host_device_memory < kGranularity) throw BadValue{"less than 2 MiB"};
       // Sizes derived from it (va_reservation_factor times it) must fit in
       // size_t: 1 PiB x 64 is 2^56.
       if (c.host_device_memory > kMaxHostDeviceMemory) throw BadValue{"more than 1024T (1 PiB)"};
     },
     [](const Config& c) { return format_size(c.host_device_memory); }},

    {{"peer_access", "none/all/device list", "none",
      "Devices granted read/write access to each device's memory besides the device itself, for "
      "memory mapped now and later: none, all (every device that can reach it), or device "
      "ordinals joined with + (0+2+3), each of which must exist and reach it."},
     "none, all, or device ordinals 0 to 63 joined with + like 0+2+3 (none listed twice)",
     parse_peer_access,
     check_peer_access,
     format_peer_access},

    {{"live_socket", "on/off", "on",
      "Serve snapshots to vmmctl on a per-process Unix socket <live_socket_dir>/vmmalloc-<uid>/"
      "<pid>.sock (same user only); off: no socket and no thread. Process-wide."},
     "on or off",
     [](Config& c, std::string_view v) { c.live_socket = parse_switch(v); },
     [](const Config&) {},
     [](const Config& c) { return format_switch(c.live_socket); }},

    {{"live_socket_dir", "path", "/tmp",
      "Absolute directory in which the per-user socket directory vmmalloc-<uid> (mode 0700) is "
      "made; vmmctl reads the same setting. Process-wide."},
     "an absolute directory path like /tmp (no ',' or '%')",
     [](Config& c, std::string_view v) { c.live_socket_dir = std::string(trim(v)); },
     [](const Config& c) {
       check_path_text(c.live_socket_dir);
       if (c.live_socket_dir.empty() || c.live_socket_dir[0] != '/') {
         throw BadValue{"not an absolute path"};
       }
       if (c.live_socket_dir.find('%') != std::string::npos) throw BadValue{"a '%' character"};
     },
     [](const Config& c) { return c.live_socket_dir; }},

    {{"snapshot_at_exit", "path", "",
      "Write a snapshot (docs/snapshot.md) to this file when the process exits; empty: none. %p "
      "is replaced by the process id. Process-wide."},
     "a file path like /tmp/vmm-%p.json (%p: process id, %%: %), or nothing for none",
     [](Config& c, std::string_view v) { c.snapshot_at_exit = std::string(trim(v)); },
     [](const Config& c) { check_snapshot_path(c.snapshot_at_exit); },
     [](const Config& c) { return c.snapshot_at_exit; }},

    {{"snapshot_on_oom", "path", "",
      "Write a snapshot to this file at every out-of-memory error, each replacing the last; "
      "empty: none. %p is replaced by the process id."},
     "a file path like /tmp/vmm-oom-%p.json (%p: process id, %%: %), or nothing for none",
     [](Config& c, std::string_view v) { c.snapshot_on_oom = std::string(trim(v)); },
     [](const Config& c) { check_snapshot_path(c.snapshot_on_oom); },
     [](const Config& c) { return c.snapshot_on_oom; }},

    {{"allocation_events", "on/off", "off",
      "Record an event for every allocate and free in the event ring of snapshots (map, unmap, "
      "grow, shrink and oom events are always recorded). Process-wide."},
     "on or off",
     [](Config& c, std::string_view v) { c.allocation_events = parse_switch(v); },
     [](const Config&) {},
     [](const Config& c) { return format_switch(c.allocation_events); }},

    {{"event_ring_size", "count", "4096",
      "Recent events kept in the event ring of snapshots: 16 to 16777216 (each takes 64 bytes). "
      "Process-wide."},
     "a count from 16 to 16777216, like 4096 or 64K",
     [](Config& c, std::string_view v) { c.event_ring_size = parse_size_value(v); },
     [](const Config& c) {
       if (c.event_ring_size < kMinEventRing || c.event_ring_size > kMaxEventRing) {
         throw BadValue{"out of range"};
       }
     },
     [](const Config& c) { return std::to_string(c.event_ring_size); }},

    {{"print_stats", "on/off", "off",
      "The LD_PRELOAD interposer prints a summary at exit: what it served and passed to CUDA, "
      "and each device's allocator counters."},
     "on or off",
     [](Config& c, std::string_view v) { c.print_stats = parse_switch(v); },
     [](const Config&) {},
     [](const Config& c) { return format_switch(c.print_stats); }},

    {{"cudafree", "order/fence/sync", "order",
      "What cudaFree and cuMemFree of vmmalloc memory do under the LD_PRELOAD interposer: order "
      "(order every later operation on the device's streams after every earlier one, on the "
      "GPU; the memory is reused at once; falls back to fence with more than 8 non-blocking "
      "streams or a capturing one), fence (wait for nothing; the memory is reused once fences "
      "on every stream of its device complete) or sync (synchronize the device first, as CUDA "
      "does)."},
     "one of fence, sync, order",
     [](Config& c, std::string_view v) { c.cudafree = parse_named(kCudaFreeNames, v); },
     [](const Config& c) {
       if (name_in(kCudaFreeNames, c.cudafree) == nullptr) throw BadValue{"not a cudafree mode"};
     },
     [](const Config& c) { return format_named(kCudaFreeNames, c.cudafree); }},

    {{"ipc_peer_uids", "same/any/uid list", "same",
      "Whose connections an IPC export serves, by the peer process's uid (SO_PEERCRED): same "
      "(the exporter's effective uid only), any, or uids joined with + (1000+1001) allowed "
      "besides the exporter's own; a refused connection is an error of serve()."},
     "same, any, or uids joined with + like 1000+1001 (1 to 64, none twice)",
     parse_ipc_peer_uids,
     check_ipc_peer_uids,
     format_ipc_peer_uids},

    {{"ipc_timeout_ms", "count", "60000",
      "Deadline of each IPC exchange in milliseconds, 1 to 3600000: an importer waits at most "
      "this long for the exporter's whole answer; an exporter drops an importer that takes "
      "longer to send a whole request or to take its answer."},
     "a number of milliseconds from 1 to 3600000, like 60000",
     [](Config& c, std::string_view v) {
       const std::size_t ms = parse_size_value(v);
       if (ms < 1 || ms > kMaxIpcTimeoutMs) throw BadValue{"out of range"};
       c.ipc_timeout_ms = static_cast<std::uint32_t>(ms);
     },
     [](const Config& c) {
       if (c.ipc_timeout_ms < 1 || c.ipc_timeout_ms > kMaxIpcTimeoutMs) {
         throw BadValue{"out of range"};
       }
     },
     [](const Config& c) { return std::to_string(c.ipc_timeout_ms); }},
};

constexpr auto kOptionInfos = [] {
  std::array<OptionInfo, std::size(kOptions)> infos{};
  for (std::size_t i = 0; i < infos.size(); ++i) infos[i] = kOptions[i].info;
  return infos;
}();

const Option* find_option(std::string_view name) {
  for (const Option& option : kOptions) {
    if (name == option.info.name) return &option;
  }
  return nullptr;
}

[[noreturn]] void throw_unknown_key(std::string_view key) {
  std::string message =
      std::string(kEnvVar) + ": unknown option \"" + std::string(key) + "\"; valid options: ";
  for (const Option& option : kOptions) {
    if (&option != &kOptions[0]) message += ", ";
    message += option.info.name;
  }
  throw ConfigError(std::string(key), message);
}

[[noreturn]] void throw_bad_value(const Option& option, std::string_view value,
                                  const std::string& reason) {
  std::string message = std::string(kEnvVar) + ": bad value \"" + std::string(value) + "\" for " +
                        option.info.name + ": ";
  if (!reason.empty()) message += reason + "; ";
  message += "expected ";
  message += option.accepted;
  throw ConfigError(option.info.name, message);
}

}  // namespace

std::vector<std::size_t> Config::default_chunk_sizes() {
  std::vector<std::size_t> sizes;
  for (std::size_t s = 2 * MiB; s <= GiB; s *= 2) sizes.push_back(s);
  return sizes;
}

std::size_t Config::default_va_reservation_size() {
#ifdef VMMALLOC_SANITIZER_BUILD
  return 8 * GiB;
#else
  return 0;
#endif
}

void Config::set(std::string_view key, std::string_view value) {
  key = trim(key);
  value = trim(value);
  const Option* option = find_option(key);
  if (option == nullptr) throw_unknown_key(key);
  Config updated = *this;
  try {
    option->parse(updated, value);
    option->check(updated);
  } catch (const BadValue& bad) {
    throw_bad_value(*option, value, bad.reason);
  }
  *this = std::move(updated);
}

void Config::apply(std::string_view conf) {
  Config updated = *this;
  while (!conf.empty()) {
    const std::size_t comma = conf.find(',');
    const std::string_view segment = trim(conf.substr(0, comma));
    conf = comma == std::string_view::npos ? std::string_view{} : conf.substr(comma + 1);
    if (segment.empty()) continue;
    const std::size_t colon = segment.find(':');
    if (colon == std::string_view::npos) {
      const Option* option = find_option(segment);
      if (option == nullptr) throw_unknown_key(segment);
      throw_bad_value(*option, "",
                      std::string("no value (write ") + option->info.name + ":<value>)");
    }
    updated.set(segment.substr(0, colon), segment.substr(colon + 1));
  }
  updated.validate();
  *this = std::move(updated);
}

Config Config::parse(std::string_view conf) {
  Config config;
  config.apply(conf);
  return config;
}

Config Config::from_environment() {
  const char* conf = std::getenv(kEnvVar);
  return conf == nullptr ? Config{} : parse(conf);
}

const char* log_level_name(LogLevel level) noexcept {
  const char* name = name_in(kLogLevelNames, level);
  return name != nullptr ? name : "?";
}

const char* cudafree_mode_name(CudaFreeMode mode) noexcept {
  const char* name = name_in(kCudaFreeNames, mode);
  return name != nullptr ? name : "?";
}

std::string Config::to_string() const {
  std::string out;
  for (const Option& option : kOptions) {
    if (!out.empty()) out += ',';
    out += option.info.name;
    out += ':';
    out += option.print(*this);
  }
  return out;
}

void Config::validate() const {
  for (const Option& option : kOptions) {
    try {
      option.check(*this);
    } catch (const BadValue& bad) {
      throw_bad_value(option, option.print(*this), bad.reason);
    }
  }
}

std::span<const OptionInfo> config_options() { return kOptionInfos; }

}  // namespace vmm
