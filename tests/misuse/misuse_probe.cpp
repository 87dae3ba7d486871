// vmm_misuse_probe: misuse cases of docs/reliability.md that need a process
// of their own, driven through the C ABI over the process-wide allocator.
//
//   vmm_misuse_probe MODE BACKEND       BACKEND: host | cuda
//
//   exit-teardown       Calls vmmalloc from an atexit handler and from a
//                       static object's destructor, both registered before
//                       anything was initialised, so they run after
//                       vmmalloc's own exit handler (which stops the
//                       reclaimer threads) and, on cuda, after the CUDA
//                       runtime's teardown: free live blocks, allocate, grow,
//                       shrink, empty_cache, destroy a workspace. Every call
//                       must return a defined status (VMM_SUCCESS; on cuda a
//                       VMM_ERROR_DRIVER naming the driver call is allowed
//                       too), never crash or hang. The runtime is initialised
//                       before vmmalloc ("cuda" and "host") or after it
//                       (BACKEND "cuda-late").
//   before-init         The very first call of the process is vmm_malloc on
//                       device -1 with no CUDA context current: it must work
//                       (device 0), and on cuda the block must be usable by
//                       the runtime afterwards.
//   fork-after-init     Forks while another thread allocates and frees. In
//                       the child every call returns VMM_ERROR_NOT_SUPPORTED
//                       (allocator/base/fork_guard.hpp) at once - no hang, no
//                       touching the parent's memory. The parent's blocks keep
//                       their contents and it keeps working.
//   fork-before-init    Forks before vmmalloc is used: the child uses it
//                       normally (its own state), and so does the parent.
//   bad-config          A bad VMMALLOC_CONF (one per kind of mistake) fails
//                       the first call with VMM_ERROR_CONFIG naming the key,
//                       initialises nothing; once fixed, the next call works.
//   cuda-without-gpu    backend:cuda where no GPU is usable: VMM_ERROR_CONFIG
//                       naming the key and the reason, on every call until
//                       vmm_configure picks a usable backend; then it works
//                       (77 where a GPU is usable).
//
// Exit status: 0 when every call behaved as defined, 1 otherwise, 2 for bad
// usage, 77 when BACKEND is cuda and no GPU is usable (CTest: skipped).
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "vmmalloc/vmmalloc.h"

#ifdef VMM_PROBE_HAVE_CUDART
#include <cuda_runtime_api.h>
#endif

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;
constexpr int kSkip = 77;

std::string g_backend;  // "host", "cuda" or "cuda-late"
int g_failures = 0;

bool on_gpu() { return g_backend != "host"; }

void fail(const std::string& what) {
  std::printf("FAIL: %s\n", what.c_str());
  std::fflush(stdout);
  ++g_failures;
}

// Checks one call's status. `allow_driver_error`: on a GPU after the CUDA
// runtime's teardown, a VMM_ERROR_DRIVER that names the driver call is a
// defined outcome too.
void expect(const char* where, const char* call, vmm_status s, vmm_status want,
            bool allow_driver_error = false) {
  const std::string message = s == VMM_SUCCESS ? "" : vmm_last_error();
  std::printf("%s: %s -> %s%s%s\n", where, call, vmm_status_name(s), message.empty() ? "" : ": ",
              message.c_str());
  std::fflush(stdout);
  if (s == want) return;
  if (allow_driver_error && s == VMM_ERROR_DRIVER && message.find("cu") != std::string::npos) {
    return;
  }
  fail(std::string(where) + ": " + call + " returned " + vmm_status_name(s) + ", expected " +
       vmm_status_name(want));
}

// ---- the device memory, as the program would touch it ---------------------

void init_cuda_runtime() {
#ifdef VMM_PROBE_HAVE_CUDART
  // cudaFree(0) creates the runtime's state (and its exit-time teardown).
  const cudaError_t e = cudaFree(nullptr);
  if (e != cudaSuccess) fail(std::string("cudaFree(0): ") + cudaGetErrorString(e));
#endif
}

void fill(void* p, std::size_t n, unsigned char v) {
  if (!on_gpu()) {
    std::memset(p, v, n);
    return;
  }
#ifdef VMM_PROBE_HAVE_CUDART
  cudaError_t e = cudaMemset(p, v, n);
  if (e == cudaSuccess) e = cudaStreamSynchronize(nullptr);
  if (e != cudaSuccess) fail(std::string("cudaMemset: ") + cudaGetErrorString(e));
#endif
}

