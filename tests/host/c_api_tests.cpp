// The C ABI over the process-wide allocator, forced onto the host backend:
// every call returns a status, never throws, and vmm_last_error() explains.
#include <cstring>
#include <string>

#include "tests/common/catch.hpp"
#include "vmmalloc/vmmalloc.h"

namespace {

std::string last_error() { return vmm_last_error(); }

// The process-wide state can be configured once, before first use.
void configure_once() {
  static const vmm_status status = vmm_configure("backend:host,va_reservation_size:8G");
  REQUIRE(status == VMM_SUCCESS);
}

}  // namespace

TEST_CASE("C ABI: a bad configuration names the key and changes nothing", "[c_api]") {
  CHECK(vmm_configure("chunk_sizes:3M") == VMM_ERROR_CONFIG);
  CHECK(last_error().find("chunk_sizes") != std::string::npos);
  CHECK(vmm_configure("no_such_key:1") == VMM_ERROR_CONFIG);
  CHECK(last_error().find("no_such_key") != std::string::npos);
  CHECK(vmm_configure(nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(std::strcmp(vmm_status_name(VMM_ERROR_CONFIG), "VMM_ERROR_CONFIG") == 0);
}

TEST_CASE("C ABI: workspace life cycle", "[c_api]") {
  configure_once();
  const char* backend = nullptr;
  REQUIRE(vmm_backend_name(0, &backend) == VMM_SUCCESS);
  CHECK(std::string(backend) == "host");

  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(64u << 20, 0, &ws) == VMM_SUCCESS);
  REQUIRE(ws != nullptr);
  void* base = nullptr;
  REQUIRE(vmm_workspace_data(ws, &base) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 5u << 20) == VMM_SUCCESS);
  std::memset(base, 0x7e, 5u << 20);  // host backend: plain host memory
  REQUIRE(vmm_workspace_grow(ws, 40u << 20) == VMM_SUCCESS);
  void* again = nullptr;
  vmm_workspace_data(ws, &again);
  CHECK(again == base);
  CHECK(static_cast<unsigned char*>(base)[(5u << 20) - 1] == 0x7e);
  std::size_t size = 0, capacity = 0, mapped = 0;
  vmm_workspace_size(ws, &size);
  vmm_workspace_capacity(ws, &capacity);
  vmm_workspace_mapped_bytes(ws, &mapped);
  CHECK(size == (40u << 20));
  CHECK(capacity == (64u << 20));
  CHECK(mapped == (40u << 20));

  CHECK(vmm_workspace_grow(ws, (64u << 20) + 1) == VMM_ERROR_INVALID_VALUE);
  CHECK(last_error().find("capacity") != std::string::npos);
  vmm_workspace_size(ws, &size);
  CHECK(size == (40u << 20));

  REQUIRE(vmm_workspace_shrink(ws, 1u << 20, nullptr) == VMM_SUCCESS);
  vmm_workspace_size(ws, &size);
  CHECK(size == (1u << 20));
  REQUIRE(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);
  CHECK(vmm_workspace_destroy(nullptr, nullptr) == VMM_SUCCESS);
}

TEST_CASE("C ABI: bad arguments are errors, not crashes", "[c_api]") {
  configure_once();
  vmm_workspace* ws = nullptr;
  CHECK(vmm_workspace_create(0, 0, &ws) == VMM_ERROR_INVALID_VALUE);
  CHECK(ws == nullptr);
  CHECK(vmm_workspace_create(1u << 20, 7, &ws) == VMM_ERROR_INVALID_VALUE);
  CHECK(last_error().find("7") != std::string::npos);
  CHECK(vmm_workspace_create(1u << 20, 0, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_grow(nullptr, 1) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_shrink(nullptr, 1, nullptr) == VMM_ERROR_INVALID_VALUE);
  void* p = nullptr;
  CHECK(vmm_workspace_data(nullptr, &p) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_configure("backend:host") == VMM_ERROR_INVALID_VALUE);  // already in use
  CHECK(last_error().find("already in use") != std::string::npos);
}
