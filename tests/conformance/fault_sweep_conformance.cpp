// Fault sweep, one source per backend (HostFixture in vmm_host_tests,
// CudaFixture in vmm_gpu_tests): a scripted workload that mixes
// vmm::Workspace grows and shrinks with vmm::Allocator allocations, frees,
// record_stream, frees in another stream's order and empty_cache, run once
// clean to count the driver calls of each kind it makes, then once per call
// position with a fault injected exactly there (FaultInjectingBackend).
//
// After every step of every run, with the streams synchronised:
//   - an error that reached the caller is the injected one: a vmm::Error
//     whose message names the driver function ("cuMemMap") and says
//     "injected"; at most one error per run (the fault is one-shot, so the
//     allocator must go on serving: every later step succeeds);
//   - a failed step changed nothing (a workspace keeps its size; a failed
//     allocation hands out nothing; a failed free leaves the block live);
//   - every live block and workspace still holds its pattern (filled on the
//     device, verified on the device);
//   - the accounting matches a recount: the backend's own count of handle
//     bytes equals the pool's created bytes; created = acquired + cached;
//     acquired = mapped by the heap and the workspaces + pending reclaim;
//     the backend maps at least that (more while stitched chunks keep an
//     old address until its fences complete); the allocator's
//     allocated/requested bytes and active blocks equal the sums over the
//     live blocks.
// At the end everything is freed (fault disarmed): no address range is left
// handed out, nothing is acquired, and after the context's teardown the
// backend holds no handle, reservation or mapping.
//
// The reclaimer's background thread is stopped so every driver call comes
// from the test thread in a fixed order: positions mean the same call in
// every run. On the host backend every position of every kind is injected
// (plus out-of-memory faults on create, reserve and map; every third under
// ThreadSanitizer); on a GPU the first, middle and last position of each kind
// (scripts/gpu_suite.sh runs it under compute-sanitizer too). Contents are
// verified in sampled windows (see verify_sampled) to keep a run short. Each
// kind's counts and the total are printed ("fault sweep [host] total: ...")
// for bench/reliability.py.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/workspace.hpp"

using namespace vmm;
using namespace vmm::test;

namespace {

// The driver function each kind stands for, as the error names it.
const char* driver_function(BackendCall kind) {
  switch (kind) {
    case BackendCall::reserve: return "cuMemAddressReserve";
    case BackendCall::free_va: return "cuMemAddressFree";
    case BackendCall::create: return "cuMemCreate";
    case BackendCall::release: return "cuMemRelease";
    case BackendCall::map: return "cuMemMap";
    case BackendCall::unmap: return "cuMemUnmap";
    case BackendCall::set_access: return "cuMemSetAccess";
    case BackendCall::record_fence: return "cuEventRecord";
    case BackendCall::query_fence: return "cuEventQuery";
    case BackendCall::wait_fence: return "cuEventSynchronize";
    case BackendCall::can_access_peer: return "cuDeviceCanAccessPeer";
    case BackendCall::export_handle: return "cuMemExportToShareableHandle";
    case BackendCall::import_handle: return "cuMemImportFromShareableHandle";
    case BackendCall::alloc_pinned: return "cuMemHostAlloc";
    case BackendCall::create_stream: return "cuStreamCreate";
    case BackendCall::copy: return "cuMemcpyAsync";
    case BackendCall::count_: break;
  }
  return "?";
}

struct Fault {
  BackendCall kind = BackendCall::count_;  // count_: none (the clean run)
  std::uint64_t position = 0;              // 1-based, among calls of `kind`
  bool as_oom = false;
};

struct RunResult {
  bool fired = false;
  std::vector<std::string> errors;  // "step: message", one per failed step
  std::uint64_t calls[kBackendCallKinds] = {};  // made by the script (cleanup excluded)
  LiveObjects left;                             // on the backend after teardown
};

using DeviceFactory = std::unique_ptr<TestDevice> (*)();

// A block the workload holds: filled with `value` on its stream.
struct LiveBlock {
  void* ptr = nullptr;
  std::size_t bytes = 0;
  std::uint8_t value = 0;
};

// One run of the scripted workload over a fresh harness.
class Workload {
 public:
  Workload(DeviceFactory make_device, Fault fault)
      : fault_(fault), h_(make_device()) {
    // Every driver call from this thread, in script order.
    h_.context().reclaimer().stop_background_thread();
    other_ = h_.device().create_stream();
  }

