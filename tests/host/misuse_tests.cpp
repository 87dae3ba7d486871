// Misuse cases of docs/reliability.md not covered elsewhere: sizes that are
// negative numbers converted to size_t (what a C caller or a Python binding
// passing -1 produces), SIZE_MAX, zero, device indices that do not exist,
// running out of the (simulated) device's memory for real, and a bad value
// for every option of the configuration table. Each must give
// a clear error - the status, and a message naming the bad value - and change
// nothing: no block handed out, no counter moved, the allocator still serving.
//
// The C ABI cases run over the process-wide allocator forced onto the host
// backend (as c_api_tests.cpp; CTest runs each case in its own process).
#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_util.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

using vmm::GiB;
using vmm::MiB;
using vmm::test::contains;

namespace {

void use_host_backend() {
  // The same settings as c_api_tests.cpp: in one process the first wins.
  (void)vmm_configure("backend:host,va_reservation_size:8G");
  const char* backend = nullptr;
  REQUIRE(vmm_backend_name(0, &backend) == VMM_SUCCESS);
  REQUIRE(std::string(backend) == "host");
}

vmm_allocator_stats stats_of_device0() {
  vmm_allocator_stats st{};
  REQUIRE(vmm_get_allocator_stats(0, &st) == VMM_SUCCESS);
  return st;
}

// What a caller gets for a negative size: the two's complement as size_t.
std::size_t negative(long long n) { return static_cast<std::size_t>(n); }

}  // namespace

TEST_CASE("misuse: negative and SIZE_MAX sizes are invalid values that change nothing",
          "[misuse][c_api]") {
  use_host_backend();
  const vmm_allocator_stats before = stats_of_device0();
  for (std::size_t bytes : {negative(-1), negative(-4096), negative(-(1LL << 20)),
                            negative(LLONG_MIN), SIZE_MAX, std::size_t{1} << 63}) {
    INFO("size " << bytes);
    void* p = reinterpret_cast<void*>(1);
    CHECK(vmm_malloc(&p, bytes, 0, nullptr) == VMM_ERROR_INVALID_VALUE);
    CHECK(p == nullptr);
    CHECK(contains(vmm_last_error(), std::to_string(bytes)));  // names the value

    vmm_workspace* ws = reinterpret_cast<vmm_workspace*>(1);
    CHECK(vmm_workspace_create(bytes, 0, &ws) == VMM_ERROR_INVALID_VALUE);
    CHECK(ws == nullptr);
    CHECK(contains(vmm_last_error(), std::to_string(bytes)));
  }
  const vmm_allocator_stats after = stats_of_device0();
  CHECK(after.allocations == before.allocations);
  CHECK(after.ooms == before.ooms);
  CHECK(after.chunk_creates == before.chunk_creates);
  CHECK(after.reserved_bytes == before.reserved_bytes);

  // A workspace asked to grow to a negative size: past its capacity.
  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(64 * MiB, 0, &ws) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 6 * MiB) == VMM_SUCCESS);
  CHECK(vmm_workspace_grow(ws, negative(-1)) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "capacity"));
  std::size_t size = 0;
  vmm_workspace_size(ws, &size);
  CHECK(size == 6 * MiB);
  // Shrinking "to -1" is shrinking to more than the size: a no-op.
  CHECK(vmm_workspace_shrink(ws, negative(-1), nullptr) == VMM_SUCCESS);
  vmm_workspace_size(ws, &size);
  CHECK(size == 6 * MiB);
  REQUIRE(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);

  // Still serving.
  void* p = nullptr;
  REQUIRE(vmm_malloc(&p, 3 * MiB, 0, nullptr) == VMM_SUCCESS);
  std::memset(p, 1, 3 * MiB);
  CHECK(vmm_free(p, nullptr) == VMM_SUCCESS);
}

TEST_CASE("misuse: zero sizes", "[misuse][c_api]") {
  use_host_backend();
  const vmm_allocator_stats before = stats_of_device0();
  void* p = reinterpret_cast<void*>(1);
  CHECK(vmm_malloc(&p, 0, 0, nullptr) == VMM_SUCCESS);  // like malloc(0): NULL, no block
  CHECK(p == nullptr);
  CHECK(vmm_free(nullptr, nullptr) == VMM_SUCCESS);
  vmm_workspace* ws = reinterpret_cast<vmm_workspace*>(1);
  CHECK(vmm_workspace_create(0, 0, &ws) == VMM_ERROR_INVALID_VALUE);
  CHECK(ws == nullptr);
  CHECK(contains(vmm_last_error(), "capacity must be at least 1 byte"));
  REQUIRE(vmm_workspace_create(8 * MiB, 0, &ws) == VMM_SUCCESS);
  CHECK(vmm_workspace_grow(ws, 0) == VMM_SUCCESS);  // not larger: a no-op
  std::size_t mapped = 1;
  vmm_workspace_mapped_bytes(ws, &mapped);
  CHECK(mapped == 0);
  REQUIRE(vmm_workspace_grow(ws, 4 * MiB) == VMM_SUCCESS);
  CHECK(vmm_workspace_shrink(ws, 0, nullptr) == VMM_SUCCESS);  // all of it, after the stream
  std::size_t size = 1;
  vmm_workspace_size(ws, &size);
  CHECK(size == 0);
  CHECK(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);
  const vmm_allocator_stats after = stats_of_device0();
  CHECK(after.allocations == before.allocations);
  CHECK(after.active_blocks == before.active_blocks);
}

