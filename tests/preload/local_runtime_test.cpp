// Loads local_runtime_user (which links the fake runtime) with RTLD_LOCAL
// and runs its check under the interposer: see local_runtime_user.cpp.
#include <dlfcn.h>

#include <cstdio>

int main() {
  void* lib = dlopen("libvmm_local_runtime_user.so", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    std::fprintf(stderr, "FAILED: %s\n", dlerror());
    return 1;
  }
  auto check = reinterpret_cast<int (*)()>(dlsym(lib, "vmm_local_runtime_user_check"));
  const int rc = check != nullptr ? check() : -1;
  std::printf("local runtime: %s (%d)\n", rc == 0 ? "all checks passed" : "FAILED", rc);
  return rc == 0 ? 0 : 1;
}
