// The interposer's dlsym.
//
// libcudart (static or shared) has no undefined cu* symbols: it dlopens
// libcuda.so.1 and takes cuGetProcAddress with dlsym, then every entry point
// through it. So the interposer replaces dlsym: for the few driver names it
// replaces (driver_entry_points.hpp) it hands out its own functions; every
// other lookup goes to glibc's dlsym untouched.
//
// "Untouched" includes who the caller is. glibc resolves RTLD_NEXT (the
// objects after the caller) and RTLD_DEFAULT (the caller's scope, which for a
// library dlopened with RTLD_LOCAL includes its own dependencies) from the
// caller's return address. A C wrapper that called the real dlsym would make
// every lookup look like the interposer's own: RTLD_NEXT from a library after
// it would find the library's own symbol again (endless recursion in other
// interposers), and RTLD_DEFAULT from a local library would miss its
// dependencies. So on x86-64 dlsym is a small assembly stub: it asks
// vmm_preload_dlsym_decide whether the name is replaced, and if not, JUMPS to
// the real dlsym with the caller's registers and return address intact, as if
// the caller had called it directly. Elsewhere a C wrapper is used, with the
// limitation above (documented in docs/preload.md).
//
// Lookups made by libvmmalloc.so itself (it loads the driver the same way)
// and by the interposer are never replaced: vmmalloc must reach the real
// driver.
//
// Thread-safety: lock-free (atomics only), so it is safe in a forked child
// and during any other hook.
#include <dlfcn.h>

#include <atomic>
#include <cstdint>

#include "preload/driver_entry_points.hpp"
#include "preload/real_dlsym.hpp"
#include "vmmalloc/vmmalloc.h"

namespace vmm::preload {
namespace {

using DlsymFn = void* (*)(void*, const char*);

// The first glibc version of dlsym on each architecture (dlsym moved into
// libc.so.6 as GLIBC_2.34; the old version stays for old binaries).
#if defined(__x86_64__)
constexpr const char* kBaseGlibcVersion = "GLIBC_2.2.5";
#elif defined(__aarch64__)
constexpr const char* kBaseGlibcVersion = "GLIBC_2.17";
#elif defined(__powerpc64__)
constexpr const char* kBaseGlibcVersion = "GLIBC_2.3";
#else
#define VMM_PRELOAD_NO_BASE_GLIBC_VERSION 1
#endif

// The code range [base, end) of a loaded object containing `addr`, from dladdr.
const void* object_base(const void* addr) noexcept {
  Dl_info info{};
  return dladdr(addr, &info) != 0 ? info.dli_fbase : nullptr;
}

bool internal_caller(const void* caller) noexcept {
  static const void* const own = object_base(reinterpret_cast<const void*>(&real_dlsym));
  static const void* const library = object_base(reinterpret_cast<const void*>(&vmm_malloc));
  const void* base = object_base(caller);
  return base != nullptr && (base == own || base == library);
}

}  // namespace
}  // namespace vmm::preload

extern "C" {

// Read by the assembly stub; set before any jump to it.
__attribute__((visibility("hidden"))) std::atomic<vmm::preload::DlsymFn> vmm_preload_real_dlsym{
    nullptr};

// Returns the interposer's function for a replaced name, or (void*)-1 to
// mean "the real dlsym answers" (the real dlsym is then resolved). A lookup
// that finds nothing returns null, with dlerror() set by the real dlsym.
__attribute__((visibility("hidden"))) void* vmm_preload_dlsym_decide(void* handle, const char* name,
                                                                     const void* caller) noexcept {
  static void* const kForward = reinterpret_cast<void*>(~std::uintptr_t{0});
  if (vmm_preload_real_dlsym.load(std::memory_order_acquire) == nullptr) {
    void* fn = dlvsym(RTLD_NEXT, "dlsym", "GLIBC_2.34");
#ifndef VMM_PRELOAD_NO_BASE_GLIBC_VERSION
    if (fn == nullptr) fn = dlvsym(RTLD_NEXT, "dlsym", vmm::preload::kBaseGlibcVersion);
#endif
    if (fn == nullptr) return nullptr;  // no dlsym to forward to (cannot happen with glibc)
    vmm_preload_real_dlsym.store(reinterpret_cast<vmm::preload::DlsymFn>(fn),
                                 std::memory_order_release);
  }
  if (name == nullptr || !vmm::preload::is_replaced_symbol(name) ||
      vmm::preload::internal_caller(caller)) {
    return kForward;
  }
  void* found = vmm_preload_real_dlsym.load(std::memory_order_acquire)(handle, name);
  return vmm::preload::substitute_symbol(name, found);
}

}  // extern "C"

namespace vmm::preload {

void* real_dlsym(void* handle, const char* name) noexcept {
  DlsymFn fn = vmm_preload_real_dlsym.load(std::memory_order_acquire);
  if (fn == nullptr) {
    // Resolves it (the name is never replaced).
    (void)vmm_preload_dlsym_decide(nullptr, "", nullptr);
    fn = vmm_preload_real_dlsym.load(std::memory_order_acquire);
    if (fn == nullptr) return nullptr;
  }
  return fn(handle, name);
}

}  // namespace vmm::preload

#if defined(__x86_64__)
static_assert(sizeof(std::atomic<vmm::preload::DlsymFn>) == sizeof(void*) &&
                  std::atomic<vmm::preload::DlsymFn>::is_always_lock_free,
              "the stub reads vmm_preload_real_dlsym as a plain pointer");
// dlsym(handle, name): save the arguments, call the decision with the
// caller's return address as a third argument, then either return its
// answer or restore the arguments and tail-jump to the real dlsym.
asm(R"(
  .text
  .globl dlsym
  .type dlsym, @function
  .p2align 4
dlsym:
  .cfi_startproc
  pushq %rdi
  .cfi_adjust_cfa_offset 8
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  movq 16(%rsp), %rdx
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  call vmm_preload_dlsym_decide
  addq $8, %rsp
  .cfi_adjust_cfa_offset -8
  popq %rsi
  .cfi_adjust_cfa_offset -8
  popq %rdi
  .cfi_adjust_cfa_offset -8
  cmpq $-1, %rax
  je 1f
  ret
1:
  jmpq *vmm_preload_real_dlsym(%rip)
  .cfi_endproc
  .size dlsym, .-dlsym
)");
#else
// Portable fallback: correct for every lookup except RTLD_NEXT and
// RTLD_DEFAULT, which glibc then resolves relative to the interposer.
extern "C" __attribute__((visibility("default"))) void* dlsym(void* handle,
                                                              const char* name) noexcept {
  void* answer = vmm_preload_dlsym_decide(handle, name, __builtin_return_address(0));
  if (answer != reinterpret_cast<void*>(~std::uintptr_t{0})) return answer;
  return vmm_preload_real_dlsym.load(std::memory_order_acquire)(handle, name);
}
#endif
