// Misuse at the edges (docs/reliability.md, "Misuse: defined outcomes"):
// sizes whose derived sizes would not fit in size_t, C ABI handles destroyed
// twice or used after their destroy (run under ASan in CI: a use of freed
// memory fails there), and streams that do not exist.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "allocator/backend/host_backend.hpp"
#include "allocator/base/units.hpp"
#include "allocator/vm/address_space.hpp"
#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"

using namespace vmm;
using vmm::test::Harness;
using vmm::test::make_host_test_device;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

void configure_host() {
  // The process-wide state on the host backend (already so if another case
  // of this process configured it first).
  (void)vmm_configure("backend:host,va_reservation_size:8G");
}

// A handle value no stream was ever made at.
Stream bogus_stream() { return reinterpret_cast<Stream>(std::uintptr_t{0x5eed0000}); }

}  // namespace

// ------------------------------------------------ sizes that would not fit

TEST_CASE("misuse: host_device_memory above 1024T is rejected, naming the key and the range",
          "[misuse][config]") {
  // 4194304T is 2^62 bytes: va_reservation_factor (4) times it is 2^64,
  // which a size_t cannot hold.
  for (const char* bad : {"4194304T", "1025T", "1048577G", "9223372036854775807"}) {
    INFO(bad);
    try {
      (void)Config::parse(std::string("host_device_memory:") + bad);
      FAIL("accepted");
    } catch (const ConfigError& e) {
      CHECK(contains(e.what(), "host_device_memory"));
      CHECK(contains(e.what(), "2M to 1024T"));
      CHECK(contains(e.what(), "more than 1024T"));
    }
  }
  CHECK(Config::parse("host_device_memory:1024T").host_device_memory == 1024 * TiB);
  Config c;
  c.host_device_memory = std::size_t{1} << 62;  // set from code: validate() says the same
  CHECK_THROWS_AS(c.validate(), ConfigError);
}

TEST_CASE("misuse: a reservation sized from a huge device memory is capped, never wrapped",
          "[misuse][address_space]") {
  // The backend itself is not limited by the configuration: 2^62 bytes times
  // 4 overflowed the conversion from double (undefined behaviour; it gave a
  // 2 MiB reservation on x86-64).
  HostBackend::Options options;
  options.device_memory = std::size_t{1} << 62;
  HostBackend backend(options);
  Config c;
  c.va_reservation_size = 0;
  c.va_reservation_factor = 4;
  AddressSpace space(backend, c);
  const std::size_t budget =
      align_down(AddressSpace::reservation_budget(backend.device_count()), backend.granularity());
  CHECK(space.stats().reservation_size == budget);
  CHECK(saturating_size(1e300) == SIZE_MAX);
  CHECK(saturating_size(-5.0) == 0);
  CHECK(saturating_size(0.0 / 0.0) == 0);
  CHECK(saturating_size(4096.9) == 4096);
}

// ------------------------------------------------ C ABI handles destroyed twice

TEST_CASE("misuse: a workspace destroyed twice or used after its destroy is an invalid value",
          "[misuse][c_api]") {
  configure_host();
  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(64 * MiB, 0, &ws) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 4 * MiB) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);

  CHECK(vmm_workspace_destroy(ws, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "vmm_workspace_destroy: workspace handle"));
  CHECK(contains(vmm_last_error(), "is not live"));
  void* data = nullptr;
  std::size_t n = 0;
  CHECK(vmm_workspace_grow(ws, 8 * MiB) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_shrink(ws, 0, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_data(ws, &data) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_size(ws, &n) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_capacity(ws, &n) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_mapped_bytes(ws, &n) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_set_name(ws, "gone") == VMM_ERROR_INVALID_VALUE);
  vmm_workspace_export* ex = nullptr;
  CHECK(vmm_workspace_export_create(ws, &ex) == VMM_ERROR_INVALID_VALUE);
  CHECK(ex == nullptr);
  // The allocator is untouched: a new workspace works.
  vmm_workspace* again = nullptr;
  REQUIRE(vmm_workspace_create(64 * MiB, 0, &again) == VMM_SUCCESS);
  CHECK(vmm_workspace_grow(again, 2 * MiB) == VMM_SUCCESS);
  CHECK(vmm_workspace_destroy(again, nullptr) == VMM_SUCCESS);
}

