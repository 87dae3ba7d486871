// Config (VMMALLOC_CONF), the size helpers of units.hpp and the logger.
//
// Error messages are part of the interface (users read them to fix their
// setting), so the tests check their text: the key, the quoted value and the
// accepted forms. The doc-sync case needs VMM_SOURCE_DIR (a string literal,
// the source root) and checks nothing without it.
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

using vmm::BackendKind;
using vmm::Config;
using vmm::ConfigError;
using vmm::GiB;
using vmm::KiB;
using vmm::LogLevel;
using vmm::MiB;
using vmm::PeerAccessMode;
using vmm::TiB;

namespace {

struct Caught {
  std::string key;
  std::string message;
};

// Runs f, which must throw ConfigError; returns its key and message.
template <typename F>
Caught config_error(F&& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    CHECK(e.status() == VMM_ERROR_CONFIG);
    return {e.key(), e.what()};
  }
  FAIL("no ConfigError thrown");
  return {};
}

Caught parse_error(const std::string& conf) {
  INFO("conf: " << conf);
  return config_error([&] { (void)Config::parse(conf); });
}

using vmm::test::contains;

// A bad value for `key`: the message names the key, quotes the value, and
// says what is accepted (`expected`), plus `reason` if given.
void check_bad_value(const std::string& key, const std::string& value, std::string_view expected,
                     std::string_view reason = {}) {
  INFO("key: " << key << ", value: \"" << value << "\"");
  const Caught c = parse_error(key + ":" + value);
  INFO("message: " << c.message);
  CHECK(c.key == key);
  CHECK(contains(c.message, "VMMALLOC_CONF: bad value \"" + value + "\" for " + key + ": "));
  CHECK(contains(c.message, "expected " + std::string(expected)));
  if (!reason.empty()) CHECK(contains(c.message, reason));
}

