// Uses the installed vmmalloc package through its C ABI and its C++ API, on
// the host backend (no GPU needed: there the workspace is host memory).
// Exits 0 on success; prints what failed and exits 1 otherwise.
#include <vmmalloc/vmmalloc.h>

#include <vmmalloc/errors.hpp>
#include <vmmalloc/workspace.hpp>

// The public headers must not pull in the CUDA headers (cuda.h defines
// CUDA_VERSION, cuda_runtime_api.h CUDART_VERSION).
#if defined(CUDA_VERSION) || defined(CUDART_VERSION)
#error "vmmalloc's public headers include CUDA headers"
#endif

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#ifndef CONSUMER_NAME
#define CONSUMER_NAME "consumer"
#endif

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

[[noreturn]] void fail(const char* what, const char* detail) {
  std::fprintf(stderr, "[%s] FAILED: %s%s%s\n", CONSUMER_NAME, what, detail ? ": " : "",
               detail ? detail : "");
  std::exit(1);
}

void expect(bool ok, const char* what) {
  if (!ok) fail(what, nullptr);
}

void call(vmm_status status, const char* what) {
  if (status != VMM_SUCCESS) {
    std::fprintf(stderr, "[%s] %s returned %s\n", CONSUMER_NAME, what, vmm_status_name(status));
    fail(what, vmm_last_error());
  }
}

std::uint8_t pattern(std::size_t i) { return static_cast<std::uint8_t>((i * 131u + 7u) & 0xffu); }

void fill(void* p, std::size_t from, std::size_t to) {
  auto* bytes = static_cast<std::uint8_t*>(p);
  for (std::size_t i = from; i < to; ++i) bytes[i] = pattern(i);
}

bool holds(const void* p, std::size_t from, std::size_t to) {
  const auto* bytes = static_cast<const std::uint8_t*>(p);
  for (std::size_t i = from; i < to; ++i) {
    if (bytes[i] != pattern(i)) return false;
  }
  return true;
}

void c_abi() {
  const char* backend = nullptr;
  call(vmm_backend_name(0, &backend), "vmm_backend_name");
  expect(backend != nullptr && std::strcmp(backend, "host") == 0, "C ABI: backend is host");

  vmm_workspace* ws = nullptr;
  call(vmm_workspace_create(64 * kMiB, 0, &ws), "vmm_workspace_create");
  expect(ws != nullptr, "C ABI: workspace handle");
  std::size_t capacity = 0;
  call(vmm_workspace_capacity(ws, &capacity), "vmm_workspace_capacity");
  expect(capacity >= 64 * kMiB, "C ABI: capacity >= 64 MiB");

  call(vmm_workspace_grow(ws, 8 * kMiB), "vmm_workspace_grow(8 MiB)");
  void* base = nullptr;
  std::size_t size = 0;
  call(vmm_workspace_data(ws, &base), "vmm_workspace_data");
  call(vmm_workspace_size(ws, &size), "vmm_workspace_size");
  expect(base != nullptr && size >= 8 * kMiB, "C ABI: 8 MiB mapped");
  fill(base, 0, 8 * kMiB);

  call(vmm_workspace_grow(ws, 32 * kMiB), "vmm_workspace_grow(32 MiB)");
  void* after = nullptr;
  call(vmm_workspace_data(ws, &after), "vmm_workspace_data");
  expect(after == base, "C ABI: base address unchanged by grow");
  expect(holds(base, 0, 8 * kMiB), "C ABI: contents kept by grow");
  fill(base, 8 * kMiB, 32 * kMiB);
  expect(holds(base, 0, 32 * kMiB), "C ABI: grown tail writable");
  std::size_t mapped = 0;
  call(vmm_workspace_mapped_bytes(ws, &mapped), "vmm_workspace_mapped_bytes");
  expect(mapped >= 32 * kMiB, "C ABI: mapped bytes cover the size");

  // Past the capacity: a clean error, nothing changed.
  expect(vmm_workspace_grow(ws, capacity + 1) == VMM_ERROR_INVALID_VALUE,
         "C ABI: grow past capacity is VMM_ERROR_INVALID_VALUE");
  expect(vmm_last_error()[0] != '\0', "C ABI: vmm_last_error() has a message");
  call(vmm_workspace_size(ws, &size), "vmm_workspace_size");
  expect(size >= 32 * kMiB && size < capacity + 1, "C ABI: failed grow changed nothing");

  call(vmm_workspace_shrink(ws, 4 * kMiB, nullptr), "vmm_workspace_shrink(4 MiB)");
  expect(holds(base, 0, 4 * kMiB), "C ABI: contents kept by shrink");
  call(vmm_workspace_destroy(ws, nullptr), "vmm_workspace_destroy");
  call(vmm_workspace_destroy(nullptr, nullptr), "vmm_workspace_destroy(NULL)");
  std::printf("[%s] C ABI ok: base %p kept from 8 to 32 MiB\n", CONSUMER_NAME, base);
}

void cpp_api() {
  vmm::Workspace ws(64 * kMiB, 0);
  expect(ws.capacity() >= 64 * kMiB, "C++: capacity >= 64 MiB");
  ws.grow_to(8 * kMiB);
  void* base = ws.data();
  expect(base != nullptr && ws.size() >= 8 * kMiB, "C++: 8 MiB mapped");
  fill(base, 0, 8 * kMiB);
  ws.grow_to(32 * kMiB);
  expect(ws.data() == base, "C++: base address unchanged by grow");
  expect(holds(base, 0, 8 * kMiB), "C++: contents kept by grow");
  fill(base, 8 * kMiB, 32 * kMiB);
  expect(holds(base, 0, 32 * kMiB), "C++: grown tail writable");

  // Typed errors cross the library boundary.
  bool threw = false;
  try {
    ws.grow_to(ws.capacity() + 1);
  } catch (const vmm::InvalidArgumentError& e) {
    threw = e.status() == VMM_ERROR_INVALID_VALUE;
  }
  expect(threw, "C++: grow past capacity throws vmm::InvalidArgumentError");
  expect(ws.data() == base && ws.size() >= 32 * kMiB, "C++: failed grow changed nothing");

  ws.shrink_to(4 * kMiB, nullptr);
  expect(holds(base, 0, 4 * kMiB), "C++: contents kept by shrink");
  ws.release(nullptr);
  std::printf("[%s] C++ API ok: base %p kept from 8 to 32 MiB\n", CONSUMER_NAME, base);
}

}  // namespace

int main() {
  call(vmm_configure("backend:host"), "vmm_configure(\"backend:host\")");
  c_abi();
  try {
    cpp_api();
  } catch (const vmm::Error& e) {
    fail("C++ API threw vmm::Error", e.what());
  }
  std::printf("[%s] all checks passed\n", CONSUMER_NAME);
  return 0;
}