  RunResult run() {
    {
      Allocator a(h_.context());
      allocator_ = &a;
      arm();
      script();
      for (int k = 0; k < kBackendCallKinds; ++k) {
        result_.calls[k] = h_.faults().calls(static_cast<BackendCall>(k));
      }
      h_.faults().disarm();
      cleanup();
      allocator_ = nullptr;
    }
    settle();
    check_at_rest_empty();
    h_.device().destroy_stream(other_);
    CHECK(h_.destroy_context_and_check_no_leak());
    result_.left = h_.inner().live_objects();
    return result_;
  }

 private:
  void arm() {
    if (fault_.kind == BackendCall::count_) return;
    if (fault_.as_oom) {
      h_.faults().fail_nth_as_oom(fault_.kind, fault_.position);
    } else {
      h_.faults().fail_nth(fault_.kind, fault_.position);
    }
  }

  // The script. Names are for messages; each step is one public call (or a
  // reclaimer poll, the background thread's work done in order).
  void script() {
    Stream S = h_.stream();
    Stream T = other_;
    step("workspace w1(256M)", [&] { make_workspace("w1", 256 * MiB); });
    step("workspace big(9G): dedicated reservation", [&] { make_workspace("big", 9 * GiB); });
    step("w1 grow 3M", [&] { grow("w1", 3 * MiB); });
    step("allocate p1 5000 on S", [&] { allocate("p1", 5000, S); });
    step("allocate p2 5M on S", [&] { allocate("p2", 5 * MiB, S); });
    step("w1 grow 20M", [&] { grow("w1", 20 * MiB); });
    step("big grow 6M", [&] { grow("big", 6 * MiB); });
    step("allocate p3 3M on T", [&] { allocate("p3", 3 * MiB, T); });
    step("record_stream p2 on T", [&] { record_stream("p2", T); });
    step("free p1", [&] { free_block("p1"); });
    step("workspace w2(64M)", [&] { make_workspace("w2", 64 * MiB); });
    step("w2 grow 10M", [&] { grow("w2", 10 * MiB); });
    step("free p2 (used on T too)", [&] { free_block("p2"); });
    step("allocate p4 5M on T: S's memory after its fences", [&] { allocate("p4", 5 * MiB, T); });
    step("w1 shrink 6M on S", [&] { shrink("w1", 6 * MiB, S); });
    step("w1 grow 36M: takes the pending tail back", [&] { grow("w1", 36 * MiB); });
    step("allocate p5 700K on S", [&] { allocate("p5", 700 * KiB, S); });
    step("empty_cache", [&] { allocator_->empty_cache(); });
    step("poll reclaimer", [&] { h_.context().reclaimer().poll(); });
    step("allocate p6 12M on S: stitched or new", [&] { allocate("p6", 12 * MiB, S); });
    step("free p3 in S's order", [&] { free_block("p3", S); });
    step("w2 shrink 0 on T", [&] { shrink("w2", 0, T); });
    step("big shrink 1M on S", [&] { shrink("big", 1 * MiB, S); });
    step("poll reclaimer", [&] { h_.context().reclaimer().poll(); });
    step("allocate p7 2M+1 on T", [&] { allocate("p7", 2 * MiB + 1, T); });
    step("free p4", [&] { free_block("p4"); });
    step("free p6", [&] { free_block("p6"); });
    step("empty_cache", [&] { allocator_->empty_cache(); });
    step("trim_to_limit", [&] { allocator_->trim_to_limit(); });
    step("w1 shrink 1M on T", [&] { shrink("w1", 1 * MiB, T); });
    step("release big on S", [&] { release_workspace("big", S); });
    step("drain reclaimer", [&] { h_.context().reclaimer().drain(); });
    step("allocate p8 18M on T", [&] { allocate("p8", 18 * MiB, T); });
    step("w2 grow 12M", [&] { grow("w2", 12 * MiB); });
    step("free p5", [&] { free_block("p5"); });
    step("free p8", [&] { free_block("p8"); });
    step("release w2 on T", [&] { release_workspace("w2", T); });
    step("empty_cache", [&] { allocator_->empty_cache(); });
    step("pool trim to 0", [&] { h_.context().pool().trim(0); });
    step("poll reclaimer", [&] { h_.context().reclaimer().poll(); });
  }