// Sets an environment variable for the lifetime of the guard, then restores
// what was there.
class EnvGuard {
 public:
  EnvGuard(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~EnvGuard() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

// key -> value of a to_string() output.
std::map<std::string, std::string> split_conf(const std::string& conf) {
  std::map<std::string, std::string> out;
  std::stringstream ss(conf);
  std::string segment;
  while (std::getline(ss, segment, ',')) {
    const auto colon = segment.find(':');
    REQUIRE(colon != std::string::npos);
    out[segment.substr(0, colon)] = segment.substr(colon + 1);
  }
  return out;
}

// A valid config with every option away from its default.
Config non_default_config() {
  Config c;
  c.chunk_sizes = {4 * MiB, 64 * MiB, 2 * GiB};
  c.pool_cache_limit = 3 * MiB + 5;
  c.memory_cap_bytes = 40 * GiB;
  c.va_reservation_size = 96 * GiB;
  c.va_reservation_factor = 2.5;
  c.log_level = LogLevel::debug;
  c.backend = BackendKind::host;
  c.host_device_memory = 80 * GiB;
  c.peer_access = PeerAccessMode::list;
  c.peer_access_devices = {1, 3};
  c.live_socket = false;
  c.live_socket_dir = "/run/vmm";
  c.snapshot_at_exit = "/tmp/exit-%p.json";
  c.snapshot_on_oom = "/tmp/oom.json";
  c.allocation_events = true;
  c.event_ring_size = 100;
  c.ipc_peer_mode = vmm::IpcPeerMode::list;
  c.ipc_peer_uid_list = {1000, 65534};
  c.ipc_timeout_ms = 1500;
  return c;
}

constexpr std::string_view kChunkExpected =
    "sizes like 2M+32M+512M (powers of two, multiples of 2 MiB, ascending)";

#ifdef VMMALLOC_SANITIZER_BUILD
constexpr std::size_t kDefaultReservation = 8 * GiB;
constexpr const char* kDefaultReservationText = "8G";
#else
constexpr std::size_t kDefaultReservation = 0;
constexpr const char* kDefaultReservationText = "0";
#endif

}  // namespace

// ------------------------------------------------------------- defaults

TEST_CASE("config: defaults", "[config]") {
  const Config c;
  std::vector<std::size_t> chunks;
  for (std::size_t s = 2 * MiB; s <= GiB; s *= 2) chunks.push_back(s);
  CHECK(c.chunk_sizes == chunks);
  CHECK(c.chunk_sizes.size() == 10);
  CHECK(Config::default_chunk_sizes() == chunks);
  CHECK(c.pool_cache_limit == GiB);
  CHECK(c.fenced_free_limit == GiB);
  CHECK(c.memory_cap_bytes == 0);
  CHECK(c.memory_cap_fraction == 0.0);
  CHECK(c.va_reservation_size == kDefaultReservation);
  CHECK(Config::default_va_reservation_size() == kDefaultReservation);
  CHECK(c.va_reservation_factor == 4.0);
  CHECK(c.log_level == LogLevel::warn);
  CHECK(c.backend == BackendKind::automatic);
  CHECK(c.host_device_memory == 16 * GiB);
  CHECK(c.peer_access == PeerAccessMode::none);
  CHECK(c.peer_access_devices.empty());
  CHECK_NOTHROW(c.validate());

  CHECK(c.to_string() ==
        std::string("chunk_sizes:2M+4M+8M+16M+32M+64M+128M+256M+512M+1G,pool_cache_limit:1G,"
                    "fenced_free_limit:1G,memory_cap:0,va_reservation_size:") +
            kDefaultReservationText +
            ",va_reservation_factor:4,log_level:warn,backend:auto,host_device_memory:16G"
            ",peer_access:none"
            ",live_socket:on,live_socket_dir:/tmp,snapshot_at_exit:,snapshot_on_oom:"
            ",allocation_events:off,event_ring_size:4096"
            ",print_stats:off,cudafree:order,ipc_peer_uids:same,ipc_timeout_ms:60000");
}

TEST_CASE("config: empty strings and empty segments give the defaults", "[config]") {
  for (const char* conf : {"", " ", ",", ",,", " , ,\t,\n", "\t \n"}) {
    INFO("conf: \"" << conf << "\"");
    CHECK(Config::parse(conf) == Config{});
  }
  CHECK(Config::parse(",,log_level:debug,,").log_level == LogLevel::debug);
}

TEST_CASE("config: the option table", "[config]") {
  const auto options = vmm::config_options();
  const std::vector<std::string> expected{
      "chunk_sizes",           "pool_cache_limit", "fenced_free_limit", "memory_cap",
      "va_reservation_size",
      "va_reservation_factor", "log_level",        "backend",    "host_device_memory",
      "peer_access",           "live_socket",      "live_socket_dir", "snapshot_at_exit",
      "snapshot_on_oom",       "allocation_events", "event_ring_size", "print_stats",
      "cudafree",              "ipc_peer_uids",    "ipc_timeout_ms"};
  REQUIRE(options.size() == expected.size());
  const auto printed = split_conf(Config{}.to_string());
  CHECK(printed.size() == options.size());
  for (std::size_t i = 0; i < options.size(); ++i) {
    const vmm::OptionInfo& o = options[i];
    INFO("option: " << o.name);
    CHECK(o.name == expected[i]);  // and in to_string()'s order
    REQUIRE(o.type != nullptr);
    REQUIRE(o.default_text != nullptr);
    REQUIRE(o.description != nullptr);
    CHECK(std::string(o.type).size() > 0);
    CHECK(std::string(o.description).size() > 20);
    // default_text is what to_string() prints for a default Config...
    CHECK(printed.at(o.name) == o.default_text);
    // ...and it reads back as the default.
    Config c = non_default_config();
    c.set(o.name, o.default_text);
    CHECK(split_conf(c.to_string()).at(o.name) == o.default_text);
  }
}

// ---------------------------------------------------------- chunk_sizes

TEST_CASE("config: chunk_sizes valid values", "[config]") {
  CHECK(Config::parse("chunk_sizes:2M+32M+512M").chunk_sizes ==
        std::vector<std::size_t>{2 * MiB, 32 * MiB, 512 * MiB});
  CHECK(Config::parse("chunk_sizes:4M").chunk_sizes == std::vector<std::size_t>{4 * MiB});
  CHECK(Config::parse("  chunk_sizes  :  2M + 32M\t+512M  ").chunk_sizes ==
        std::vector<std::size_t>{2 * MiB, 32 * MiB, 512 * MiB});
  // Suffix variants, any case, and plain bytes.
  CHECK(Config::parse("chunk_sizes:2097152+4MiB+8mb+16m+32768K+64mib+128MB+1g+2GiB+4gb+1T+2TiB+4tb")
            .chunk_sizes == std::vector<std::size_t>{2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB, 32 * MiB,
                                                     64 * MiB, 128 * MiB, GiB, 2 * GiB, 4 * GiB,
                                                     TiB, 2 * TiB, 4 * TiB});
  CHECK(Config::parse("chunk_sizes:2048KiB+4096kb+8192k+16777216B").chunk_sizes ==
        std::vector<std::size_t>{2 * MiB, 4 * MiB, 8 * MiB, 16 * MiB});

  // 24 classes, 2M to 16T, is the most allowed.
  std::string conf = "chunk_sizes:";
  std::vector<std::size_t> want;
  for (int i = 0; i < 24; ++i) {
    want.push_back((2 * MiB) << i);
    conf += (i ? "+" : "") + vmm::format_size(want.back());
  }
  CHECK(Config::parse(conf).chunk_sizes == want);
}

TEST_CASE("config: chunk_sizes bad values", "[config]") {
  // The exact text of the canonical example.
  const Caught c = parse_error("chunk_sizes:12Q");
  CHECK(c.key == "chunk_sizes");
  CHECK(c.message ==
        "VMMALLOC_CONF: bad value \"12Q\" for chunk_sizes: expected sizes like 2M+32M+512M "
        "(powers of two, multiples of 2 MiB, ascending)");

  check_bad_value("chunk_sizes", "", kChunkExpected);
  check_bad_value("chunk_sizes", "2M+12Q", kChunkExpected, "12Q is not a size");
  check_bad_value("chunk_sizes", "3M", kChunkExpected, "3M is not a power of two");
  check_bad_value("chunk_sizes", "2M+6M", kChunkExpected, "6M is not a power of two");
  check_bad_value("chunk_sizes", "1M", kChunkExpected, "1M is not a multiple of 2 MiB");
  check_bad_value("chunk_sizes", "4096", kChunkExpected, "4K is not a multiple of 2 MiB");
  check_bad_value("chunk_sizes", "0", kChunkExpected, "0 is not a power of two");
  check_bad_value("chunk_sizes", "8M+4M", kChunkExpected, "4M follows 8M (not ascending)");
  check_bad_value("chunk_sizes", "2M+2M", kChunkExpected, "2M follows 2M (not ascending)");
  check_bad_value("chunk_sizes", "2M++4M", kChunkExpected, "empty list item");
  check_bad_value("chunk_sizes", "2M+", kChunkExpected, "empty list item");
  check_bad_value("chunk_sizes", "+2M", kChunkExpected, "empty list item");
  check_bad_value("chunk_sizes", "-2M", kChunkExpected);
  check_bad_value("chunk_sizes", "2.5M", kChunkExpected);
  check_bad_value("chunk_sizes", "2 M", kChunkExpected);
  check_bad_value("chunk_sizes", "2M 4M", kChunkExpected);
  check_bad_value("chunk_sizes", "2P", kChunkExpected);
  check_bad_value("chunk_sizes", "99999999999T", kChunkExpected,
                  "99999999999T does not fit in 64 bits");
  check_bad_value("chunk_sizes", "2M+99999999999T", kChunkExpected,
                  "99999999999T does not fit in 64 bits");
  check_bad_value("chunk_sizes", "18446744073709551616", kChunkExpected, "does not fit in 64 bits");

  // 25 classes.
  std::string many;
  for (int i = 0; i < 25; ++i) many += (i ? "+" : "") + vmm::format_size((2 * MiB) << i);
  check_bad_value("chunk_sizes", many, kChunkExpected, "25 sizes given, at most 24 allowed");
}

// -------------------------------------------------------- single sizes

TEST_CASE("config: pool_cache_limit", "[config]") {
  CHECK(Config::parse("pool_cache_limit:0").pool_cache_limit == 0);
  CHECK(Config::parse("pool_cache_limit:512M").pool_cache_limit == 512 * MiB);
  CHECK(Config::parse("pool_cache_limit:2GiB").pool_cache_limit == 2 * GiB);
  CHECK(Config::parse("pool_cache_limit:123").pool_cache_limit == 123);
  CHECK(Config::parse("pool_cache_limit:7k").pool_cache_limit == 7 * KiB);
  CHECK(Config::parse("pool_cache_limit:1T").pool_cache_limit == TiB);
  const std::string_view expected = "a size like 512M or 1G (0: cache nothing)";
  for (const char* bad : {"", "abc", "-1", "1.5G", "1X", "1GiBs", "G", "0x10"}) {
    check_bad_value("pool_cache_limit", bad, expected);
  }
  check_bad_value("pool_cache_limit", "99999999999T", expected, "does not fit in 64 bits");
}

TEST_CASE("config: fenced_free_limit", "[config]") {
  CHECK(Config::parse("fenced_free_limit:0").fenced_free_limit == 0);
  CHECK(Config::parse("fenced_free_limit:256M").fenced_free_limit == 256 * MiB);
  CHECK(Config::parse("fenced_free_limit:4G").fenced_free_limit == 4 * GiB);
  const std::string_view expected = "a size like 256M or 1G (0: never wait)";
  for (const char* bad : {"", "abc", "-1", "0.5G", "off"}) {
    check_bad_value("fenced_free_limit", bad, expected);
  }
}

TEST_CASE("config: va_reservation_size", "[config]") {
  CHECK(Config::parse("va_reservation_size:0").va_reservation_size == 0);
  CHECK(Config::parse("va_reservation_size:2M").va_reservation_size == 2 * MiB);
  CHECK(Config::parse("va_reservation_size:64G").va_reservation_size == 64 * GiB);
  CHECK(Config::parse("va_reservation_size:1T").va_reservation_size == TiB);
  const std::string_view expected =
      "a multiple of 2 MiB like 64G, or 0 for va_reservation_factor x device memory";
  check_bad_value("va_reservation_size", "3M", expected, "3M is not a multiple of 2 MiB");
  check_bad_value("va_reservation_size", "1K", expected, "1K is not a multiple of 2 MiB");
  check_bad_value("va_reservation_size", "4097M", expected);
  for (const char* bad : {"", "auto", "-2M", "64 G", "1.5G"}) {
    check_bad_value("va_reservation_size", bad, expected);
  }
}

TEST_CASE("config: host_device_memory", "[config]") {
  CHECK(Config::parse("host_device_memory:2M").host_device_memory == 2 * MiB);
  CHECK(Config::parse("host_device_memory:80G").host_device_memory == 80 * GiB);
  CHECK(Config::parse("host_device_memory:3000000").host_device_memory == 3000000);
  CHECK(Config::parse("host_device_memory:1024T").host_device_memory == 1024 * TiB);
  const std::string_view expected = "a size from 2M to 1024T, like 16G";
  check_bad_value("host_device_memory", "1M", expected, "less than 2 MiB");
  check_bad_value("host_device_memory", "1025T", expected, "more than 1024T (1 PiB)");
  check_bad_value("host_device_memory", "0", expected, "less than 2 MiB");
  check_bad_value("host_device_memory", "2097151", expected, "less than 2 MiB");
  for (const char* bad : {"", "big", "-16G"}) check_bad_value("host_device_memory", bad, expected);
}

// ----------------------------------------------------------- memory_cap

TEST_CASE("config: memory_cap sizes and fractions", "[config]") {
  Config c = Config::parse("memory_cap:40G");
  CHECK(c.memory_cap_bytes == 40 * GiB);
  CHECK(c.memory_cap_fraction == 0.0);

  c = Config::parse("memory_cap:0.9");
  CHECK(c.memory_cap_bytes == 0);
  CHECK(c.memory_cap_fraction == 0.9);

  CHECK(Config::parse("memory_cap:1.0").memory_cap_fraction == 1.0);
  CHECK(Config::parse("memory_cap:1.").memory_cap_fraction == 1.0);
  CHECK(Config::parse("memory_cap:.5").memory_cap_fraction == 0.5);
  CHECK(Config::parse("memory_cap:5e-1").memory_cap_fraction == 0.5);
  CHECK(Config::parse("memory_cap:2M").memory_cap_bytes == 2 * MiB);
  CHECK(Config::parse("memory_cap:2097152").memory_cap_bytes == 2 * MiB);

  // Setting one form clears the other; 0 (or 0.0) clears both.
  c = Config::parse("memory_cap:40G,memory_cap:0.5");
  CHECK(c.memory_cap_bytes == 0);
  CHECK(c.memory_cap_fraction == 0.5);
  c = Config::parse("memory_cap:0.5,memory_cap:40G");
  CHECK(c.memory_cap_bytes == 40 * GiB);
  CHECK(c.memory_cap_fraction == 0.0);
  for (const char* none : {"0", "0.0", "0K", "-0.0"}) {
    INFO(none);
    c = Config::parse("memory_cap:40G");
    c.set("memory_cap", none);
    CHECK(c.memory_cap_bytes == 0);
    CHECK(c.memory_cap_fraction == 0.0);
    CHECK(!std::signbit(c.memory_cap_fraction));
    CHECK(split_conf(c.to_string()).at("memory_cap") == "0");
  }
}

TEST_CASE("config: memory_cap bad values", "[config]") {
  const std::string_view expected =
      "a size like 40G (at least 2M), a fraction of device memory like 0.9 (0 < f <= 1), or 0 "
      "for no cap";
  // "1" is one byte, not the whole device: the message says how to write that.
  check_bad_value("memory_cap", "1", expected,
                  "1 is less than 2 MiB (a fraction needs a decimal point: 1.0 is all of the "
                  "device's memory)");
  check_bad_value("memory_cap", "1M", expected, "1M is less than 2 MiB");
  check_bad_value("memory_cap", "1.5", expected, "fraction 1.5 is not in (0, 1]");
  check_bad_value("memory_cap", "1.0000001", expected, "is not in (0, 1]");
  check_bad_value("memory_cap", "-0.5", expected, "fraction -0.5 is not in (0, 1]");
  check_bad_value("memory_cap", "99999999999T", expected, "99999999999T does not fit in 64 bits");
  for (const char* bad : {"", "0.9G", "40 G", "abc", "nan", "inf", "-inf", "90%", "0x1p-1"}) {
    check_bad_value("memory_cap", bad, expected);
  }
}

// ---------------------------------------------------- va_reservation_factor

TEST_CASE("config: va_reservation_factor", "[config]") {
  CHECK(Config::parse("va_reservation_factor:4").va_reservation_factor == 4.0);
  CHECK(Config::parse("va_reservation_factor:2.5").va_reservation_factor == 2.5);
  CHECK(Config::parse("va_reservation_factor:64").va_reservation_factor == 64.0);
  CHECK(Config::parse("va_reservation_factor:0.25").va_reservation_factor == 0.25);
  CHECK(Config::parse("va_reservation_factor:1e1").va_reservation_factor == 10.0);
  const std::string_view expected = "a number > 0 and <= 64, like 4 or 2.5";
  for (const char* bad :
       {"", "0", "0.0", "-1", "64.0001", "65", "1e300", "nan", "inf", "x", "4x", "4 5"}) {
    check_bad_value("va_reservation_factor", bad, expected);
  }
}

// ------------------------------------------------------ log_level, backend

TEST_CASE("config: log_level", "[config]") {
  CHECK(Config::parse("log_level:off").log_level == LogLevel::off);
  CHECK(Config::parse("log_level:error").log_level == LogLevel::error);
  CHECK(Config::parse("log_level:warn").log_level == LogLevel::warn);
  CHECK(Config::parse("log_level:info").log_level == LogLevel::info);
  CHECK(Config::parse("log_level:debug").log_level == LogLevel::debug);
  CHECK(Config::parse("log_level:DEBUG").log_level == LogLevel::debug);
  CHECK(Config::parse("log_level: Info ").log_level == LogLevel::info);
  const std::string_view expected = "one of off, error, warn, info, debug";
  for (const char* bad : {"", "verbose", "warning", "3", "debug2"}) {
    check_bad_value("log_level", bad, expected);
  }
}

TEST_CASE("config: backend", "[config]") {
  CHECK(Config::parse("backend:auto").backend == BackendKind::automatic);
  CHECK(Config::parse("backend:cuda").backend == BackendKind::cuda);
  CHECK(Config::parse("backend:host").backend == BackendKind::host);
  CHECK(Config::parse("backend:HOST").backend == BackendKind::host);
  const std::string_view expected = "one of auto, cuda, host";
  for (const char* bad : {"", "gpu", "automatic", "1"}) check_bad_value("backend", bad, expected);
}

// -------------------------------------------------------------- grammar

TEST_CASE("config: unknown keys list the valid keys", "[config]") {
  for (const char* conf :
       {"chunk_size:2M", "log_level:warn,nope:1", "LOG_LEVEL:warn", "memory_cap_bytes:1G", "foo"}) {
    INFO("conf: " << conf);
    const Caught c = parse_error(conf);
    CHECK(contains(c.message, "VMMALLOC_CONF: unknown option \"" + c.key + "\"; valid options: "));
    for (const vmm::OptionInfo& o : vmm::config_options()) CHECK(contains(c.message, o.name));
  }
  CHECK(parse_error("chunk_size:2M").key == "chunk_size");
  CHECK(parse_error("  nope  :1").key == "nope");
  CHECK(parse_error("foo").key == "foo");
  CHECK(parse_error(":5").key == "");
  CHECK(parse_error(":5").message.rfind("VMMALLOC_CONF: unknown option \"\"; valid options: "
                                        "chunk_sizes, pool_cache_limit, fenced_free_limit, memory_cap, ",
                                        0) == 0);

  Config c;
  const Caught s = config_error([&] { c.set("nope", "1"); });
  CHECK(s.key == "nope");
  CHECK(contains(s.message,
                 "valid options: chunk_sizes, pool_cache_limit, fenced_free_limit, memory_cap, "
                 "va_reservation_size, va_reservation_factor, log_level, backend, "
                 "host_device_memory, peer_access"));
}

TEST_CASE("config: a known key without a value", "[config]") {
  const Caught c = parse_error("log_level:debug,chunk_sizes");
  CHECK(c.key == "chunk_sizes");
  CHECK(
      contains(c.message, "bad value \"\" for chunk_sizes: no value (write chunk_sizes:<value>)"));
  CHECK(contains(c.message, std::string("expected ") + std::string(kChunkExpected)));
  // "key:" is an empty value.
  check_bad_value("pool_cache_limit", "", "a size like 512M or 1G");
}

TEST_CASE("config: several keys, whitespace, duplicates", "[config]") {
  const Config c = Config::parse(
      " chunk_sizes : 2M + 8M ,\tpool_cache_limit:256M ,memory_cap: 0.75 ,\n"
      "va_reservation_size:128G,va_reservation_factor:8,log_level:info,backend:host,"
      "host_device_memory:4G ");
  CHECK(c.chunk_sizes == std::vector<std::size_t>{2 * MiB, 8 * MiB});
  CHECK(c.pool_cache_limit == 256 * MiB);
  CHECK(c.memory_cap_fraction == 0.75);
  CHECK(c.va_reservation_size == 128 * GiB);
  CHECK(c.va_reservation_factor == 8.0);
  CHECK(c.log_level == LogLevel::info);
  CHECK(c.backend == BackendKind::host);
  CHECK(c.host_device_memory == 4 * GiB);

  // The last of a repeated key wins.
  CHECK(Config::parse("log_level:debug,log_level:error").log_level == LogLevel::error);
  CHECK(Config::parse("chunk_sizes:2M,chunk_sizes:4M+8M").chunk_sizes ==
        std::vector<std::size_t>{4 * MiB, 8 * MiB});

  // A value stops at the first ',' and runs past further ':'.
  check_bad_value("log_level", "warn:x", "one of off, error, warn, info, debug");
  // So a list written with ',' instead of '+' reads as an unknown key.
  const Caught e = parse_error("chunk_sizes:2M,4M");
  CHECK(e.key == "4M");
  CHECK(contains(e.message, "unknown option \"4M\""));
}

TEST_CASE("config: set from code", "[config]") {
  Config c;
  c.set("chunk_sizes", "2M+32M+512M");
  c.set(" memory_cap ", " 40G ");
  c.set("log_level", "debug");
  CHECK(c.chunk_sizes == std::vector<std::size_t>{2 * MiB, 32 * MiB, 512 * MiB});
  CHECK(c.memory_cap_bytes == 40 * GiB);
  CHECK(c.log_level == LogLevel::debug);
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("config: set leaves the config unchanged on error", "[config]") {
  const Config before = non_default_config();
  const std::vector<std::pair<const char*, const char*>> bad{{"chunk_sizes", "2M+3M"},
                                                             {"chunk_sizes", "12Q"},
                                                             {"chunk_sizes", "4M+2M"},
                                                             {"pool_cache_limit", "x"},
                                                             {"memory_cap", "1.5"},
                                                             {"memory_cap", "1"},
                                                             {"memory_cap", "abc"},
                                                             {"va_reservation_size", "3M"},
                                                             {"va_reservation_factor", "0"},
                                                             {"log_level", "loud"},
                                                             {"backend", "gpu"},
                                                             {"host_device_memory", "1M"},
                                                             {"peer_access", "0+0"},
                                                             {"peer_access", "some"},
                                                             {"live_socket", "maybe"},
                                                             {"event_ring_size", "8"},
                                                             {"ipc_peer_uids", "1000+1000"},
                                                             {"ipc_peer_uids", "nobody"},
                                                             {"ipc_timeout_ms", "0"},
                                                             {"no_such_key", "1"}};
  for (const auto& [key, value] : bad) {
    INFO(key << ":" << value);
    Config c = before;
    CHECK_THROWS_AS(c.set(key, value), ConfigError);
    CHECK(c == before);
    CHECK(c.to_string() == before.to_string());
  }
  // A fraction cap is not cleared by a rejected size either.
  Config c = Config::parse("memory_cap:0.5");
  CHECK_THROWS_AS(c.set("memory_cap", "1M"), ConfigError);
  CHECK(c.memory_cap_fraction == 0.5);
}

TEST_CASE("config: apply a string over a config", "[config]") {
  Config c = Config::parse("log_level:debug,memory_cap:0.5");
  c.apply("chunk_sizes:2M+4M, memory_cap:40G");
  CHECK(c.log_level == LogLevel::debug);  // not named: kept
  CHECK(c.chunk_sizes == std::vector<std::size_t>{2 * MiB, 4 * MiB});
  CHECK(c.memory_cap_bytes == 40 * GiB);
  CHECK(c.memory_cap_fraction == 0.0);
  c.apply("");
  CHECK(c.log_level == LogLevel::debug);

  // All or nothing: an error in a later pair undoes the earlier ones.
  const Config before = c;
  const Caught e = config_error([&] { c.apply("log_level:error,backend:host,chunk_sizes:12Q"); });
  CHECK(e.key == "chunk_sizes");
  CHECK(c == before);
  CHECK_THROWS_AS(c.apply("log_level:error,bogus:1"), ConfigError);
  CHECK(c == before);
}

TEST_CASE("config: parse(to_string()) round-trips", "[config]") {
  std::vector<Config> configs{Config{}, non_default_config()};
  for (double f : {0.1, 0.9, 1.0, 1.0 / 3.0, 0.123456789012345, 1e-5, 5e-324}) {
    Config c;
    c.memory_cap_fraction = f;
    c.va_reservation_factor = f * 64;
    configs.push_back(c);
  }
  Config odd;
  odd.chunk_sizes = {2 * MiB, (2 * MiB) << 23};
  odd.pool_cache_limit = std::numeric_limits<std::size_t>::max();
  odd.memory_cap_bytes = 3 * MiB + 1;
  odd.va_reservation_size = 6 * MiB;
  odd.host_device_memory = 2 * MiB + 1;
  odd.log_level = LogLevel::off;
  odd.backend = BackendKind::cuda;
  configs.push_back(odd);

  for (const Config& c : configs) {
    INFO(c.to_string());
    REQUIRE_NOTHROW(c.validate());
    const Config back = Config::parse(c.to_string());
    CHECK(back == c);
    CHECK(back.to_string() == c.to_string());
  }
  CHECK(split_conf(configs[2].to_string()).at("memory_cap") == "0.1");
  CHECK(split_conf(configs[4].to_string()).at("memory_cap") == "1.0");  // not one byte
  CHECK(split_conf(non_default_config().to_string()).at("chunk_sizes") == "4M+64M+2G");
  CHECK(split_conf(non_default_config().to_string()).at("pool_cache_limit") == "3145733");
}

TEST_CASE("config: validate checks fields set from code", "[config]") {
  struct Case {
    const char* what;
    void (*mutate)(Config&);
    const char* key;
    const char* text;
  };
  const Case cases[] = {
      {"no chunk classes", [](Config& c) { c.chunk_sizes.clear(); }, "chunk_sizes",
       "bad value \"\" for chunk_sizes: no chunk size given"},
      {"unsorted chunks",
       [](Config& c) {
         c.chunk_sizes = {8 * MiB, 2 * MiB};
       },
       "chunk_sizes", "bad value \"8M+2M\" for chunk_sizes: 2M follows 8M (not ascending)"},
      {"3 MiB chunk",
       [](Config& c) {
         c.chunk_sizes = {2 * MiB, 3 * MiB};
       },
       "chunk_sizes", "3M is not a power of two"},
      {"25 chunks",
       [](Config& c) {
         c.chunk_sizes.clear();
         for (int i = 0; i < 25; ++i) c.chunk_sizes.push_back((2 * MiB) << i);
       },
       "chunk_sizes", "25 sizes given, at most 24 allowed"},
      {"both caps",
       [](Config& c) {
         c.memory_cap_bytes = 40 * GiB;
         c.memory_cap_fraction = 0.5;
       },
       "memory_cap", "memory_cap_bytes and memory_cap_fraction are both set"},
      {"fraction over 1", [](Config& c) { c.memory_cap_fraction = 1.5; }, "memory_cap",
       "bad value \"1.5\" for memory_cap: fraction 1.5 is not in (0, 1]"},
      {"NaN fraction", [](Config& c) { c.memory_cap_fraction = std::nan(""); }, "memory_cap",
       "is not in (0, 1]"},
      {"tiny cap", [](Config& c) { c.memory_cap_bytes = 4096; }, "memory_cap",
       "4K is less than 2 MiB"},
      {"odd reservation", [](Config& c) { c.va_reservation_size = 3 * MiB; }, "va_reservation_size",
       "3M is not a multiple of 2 MiB"},
      {"zero factor", [](Config& c) { c.va_reservation_factor = 0; }, "va_reservation_factor",
       "bad value \"0\" for va_reservation_factor: expected a number > 0 and <= 64"},
      {"infinite factor",
       [](Config& c) { c.va_reservation_factor = std::numeric_limits<double>::infinity(); },
       "va_reservation_factor", "expected a number > 0 and <= 64"},
      {"bad log level", [](Config& c) { c.log_level = static_cast<LogLevel>(42); }, "log_level",
       "bad value \"42\" for log_level: not a log level"},
      {"bad backend", [](Config& c) { c.backend = static_cast<BackendKind>(9); }, "backend",
       "bad value \"9\" for backend: not a backend"},
      {"small host device", [](Config& c) { c.host_device_memory = MiB; }, "host_device_memory",
       "bad value \"1M\" for host_device_memory: less than 2 MiB"},
  };
  for (const Case& k : cases) {
    INFO(k.what);
    Config c;
    k.mutate(c);
    const Caught e = config_error([&] { c.validate(); });
    INFO(e.message);
    CHECK(e.key == k.key);
    CHECK(contains(e.message, k.text));
  }
}

TEST_CASE("config: from_environment reads VMMALLOC_CONF", "[config]") {
  {
    EnvGuard env("VMMALLOC_CONF", nullptr);
    CHECK(Config::from_environment() == Config{});
  }
  {
    EnvGuard env("VMMALLOC_CONF", "");
    CHECK(Config::from_environment() == Config{});
  }
  {
    EnvGuard env("VMMALLOC_CONF", "log_level:debug, chunk_sizes:2M+4M, memory_cap:0.5");
    const Config c = Config::from_environment();
    CHECK(c.log_level == LogLevel::debug);
    CHECK(c.chunk_sizes == std::vector<std::size_t>{2 * MiB, 4 * MiB});
    CHECK(c.memory_cap_fraction == 0.5);
  }
  {
    EnvGuard env("VMMALLOC_CONF", "log_level:debug,chunk_sizes:12Q");
    const Caught e = config_error([] { (void)Config::from_environment(); });
    CHECK(e.key == "chunk_sizes");
    CHECK(contains(e.message, "bad value \"12Q\""));
  }
  {
    EnvGuard env("VMMALLOC_CONF", "colour:blue");
    CHECK(config_error([] { (void)Config::from_environment(); }).key == "colour");
  }
}

// ------------------------------------------------------------ docs sync

TEST_CASE("config: docs/configuration.md documents every option", "[config][docs]") {
#ifdef VMM_SOURCE_DIR
  const std::string path = std::string(VMM_SOURCE_DIR) + "/docs/configuration.md";
  std::ifstream in(path);
  INFO("reading " << path);
  REQUIRE(in.good());
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  for (const vmm::OptionInfo& o : vmm::config_options()) {
    INFO("option " << o.name);
    CHECK(contains(doc, "`" + std::string(o.name) + "`"));
  }
  CHECK(contains(doc, "VMMALLOC_CONF"));
  CHECK(contains(doc, "vmm_configure"));
#endif
}

// ------------------------------------------------------------- units

TEST_CASE("units: parse_size", "[units]") {
  using vmm::parse_size;
  CHECK(parse_size("0") == 0u);
  CHECK(parse_size("4096") == 4096u);
  CHECK(parse_size("4096B") == 4096u);
  CHECK(parse_size("4096b") == 4096u);
  for (const char* s : {"3K", "3k", "3KB", "3kb", "3KiB", "3kib", "3Kib", "3KIB"}) {
    INFO(s);
    CHECK(parse_size(s) == 3 * KiB);
  }
  for (const char* s : {"3M", "3m", "3MB", "3MiB", "3mib"}) CHECK(parse_size(s) == 3 * MiB);
  for (const char* s : {"3G", "3g", "3GB", "3GiB", "3gib"}) CHECK(parse_size(s) == 3 * GiB);
  for (const char* s : {"3T", "3t", "3TB", "3TiB", "3tib"}) CHECK(parse_size(s) == 3 * TiB);
  CHECK(parse_size("007M") == 7 * MiB);

  bool overflowed = true;
  CHECK(parse_size("18446744073709551615", &overflowed) == std::numeric_limits<std::size_t>::max());
  CHECK(!overflowed);
  CHECK(parse_size("17179869183G") == std::size_t{17179869183} << 30);
  for (const char* s : {"18446744073709551616", "17179869184G", "16777216T", "99999999999T",
                        "99999999999999999999999999999"}) {
    INFO(s);
    overflowed = false;
    CHECK(!parse_size(s, &overflowed));
    CHECK(overflowed);
  }
  for (const char* s : {"", "M", " 2M", "2M ", "2 M", "2Mi", "2MiBB", "2BB", "2iB", "+2M", "-2",
                        "0x10", "1.5G", "2P", "2E", "1e3", "２M"}) {
    INFO("\"" << s << "\"");
    overflowed = true;
    CHECK(!parse_size(s, &overflowed));
    CHECK(!overflowed);
  }
  CHECK(!parse_size(std::string_view("2M\0", 3)));
}

TEST_CASE("units: format_size is parse_size's inverse", "[units]") {
  using vmm::format_size;
  CHECK(format_size(0) == "0");
  CHECK(format_size(3) == "3");
  CHECK(format_size(1024) == "1K");
  CHECK(format_size(2 * MiB) == "2M");
  CHECK(format_size(1536 * MiB) == "1536M");
  CHECK(format_size(GiB) == "1G");
  CHECK(format_size(16 * TiB) == "16T");
  CHECK(format_size(3 * MiB + 5) == "3145733");
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1023}, KiB + 1, 3 * GiB,
                        5 * TiB, std::numeric_limits<std::size_t>::max(),
                        std::numeric_limits<std::size_t>::max() - TiB + 1}) {
    CHECK(vmm::parse_size(format_size(n)) == n);
  }
}

