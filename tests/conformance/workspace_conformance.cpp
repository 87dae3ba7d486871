// Workspace conformance suite, one source instantiated per backend:
// HostFixture in vmm_host_tests, CudaFixture in vmm_gpu_tests. Memory is only
// touched through the test device's queued work (fill/verify on a stream), so
// the same assertions hold on host memory and on a GPU.
#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tests/common/catch.hpp"
#include "tests/conformance/harness.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/workspace.hpp"

using namespace vmm;
using namespace vmm::test;

namespace {

std::size_t mapped_of(const Workspace& ws) { return ws.mapped_bytes(); }

}  // namespace

TEMPLATE_TEST_CASE("grow keeps the base address and the contents", "[conformance][workspace]",
                   VMM_FIXTURES) {
  Harness h(TestType::make());
  Workspace ws(h.context(), 256 * MiB);
  void* const base = ws.data();
  REQUIRE(base != nullptr);
  REQUIRE(ws.size() == 0);
  REQUIRE(ws.mapped_bytes() == 0);

  ws.grow_to(3 * MiB);
  h.device().fill(h.stream(), base, 3 * MiB, 0x5a);
  std::size_t previous = 3 * MiB;
  std::uint8_t value = 0x5a;
  for (std::size_t target : {17 * MiB, 64 * MiB + 4096, 130 * MiB, 256 * MiB}) {
    ws.grow_to(target);
    REQUIRE(ws.data() == base);
    REQUIRE(ws.size() == target);
    h.device().verify(h.stream(), base, previous, value);
    REQUIRE(h.device().mismatches(h.stream()) == 0);
    value = static_cast<std::uint8_t>(value + 0x11);
    h.device().fill(h.stream(), base, target, value);
    previous = target;
  }
  h.device().verify(h.stream(), base, 256 * MiB, value);
  REQUIRE(h.device().mismatches(h.stream()) == 0);
  check_accounting(h.context(), mapped_of(ws));
}

TEMPLATE_TEST_CASE("a grow holds at most the new size rounded up to the granularity",
                   "[conformance][workspace]", VMM_FIXTURES) {
  Harness h(TestType::make());
  Workspace ws(h.context(), 2 * GiB);
  const std::size_t g = h.context().backend().granularity();
  for (std::size_t target : {std::size_t{1}, 2 * MiB, 2 * MiB + 1, 7 * MiB, 100 * MiB,
                             513 * MiB, 1 * GiB + 6 * MiB, 2 * GiB}) {
    const auto creates_before = h.context().pool().stats().creates;
    const std::size_t gap = align_up(target, g) - ws.mapped_bytes();
    ws.grow_to(target);
    const PoolStats p = h.context().pool().stats();
    // The fewest chunks the classes allow: one per class at most (the gap's
    // binary digits, with power-of-two classes), never one per 2 MiB page.
    CHECK(p.creates - creates_before == h.context().pool().plan(gap).size());
    CHECK(p.creates - creates_before <= h.context().pool().chunk_classes().size());
    CHECK(ws.mapped_bytes() == align_up(target, g));
    CHECK(p.created_bytes == align_up(target, g));
    CHECK(p.peak_created_bytes == align_up(target, g));
    check_accounting(h.context(), mapped_of(ws));
  }
  // Growing to the current size or less does nothing.
  const auto creates = h.context().pool().stats().creates;
  ws.grow_to(100 * MiB);
  CHECK(ws.size() == 2 * GiB);
  CHECK(h.context().pool().stats().creates == creates);
  CHECK_THROWS_AS(ws.grow_to(2 * GiB + 1), InvalidArgumentError);
  CHECK(ws.size() == 2 * GiB);
}

