// Config (VMMALLOC_CONF), option by option: the defaults, the option table,
// and the valid and bad values of each option (chunk_sizes, the single
// sizes, memory_cap, va_reservation_factor, log_level, backend).
//
// Error messages are part of the interface (users read them to fix their
// setting), so the tests check their text: the key, the quoted value and the
// accepted forms (config_test_util.hpp).
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/host/config_test_util.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

using vmm::BackendKind;
using vmm::Config;
using vmm::GiB;
using vmm::KiB;
using vmm::LogLevel;
using vmm::MiB;
using vmm::PeerAccessMode;
using vmm::TiB;
using vmm::test::Caught;
using vmm::test::check_bad_value;
using vmm::test::kChunkExpected;
using vmm::test::non_default_config;
using vmm::test::parse_error;
using vmm::test::split_conf;

namespace {

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