TEST_CASE("units: format_bytes", "[units]") {
  using vmm::format_bytes;
  CHECK(format_bytes(0) == "0 B");
  CHECK(format_bytes(300) == "300 B");
  CHECK(format_bytes(1023) == "1023 B");
  CHECK(format_bytes(1024) == "1 KiB");
  CHECK(format_bytes(1536) == "1.50 KiB");
  CHECK(format_bytes(2 * MiB) == "2 MiB");
  CHECK(format_bytes(512 * MiB) == "512 MiB");
  CHECK(format_bytes(GiB + GiB / 2) == "1.50 GiB");
  CHECK(format_bytes(GiB + 1) == "1.00 GiB");
  CHECK(format_bytes(GiB - 1) == "1.00 GiB");  // not "1024.00 MiB"
  CHECK(format_bytes(GiB - 100 * MiB) == "924 MiB");
  CHECK(format_bytes(5 * TiB) == "5 TiB");
  CHECK(format_bytes(TiB << 10) == "1 PiB");
  CHECK(format_bytes(std::numeric_limits<std::size_t>::max()) == "16.00 EiB");
}

// --------------------------------------------------------------- log

namespace {

// What f writes to stderr (fd 2).
template <typename F>
std::string capture_stderr(F&& f) {
  std::fflush(stderr);
  std::FILE* tmp = std::tmpfile();
  REQUIRE(tmp != nullptr);
  const int saved = ::dup(STDERR_FILENO);
  REQUIRE(saved >= 0);
  ::dup2(::fileno(tmp), STDERR_FILENO);
  f();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::rewind(tmp);
  std::string out;
  char buf[512];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, tmp)) > 0) out.append(buf, n);
  std::fclose(tmp);
  return out;
}

