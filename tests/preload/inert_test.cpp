// A process that never touches CUDA, run with and without
// LD_PRELOAD=libvmmalloc_preload.so: the interposer must change nothing.
//   - dlsym answers as glibc does, including RTLD_NEXT, which glibc
//     resolves relative to the CALLER: chain_a's lookup must find chain_b's
//     definition, not its own, and local_c's (a library loaded with
//     RTLD_LOCAL) must find its own dependency; a failed lookup still sets
//     dlerror();
//   - no thread is started, no CUDA library is loaded, nothing is printed
//     (CTest fails the run on any "vmmalloc[" line, print_stats:on included);
//   - fork and exit in the child work.
// Exit status 0 when every check passed.
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "check.hpp"

extern "C" const char* vmm_chain_name(void);
extern "C" const char* vmm_chain_next_name(void);
extern "C" int vmm_chain_b_linked(void);

namespace {

std::string read_file(const char* path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int thread_count() {
  const std::string status = read_file("/proc/self/status");
  const std::size_t at = status.find("Threads:");
  return at == std::string::npos ? -1 : std::atoi(status.c_str() + at + 8);
}

}  // namespace

int main(int argc, char** argv) {
  const bool preloaded = argc > 1 && std::strcmp(argv[1], "--preloaded") == 0;
  const std::string maps_before = read_file("/proc/self/maps");
  CHECK(preloaded == (maps_before.find("libvmmalloc_preload") != std::string::npos));

  // RTLD_NEXT relative to the caller.
  CHECK(vmm_chain_b_linked() == 1);
  CHECK(std::strcmp(vmm_chain_name(), "a") == 0);
  CHECK(std::strcmp(vmm_chain_next_name(), "b") == 0);
  // RTLD_NEXT in a local library's scope.
  void* c = dlopen("libvmm_local_c.so", RTLD_NOW | RTLD_LOCAL);
  CHECK(c != nullptr);
  if (c != nullptr) {
    auto finds_d = reinterpret_cast<int (*)()>(dlsym(c, "vmm_local_c_finds_d"));
    CHECK(finds_d != nullptr && finds_d() == 1);
    // From the program, outside that scope, it is not visible.
    CHECK(dlsym(RTLD_DEFAULT, "vmm_local_d_symbol") == nullptr);
  }
  // Ordinary lookups, and errors.
  CHECK(dlsym(RTLD_DEFAULT, "strlen") == reinterpret_cast<void*>(&strlen));
  CHECK(dlsym(RTLD_NEXT, "malloc") == dlsym(RTLD_DEFAULT, "malloc"));
  dlerror();
  CHECK(dlsym(RTLD_DEFAULT, "vmm_no_such_symbol") == nullptr);
  const char* error = dlerror();
  CHECK(error != nullptr && std::strstr(error, "vmm_no_such_symbol") != nullptr);
  // A CUDA name looked up where no driver exists: still nothing.
  CHECK(dlsym(RTLD_DEFAULT, "cuMemAlloc_v2") == nullptr || preloaded);

  // Fork, and exit() in the child.
  const pid_t child = fork();
  if (child == 0) std::exit(0);
  int status = 0;
  CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0);

  // Nothing started: one thread, no CUDA library.
  CHECK(thread_count() == 1);
  const std::string maps = read_file("/proc/self/maps");
  CHECK(maps.find("libcuda") == std::string::npos);
  CHECK(maps.find("libcudart") == std::string::npos);

  std::printf("inert%s: %s\n", preloaded ? " (preloaded)" : "",
              g_failures == 0 ? "all checks passed" : "FAILED");
  return g_failures == 0 ? 0 : 1;
}
