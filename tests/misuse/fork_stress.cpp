// vmm_fork_stress: forks while other threads allocate, free and come and go,
// as jemalloc's and glibc's fork tests do, and checks that every child ends.
//
//   vmm_fork_stress [--iterations N] [--threads T] [--timeout-ms MS]
//
// The parent configures the host backend, starts T threads that allocate
// and free (handing blocks to each other, some threads exiting and being
// replaced, one growing and shrinking a workspace), and its main thread
// allocates too (so it has a thread cache and its exit-time destructor). It
// then forks N times; the child, in turn by iteration:
//   nothing   _exit(0) at once (uses nothing);
//   exit      exit(0): vmmalloc's atexit handlers and the main thread's
//             thread_local destructors run in a child whose other threads
//             are gone, some of them maybe holding vmmalloc's locks;
//   use-exit  vmm_malloc / vmm_free / vmm_workspace_grow return
//             VMM_ERROR_NOT_SUPPORTED (allocator/base/fork_guard.hpp), then
//             exit(0);
//   exec      execs /bin/true.
// A child that has not ended after MS milliseconds hung: it is killed and
// counted. Exit status 0 when every child exited 0 in time and the parent's
// accounting is exact at the end (no bytes in use, no block live); 1
// otherwise; 2 for bad usage. Prints one summary line.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "vmmalloc/vmmalloc.h"

namespace {

constexpr std::size_t KiB = 1024;
constexpr std::size_t MiB = 1024 * KiB;
constexpr int kModes = 4;
const char* const kModeNames[kModes] = {"nothing", "exit", "use-exit", "exec"};

std::atomic<bool> g_stop{false};
std::atomic<int> g_errors{0};

// Blocks handed from one thread to another (freed by a thread that did not
// allocate them: the cross-thread path of the thread caches).
std::mutex g_handoff_mutex;
std::vector<void*> g_handoff;

void error(const char* what) {
  std::fprintf(stderr, "vmm_fork_stress: %s: %s\n", what, vmm_last_error());
  g_errors.fetch_add(1);
}

// One worker's life: `ops` allocate/free steps, then it exits (its thread
// cache is handed back while others keep going).
void work(unsigned seed, int ops) {
  std::mt19937 rng(seed);
  std::vector<void*> mine;
  for (int i = 0; i < ops && !g_stop.load(std::memory_order_relaxed); ++i) {
    const std::size_t bytes = (std::size_t{1} << (rng() % 12)) * 2 * KiB;  // 2 KiB .. 4 MiB
    void* p = nullptr;
    if (vmm_malloc(&p, bytes, 0, nullptr) != VMM_SUCCESS) {
      error("vmm_malloc");
      continue;
    }
    mine.push_back(p);
    if (rng() % 4 == 0) {
      std::lock_guard lock(g_handoff_mutex);
      g_handoff.push_back(mine.back());
      mine.pop_back();
    }
    if (mine.size() > 8) {
      if (vmm_free(mine.front(), nullptr) != VMM_SUCCESS) error("vmm_free");
      mine.erase(mine.begin());
    }
    void* theirs = nullptr;
    {
      std::lock_guard lock(g_handoff_mutex);
      if (!g_handoff.empty()) {
        theirs = g_handoff.back();
        g_handoff.pop_back();
      }
    }
    if (theirs != nullptr && vmm_free(theirs, nullptr) != VMM_SUCCESS) error("vmm_free (handed)");
  }
  for (void* p : mine) {
    if (vmm_free(p, nullptr) != VMM_SUCCESS) error("vmm_free at thread end");
  }
}

// Keeps one worker slot busy: workers of a few hundred steps, one after the
// other, until told to stop.
void churn(unsigned slot) {
  for (unsigned generation = 0; !g_stop.load(std::memory_order_relaxed); ++generation) {
    std::thread t(work, slot * 7919u + generation, 200);
    t.join();
  }
}

// Grows and shrinks a workspace (its own lock, the region's mappings).
void workspace_loop() {
  vmm_workspace* ws = nullptr;
  if (vmm_workspace_create(64 * MiB, 0, &ws) != VMM_SUCCESS) {
    error("vmm_workspace_create");
    return;
  }
  for (std::size_t i = 0; !g_stop.load(std::memory_order_relaxed); ++i) {
    if (vmm_workspace_grow(ws, (1 + i % 16) * 4 * MiB) != VMM_SUCCESS) error("grow");
    if (i % 3 == 0 && vmm_workspace_shrink(ws, 2 * MiB, nullptr) != VMM_SUCCESS) error("shrink");
  }
  if (vmm_workspace_destroy(ws, nullptr) != VMM_SUCCESS) error("vmm_workspace_destroy");
}

// LeakSanitizer (ASan builds) asks this at exit: a child of a multithreaded
// parent holds copies of objects whose owners (the parent's other threads)
// do not exist in it, so the child's exit-time check would report them; the
// parent's own check is the one that counts. Unused without LSan.
volatile int g_in_child = 0;
}  // namespace
extern "C" int __lsan_is_turned_off() { return g_in_child; }
namespace {

// The child's part. Never returns.
[[noreturn]] void child(int mode) {
  g_in_child = 1;
  switch (mode) {
    case 0:
      _exit(0);
    case 1:
      std::exit(0);
    case 2: {
      void* p = nullptr;
      int bad = 0;
      if (vmm_malloc(&p, 1 * MiB, 0, nullptr) != VMM_ERROR_NOT_SUPPORTED) ++bad;
      if (vmm_free(p, nullptr) != VMM_SUCCESS) ++bad;  // NULL: nothing to do
      if (vmm_empty_cache(0, nullptr) != VMM_ERROR_NOT_SUPPORTED) ++bad;
      std::exit(bad == 0 ? 0 : 3);
    }
    default:
      ::execl("/bin/true", "true", static_cast<char*>(nullptr));
      _exit(4);  // exec failed
  }
}

enum class Outcome { ok, failed, hung };

// Waits up to `timeout` for the child; kills it if it is still there.
Outcome reap(pid_t pid, std::chrono::milliseconds timeout, int& status) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) {
      return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? Outcome::ok : Outcome::failed;
    }
    if (r < 0) return Outcome::failed;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return Outcome::hung;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