TEST_CASE("misuse: IPC export and import handles destroyed twice are invalid values",
          "[misuse][c_api][ipc]") {
  configure_host();
  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(64 * MiB, 0, &ws) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 4 * MiB) == VMM_SUCCESS);
  vmm_workspace_export* ex = nullptr;
  REQUIRE(vmm_workspace_export_create(ws, &ex) == VMM_SUCCESS);
  int fds[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
  REQUIRE(vmm_workspace_export_serve(ex, fds[0]) == VMM_SUCCESS);
  vmm_workspace_import* im = nullptr;
  REQUIRE(vmm_workspace_import_create(fds[1], 0, &im) == VMM_SUCCESS);

  // A handle of one kind passed as another is not live as that kind.
  CHECK(vmm_workspace_import_update(reinterpret_cast<vmm_workspace_import*>(ex), nullptr) ==
        VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_grow(reinterpret_cast<vmm_workspace*>(im), 8 * MiB) ==
        VMM_ERROR_INVALID_VALUE);

  REQUIRE(vmm_workspace_import_destroy(im, nullptr) == VMM_SUCCESS);
  CHECK(vmm_workspace_import_destroy(im, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "workspace import handle"));
  void* data = nullptr;
  std::size_t n = 0;
  CHECK(vmm_workspace_import_update(im, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_import_data(im, &data) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_import_size(im, &n) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_workspace_import_capacity(im, &n) == VMM_ERROR_INVALID_VALUE);

  REQUIRE(vmm_workspace_export_destroy(ex) == VMM_SUCCESS);
  CHECK(vmm_workspace_export_destroy(ex) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "workspace export handle"));
  int spare[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, spare) == 0);
  CHECK(vmm_workspace_export_serve(ex, spare[0]) == VMM_ERROR_INVALID_VALUE);
  CHECK(::fcntl(spare[0], F_GETFD) == -1);  // taken over and closed, as on every failure
  ::close(spare[1]);
  CHECK(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);
}

// ------------------------------------------------ streams that do not exist

TEST_CASE("misuse: the C ABI refuses a free or record_stream on a stream that does not exist",
          "[misuse][c_api][stream]") {
  configure_host();
  void* p = nullptr;
  REQUIRE(vmm_malloc(&p, 3 * MiB, 0, nullptr) == VMM_SUCCESS);
  CHECK(vmm_record_stream(p, bogus_stream()) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "is no stream of device 0"));
  CHECK(vmm_free(p, bogus_stream()) == VMM_ERROR_INVALID_VALUE);
  CHECK(contains(vmm_last_error(), "nothing changed"));
  // Nothing changed: the block is still live and frees normally.
  std::size_t bytes = 0;
  CHECK(vmm_block_size(p, &bytes) == VMM_SUCCESS);
  CHECK(vmm_free(p, nullptr) == VMM_SUCCESS);
}

namespace {

// Frees 50 blocks of 3 MiB allocated on `alloc_on`, each in the order of
// `free_on` (or with record_stream(free_on) first), then empties the cache:
// everything must come back (before, it stayed mapped for good).
void check_everything_returns(Harness& h, Allocator& a, Stream alloc_on, Stream free_on,
                              bool record) {
  std::vector<void*> blocks;
  for (int i = 0; i < 50; ++i) blocks.push_back(a.allocate(3 * MiB, alloc_on));
  for (void* p : blocks) {
    if (record) {
      a.record_stream(p, free_on);
      a.deallocate(p);
    } else {
      a.deallocate(p, free_on);
    }
  }
  CHECK(a.stats().allocated_bytes == 0);
  // As for any stream: blocks with other users coalesce only once their
  // work is known done (here: after the first call's device-wide
  // synchronize), so a second call releases what the first could not.
  std::size_t released = a.empty_cache();
  released += a.empty_cache();
  CHECK(released >= 50 * 3 * MiB);
  CHECK(h.wait_reclaimed());
  CHECK(a.stats().mapped_bytes == 0);
  CHECK(a.stats().pending_bytes == 0);
}

}  // namespace

TEST_CASE("misuse: frees on a stream that does not exist are reclaimed after a device sync",
          "[misuse][stream]") {
  Harness h(make_host_test_device());
  {
    Allocator a(h.context());
    SECTION("freed in the order of a handle that never was a stream") {
      check_everything_returns(h, a, h.stream(), bogus_stream(), false);
    }
    SECTION("record_stream of a handle that never was a stream") {
      check_everything_returns(h, a, h.stream(), bogus_stream(), true);
    }
    SECTION("allocated on a handle that never was a stream") {
      check_everything_returns(h, a, bogus_stream(), bogus_stream(), false);
    }
    SECTION("allocated on a stream destroyed without release_stream") {
      const Stream t = h.device().create_stream();
      std::vector<void*> blocks;
      for (int i = 0; i < 50; ++i) blocks.push_back(a.allocate(3 * MiB, t));
      for (void* p : blocks) a.deallocate(p);
      h.device().destroy_stream(t);  // no release_stream: the handle is gone
      std::size_t released = a.empty_cache();
      released += a.empty_cache();
      CHECK(released >= 50 * 3 * MiB);
      CHECK(h.wait_reclaimed());
      CHECK(a.stats().mapped_bytes == 0);
    }
  }
  CHECK(h.destroy_context_and_check_no_leak());
}
