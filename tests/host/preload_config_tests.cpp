// The LD_PRELOAD interposer's options of VMMALLOC_CONF (print_stats,
// cudafree): parsing, printing, round trip and error messages. The
// interposer reads them with Config::from_environment(), like the library.
#include <string>

#include "tests/common/catch.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

using vmm::Config;
using vmm::ConfigError;
using vmm::CudaFreeMode;

namespace {

std::string config_error(const std::string& conf) {
  try {
    (void)Config::parse(conf);
  } catch (const ConfigError& e) {
    return std::string(e.key()) + " | " + e.what();
  }
  return "no error";
}

}  // namespace

TEST_CASE("config: interposer options default to off and order", "[config][preload]") {
  const Config c;
  CHECK_FALSE(c.print_stats);
  CHECK(c.cudafree == CudaFreeMode::order);
  const std::string text = c.to_string();
  CHECK(text.find(",print_stats:off") != std::string::npos);
  CHECK(text.find(",cudafree:order") != std::string::npos);
}

TEST_CASE("config: print_stats accepts on/off, true/false, 1/0 in any case", "[config][preload]") {
  for (const char* on : {"on", "ON", "true", "True", "1", " on "}) {
    INFO(on);
    CHECK(Config::parse(std::string("print_stats:") + on).print_stats);
  }
  for (const char* off : {"off", "false", "0", "OFF"}) {
    INFO(off);
    CHECK_FALSE(Config::parse(std::string("print_stats:") + off).print_stats);
  }
}

TEST_CASE("config: cudafree accepts fence, sync and order in any case", "[config][preload]") {
  CHECK(Config::parse("cudafree:sync").cudafree == CudaFreeMode::sync);
  CHECK(Config::parse("cudafree:SYNC").cudafree == CudaFreeMode::sync);
  CHECK(Config::parse("cudafree:sync,cudafree:fence").cudafree == CudaFreeMode::fence);
  CHECK(Config::parse("cudafree:order").cudafree == CudaFreeMode::order);
  CHECK(Config::parse("cudafree: Order ").cudafree == CudaFreeMode::order);
  CHECK(Config::parse(" cudafree : Fence ").cudafree == CudaFreeMode::fence);
}

TEST_CASE("config: cudafree_mode_name names each mode as VMMALLOC_CONF writes it",
          "[config][preload]") {
  for (CudaFreeMode mode : {CudaFreeMode::fence, CudaFreeMode::sync, CudaFreeMode::order}) {
    const std::string name = cudafree_mode_name(mode);
    INFO(name);
    CHECK(Config::parse("cudafree:" + name).cudafree == mode);
  }
  CHECK(std::string(cudafree_mode_name(static_cast<CudaFreeMode>(9))) == "?");
}

TEST_CASE("config: interposer options round-trip through to_string", "[config][preload]") {
  Config c;
  c.print_stats = true;
  c.cudafree = CudaFreeMode::sync;
  const Config back = Config::parse(c.to_string());
  CHECK(back == c);
  CHECK(back.print_stats);
  CHECK(back.cudafree == CudaFreeMode::sync);
  c.cudafree = CudaFreeMode::order;
  CHECK(Config::parse(c.to_string()).cudafree == CudaFreeMode::order);
}

TEST_CASE("config: bad interposer option values name the key and the accepted values",
          "[config][preload]") {
  CHECK(config_error("cudafree:later") ==
        "cudafree | VMMALLOC_CONF: bad value \"later\" for cudafree: expected one of fence, "
        "sync, order");
  CHECK(config_error("print_stats:yes") ==
        "print_stats | VMMALLOC_CONF: bad value \"yes\" for print_stats: expected on or off");
  CHECK(config_error("cudafree") ==
        "cudafree | VMMALLOC_CONF: bad value \"\" for cudafree: no value (write cudafree:<value>); "
        "expected one of fence, sync, order");
  // A bad value leaves the rest of the string unapplied.
  Config c;
  CHECK_THROWS_AS(c.apply("print_stats:on,cudafree:maybe"), ConfigError);
  CHECK_FALSE(c.print_stats);
  // validate() rejects values set from code that no text could give.
  c.cudafree = static_cast<CudaFreeMode>(7);
  CHECK_THROWS_AS(c.validate(), ConfigError);
}