bool holds(const void* p, std::size_t n, unsigned char v) {
  std::vector<unsigned char> copy(n);
  if (!on_gpu()) {
    std::memcpy(copy.data(), p, n);
  } else {
#ifdef VMM_PROBE_HAVE_CUDART
    const cudaError_t e = cudaMemcpy(copy.data(), p, n, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) {
      fail(std::string("cudaMemcpy: ") + cudaGetErrorString(e));
      return false;
    }
#endif
  }
  for (unsigned char c : copy) {
    if (c != v) return false;
  }
  return true;
}

// Returns false (after printing why) if the backend cannot be had: the
// caller exits with kSkip for cuda.
bool configure() {
  const std::string conf = std::string("backend:") + (on_gpu() ? "cuda" : "host") +
                           ",va_reservation_size:8G";
  const vmm_status s = vmm_configure(conf.c_str());
  if (s != VMM_SUCCESS) {
    fail(std::string("vmm_configure: ") + vmm_last_error());
    return false;
  }
  const char* name = nullptr;
  const vmm_status b = vmm_backend_name(0, &name);
  if (b != VMM_SUCCESS) {
    if (on_gpu() && b == VMM_ERROR_CONFIG) {
      std::printf("SKIPPED: no usable GPU (%s)\n", vmm_last_error());
      std::exit(kSkip);
    }
    fail(std::string("vmm_backend_name: ") + vmm_last_error());
    return false;
  }
  std::printf("backend: %s\n", name);
  return true;
}

// ---- exit-teardown ---------------------------------------------------------

struct ExitState {
  void* block = nullptr;  // freed by the atexit handler
  void* block2 = nullptr;  // freed by the static destructor
  vmm_workspace* ws = nullptr;
  vmm_workspace* ws2 = nullptr;
  bool armed = false;
  int calls = 0;
};
ExitState g_exit;

// What a program's late cleanup does, after vmmalloc's (and CUDA's) exit
// handlers ran.
void use_after_teardown(const char* where, void* block, vmm_workspace* ws) {
  const bool driver_ok = on_gpu();
  expect(where, "vmm_free(live block)", vmm_free(block, nullptr), VMM_SUCCESS, driver_ok);
  void* p = nullptr;
  const vmm_status m = vmm_malloc(&p, 8 * MiB, 0, nullptr);
  expect(where, "vmm_malloc(8 MiB)", m, VMM_SUCCESS, driver_ok);
  if (m == VMM_SUCCESS) expect(where, "vmm_free(new block)", vmm_free(p, nullptr), VMM_SUCCESS, driver_ok);
  expect(where, "vmm_workspace_grow(40 MiB)", vmm_workspace_grow(ws, 40 * MiB), VMM_SUCCESS,
         driver_ok);
  expect(where, "vmm_workspace_shrink(1 MiB)", vmm_workspace_shrink(ws, 1 * MiB, nullptr),
         VMM_SUCCESS, driver_ok);
  std::size_t released = 0;
  expect(where, "vmm_empty_cache", vmm_empty_cache(0, &released), VMM_SUCCESS, driver_ok);
  vmm_allocator_stats st{};
  expect(where, "vmm_get_allocator_stats", vmm_get_allocator_stats(0, &st), VMM_SUCCESS);
  expect(where, "vmm_workspace_destroy", vmm_workspace_destroy(ws, nullptr), VMM_SUCCESS,
         driver_ok);
  g_exit.calls += 9;
}

void atexit_handler() {
  if (!g_exit.armed) return;
  use_after_teardown("atexit handler", g_exit.block, g_exit.ws);
}

// Constructed before main (so destroyed after every handler registered later).
struct LateUser {
  ~LateUser() {
    if (!g_exit.armed) return;
    use_after_teardown("static destructor", g_exit.block2, g_exit.ws2);
    std::printf("exit-teardown: %d calls after teardown, %d failures\n", g_exit.calls, g_failures);
    std::fflush(stdout);
    if (g_failures != 0) _exit(1);
  }
};
LateUser g_late_user;