TEMPLATE_TEST_CASE("shrink returns chunks only after the stream's fence",
                   "[conformance][workspace]", VMM_FIXTURES) {
  Harness h(TestType::make());
  Workspace ws(h.context(), 512 * MiB);
  ws.grow_to(8 * MiB);
  ws.grow_to(200 * MiB);  // a second, larger chunk group at the tail
  h.device().fill(h.stream(), ws.data(), 200 * MiB, 0x33);
  const std::size_t before = h.context().pool().stats().acquired_bytes;

  // Work still reading the whole buffer when the shrink is issued.
  h.device().block(h.stream(), 300);
  h.device().verify(h.stream(), ws.data(), 200 * MiB, 0x33);
  const auto t0 = std::chrono::steady_clock::now();
  ws.shrink_to(8 * MiB, h.stream());
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(took < std::chrono::milliseconds(100));  // it did not wait for the work
  CHECK(ws.size() == 8 * MiB);
  CHECK(ws.mapped_bytes() == 8 * MiB);

  // Not reclaimed yet: the fence has not completed.
  h.context().reclaimer().poll();
  CHECK(h.context().reclaimer().stats().pending_bytes == 192 * MiB);
  CHECK(h.context().pool().stats().acquired_bytes == before);

  // Once the work is done the tail goes back to the pool.
  REQUIRE(h.device().mismatches(h.stream()) == 0);
  REQUIRE(h.wait_reclaimed());
  CHECK(h.context().pool().stats().acquired_bytes == 8 * MiB);
  check_accounting(h.context(), mapped_of(ws));
  h.device().verify(h.stream(), ws.data(), 8 * MiB, 0x33);
  CHECK(h.device().mismatches(h.stream()) == 0);
}

TEMPLATE_TEST_CASE("after a shrink's fence the region holds the new size plus its tail chunk",
                   "[conformance][workspace]", VMM_FIXTURES) {
  Harness h(TestType::make());
  Workspace ws(h.context(), 1 * GiB);
  ws.grow_to(300 * MiB);  // 256 + 32 + 8 + 4 MiB chunks
  ws.shrink_to(100 * MiB, h.stream());
  REQUIRE(h.wait_reclaimed());
  // The 256 MiB chunk holding byte 100 MiB - 1 stays whole.
  CHECK(ws.mapped_bytes() == 256 * MiB);
  ws.shrink_to(3 * MiB, h.stream());
  REQUIRE(h.wait_reclaimed());
  CHECK(ws.mapped_bytes() == 256 * MiB);
  check_accounting(h.context(), mapped_of(ws));
  ws.shrink_to(0, h.stream());
  REQUIRE(h.wait_reclaimed());
  CHECK(ws.mapped_bytes() == 0);
  CHECK(h.context().pool().stats().acquired_bytes == 0);
}

TEMPLATE_TEST_CASE("a grow right after a shrink takes the pending tail back",
                   "[conformance][workspace]", VMM_FIXTURES) {
  Harness h(TestType::make());
  Workspace ws(h.context(), 512 * MiB);
  ws.grow_to(64 * MiB);
  h.device().fill(h.stream(), ws.data(), 64 * MiB, 0x71);
  h.device().block(h.stream(), 200);
  ws.shrink_to(4 * MiB, h.stream());
  const PoolStats before = h.context().pool().stats();
  ws.grow_to(100 * MiB);  // before the fence: the tail is still mapped
  const PoolStats after = h.context().pool().stats();
  CHECK(h.context().reclaimer().stats().pending_entries == 0);
  CHECK(after.created_bytes == 100 * MiB);
  CHECK(after.creates - before.creates <= 3);  // only the 36 MiB beyond the old end
  h.device().verify(h.stream(), ws.data(), 64 * MiB, 0x71);
  CHECK(h.device().mismatches(h.stream()) == 0);
  check_accounting(h.context(), mapped_of(ws));
}

TEMPLATE_TEST_CASE("release hands everything back after the fence", "[conformance][workspace]",
                   VMM_FIXTURES) {
  Harness h(TestType::make());
  {
    Workspace ws(h.context(), 256 * MiB);
    ws.grow_to(48 * MiB);
    h.device().block(h.stream(), 100);
    h.device().fill(h.stream(), ws.data(), 48 * MiB, 0x11);
    ws.release(h.stream());
    CHECK(ws.data() == nullptr);
    CHECK(ws.capacity() == 0);
    CHECK_THROWS_AS(ws.grow_to(1), InvalidArgumentError);
    CHECK(h.context().reclaimer().stats().pending_bytes == 48 * MiB);
  }
  h.device().synchronize(h.stream());
  REQUIRE(h.wait_reclaimed());
  CHECK(h.context().pool().stats().acquired_bytes == 0);
  CHECK(h.context().address_space().stats().allocated_bytes == 0);
  CHECK(h.destroy_context_and_check_no_leak());
}