struct Options {
  int iterations = 1000;
  unsigned threads = 3;
  int timeout_ms = 10000;
};

bool parse(int argc, char** argv, Options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const int value = std::atoi(argv[i + 1]);
    if (value <= 0) return false;
    if (key == "--iterations") {
      o.iterations = value;
    } else if (key == "--threads") {
      o.threads = static_cast<unsigned>(value);
    } else if (key == "--timeout-ms") {
      o.timeout_ms = value;
    } else {
      return false;
    }
  }
  return argc % 2 == 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse(argc, argv, o)) {
    std::fprintf(stderr,
                 "usage: vmm_fork_stress [--iterations N] [--threads T] [--timeout-ms MS]\n");
    return 2;
  }
  if (vmm_configure("backend:host,va_reservation_size:4G") != VMM_SUCCESS) {
    std::fprintf(stderr, "vmm_configure: %s\n", vmm_last_error());
    return 1;
  }
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < o.threads; ++t) threads.emplace_back(churn, t + 1);
  threads.emplace_back(workspace_loop);

  int counts[kModes][3] = {};  // [mode][Outcome]
  for (int i = 0; i < o.iterations; ++i) {
    void* p = nullptr;  // the main thread uses vmmalloc too (its own cache)
    if (vmm_malloc(&p, (1 + i % 4) * MiB, 0, nullptr) != VMM_SUCCESS) error("vmm_malloc (main)");
    const int mode = i % kModes;
    const pid_t pid = ::fork();
    if (pid == 0) child(mode);
    if (vmm_free(p, nullptr) != VMM_SUCCESS) error("vmm_free (main)");
    if (pid < 0) {
      std::perror("fork");
      g_errors.fetch_add(1);
      continue;
    }
    int status = 0;
    const Outcome out = reap(pid, std::chrono::milliseconds(o.timeout_ms), status);
    ++counts[mode][static_cast<int>(out)];
    if (out == Outcome::hung) {
      std::fprintf(stderr, "iteration %d: the child (%s) hung for %d ms: killed\n", i,
                   kModeNames[mode], o.timeout_ms);
    } else if (out == Outcome::failed) {
      std::fprintf(stderr, "iteration %d: the child (%s) ended with status 0x%x\n", i,
                   kModeNames[mode], static_cast<unsigned>(status));
    }
  }
  g_stop.store(true);
  for (std::thread& t : threads) t.join();
  for (void* p : g_handoff) {
    if (vmm_free(p, nullptr) != VMM_SUCCESS) error("vmm_free (left over)");
  }

  vmm_allocator_stats st{};
  if (vmm_get_allocator_stats(0, &st) != VMM_SUCCESS) error("vmm_get_allocator_stats");
  if (st.active_blocks != 0 || st.allocated_bytes != 0) {
    std::fprintf(stderr, "parent: %llu blocks, %llu bytes still in use after every free\n",
                 static_cast<unsigned long long>(st.active_blocks),
                 static_cast<unsigned long long>(st.allocated_bytes));
    g_errors.fetch_add(1);
  }
  int hung = 0;
  int failed = 0;
  std::printf("fork stress: %d forks, %u worker slots;", o.iterations, o.threads);
  for (int m = 0; m < kModes; ++m) {
    std::printf(" %s %d ok/%d failed/%d hung;", kModeNames[m], counts[m][0], counts[m][1],
                counts[m][2]);
    failed += counts[m][1];
    hung += counts[m][2];
  }
  std::printf(" %d errors\n", g_errors.load());
  return hung == 0 && failed == 0 && g_errors.load() == 0 ? 0 : 1;
}
