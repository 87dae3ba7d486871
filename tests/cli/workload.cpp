// vmmctl_workload: a process using vmmalloc for vmmctl's tests (tests/cli)
// and the GPU demo (scripts/gpu_vmmctl_demo.sh). It makes a known set of
// workspaces and heap allocations through the public APIs, can write what
// it made (--expect) and a snapshot (--snapshot, through the C API), and can
// stay alive serving its live socket (--serve), optionally allocating and
// freeing all the while (--churn) like a training loop.
//
//   vmmctl_workload [--device N] [--expect FILE] [--snapshot FILE]
//                   [--serve SECONDS] [--churn] [--odd-name] [--tag TEXT] [--sleepy]
//
// What it makes, on `device` (default -1: the current one; the host backend
// where there is no GPU), with allocation events on:
//   workspace "alpha"  capacity 64 MiB, grown to 10 MiB
//   workspace "beta"   capacity 256 MiB, grown to 100 MiB, shrunk to 40 MiB
//   an unnamed workspace of capacity 8 MiB, never grown
//   heap blocks of 100 B, 4 KiB, 700000 B, 1 MiB, 3 MiB + 5 B and 20 MiB,
//   then the 4 KiB and 3 MiB + 5 B ones freed
// --odd-name names the unnamed workspace with bytes that are not UTF-8;
// --tag TEXT does nothing (it puts TEXT in the command line).
// --sleepy (host backend only: it writes device memory directly) also makes
// a 6 MiB heap block under tag "weights" and a workspace of 64 MiB grown to
// 12 MiB + 3 under tag "kv", each filled with its own byte; at the end it
// checks both bytes (exit 1 if either changed), waking the tags first if
// they sleep - for `vmmctl sleep` / `vmmctl wake`.
// --serve prints "ready <pid>" once all that is done and then waits until
// stdin closes or SECONDS pass. Exit status 0, or 1 with a message.
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "vmmalloc/allocator.hpp"
#include "vmmalloc/snapshot.hpp"
#include "vmmalloc/tags.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

namespace {

constexpr std::size_t MiB = std::size_t{1} << 20;

struct Options {
  int device = -1;
  std::string expect;
  std::string snapshot;
  double serve_s = 0;
  bool churn = false;
  bool odd_name = false;
  bool sleepy = false;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--device") {
      o.device = std::stoi(value());
    } else if (a == "--expect") {
      o.expect = value();
    } else if (a == "--snapshot") {
      o.snapshot = value();
    } else if (a == "--serve") {
      o.serve_s = std::stod(value());
    } else if (a == "--churn") {
      o.churn = true;
    } else if (a == "--sleepy") {
      o.sleepy = true;
    } else if (a == "--odd-name") {
      o.odd_name = true;
    } else if (a == "--tag") {
      value();
    } else {
      throw std::invalid_argument("unknown argument " + a +
                                  " (valid: --device N, --expect FILE, --snapshot FILE, "
                                  "--serve SECONDS, --churn, --odd-name, --tag TEXT, --sleepy)");
    }
  }
  return o;
}

// Waits until stdin closes (or has input) or `seconds` pass.
bool stdin_closed_within(double seconds) {
  pollfd p{STDIN_FILENO, POLLIN, 0};
  const int r = ::poll(&p, 1, static_cast<int>(seconds * 1000));
  return r > 0;
}