TEMPLATE_TEST_CASE("bad sizes get clear errors and change nothing", "[conformance][workspace]",
                   VMM_FIXTURES) {
  Harness h(TestType::make());
  CHECK_THROWS_AS(Workspace(h.context(), 0), InvalidArgumentError);
  CHECK_THROWS_AS(Workspace(h.context(), SIZE_MAX), InvalidArgumentError);
  Workspace ws(h.context(), 64 * MiB);
  ws.grow_to(10 * MiB);
  CHECK_THROWS_AS(ws.grow_to(SIZE_MAX), InvalidArgumentError);
  CHECK_THROWS_AS(ws.grow_to(64 * MiB + 1), InvalidArgumentError);
  CHECK(ws.size() == 10 * MiB);
  ws.shrink_to(SIZE_MAX, h.stream());  // not smaller: a no-op
  CHECK(ws.size() == 10 * MiB);
  check_accounting(h.context(), mapped_of(ws));
}

TEMPLATE_TEST_CASE("out of memory under a memory cap is clean and recoverable",
                   "[conformance][workspace]", VMM_FIXTURES) {
  Config cfg = test_config();
  cfg.memory_cap_bytes = 64 * MiB;
  Harness h(TestType::make(), cfg);
  Workspace a(h.context(), 256 * MiB);
  Workspace b(h.context(), 256 * MiB);
  a.grow_to(40 * MiB);
  h.device().fill(h.stream(), a.data(), 40 * MiB, 0x42);
  try {
    b.grow_to(30 * MiB);
    FAIL("grow past the memory cap succeeded");
  } catch (const OutOfMemoryError& e) {
    CHECK(std::string(e.what()).find("memory_cap") != std::string::npos);
  }
  CHECK(b.size() == 0);
  CHECK(b.mapped_bytes() == 0);
  check_accounting(h.context(), a.mapped_bytes());
  // Memory pending reclaim is waited for under pressure, then reused.
  a.shrink_to(2 * MiB, h.stream());
  b.grow_to(30 * MiB);
  CHECK(b.mapped_bytes() == 30 * MiB);
  h.device().verify(h.stream(), a.data(), 2 * MiB, 0x42);
  CHECK(h.device().mismatches(h.stream()) == 0);
  check_accounting(h.context(), a.mapped_bytes() + b.mapped_bytes());
}

namespace {

// A scripted workload of grows and shrinks over one workspace. It fills the
// live part with a new pattern after every successful step and, after every
// failed one, checks the live part still holds the last pattern.
void run_scripted_workload(Harness& h, bool expect_fault, int& failures) {
  TestDevice& dev = h.device();
  std::unique_ptr<Workspace> ws;
  try {
    ws = std::make_unique<Workspace>(h.context(), 256 * MiB);
  } catch (const Error& e) {
    ++failures;
    INFO("error: " << e.what());
    CHECK(expect_fault);
    CHECK(std::string(e.what()).find("injected") != std::string::npos);
    return;
  }
  std::uint8_t value = 1;
  auto step = [&](auto&& op) {
    const std::size_t size_before = ws->size();
    try {
      op();
    } catch (const Error& e) {
      ++failures;
      INFO("error: " << e.what());
      CHECK(expect_fault);
      CHECK(std::string(e.what()).find("injected") != std::string::npos);
      CHECK(ws->size() == size_before);
      CHECK(ws->mapped_bytes() >= size_before);
    }
    if (ws->size() != 0) {
      dev.verify(h.stream(), ws->data(), std::min(ws->size(), size_before), value);
      CHECK(dev.mismatches(h.stream()) == 0);
      value = static_cast<std::uint8_t>(value + 1);
      dev.fill(h.stream(), ws->data(), ws->size(), value);
    }
    check_accounting(h.context(), ws->mapped_bytes());
  };
  auto grow = [&](std::size_t n) { step([&] { ws->grow_to(n); }); };
  auto shrink = [&](std::size_t n) { step([&] { ws->shrink_to(n, h.stream()); }); };
  grow(3 * MiB);
  grow(40 * MiB);
  shrink(10 * MiB);
  grow(70 * MiB);   // takes back what is still pending
  shrink(1 * MiB);
  dev.synchronize(h.stream());
  h.context().reclaimer().drain();
  grow(90 * MiB);
  h.context().pool().trim(0);
  try {
    ws->release(h.stream());
  } catch (const Error& e) {
    ++failures;
    INFO("error: " << e.what());
    CHECK(expect_fault);
    CHECK(std::string(e.what()).find("injected") != std::string::npos);
    ws->release(h.stream());  // the workspace is intact: releasing again works
  }
}

}  // namespace