int exit_teardown() {
  std::atexit(atexit_handler);  // before vmmalloc's and CUDA's: runs after theirs
  if (g_backend == "cuda") init_cuda_runtime();
  if (!configure()) return 1;
  for (void** b : {&g_exit.block, &g_exit.block2}) {
    if (vmm_malloc(b, 4 * MiB, 0, nullptr) != VMM_SUCCESS) fail("vmm_malloc in main");
  }
  for (vmm_workspace** w : {&g_exit.ws, &g_exit.ws2}) {
    if (vmm_workspace_create(256 * MiB, 0, w) != VMM_SUCCESS ||
        vmm_workspace_grow(*w, 16 * MiB) != VMM_SUCCESS) {
      fail(std::string("workspace in main: ") + vmm_last_error());
      return 1;
    }
  }
  if (g_backend == "cuda-late") init_cuda_runtime();
  fill(g_exit.block, 4 * MiB, 1);
  g_exit.armed = g_failures == 0;
  return g_failures == 0 ? 0 : 1;
}

// ---- before-init -----------------------------------------------------------

int before_init() {
  // The first thing the process does: no configuration call, no CUDA call.
  if (on_gpu()) ::setenv("VMMALLOC_CONF", "backend:cuda", 1);
  else ::setenv("VMMALLOC_CONF", "backend:host", 1);
  void* p = nullptr;
  const vmm_status s = vmm_malloc(&p, 2 * MiB, -1, nullptr);
  if (s == VMM_ERROR_CONFIG && on_gpu()) {
    std::printf("SKIPPED: no usable GPU (%s)\n", vmm_last_error());
    return kSkip;
  }
  expect("first call", "vmm_malloc(2 MiB, device -1)", s, VMM_SUCCESS);
  if (s != VMM_SUCCESS) return 1;
  const char* name = nullptr;
  expect("first call", "vmm_backend_name(0)", vmm_backend_name(0, &name), VMM_SUCCESS);
  std::printf("backend: %s\n", name != nullptr ? name : "?");
  fill(p, 2 * MiB, 0x5a);
  if (!holds(p, 2 * MiB, 0x5a)) fail("the block does not hold what was written to it");
  vmm_allocator_stats st{};
  vmm_get_allocator_stats(0, &st);
  if (st.active_blocks != 1) fail("the block was not counted on device 0");
  expect("first call", "vmm_free", vmm_free(p, nullptr), VMM_SUCCESS);
  return g_failures == 0 ? 0 : 1;
}

// One process's normal use: allocate, write, check, free. `configure_first`:
// call vmm_configure (else VMMALLOC_CONF applies).
void normal_use(const char* where, bool configure_first = false) {
  if (configure_first && !configure()) return;
  void* p = nullptr;
  expect(where, "vmm_malloc", vmm_malloc(&p, 6 * MiB, 0, nullptr), VMM_SUCCESS);
  if (p == nullptr) return;
  fill(p, 6 * MiB, 0x77);
  if (!holds(p, 6 * MiB, 0x77)) fail(std::string(where) + ": the block does not hold its bytes");
  expect(where, "vmm_free", vmm_free(p, nullptr), VMM_SUCCESS);
}

// ---- bad-config ------------------------------------------------------------

// VMMALLOC_CONF is read at the first call that needs the allocator; a bad
// value fails that call with VMM_ERROR_CONFIG naming the key, initialises
// nothing, and a later call reads it again.
int bad_config() {
  const char* where = "bad VMMALLOC_CONF";
  struct Case {
    const char* conf;
    const char* key;
  };
  const Case cases[] = {{"chunk_sizes:3M", "chunk_sizes"},
                        {"memory_cap:2.5", "memory_cap"},
                        {"no_such_key:1", "no_such_key"},
                        {"backend:gpu", "backend"},
                        {"pool_cache_limit:-1", "pool_cache_limit"},
                        {"va_reservation_size:1K", "va_reservation_size"}};
  for (const Case& c : cases) {
    ::setenv("VMMALLOC_CONF", c.conf, 1);
    void* p = reinterpret_cast<void*>(1);
    const vmm_status s = vmm_malloc(&p, 1 * MiB, 0, nullptr);
    expect(where, c.conf, s, VMM_ERROR_CONFIG);
    if (p != nullptr) fail(std::string(c.conf) + ": *ptr was not set to NULL");
    if (std::string(vmm_last_error()).find(c.key) == std::string::npos) {
      fail(std::string(c.conf) + ": the message does not name the key " + c.key);
    }
  }
  // Fixed: the next call works.
  ::setenv("VMMALLOC_CONF", "backend:host,va_reservation_size:8G", 1);
  normal_use("after fixing VMMALLOC_CONF");
  return g_failures == 0 ? 0 : 1;
}