int run(int argc, char** argv) {
  const Options o = parse(argc, argv);
  vmm::set_allocation_events(true);

  std::vector<vmm::Workspace> workspaces;
  workspaces.emplace_back(64 * MiB, o.device);
  workspaces.back().set_name("alpha");
  workspaces.back().grow_to(10 * MiB);
  workspaces.emplace_back(256 * MiB, o.device);
  workspaces.back().set_name("beta");
  workspaces.back().grow_to(100 * MiB);
  workspaces.back().shrink_to(40 * MiB, nullptr);
  workspaces.emplace_back(8 * MiB, o.device);
  if (o.odd_name) workspaces.back().set_name("odd \xff\xfe name");

  vmm::Allocator& heap = vmm::Allocator::instance(workspaces.front().device());
  const std::vector<std::size_t> sizes{100, 4096, 700000, MiB, 3 * MiB + 5, 20 * MiB};
  std::vector<void*> blocks;
  for (std::size_t s : sizes) blocks.push_back(heap.allocate(s, nullptr));
  heap.deallocate(blocks[1]);
  heap.deallocate(blocks[4]);

  // --sleepy: tagged memory, filled (host backend: device memory is host memory).
  void* weights = nullptr;
  std::optional<vmm::Workspace> kv;
  if (o.sleepy) {
    const char* backend = nullptr;
    if (vmm_backend_name(heap.device(), &backend) != VMM_SUCCESS || std::string(backend) != "host") {
      throw std::runtime_error("--sleepy needs the host backend");
    }
    {
      vmm::TagScope scope("weights");
      weights = heap.allocate(6 * MiB, nullptr);
    }
    {
      vmm::TagScope scope("kv");
      kv.emplace(64 * MiB, heap.device());
    }
    kv->grow_to(12 * MiB + 3);
    std::memset(weights, 0x57, 6 * MiB);
    std::memset(kv->data(), 0x4b, kv->size());
    // On a GPU these fills would be work on a stream that sleep waits for;
    // here they are this thread's writes. Taking the heap's and the
    // region's locks orders them before a sleep made on another thread
    // (which takes both), as ThreadSanitizer can see.
    heap.empty_cache();
    kv->record_stream(nullptr);
  }

  nlohmann::ordered_json expect;
  expect["pid"] = static_cast<long>(::getpid());
  expect["device"] = heap.device();
  std::size_t in_use = 0;
  nlohmann::ordered_json ws = nlohmann::ordered_json::array();
  for (const vmm::Workspace& w : workspaces) {
    ws.push_back({{"name", w.name()},
                  {"base", reinterpret_cast<std::uintptr_t>(w.data())},
                  {"capacity", w.capacity()},
                  {"size", w.size()},
                  {"mapped_bytes", w.mapped_bytes()}});
    in_use += w.size();
  }
  expect["workspaces"] = std::move(ws);
  nlohmann::ordered_json live = nlohmann::ordered_json::array();
  nlohmann::ordered_json freed = nlohmann::ordered_json::array();
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    const auto addr = reinterpret_cast<std::uintptr_t>(blocks[i]);
    if (i == 1 || i == 4) {
      freed.push_back({{"addr", addr}, {"requested", sizes[i]}});
      continue;
    }
    const std::size_t size = heap.block_size(blocks[i]);
    live.push_back({{"addr", addr}, {"requested", sizes[i]}, {"size", size}});
    in_use += size;
  }
  expect["live_blocks"] = std::move(live);
  expect["freed_blocks"] = std::move(freed);
  expect["in_use_bytes"] = in_use;

  if (!o.expect.empty()) {
    // Bytes that are not UTF-8 (--odd-name) as U+FFFD, as the snapshot has them.
    std::ofstream(o.expect) << expect.dump(1, ' ', false,
                                           nlohmann::ordered_json::error_handler_t::replace)
                            << "\n";
  }
  if (!o.snapshot.empty() && vmm_snapshot_write(o.snapshot.c_str()) != VMM_SUCCESS) {
    std::fprintf(stderr, "vmmctl_workload: %s\n", vmm_last_error());
    return 1;
  }

  if (o.serve_s > 0) {
    std::printf("ready %ld\n", static_cast<long>(::getpid()));
    std::fflush(stdout);
    if (!o.churn) {
      stdin_closed_within(o.serve_s);
    } else {
      // Steps of a training-like loop: allocate a batch of activations,
      // free them, repeat, until told to stop.
      std::mt19937 rng(1);
      std::uniform_int_distribution<std::size_t> size(512, 8 * MiB);
      const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.serve_s);
      while (std::chrono::steady_clock::now() < end && !stdin_closed_within(0.01)) {
        std::vector<void*> step;
        for (int i = 0; i < 64; ++i) step.push_back(heap.allocate(size(rng), nullptr));
        for (void* p : step) heap.deallocate(p);
      }
    }
  }
  for (std::size_t i = 0; i < blocks.size(); ++i) {
    if (i != 1 && i != 4) heap.deallocate(blocks[i]);
  }
  if (o.sleepy) {
    heap.wake({vmm::tag_id("weights"), vmm::tag_id("kv")});
    const auto holds = [](const void* p, std::size_t n, unsigned char v) {
      const auto* b = static_cast<const unsigned char*>(p);
      for (std::size_t i = 0; i < n; ++i) {
        if (b[i] != v) return false;
      }
      return true;
    };
    if (!holds(weights, 6 * MiB, 0x57) || !holds(kv->data(), kv->size(), 0x4b)) {
      std::fprintf(stderr, "vmmctl_workload: tagged memory changed across sleep and wake\n");
      return 1;
    }
    std::printf("tagged memory intact\n");
    heap.deallocate(weights);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmmctl_workload: %s\n", e.what());
    return 1;
  }
}
