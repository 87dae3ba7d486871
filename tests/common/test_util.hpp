// Small helpers shared by the host test files.
#pragma once

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

}  // namespace vmm::test