  // Frees what is left with the fault disarmed: must all succeed.
  void cleanup() {
    const std::size_t errors_before = result_.errors.size();
    std::vector<std::string> names;
    for (const auto& [name, b] : blocks_) names.push_back(name);
    for (const std::string& name : names) step("cleanup: free " + name, [&] { free_block(name); });
    std::vector<std::string> ws_names;
    for (const auto& [name, w] : workspaces_) ws_names.push_back(name);
    for (const std::string& name : ws_names) {
      step("cleanup: release " + name, [&] { release_workspace(name, h_.stream()); });
    }
    step("cleanup: release_stream T", [&] { allocator_->release_stream(other_); });
    step("cleanup: empty_cache", [&] { allocator_->empty_cache(); });
    step("cleanup: drain", [&] { h_.context().reclaimer().drain(); });
    INFO("errors after the fault was disarmed");
    CHECK(result_.errors.size() == errors_before);
  }

  // Runs one step, then checks everything at rest.
  template <class F>
  void step(const std::string& name, F&& op) {
    const std::map<std::string, std::size_t> ws_sizes = workspace_sizes();
    const std::size_t blocks_before = blocks_.size();
    try {
      op();
    } catch (const Error& e) {
      on_error(name, e);
      CHECK(workspace_sizes() == ws_sizes);   // a failed step changed nothing
      CHECK(blocks_.size() == blocks_before);
    }
    if (h_.faults().fired()) result_.fired = true;
    settle();
    verify_contents(name);
    check_recount(name);
  }

  void on_error(const std::string& step_name, const Error& e) {
    const std::string message = e.what();
    result_.errors.push_back(step_name + ": " + message);
    INFO("step '" << step_name << "' failed: " << message);
    // Only the injected fault may fail a step, and it names the call.
    CHECK(fault_.kind != BackendCall::count_);
    CHECK(h_.faults().fired());
    CHECK(message.find("injected") != std::string::npos);
    CHECK(message.find(driver_function(fault_.kind)) != std::string::npos);
    // The address space reports any refused reservation as out of memory
    // (address space exhausted), naming the call in the message; the pool
    // turns a device out-of-memory on create into OutOfMemoryError; the
    // driver's out-of-memory from map reaches the caller as itself
    // (DeviceOutOfMemoryError, a DriverError).
    if (fault_.kind == BackendCall::reserve || (fault_.as_oom && fault_.kind == BackendCall::create)) {
      CHECK(e.status() == VMM_ERROR_OUT_OF_MEMORY);
    } else if (fault_.as_oom) {
      CHECK(dynamic_cast<const DeviceOutOfMemoryError*>(&e) != nullptr);
    } else {
      CHECK(e.status() == VMM_ERROR_DRIVER);
      const auto* driver = dynamic_cast<const DriverError*>(&e);
      REQUIRE(driver != nullptr);
      CHECK(driver->call() == std::string(driver_function(fault_.kind)) + " (injected)");
    }
    CHECK(result_.errors.size() == 1);  // one-shot fault: one failed step at most
  }

  // ---- operations: tracking changes only once the call returned -------------

  void make_workspace(const std::string& name, std::size_t capacity) {
    auto ws = std::make_unique<Workspace>(h_.context(), capacity);
    workspaces_[name] = {std::move(ws), next_value()};
  }

  void grow(const std::string& name, std::size_t n) {
    auto it = workspaces_.find(name);
    if (it == workspaces_.end()) return;  // its creation failed earlier
    Workspace& ws = *it->second.ws;
    const std::size_t old = ws.size();
    ws.grow_to(n);
    h_.device().fill(h_.stream(), static_cast<char*>(ws.data()) + old, ws.size() - old,
                     it->second.value);
  }

  void shrink(const std::string& name, std::size_t n, Stream stream) {
    auto it = workspaces_.find(name);
    if (it == workspaces_.end()) return;
    it->second.ws->shrink_to(n, stream);
  }

  void release_workspace(const std::string& name, Stream stream) {
    auto it = workspaces_.find(name);
    if (it == workspaces_.end()) return;
    it->second.ws->release(stream);
    workspaces_.erase(it);
  }

  void allocate(const std::string& name, std::size_t bytes, Stream stream) {
    void* p = allocator_->allocate(bytes, stream);
    REQUIRE(p != nullptr);
    const std::uint8_t value = next_value();
    h_.device().fill(stream, p, bytes, value);
    blocks_[name] = {p, bytes, value};
  }

  void record_stream(const std::string& name, Stream stream) {
    auto it = blocks_.find(name);
    if (it == blocks_.end()) return;
    allocator_->record_stream(it->second.ptr, stream);
  }

