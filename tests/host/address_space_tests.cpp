// AddressSpace over HostBackend: carving, coalescing, new and dedicated
// reservations, misuse, and reservation failure.
#include "allocator/vm/address_space.hpp"
#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/base/units.hpp"
#include "tests/common/catch.hpp"
#include "vmmalloc/errors.hpp"

using namespace vmm;

namespace {
Config small_reservations() {
  Config c;
  c.va_reservation_size = 64 * MiB;
  return c;
}
}  // namespace

TEST_CASE("ranges are carved from reservations and coalesce when freed", "[address_space]") {
  HostBackend backend;
  {
    AddressSpace space(backend, small_reservations());
    VaRange a = space.allocate(10 * MiB);
    VaRange b = space.allocate(1);
    VaRange c = space.allocate(20 * MiB);
    CHECK(a.bytes == 10 * MiB);
    CHECK(b.bytes == 2 * MiB);
    CHECK(b.base == a.end());
    CHECK(c.base == b.end());
    CHECK(a.base % (2 * MiB) == 0);
    CHECK(space.stats().reservations == 1);
    space.deallocate(a);
    space.deallocate(b);
    VaRange d = space.allocate(12 * MiB);  // a and b coalesced
    CHECK(d.base == a.base);
    // Full: a second reservation.
    VaRange e = space.allocate(40 * MiB);
    CHECK(space.stats().reservations == 2);
    space.deallocate(c);
    space.deallocate(d);
    space.deallocate(e);
    CHECK(space.stats().allocated_bytes == 0);
  }
  CHECK(backend.live_reservations() == 0);
}

TEST_CASE("a range larger than a reservation gets its own, freed with it", "[address_space]") {
  HostBackend backend;
  AddressSpace space(backend, small_reservations());
  VaRange big = space.allocate(100 * MiB);
  CHECK(space.stats().reservations == 1);
  CHECK(backend.live_reservations() == 1);
  space.deallocate(big);
  CHECK(space.stats().reservations == 0);
  CHECK(backend.live_reservations() == 0);
}

TEST_CASE("address space misuse is an error that changes nothing", "[address_space]") {
  HostBackend backend;
  AddressSpace space(backend, small_reservations());
  CHECK_THROWS_AS(space.allocate(0), InvalidArgumentError);
  CHECK_THROWS_AS(space.allocate(SIZE_MAX), InvalidArgumentError);
  VaRange a = space.allocate(4 * MiB);
  space.deallocate(a);
  CHECK_THROWS_AS(space.deallocate(a), InvalidArgumentError);  // twice
  CHECK_THROWS_AS(space.deallocate(VaRange{0x1000, 2 * MiB}), InvalidArgumentError);
  CHECK(space.stats().allocated_bytes == 0);
}

TEST_CASE("a refused reservation is an out-of-memory error naming the call", "[address_space]") {
  HostBackend backend;
  FaultInjectingBackend faults(backend);
  AddressSpace space(faults, small_reservations());
  faults.fail_nth(BackendCall::reserve, 1);
  try {
    space.allocate(MiB);
    FAIL("allocate succeeded");
  } catch (const OutOfMemoryError& e) {
    CHECK(std::string(e.what()).find("injected") != std::string::npos);
  }
  CHECK(space.stats().reservations == 0);
  VaRange ok = space.allocate(MiB);
  space.deallocate(ok);
}

TEST_CASE("the default reservation is sized from device memory", "[address_space]") {
  HostBackend::Options opt;
  opt.device_memory = 3 * GiB;
  HostBackend backend(opt);
  Config cfg;
  cfg.va_reservation_size = 0;
  cfg.va_reservation_factor = 2.0;
  AddressSpace space(backend, cfg);
  CHECK(space.reservation_size() == 6 * GiB);
}