// backend:cuda forced where no GPU is usable: the first call fails with
// VMM_ERROR_CONFIG naming the key and saying why; nothing is initialised.
int cuda_without_gpu() {
  ::setenv("VMMALLOC_CONF", "backend:cuda", 1);
  void* p = reinterpret_cast<void*>(1);
  const vmm_status s = vmm_malloc(&p, 1 * MiB, 0, nullptr);
  if (s == VMM_SUCCESS) {
    vmm_free(p, nullptr);
    std::printf("SKIPPED: a GPU is usable here, so backend:cuda is valid\n");
    return kSkip;
  }
  expect("backend:cuda without a GPU", "vmm_malloc", s, VMM_ERROR_CONFIG);
  const std::string message = vmm_last_error();
  if (message.find("backend") == std::string::npos ||
      message.find("no GPU is usable") == std::string::npos) {
    fail("the message does not name the key and the reason: " + message);
  }
  if (p != nullptr) fail("*ptr was not set to NULL");
  // The configuration was valid, so it is kept: every call says the same
  // until vmm_configure (allowed: no device is in use) picks a usable backend.
  expect("backend:cuda without a GPU", "vmm_malloc again", vmm_malloc(&p, 1 * MiB, 0, nullptr),
         VMM_ERROR_CONFIG);
  expect("backend:cuda without a GPU", "vmm_configure(backend:host)",
         vmm_configure("backend:host,va_reservation_size:8G"), VMM_SUCCESS);
  normal_use("after vmm_configure(backend:host)");
  return g_failures == 0 ? 0 : 1;
}

// ---- fork ------------------------------------------------------------------

// Waits for the child; true if it exited with status 0.
bool child_succeeded(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) {
    fail("waitpid failed");
    return false;
  }
  if (WIFSIGNALED(status)) {
    fail("the child was killed by signal " + std::to_string(WTERMSIG(status)) +
         (WTERMSIG(status) == SIGALRM ? " (it hung)" : ""));
    return false;
  }
  if (WEXITSTATUS(status) != 0) {
    fail("the child exited with " + std::to_string(WEXITSTATUS(status)));
    return false;
  }
  return true;
}

