// Test main shared by the host and GPU suites.
//
// The GPU suite is built with VMM_TEST_REQUIRES_GPU: when no GPU is usable it
// prints why and exits with kSkipReturnCode, which CTest (SKIP_RETURN_CODE)
// reports as skipped - never passed, never failed. Listing test names (done
// by catch_discover_tests at build time) always works, GPU or not.
#if !__has_include(<catch2/catch_all.hpp>)
#define CATCH_CONFIG_RUNNER  // Catch2 2.x: we provide main()
#endif
#include <cstdio>
#include <cstring>

#include "tests/common/catch.hpp"
#include "tests/common/test_device.hpp"

int main(int argc, char** argv) {
#ifdef VMM_TEST_REQUIRES_GPU
  bool listing = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--list", 6) == 0) listing = true;
  }
  if (!listing) {
    std::string why;
    if (!vmm::test::gpu_available(&why)) {
      std::printf("SKIPPED: no usable GPU (%s)\n", why.c_str());
      return vmm::test::kSkipReturnCode;
    }
  }
#endif
  return Catch::Session().run(argc, argv);
}