TEST_CASE("misuse: a device that does not exist is an invalid value naming it", "[misuse][c_api]") {
  use_host_backend();
  const vmm_allocator_stats before = stats_of_device0();
  for (int device : {1, 7, INT_MAX, -2, -100, INT_MIN}) {
    INFO("device " << device);
    const std::string name = std::to_string(device);
    void* p = reinterpret_cast<void*>(1);
    CHECK(vmm_malloc(&p, 1 * MiB, device, nullptr) == VMM_ERROR_INVALID_VALUE);
    CHECK(p == nullptr);
    CHECK(contains(vmm_last_error(), "device " + name + " does not exist"));
    vmm_workspace* ws = reinterpret_cast<vmm_workspace*>(1);
    CHECK(vmm_workspace_create(8 * MiB, device, &ws) == VMM_ERROR_INVALID_VALUE);
    CHECK(ws == nullptr);
    CHECK(contains(vmm_last_error(), "device " + name));
    const char* backend = nullptr;
    CHECK(vmm_backend_name(device, &backend) == VMM_ERROR_INVALID_VALUE);
    CHECK(vmm_empty_cache(device, nullptr) == VMM_ERROR_INVALID_VALUE);
    vmm_allocator_stats st{};
    CHECK(vmm_get_allocator_stats(device, &st) == VMM_ERROR_INVALID_VALUE);
    CHECK_THROWS_AS(vmm::Allocator::instance(device), vmm::InvalidArgumentError);
    CHECK_THROWS_AS(vmm::Workspace(8 * MiB, device), vmm::InvalidArgumentError);
  }
  // The valid values are said: the host backend has device 0 only.
  void* p = nullptr;
  CHECK(vmm_malloc(&p, 1 * MiB, 3, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "1 device (0)"));
  CHECK(vmm_malloc(&p, 1 * MiB, -2, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "-1 for the current device"));
  // -1 is the current device (0 on the host backend).
  REQUIRE(vmm_malloc(&p, 1 * MiB, -1, nullptr) == VMM_SUCCESS);
  CHECK(vmm_free(p, nullptr) == VMM_SUCCESS);
  const vmm_allocator_stats after = stats_of_device0();
  CHECK(after.allocations == before.allocations + 1);
  CHECK(after.active_blocks == before.active_blocks);
}

TEST_CASE("misuse: the device's memory runs out for real: clean errors, then recovery",
          "[misuse][oom]") {
  // A host device of 64 MiB: cuMemCreate's out-of-memory comes from the
  // backend itself, not from the memory cap or an injected fault.
  vmm::HostBackend::Options options;
  options.device_memory = 64 * MiB;
  auto context = std::make_unique<vmm::DeviceContext>(
      std::make_unique<vmm::HostBackend>(options), vmm::test::test_config());
  {
    vmm::Allocator a(*context);
    vmm::Workspace ws(*context, 256 * MiB);
    void* big = a.allocate(40 * MiB, nullptr);
    std::memset(big, 0x21, 40 * MiB);
    std::string message;
    try {
      a.allocate(40 * MiB, nullptr);
      FAIL("an allocation beyond the device's memory succeeded");
    } catch (const vmm::OutOfMemoryError& e) {
      message = e.what();
    }
    INFO(message);
    CHECK(contains(message, "CUDA out of memory. Tried to allocate 40.00 MiB"));
    CHECK(contains(message, "total capacity of 64.00 MiB"));
    try {
      ws.grow_to(48 * MiB);
      FAIL("a grow beyond the device's memory succeeded");
    } catch (const vmm::OutOfMemoryError& e) {
      message = e.what();
    }
    CHECK(ws.size() == 0);
    CHECK(ws.mapped_bytes() == 0);
    CHECK(a.stats().ooms == 1);
    vmm::test::check_accounting(*context, a.stats().mapped_bytes);
    // Nothing was lost: the first block is intact, and freeing makes room.
    const auto* bytes = static_cast<const unsigned char*>(big);
    CHECK((bytes[0] == 0x21 && bytes[40 * MiB - 1] == 0x21));
    a.deallocate(big);
    a.empty_cache();
    context->reclaimer().drain();
    context->pool().trim(0);
    ws.grow_to(48 * MiB);
    std::memset(ws.data(), 0x22, 48 * MiB);
    ws.release(nullptr);
  }
  context->reclaimer().drain();
  CHECK(context->address_space().stats().allocated_bytes == 0);
  CHECK(context->pool().stats().acquired_bytes == 0);
}

TEST_CASE("misuse: every option rejects a bad value, naming the key, changing nothing",
          "[misuse][config]") {
  // Values no option accepts as such; a free-text option ("path") may accept
  // some of them, every other option must reject at least one.
  const char* const bad_values[] = {"", "@@", "-1", "2.5x", "99999999999999999999999T",
                                    "relative/dir", "on off", "0x10"};
  for (const vmm::OptionInfo& option : vmm::config_options()) {
    INFO("option " << option.name << " (" << option.type << ")");
    int rejected = 0;
    for (const char* value : bad_values) {
      vmm::Config c;
      const vmm::Config before = c;
      try {
        c.set(option.name, value);
      } catch (const vmm::ConfigError& e) {
        ++rejected;
        CHECK(e.key() == option.name);
        CHECK(contains(e.what(), option.name));
        CHECK(c == before);
        // Through VMMALLOC_CONF's grammar the same value is rejected alike.
        CHECK_THROWS_AS(vmm::Config::parse(std::string(option.name) + ":" + value),
                        vmm::ConfigError);
      }
    }
    if (std::string(option.type) != "path") CHECK(rejected > 0);
  }
}
