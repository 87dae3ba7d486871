// The C ABI of tags, sleep and wake (vmm_tag_push/pop, vmm_sleep, vmm_wake,
// vmm_is_sleeping; docs/sleep.md) over the process-wide allocator on the
// host backend, where device memory is host memory: the test reads and
// writes the blocks directly. Every case uses tag names of its own, since
// all the cases of this binary may share one process.
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/catch.hpp"
#include "vmmalloc/vmmalloc.h"

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr std::size_t GiB = std::size_t{1} << 30;

std::string last_error() { return vmm_last_error(); }

bool error_says(const std::string& part) { return last_error().find(part) != std::string::npos; }

void configure_host() {
  // The process-wide state on the host backend (already so if another case
  // of this process configured it first).
  (void)vmm_configure("backend:host,va_reservation_size:8G");
}

struct Filled {
  void* ptr;
  std::size_t bytes;
  unsigned char value;
};

// Blocks of assorted sizes under tag `name`, each filled with its own value.
std::vector<Filled> fill_tagged(const char* name, unsigned char seed) {
  REQUIRE(vmm_tag_push(name) == VMM_SUCCESS);
  std::vector<Filled> out;
  unsigned char v = seed;
  for (std::size_t n : {std::size_t{3000}, 1 * MiB, 24 * MiB + 512, std::size_t{700}}) {
    void* p = nullptr;
    REQUIRE(vmm_malloc(&p, n, 0, nullptr) == VMM_SUCCESS);
    std::memset(p, ++v, n);
    out.push_back({p, n, v});
  }
  REQUIRE(vmm_tag_pop() == VMM_SUCCESS);
  return out;
}

bool holds(const void* p, std::size_t n, unsigned char value) {
  const auto* b = static_cast<const unsigned char*>(p);
  for (std::size_t i = 0; i < n; ++i) {
    if (b[i] != value) return false;
  }
  return true;
}

bool all_intact(const std::vector<Filled>& blocks) {
  for (const Filled& f : blocks) {
    if (!holds(f.ptr, f.bytes, f.value)) return false;
  }
  return true;
}

std::size_t rounded_sizes(const std::vector<Filled>& blocks) {
  std::size_t total = 0;
  for (const Filled& f : blocks) {
    std::size_t n = 0;
    REQUIRE(vmm_block_size(f.ptr, &n) == VMM_SUCCESS);
    total += n;
  }
  return total;
}

void free_all(const std::vector<Filled>& blocks) {
  for (const Filled& f : blocks) REQUIRE(vmm_free(f.ptr, nullptr) == VMM_SUCCESS);
}

// A tag's freed memory stays in its pool (docs/sleep.md); a discarding sleep
// hands it to the device, so the cases after this one in the same process
// find no memory held. The tag stays asleep (no case uses it again).
void release_tag(const char* tag) {
  REQUIRE(vmm_sleep(0, &tag, 1, VMM_SLEEP_DISCARD, nullptr) == VMM_SUCCESS);
}

int sleeping(const char* tag, int device = 0) {
  int asleep = -1;
  REQUIRE(vmm_is_sleeping(device, tag, &asleep) == VMM_SUCCESS);
  return asleep;
}

std::size_t mapped_bytes() {
  vmm_allocator_stats s{};
  REQUIRE(vmm_get_allocator_stats(0, &s) == VMM_SUCCESS);
  return s.mapped_bytes;
}

}  // namespace