int fork_after_init() {
  if (on_gpu()) init_cuda_runtime();
  if (!configure()) return 1;
  void* p = nullptr;
  vmm_workspace* ws = nullptr;
  if (vmm_malloc(&p, 4 * MiB, 0, nullptr) != VMM_SUCCESS ||
      vmm_workspace_create(64 * MiB, 0, &ws) != VMM_SUCCESS ||
      vmm_workspace_grow(ws, 8 * MiB) != VMM_SUCCESS) {
    fail(std::string("set-up: ") + vmm_last_error());
    return 1;
  }
  fill(p, 4 * MiB, 0x33);
  void* base = nullptr;
  vmm_workspace_data(ws, &base);
  fill(base, 8 * MiB, 0x44);

  // Another thread is inside vmmalloc (holding its locks, maybe) at the fork.
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop.load()) {
      void* q = nullptr;
      if (vmm_malloc(&q, 3 * MiB, 0, nullptr) == VMM_SUCCESS) vmm_free(q, nullptr);
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(20);  // a hang becomes SIGALRM, which the parent reports
    const char* where = "forked child";
    void* q = reinterpret_cast<void*>(1);
    expect(where, "vmm_malloc", vmm_malloc(&q, 1 * MiB, 0, nullptr), VMM_ERROR_NOT_SUPPORTED);
    if (q != nullptr) fail("vmm_malloc in the child did not set *ptr to NULL");
    if (std::string(vmm_last_error()).find("forked") == std::string::npos) {
      fail("the child's error does not say why");
    }
    expect(where, "vmm_free(parent's block)", vmm_free(p, nullptr), VMM_ERROR_NOT_SUPPORTED);
    expect(where, "vmm_workspace_grow", vmm_workspace_grow(ws, 16 * MiB), VMM_ERROR_NOT_SUPPORTED);
    expect(where, "vmm_workspace_shrink", vmm_workspace_shrink(ws, 0, nullptr),
           VMM_ERROR_NOT_SUPPORTED);
    const char* name = nullptr;
    expect(where, "vmm_backend_name", vmm_backend_name(0, &name), VMM_ERROR_NOT_SUPPORTED);
    expect(where, "vmm_empty_cache", vmm_empty_cache(0, nullptr), VMM_ERROR_NOT_SUPPORTED);
    expect(where, "vmm_configure", vmm_configure("backend:host"), VMM_ERROR_NOT_SUPPORTED);
    std::fflush(stdout);
    _exit(g_failures == 0 ? 0 : 1);
  }
  stop.store(true);
  busy.join();
  if (pid < 0) {
    fail("fork failed");
    return 1;
  }
  child_succeeded(pid);
  // The parent is unaffected.
  const char* where = "parent after the fork";
  if (!holds(p, 4 * MiB, 0x33)) fail("the parent's block lost its contents");
  if (!holds(base, 8 * MiB, 0x44)) fail("the parent's workspace lost its contents");
  expect(where, "vmm_free", vmm_free(p, nullptr), VMM_SUCCESS);
  void* q = nullptr;
  expect(where, "vmm_malloc", vmm_malloc(&q, 5 * MiB, 0, nullptr), VMM_SUCCESS);
  expect(where, "vmm_free", vmm_free(q, nullptr), VMM_SUCCESS);
  expect(where, "vmm_workspace_grow", vmm_workspace_grow(ws, 32 * MiB), VMM_SUCCESS);
  expect(where, "vmm_workspace_destroy", vmm_workspace_destroy(ws, nullptr), VMM_SUCCESS);
  vmm_allocator_stats st{};
  expect(where, "vmm_get_allocator_stats", vmm_get_allocator_stats(0, &st), VMM_SUCCESS);
  if (st.active_blocks != 0) fail("blocks still live in the parent");
  return g_failures == 0 ? 0 : 1;
}

int fork_before_init() {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::alarm(60);
    if (on_gpu()) init_cuda_runtime();
    normal_use("child forked before vmmalloc was used", true);
    std::fflush(stdout);
    _exit(g_failures == 0 ? 0 : 1);
  }
  if (pid < 0) {
    fail("fork failed");
    return 1;
  }
  child_succeeded(pid);
  if (on_gpu()) init_cuda_runtime();
  normal_use("parent", true);
  return g_failures == 0 ? 0 : 1;
}

void usage() {
  std::fprintf(stderr,
               "usage: vmm_misuse_probe MODE BACKEND\n"
               "  MODE: exit-teardown | before-init | fork-after-init | fork-before-init |\n"
               "        bad-config | cuda-without-gpu\n"
               "  BACKEND: host | cuda | cuda-late (exit-teardown: CUDA runtime initialised "
               "after vmmalloc)\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    usage();
    return 2;
  }
  const std::string mode = argv[1];
  g_backend = argv[2];
  if (g_backend != "host" && g_backend != "cuda" && g_backend != "cuda-late") {
    std::fprintf(stderr, "vmm_misuse_probe: backend '%s' (valid: host, cuda, cuda-late)\n",
                 argv[2]);
    return 2;
  }
#ifndef VMM_PROBE_HAVE_CUDART
  if (on_gpu()) {
    std::printf("SKIPPED: built without the CUDA runtime (no CUDA compiler)\n");
    return kSkip;
  }
#endif
  if (mode == "exit-teardown") return exit_teardown();
  if (mode == "before-init") return before_init();
  if (mode == "fork-after-init") return fork_after_init();
  if (mode == "fork-before-init") return fork_before_init();
  if (mode == "bad-config") return bad_config();
  if (mode == "cuda-without-gpu") return cuda_without_gpu();
  std::fprintf(stderr, "vmm_misuse_probe: unknown mode '%s'\n", mode.c_str());
  usage();
  return 2;
}