TEMPLATE_TEST_CASE("a fault at any driver call leaves the allocator consistent",
                   "[conformance][faults]", VMM_FIXTURES) {
  for (int k = 0; k < kBackendCallKinds; ++k) {
    const auto kind = static_cast<BackendCall>(k);
    // A clean run counts the calls of this kind the workload makes.
    std::uint64_t calls = 0;
    {
      Harness h(TestType::make());
      int failures = 0;
      const std::uint64_t start = h.faults().calls(kind);
      run_scripted_workload(h, false, failures);
      REQUIRE(failures == 0);
      calls = h.faults().calls(kind) - start;
      h.device().synchronize(h.stream());
      CHECK(h.destroy_context_and_check_no_leak());
    }
    // Every call of the kinds a workload makes a few of (create, map, ...);
    // a spread of ~16 of the fence queries, which the background reclaimer
    // makes by the hundred and at timing-dependent points anyway.
    const std::uint64_t stride = std::max<std::uint64_t>(1, calls / 16);
    for (std::uint64_t n = 1; n <= calls; n += stride) {
      INFO("fault at call " << n << " of " << calls << " of kind " << backend_call_name(kind));
      Harness h(TestType::make());
      h.faults().fail_nth(kind, n);
      int failures = 0;
      run_scripted_workload(h, true, failures);
      h.device().synchronize(h.stream());
      h.context().reclaimer().drain();
      CHECK(h.context().reclaimer().stats().pending_entries == 0);
      CHECK(h.destroy_context_and_check_no_leak());
    }
  }
}

TEMPLATE_TEST_CASE("concurrent grow and shrink from several threads", "[conformance][threads]",
                   VMM_FIXTURES) {
  Harness h(TestType::make());
  constexpr int kThreads = 4;
  constexpr int kIterations = 40;
  std::atomic<int> errors{0};
  Workspace shared(h.context(), 256 * MiB);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) * 7919u + 1u);
      Stream s = h.device().create_stream();
      Workspace own(h.context(), 128 * MiB);
      std::size_t size = 0;
      const auto value = static_cast<std::uint8_t>(0x10 + t);
      for (int i = 0; i < kIterations; ++i) {
        const std::size_t target = (rng() % 64 + 1) * MiB;
        try {
          if (target > size) {
            own.grow_to(target);
            h.device().fill(s, static_cast<char*>(own.data()) + size, target - size, value);
          } else {
            own.shrink_to(target, s);
          }
          size = target;
          h.device().verify(s, own.data(), size, value);
          // Hammer one workspace from every thread too.
          if (rng() % 2) {
            shared.grow_to((rng() % 200 + 1) * MiB);
          } else {
            shared.shrink_to((rng() % 200) * MiB, s);
          }
        } catch (const std::exception&) {
          ++errors;
        }
      }
      if (h.device().mismatches(s) != 0) ++errors;
      own.release(s);
      h.device().synchronize(s);
      h.device().destroy_stream(s);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(errors == 0);
  shared.release(h.stream());
  h.device().synchronize(h.stream());
  REQUIRE(h.wait_reclaimed());
  CHECK(h.context().pool().stats().acquired_bytes == 0);
  CHECK(h.destroy_context_and_check_no_leak());
}