TEST_CASE("C ABI sleep: tag scopes nest per thread; a pop with none open is an error",
          "[c_api][sleep]") {
  configure_host();
  const char* outer = "csleep.nest.outer";
  const char* inner = "csleep.nest.inner";
  void* a = nullptr;
  void* b = nullptr;
  void* a2 = nullptr;
  void* other_thread = nullptr;
  REQUIRE(vmm_tag_push(outer) == VMM_SUCCESS);
  REQUIRE(vmm_malloc(&a, 2 * MiB, 0, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_tag_push(inner) == VMM_SUCCESS);
  REQUIRE(vmm_malloc(&b, 3 * MiB, 0, nullptr) == VMM_SUCCESS);
  // Scopes are the calling thread's: another thread allocates untagged.
  std::thread([&] { CHECK(vmm_malloc(&other_thread, 4 * MiB, 0, nullptr) == VMM_SUCCESS); }).join();
  REQUIRE(vmm_tag_pop() == VMM_SUCCESS);
  REQUIRE(vmm_malloc(&a2, 5 * MiB, 0, nullptr) == VMM_SUCCESS);  // back under `outer`
  REQUIRE(vmm_tag_pop() == VMM_SUCCESS);

  CHECK(vmm_tag_pop() == VMM_ERROR_INVALID_VALUE);
  CHECK(error_says("no tag scope is open"));

  // Each tag's sleep sees exactly the blocks allocated under it.
  vmm_sleep_report r{};
  REQUIRE(vmm_sleep(0, &inner, 1, VMM_SLEEP_OFFLOAD, &r) == VMM_SUCCESS);
  CHECK(r.live_bytes == 3 * MiB);
  CHECK(sleeping(inner) == 1);
  CHECK(sleeping(outer) == 0);
  REQUIRE(vmm_sleep(0, &outer, 1, VMM_SLEEP_OFFLOAD, &r) == VMM_SUCCESS);
  CHECK(r.live_bytes == 7 * MiB);
  const char* both[] = {inner, outer};
  REQUIRE(vmm_wake(0, both, 2, 0, &r) == VMM_SUCCESS);
  CHECK(r.tags_changed == 2);
  for (void* p : {a, b, a2, other_thread}) CHECK(vmm_free(p, nullptr) == VMM_SUCCESS);
  release_tag(inner);
  release_tag(outer);

  // At most 64 scopes deep; the refused push opens none.
  for (int i = 0; i < 64; ++i) REQUIRE(vmm_tag_push("csleep.nest.deep") == VMM_SUCCESS);
  CHECK(vmm_tag_push("csleep.nest.deep") == VMM_ERROR_INVALID_VALUE);
  CHECK(error_says("64"));
  for (int i = 0; i < 64; ++i) REQUIRE(vmm_tag_pop() == VMM_SUCCESS);
  CHECK(vmm_tag_pop() == VMM_ERROR_INVALID_VALUE);
}

TEST_CASE(
    "C ABI sleep: offload and wake keep every block's bytes and address; memory is "
    "released while asleep",
    "[c_api][sleep]") {
  configure_host();
  const char* tag = "csleep.offload";
  void* untagged = nullptr;
  REQUIRE(vmm_malloc(&untagged, 8 * MiB, 0, nullptr) == VMM_SUCCESS);
  std::memset(untagged, 0x5a, 8 * MiB);
  const std::vector<Filled> blocks = fill_tagged(tag, 10);
  const std::size_t live = rounded_sizes(blocks);
  const std::size_t mapped_awake = mapped_bytes();

  vmm_sleep_report s{};
  REQUIRE(vmm_sleep(0, &tag, 1, VMM_SLEEP_OFFLOAD, &s) == VMM_SUCCESS);
  CHECK(s.tags_changed == 1);
  CHECK(s.live_bytes == live);
  CHECK(s.copied_bytes == live);
  CHECK(s.pinned_bytes >= live);
  CHECK(s.device_bytes >= live);
  CHECK(s.copy_seconds >= 0.0);
  // (<=: the reclaimer may unmap free untagged memory meanwhile.)
  CHECK(mapped_bytes() <= mapped_awake - s.device_bytes);
  CHECK(sleeping(tag) == 1);
  CHECK(sleeping(tag, -1) == 1);  // -1: the current device (0 on the host backend)
  CHECK(holds(untagged, 8 * MiB, 0x5a));

  // Allocating under a sleeping tag is refused; sleeping it again does nothing.
  REQUIRE(vmm_tag_push(tag) == VMM_SUCCESS);
  void* refused = &refused;
  CHECK(vmm_malloc(&refused, 1 * MiB, 0, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(refused == nullptr);
  CHECK(error_says("asleep"));
  REQUIRE(vmm_tag_pop() == VMM_SUCCESS);
  vmm_sleep_report again{};
  REQUIRE(vmm_sleep(0, &tag, 1, VMM_SLEEP_OFFLOAD, &again) == VMM_SUCCESS);
  CHECK(again.tags_changed == 0);

  vmm_sleep_report w{};
  REQUIRE(vmm_wake(0, &tag, 1, 0, &w) == VMM_SUCCESS);
  CHECK(w.tags_changed == 1);
  CHECK(w.copied_bytes == live);
  CHECK(w.device_bytes == s.device_bytes);
  CHECK(sleeping(tag) == 0);
  CHECK(all_intact(blocks));                                         // same pointers, same bytes
  for (const Filled& f : blocks) std::memset(f.ptr, 0x11, f.bytes);  // mapped and writable
  // Waking an awake tag does nothing; a NULL report is fine.
  REQUIRE(vmm_wake(0, &tag, 1, 0, nullptr) == VMM_SUCCESS);
  free_all(blocks);
  release_tag(tag);
  REQUIRE(vmm_free(untagged, nullptr) == VMM_SUCCESS);
}

TEST_CASE("C ABI sleep: discard copies nothing; the memory is mapped and writable after wake",
          "[c_api][sleep]") {
  configure_host();
  const char* tag = "csleep.discard";
  const std::vector<Filled> blocks = fill_tagged(tag, 40);
  vmm_sleep_report s{};
  REQUIRE(vmm_sleep(0, &tag, 1, VMM_SLEEP_DISCARD, &s) == VMM_SUCCESS);
  CHECK(s.tags_changed == 1);
  CHECK(s.live_bytes == rounded_sizes(blocks));
  CHECK(s.copied_bytes == 0);
  CHECK(s.pinned_bytes == 0);
  CHECK(s.device_bytes > 0);
  vmm_sleep_report w{};
  REQUIRE(vmm_wake(0, &tag, 1, 0, &w) == VMM_SUCCESS);
  CHECK(w.tags_changed == 1);
  CHECK(w.copied_bytes == 0);
  CHECK(w.device_bytes == s.device_bytes);
  for (const Filled& f : blocks) {
    std::memset(f.ptr, 0x66, f.bytes);
    CHECK(holds(f.ptr, f.bytes, 0x66));
  }
  free_all(blocks);
  release_tag(tag);
}

TEST_CASE("C ABI sleep: device -1 acts on every device; keep_host keeps the pinned buffer",
          "[c_api][sleep]") {
  configure_host();
  const char* tag = "csleep.everywhere";
  const std::vector<Filled> blocks = fill_tagged(tag, 70);
  const std::size_t live = rounded_sizes(blocks);
  vmm_sleep_report s{};
  REQUIRE(vmm_sleep(-1, &tag, 1, VMM_SLEEP_OFFLOAD, &s) == VMM_SUCCESS);
  CHECK(s.tags_changed == 1);
  CHECK(s.pinned_bytes >= live);
  CHECK(sleeping(tag) == 1);
  REQUIRE(vmm_wake(-1, &tag, 1, /*keep_host=*/1, nullptr) == VMM_SUCCESS);
  CHECK(all_intact(blocks));
  // The second sleep copies into the buffer kept by the wake: no new pinning.
  REQUIRE(vmm_sleep(-1, &tag, 1, VMM_SLEEP_OFFLOAD, &s) == VMM_SUCCESS);
  CHECK(s.copied_bytes == live);
  CHECK(s.pinned_bytes == 0);
  REQUIRE(vmm_wake(-1, &tag, 1, 0, nullptr) == VMM_SUCCESS);
  CHECK(all_intact(blocks));
  // A block freed while asleep is free after the wake (nothing leaks).
  REQUIRE(vmm_sleep(-1, &tag, 1, VMM_SLEEP_OFFLOAD, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_free(blocks[0].ptr, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_wake(-1, &tag, 1, 0, nullptr) == VMM_SUCCESS);
  CHECK(all_intact(std::vector<Filled>(blocks.begin() + 1, blocks.end())));
  free_all(std::vector<Filled>(blocks.begin() + 1, blocks.end()));
  release_tag(tag);
}

TEST_CASE("C ABI sleep: bad arguments are VMM_ERROR_INVALID_VALUE and change nothing",
          "[c_api][sleep]") {
  configure_host();
  const char* tag = "csleep.args";
  const std::vector<Filled> blocks = fill_tagged(tag, 90);
  vmm_sleep_report r{};
  r.tags_changed = 12345;  // a failing call leaves the report alone

  CHECK(vmm_tag_push(nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(error_says("name is NULL"));
  const std::string too_long(65, 'x');
  for (const char* bad : {"", "has space", "weights/1", "caf\xc3\xa9", too_long.c_str()}) {
    INFO(bad);
    CHECK(vmm_tag_push(bad) == VMM_ERROR_INVALID_VALUE);
    CHECK(error_says("[A-Za-z0-9_.:-]"));
    // A list with a bad name is refused before any tag sleeps.
    const char* list[] = {tag, bad};
    CHECK(vmm_sleep(0, list, 2, VMM_SLEEP_OFFLOAD, &r) == VMM_ERROR_INVALID_VALUE);
    CHECK(vmm_wake(0, list, 2, 0, &r) == VMM_ERROR_INVALID_VALUE);
    int asleep = 7;
    CHECK(vmm_is_sleeping(0, bad, &asleep) == VMM_ERROR_INVALID_VALUE);
    CHECK(asleep == 7);
  }
  CHECK(vmm_tag_pop() == VMM_ERROR_INVALID_VALUE);  // no refused push opened a scope

  CHECK(vmm_sleep(0, nullptr, 1, VMM_SLEEP_OFFLOAD, &r) == VMM_ERROR_INVALID_VALUE);
  CHECK(error_says("tags is NULL"));
  CHECK(vmm_wake(0, nullptr, 1, 0, &r) == VMM_ERROR_INVALID_VALUE);
  const char* with_null[] = {tag, nullptr};
  CHECK(vmm_sleep(0, with_null, 2, VMM_SLEEP_OFFLOAD, &r) == VMM_ERROR_INVALID_VALUE);
  CHECK(error_says("tags[1] is NULL"));
  CHECK(vmm_wake(0, with_null, 2, 0, &r) == VMM_ERROR_INVALID_VALUE);
  for (int mode : {2, 1000}) {
    CHECK(vmm_sleep(0, &tag, 1, static_cast<vmm_sleep_mode>(mode), &r) == VMM_ERROR_INVALID_VALUE);
    CHECK(error_says("mode " + std::to_string(mode)));
  }
  CHECK(vmm_sleep(7, &tag, 1, VMM_SLEEP_OFFLOAD, &r) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_wake(7, &tag, 1, 0, &r) == VMM_ERROR_INVALID_VALUE);
  int asleep = 7;
  CHECK(vmm_is_sleeping(0, nullptr, &asleep) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_is_sleeping(0, tag, nullptr) == VMM_ERROR_INVALID_VALUE);
  CHECK(vmm_is_sleeping(7, tag, &asleep) == VMM_ERROR_INVALID_VALUE);
  CHECK(asleep == 7);
  CHECK(r.tags_changed == 12345);
  CHECK(sleeping(tag) == 0);  // nothing slept
  CHECK(all_intact(blocks));

  // No tags is fine (tags may then be NULL), and does nothing.
  vmm_sleep_report none{};
  none.tags_changed = 9;
  CHECK(vmm_sleep(0, nullptr, 0, VMM_SLEEP_OFFLOAD, &none) == VMM_SUCCESS);
  CHECK(none.tags_changed == 0);
  CHECK(none.live_bytes == 0);
  CHECK(vmm_wake(-1, nullptr, 0, 0, nullptr) == VMM_SUCCESS);
  CHECK(vmm_sleep(-1, &tag, 0, VMM_SLEEP_DISCARD, nullptr) == VMM_SUCCESS);
  CHECK(sleeping(tag) == 0);
  free_all(blocks);
  release_tag(tag);
}

// The device memory (16 GiB of memfds on the host backend, untouched so
// they cost no RAM) is filled by untagged blocks while a tag sleeps, so its
// wake cannot get memory; freed again, the next wake succeeds.
TEST_CASE(
    "C ABI sleep: a wake short of memory is VMM_ERROR_OUT_OF_MEMORY, stays asleep and "
    "succeeds later",
    "[c_api][sleep]") {
  configure_host();
  const char* tag = "csleep.oom";
  const std::vector<Filled> blocks = fill_tagged(tag, 120);
  REQUIRE(vmm_sleep(0, &tag, 1, VMM_SLEEP_OFFLOAD, nullptr) == VMM_SUCCESS);

  std::vector<void*> hog;
  for (std::size_t step : {1 * GiB, 64 * MiB, 2 * MiB}) {
    for (;;) {
      void* p = nullptr;
      const vmm_status st = vmm_malloc(&p, step, 0, nullptr);
      if (st == VMM_ERROR_OUT_OF_MEMORY) break;
      REQUIRE(st == VMM_SUCCESS);
      hog.push_back(p);
    }
  }
  vmm_sleep_report r{};
  r.tags_changed = 77;
  CHECK(vmm_wake(0, &tag, 1, 0, &r) == VMM_ERROR_OUT_OF_MEMORY);
  CHECK(error_says("out of memory"));
  CHECK(r.tags_changed == 77);
  CHECK(sleeping(tag) == 1);

  for (void* p : hog) REQUIRE(vmm_free(p, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_empty_cache(0, nullptr) == VMM_SUCCESS);
  // The freed memory goes back to the device in the background.
  vmm_status woke = VMM_ERROR_OUT_OF_MEMORY;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (woke == VMM_ERROR_OUT_OF_MEMORY && std::chrono::steady_clock::now() < deadline) {
    woke = vmm_wake(0, &tag, 1, 0, &r);
    if (woke == VMM_ERROR_OUT_OF_MEMORY) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  REQUIRE(woke == VMM_SUCCESS);
  CHECK(r.tags_changed == 1);
  CHECK(sleeping(tag) == 0);
  CHECK(all_intact(blocks));
  free_all(blocks);
  release_tag(tag);
}

TEST_CASE("C ABI sleep: a workspace created under vmm_tag_push sleeps and wakes with its tag",
          "[c_api][sleep]") {
  configure_host();
  const char* tag = "csleep.workspace";
  REQUIRE(vmm_tag_push(tag) == VMM_SUCCESS);
  vmm_workspace* ws = nullptr;
  REQUIRE(vmm_workspace_create(256 * MiB, 0, &ws) == VMM_SUCCESS);
  REQUIRE(vmm_tag_pop() == VMM_SUCCESS);
  REQUIRE(vmm_workspace_record_stream(ws, nullptr) == VMM_SUCCESS);
  REQUIRE(vmm_workspace_grow(ws, 20 * MiB + 5) == VMM_SUCCESS);
  void* data = nullptr;
  REQUIRE(vmm_workspace_data(ws, &data) == VMM_SUCCESS);
  std::memset(data, 0x5e, 20 * MiB + 5);

  vmm_sleep_report s{};
  REQUIRE(vmm_sleep(-1, &tag, 1, VMM_SLEEP_OFFLOAD, &s) == VMM_SUCCESS);
  CHECK(s.copied_bytes == 20 * MiB + 5);
  CHECK(s.device_bytes >= 20 * MiB);
  CHECK(sleeping(tag) == 1);
  std::size_t mapped = 1;
  REQUIRE(vmm_workspace_mapped_bytes(ws, &mapped) == VMM_SUCCESS);
  CHECK(mapped == 0);
  CHECK(vmm_workspace_grow(ws, 40 * MiB) == VMM_ERROR_INVALID_VALUE);
  CHECK(error_says("asleep"));

  REQUIRE(vmm_wake(-1, &tag, 1, 0, nullptr) == VMM_SUCCESS);
  CHECK(sleeping(tag) == 0);
  void* after = nullptr;
  REQUIRE(vmm_workspace_data(ws, &after) == VMM_SUCCESS);
  CHECK(after == data);
  CHECK(holds(data, 20 * MiB + 5, 0x5e));
  REQUIRE(vmm_workspace_grow(ws, 40 * MiB) == VMM_SUCCESS);
  CHECK(vmm_workspace_record_stream(nullptr, nullptr) == VMM_ERROR_INVALID_VALUE);
  REQUIRE(vmm_workspace_destroy(ws, nullptr) == VMM_SUCCESS);
}
