// Small helpers shared by the host test files.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>

#include "tests/common/catch.hpp"

namespace vmm::test {

// Runs `f`, which must throw an E; returns the exception for inspection.
template <class E, class F>
E expect_throw(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  FAIL("expected exception not thrown");
  throw;  // unreachable
}

inline bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// How much longer timed GPU tests may take: VMM_TEST_TIME_SCALE, an integer
// from 1 to 100 (scripts/gpu_suite.sh sets it under compute-sanitizer);
// 1 when unset or out of range.
inline unsigned time_scale() {
  const char* text = std::getenv("VMM_TEST_TIME_SCALE");
  const long scale = text != nullptr ? std::strtol(text, nullptr, 10) : 1;
  return scale >= 1 && scale <= 100 ? static_cast<unsigned>(scale) : 1;
}

}  // namespace vmm::test