  void free_block(const std::string& name, std::optional<Stream> stream = std::nullopt) {
    auto it = blocks_.find(name);
    if (it == blocks_.end()) return;
    if (stream) {
      allocator_->deallocate(it->second.ptr, *stream);
    } else {
      allocator_->deallocate(it->second.ptr);
    }
    blocks_.erase(it);
  }

  // ---- checks ------------------------------------------------------------

  void settle() {
    h_.device().synchronize(h_.stream());
    h_.device().synchronize(other_);
  }

  std::map<std::string, std::size_t> workspace_sizes() const {
    std::map<std::string, std::size_t> sizes;
    for (const auto& [name, w] : workspaces_) sizes[name] = w.ws->size();
    return sizes;
  }

  // Small blocks whole; larger ones a 4 KiB window every 256 KiB and their
  // last 4 KiB: memory is mapped in 2 MiB granules, so a chunk unmapped,
  // remapped or handed to someone else shows in every window it covers.
  void verify_sampled(const void* ptr, std::size_t bytes, std::uint8_t value) {
    constexpr std::size_t kWhole = 256 * KiB;
    constexpr std::size_t kWindow = 4 * KiB;
    const auto* p = static_cast<const char*>(ptr);
    if (bytes <= kWhole) {
      h_.device().verify(h_.stream(), p, bytes, value);
      return;
    }
    for (std::size_t off = 0; off + kWindow <= bytes; off += kWhole) {
      h_.device().verify(h_.stream(), p + off, kWindow, value);
    }
    h_.device().verify(h_.stream(), p + bytes - kWindow, kWindow, value);
  }

  void verify_contents(const std::string& step_name) {
    TestDevice& dev = h_.device();
    for (const auto& [name, b] : blocks_) verify_sampled(b.ptr, b.bytes, b.value);
    for (const auto& [name, w] : workspaces_) {
      if (w.ws->size() != 0) verify_sampled(w.ws->data(), w.ws->size(), w.value);
    }
    INFO("contents after step '" << step_name << "'");
    CHECK(dev.mismatches(h_.stream()) == 0);
  }

  std::size_t workspaces_mapped() const {
    std::size_t sum = 0;
    for (const auto& [name, w] : workspaces_) sum += w.ws->mapped_bytes();
    return sum;
  }

  void check_recount(const std::string& step_name) {
    INFO("accounting after step '" << step_name << "'");
    const AllocatorStats s = allocator_->stats();
    std::size_t requested = 0;
    std::size_t allocated = 0;
    for (const auto& [name, b] : blocks_) {
      requested += b.bytes;
      allocated += allocator_->block_size(b.ptr);
    }
    CHECK(s.active_blocks == blocks_.size());
    CHECK(s.requested_bytes == requested);
    CHECK(s.allocated_bytes == allocated);

    const std::size_t mapped = s.mapped_bytes + workspaces_mapped();
    const Reclaimer::Accounting acc = h_.context().reclaimer().accounting();
    const LiveObjects live = h_.inner().live_objects();
    CHECK(live.handle_bytes == acc.pool.created_bytes);
    CHECK(acc.pool.created_bytes == acc.pool.acquired_bytes + acc.pool.cached_bytes);
    CHECK(acc.pool.acquired_bytes == mapped + acc.reclaimer.pending_bytes);
    // Mapped: at least that; more while a stitched chunk's old address (an
    // alias, held by the heap or the reclaimer) awaits its fences. Exact - zero -
    // once everything is freed (check_at_rest_empty).
    CHECK(live.mapped_bytes >= mapped + acc.reclaimer.pending_bytes);
    CHECK(h_.context().pool().stats().cached_bytes == s.cached_bytes);
  }

  // After the allocator, the blocks and the workspaces are gone.
  void check_at_rest_empty() {
    h_.context().reclaimer().drain();
    CHECK(h_.context().reclaimer().stats().pending_entries == 0);
    CHECK(h_.context().address_space().stats().allocated_bytes == 0);  // no VA range leaked
    CHECK(h_.context().pool().stats().acquired_bytes == 0);
    h_.context().pool().trim(0);
    const LiveObjects live = h_.inner().live_objects();
    CHECK(live.handles == 0);
    CHECK(live.mapped_bytes == 0);
  }

  std::uint8_t next_value() {
    value_ = static_cast<std::uint8_t>(value_ % 250 + 1);
    return value_;
  }

  struct LiveWorkspace {
    std::unique_ptr<Workspace> ws;
    std::uint8_t value = 0;
  };

