// Config (VMMALLOC_CONF) as a whole: the grammar (unknown keys, missing
// values, several keys, whitespace, duplicates), setting options from code,
// applying a string over a config, the parse(to_string()) round trip,
// validate(), from_environment() and the sync with docs/configuration.md.
// The option-by-option values are in config_values_tests.cpp.
//
// Error messages are part of the interface, so the tests check their text.
// The doc-sync case needs VMM_SOURCE_DIR (a string literal, the source root)
// and checks nothing without it.
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/host/config_test_util.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

using vmm::BackendKind;
using vmm::Config;
using vmm::ConfigError;
using vmm::GiB;
using vmm::LogLevel;
using vmm::MiB;
using vmm::test::Caught;
using vmm::test::check_bad_value;
using vmm::test::config_error;
using vmm::test::contains;
using vmm::test::kChunkExpected;
using vmm::test::non_default_config;
using vmm::test::parse_error;
using vmm::test::split_conf;

namespace {

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

}  // namespace

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