class LogLevelGuard {
 public:
  LogLevelGuard() : saved_(vmm::log_level()) {}
  ~LogLevelGuard() { vmm::set_log_level(saved_); }
  LogLevelGuard(const LogLevelGuard&) = delete;
  LogLevelGuard& operator=(const LogLevelGuard&) = delete;

 private:
  LogLevel saved_;
};

}  // namespace

TEST_CASE("log: format and filtering", "[log]") {
  LogLevelGuard guard;
  const std::string pid = std::to_string(::getpid());

  vmm::set_log_level(LogLevel::warn);
  CHECK(vmm::log_level() == LogLevel::warn);
  CHECK(vmm::log_enabled(LogLevel::error));
  CHECK(vmm::log_enabled(LogLevel::warn));
  CHECK(!vmm::log_enabled(LogLevel::info));
  CHECK(!vmm::log_enabled(LogLevel::off));

  CHECK(capture_stderr([] { vmm::log(LogLevel::warn, "mapped %s in %d calls", "2 MiB", 3); }) ==
        "vmmalloc[" + pid + "] warn: mapped 2 MiB in 3 calls\n");
  CHECK(capture_stderr([] { vmm::log(LogLevel::error, "boom"); }) ==
        "vmmalloc[" + pid + "] error: boom\n");
  CHECK(capture_stderr([] { vmm::log(LogLevel::info, "quiet"); }).empty());
  CHECK(capture_stderr([] { vmm::log(LogLevel::debug, "quiet"); }).empty());
  CHECK(capture_stderr([] { vmm::log(LogLevel::off, "never"); }).empty());

  vmm::set_log_level(LogLevel::debug);
  CHECK(capture_stderr([] { vmm::log(LogLevel::debug, "x=%zu", std::size_t{7}); }) ==
        "vmmalloc[" + pid + "] debug: x=7\n");
  CHECK(capture_stderr([] { vmm::log(LogLevel::off, "never"); }).empty());

  vmm::set_log_level(LogLevel::off);
  CHECK(capture_stderr([] { vmm::log(LogLevel::error, "silenced"); }).empty());

  CHECK(std::string(vmm::log_level_name(LogLevel::info)) == "info");
  CHECK(std::string(vmm::log_level_name(static_cast<LogLevel>(17))) == "?");
}

TEST_CASE("log: long messages are truncated to one line; errno is kept", "[log]") {
  LogLevelGuard guard;
  vmm::set_log_level(LogLevel::warn);
  const std::string big(10000, 'x');
  errno = ERANGE;
  const std::string out = capture_stderr([&] { vmm::log(LogLevel::warn, "%s", big.c_str()); });
  CHECK(errno == ERANGE);
  CHECK(out.size() <= 4096);
  CHECK(out.size() > 4000);
  CHECK(out.substr(out.size() - 4) == "...\n");
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);
}