  Fault fault_;
  Harness h_;
  Stream other_ = nullptr;
  Allocator* allocator_ = nullptr;
  std::map<std::string, LiveBlock> blocks_;
  std::map<std::string, LiveWorkspace> workspaces_;
  std::uint8_t value_ = 0;
  RunResult result_;
};

#if defined(__SANITIZE_THREAD__)
#define VMM_SWEEP_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define VMM_SWEEP_UNDER_TSAN 1
#endif
#endif

// Positions to inject for a kind the clean run calls `calls` times.
std::vector<std::uint64_t> positions(std::uint64_t calls) {
  std::vector<std::uint64_t> out;
  if (calls == 0) return out;  // a kind the workload never calls on this backend
#if defined(VMM_SWEEP_UNDER_TSAN)
  // The sweep runs on one thread (the reclaimer's is stopped), so TSan has
  // little to find in it and makes it slow: every third position and the
  // last (the ordinary and ASan builds cover every one).
  for (std::uint64_t p = 1; p <= calls; p += 3) out.push_back(p);
  if (calls != 0 && out.back() != calls) out.push_back(calls);
#elif defined(VMM_CONFORMANCE_CUDA)
  // A spread: first, middle, last (the host sweep covers every position;
  // the GPU suite also runs under compute-sanitizer, so it stays short).
  for (std::uint64_t p : {std::uint64_t{1}, (calls + 1) / 2, calls}) {
    if (p >= 1 && (out.empty() || out.back() != p)) out.push_back(p);
  }
#else
  for (std::uint64_t p = 1; p <= calls; ++p) out.push_back(p);
#endif
  return out;
}

}  // namespace

TEMPLATE_TEST_CASE("fault sweep: a fault at every driver call of a mixed workload loses nothing",
                   "[conformance][faults][fault_sweep]", VMM_FIXTURES) {
  const DeviceFactory make_device = &TestType::make;
  const std::string backend = make_device()->name();
  const RunResult clean = Workload(make_device, Fault{}).run();
  REQUIRE(clean.errors.empty());
  REQUIRE_FALSE(clean.fired);

  struct Plan {
    BackendCall kind;
    bool as_oom;
  };
  std::vector<Plan> plans;
  for (int k = 0; k < kBackendCallKinds; ++k) plans.push_back({static_cast<BackendCall>(k), false});
  // Out of memory where the driver reports it: physical memory, address space.
  for (BackendCall k : {BackendCall::create, BackendCall::reserve, BackendCall::map}) {
    plans.push_back({k, true});
  }

  std::uint64_t total_injected = 0;
  std::uint64_t total_surfaced = 0;
  std::uint64_t lost_bytes = 0;
  for (const Plan& plan : plans) {
    const std::uint64_t calls = clean.calls[static_cast<int>(plan.kind)];
    const std::vector<std::uint64_t> where = positions(calls);
    std::uint64_t fired = 0;
    std::uint64_t surfaced = 0;
    for (std::uint64_t position : where) {
      INFO("fault: " << backend_call_name(plan.kind) << (plan.as_oom ? " (out of memory)" : "")
                     << " at call " << position << " of " << calls);
      const RunResult r = Workload(make_device, Fault{plan.kind, position, plan.as_oom}).run();
      for (const std::string& e : r.errors) UNSCOPED_INFO(e);
      CHECK(r.fired);  // the script makes the same calls in every run
      fired += r.fired ? 1 : 0;
      surfaced += r.errors.empty() ? 0 : 1;
      lost_bytes += r.left.handle_bytes + r.left.mapped_bytes + r.left.reserved_bytes;
    }
    std::printf("fault sweep [%s] %-16s%-4s %4llu positions, %4llu faults injected, %4llu reached "
                "the caller, %4llu absorbed\n",
                backend.c_str(), backend_call_name(plan.kind), plan.as_oom ? " oom" : "",
                static_cast<unsigned long long>(where.size()),
                static_cast<unsigned long long>(fired), static_cast<unsigned long long>(surfaced),
                static_cast<unsigned long long>(fired - surfaced));
    total_injected += fired;
    total_surfaced += surfaced;
  }
  std::printf("fault sweep [%s] total: %llu faults injected, %llu reached the caller, "
              "%llu bytes lost\n",
              backend.c_str(), static_cast<unsigned long long>(total_injected),
              static_cast<unsigned long long>(total_surfaced),
              static_cast<unsigned long long>(lost_bytes));
  std::fflush(stdout);
  CHECK(lost_bytes == 0);
  CHECK(total_injected >= plans.size());
}
