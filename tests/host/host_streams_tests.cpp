// HostBackend's streams and fences, and the host test device over them:
// work runs in FIFO order per stream, streams run concurrently, a fence
// completes only after the work queued before it on its own stream (never
// waiting for later work or other streams) and stays valid after its stream
// is destroyed. The VMM semantics of HostBackend are in host_backend_tests.cpp.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "allocator/backend/host_backend.hpp"
#include "tests/common/catch.hpp"
#include "tests/common/test_device.hpp"
#include "tests/common/test_util.hpp"
#include "vmmalloc/errors.hpp"

namespace {

using namespace std::chrono_literals;
using vmm::DriverError;
using vmm::HostBackend;
using vmm::MiB;
using Clock = std::chrono::steady_clock;

constexpr std::size_t G = 2 * MiB;  // the default granularity

using vmm::test::expect_throw;

std::uint8_t* ptr(std::uintptr_t va) { return reinterpret_cast<std::uint8_t*>(va); }

}  // namespace

// ------------------------------------------------------------------ streams

TEST_CASE("host streams: work runs in FIFO order", "[host_backend][streams]") {
  HostBackend b;
  const vmm::Stream s = b.create_stream();
  CHECK(s != nullptr);
  std::vector<int> order;  // touched only by the stream's worker until synchronize
  for (int i = 0; i < 1000; ++i) b.enqueue(s, [&order, i] { order.push_back(i); });
  b.synchronize(s);
  REQUIRE(order.size() == 1000);
  bool in_order = true;
  for (int i = 0; i < 1000; ++i) in_order = in_order && order[static_cast<std::size_t>(i)] == i;
  CHECK(in_order);
  b.destroy_stream(s);
  CHECK(b.streams()->live_streams() == 0);
}

TEST_CASE("host streams: default stream, misuse and errors", "[host_backend][streams]") {
  HostBackend b;
  std::atomic<int> n{0};
  b.enqueue(nullptr, [&] { ++n; });  // the default stream, made on first use
  b.synchronize(nullptr);
  CHECK(n.load() == 1);

  const vmm::Stream s = b.create_stream();
  b.destroy_stream(s);
  CHECK_THROWS_AS(b.enqueue(s, [] {}), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(b.synchronize(s), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(b.destroy_stream(s), vmm::InvalidArgumentError);
  CHECK_THROWS_AS(b.destroy_stream(nullptr), vmm::InvalidArgumentError);
  const DriverError e = expect_throw<DriverError>([&] { b.record_fence(s); });
  CHECK(e.call() == "record_fence");
  CHECK_THROWS_AS(b.fence_completed(vmm::FenceHandle{&n}), DriverError);
  CHECK_THROWS_AS(b.wait_fence(vmm::FenceHandle{&n}), DriverError);
  b.destroy_fence(vmm::FenceHandle{&n});  // unknown: ignored

  // A stream waiting for itself would deadlock: refused.
  const vmm::Stream self = b.create_stream();
  std::atomic<int> refused{0};
  b.enqueue(self, [&] {
    try {
      b.synchronize(self);
    } catch (const vmm::InvalidArgumentError&) {
      ++refused;
    }
    try {
      b.destroy_stream(self);
    } catch (const vmm::InvalidArgumentError&) {
      ++refused;
    }
  });
  b.synchronize(self);
  CHECK(refused.load() == 2);
  b.destroy_stream(self);

  // Work that throws: the stream goes on; synchronize reports it once.
  const vmm::Stream t = b.create_stream();
  b.enqueue(t, [] { throw std::runtime_error("boom"); });
  b.enqueue(t, [&] { ++n; });
  CHECK_THROWS_AS(b.synchronize(t), std::runtime_error);
  CHECK(n.load() == 2);
  b.synchronize(t);
  b.destroy_stream(t);
}

TEST_CASE("host streams: destroy waits for queued work", "[host_backend][streams]") {
  HostBackend b;
  const vmm::Stream s = b.create_stream();
  std::atomic<bool> done{false};
  b.enqueue(s, [&] {
    std::this_thread::sleep_for(50ms);
    done = true;
  });
  b.destroy_stream(s);
  CHECK(done.load());
}

TEST_CASE("host streams: streams run concurrently", "[host_backend][streams]") {
  HostBackend b;
  const vmm::Stream a = b.create_stream();
  const vmm::Stream c = b.create_stream();
  std::promise<void> released;
  std::shared_future<void> gate = released.get_future().share();
  std::atomic<bool> a_saw_gate{false};
  // a waits for work on c: serialised streams would never get there.
  b.enqueue(a, [&] { a_saw_gate = gate.wait_for(10s) == std::future_status::ready; });
  b.enqueue(c, [&] { released.set_value(); });
  b.synchronize(a);
  CHECK(a_saw_gate.load());
  b.destroy_stream(a);
  b.destroy_stream(c);
}

// ------------------------------------------------------------------- fences

TEST_CASE("host fences: complete only after the work queued before them",
          "[host_backend][fences]") {
  HostBackend b;
  const vmm::Stream s = b.create_stream();
  std::atomic<bool> work_done{false};
  b.enqueue(s, [&] {
    std::this_thread::sleep_for(100ms);
    work_done = true;
  });
  const auto t0 = Clock::now();
  const vmm::FenceHandle f = b.record_fence(s);
  CHECK_FALSE(b.fence_completed(f));
  b.wait_fence(f);
  CHECK(Clock::now() - t0 >= 90ms);
  CHECK(work_done.load());
  CHECK(b.fence_completed(f));
  b.destroy_fence(f);

  // A fence on an idle stream is complete at once.
  const vmm::FenceHandle idle = b.record_fence(s);
  CHECK(b.fence_completed(idle));
  b.destroy_fence(idle);
  b.destroy_stream(s);
}

TEST_CASE("host fences: do not wait for work queued after them", "[host_backend][fences]") {
  HostBackend b;
  const vmm::Stream s = b.create_stream();
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  std::atomic<int> stage{0};
  b.enqueue(s, [&] { stage = 1; });
  const vmm::FenceHandle f = b.record_fence(s);
  b.enqueue(s, [gate] { gate.wait(); });  // blocks the stream until released
  b.wait_fence(f);
  CHECK(stage.load() == 1);
  CHECK(b.fence_completed(f));
  const vmm::FenceHandle later = b.record_fence(s);
  CHECK_FALSE(b.fence_completed(later));
  release.set_value();
  b.wait_fence(later);
  b.destroy_fence(f);
  b.destroy_fence(later);
  b.destroy_stream(s);
}

TEST_CASE("host fences: a fence is not held up by another blocked stream",
          "[host_backend][fences]") {
  HostBackend b;
  const vmm::Stream blocked = b.create_stream();
  const vmm::Stream free_stream = b.create_stream();
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  b.enqueue(blocked, [gate] { gate.wait(); });
  const vmm::FenceHandle held = b.record_fence(blocked);
  std::atomic<bool> ran{false};
  b.enqueue(free_stream, [&] { ran = true; });
  const vmm::FenceHandle f = b.record_fence(free_stream);
  b.wait_fence(f);  // would hang if it waited for `blocked`
  CHECK(ran.load());
  CHECK(b.fence_completed(f));
  CHECK_FALSE(b.fence_completed(held));

  // The default stream is independent of the others too.
  const vmm::FenceHandle d = b.record_fence(nullptr);
  b.wait_fence(d);
  CHECK_FALSE(b.fence_completed(held));

  release.set_value();
  b.wait_fence(held);
  for (vmm::FenceHandle x : {held, f, d}) b.destroy_fence(x);
  b.destroy_stream(blocked);
  b.destroy_stream(free_stream);
}

TEST_CASE("host fences: stay valid after their stream is destroyed", "[host_backend][fences]") {
  HostBackend b;
  const vmm::Stream s = b.create_stream();
  b.enqueue(s, [] { std::this_thread::sleep_for(20ms); });
  const vmm::FenceHandle f = b.record_fence(s);
  b.destroy_stream(s);
  CHECK(b.fence_completed(f));
  b.wait_fence(f);
  b.destroy_fence(f);
  CHECK(b.live_fences() == 0);
}

TEST_CASE("host fences: many threads record, query and wait at once", "[host_backend][fences]") {
  HostBackend b;
  std::vector<vmm::Stream> streams;
  for (int i = 0; i < 3; ++i) streams.push_back(b.create_stream());
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const vmm::Stream s = streams[static_cast<std::size_t>((t + i) % 3)];
        auto flag = std::make_shared<std::atomic<bool>>(false);
        b.enqueue(s, [flag] { flag->store(true); });
        const vmm::FenceHandle f = b.record_fence(s);
        if (i % 2 == 0) {
          b.wait_fence(f);
        } else {
          while (!b.fence_completed(f)) std::this_thread::yield();
        }
        if (!flag->load()) ++wrong;
        b.destroy_fence(f);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(wrong.load() == 0);
  CHECK(b.live_fences() == 0);
  for (vmm::Stream s : streams) b.destroy_stream(s);
}

TEST_CASE("host streams: backends sharing a stream set share streams", "[host_backend][streams]") {
  auto streams = std::make_shared<vmm::HostStreams>();
  HostBackend::Options o;
  o.streams = streams;
  HostBackend a(o);
  const vmm::Stream s = a.create_stream();
  std::atomic<bool> done{false};
  {
    HostBackend c(o);  // a second backend on the same streams
    c.enqueue(s, [&] {
      std::this_thread::sleep_for(30ms);
      done = true;
    });
    const vmm::FenceHandle f = a.record_fence(s);
    CHECK_FALSE(a.fence_completed(f));
    a.wait_fence(f);
    CHECK(done.load());
    a.destroy_fence(f);
  }
  // Destroying a backend that does not own the streams leaves them running.
  a.enqueue(s, [] {});
  a.synchronize(s);
  a.destroy_stream(s);
}

// ------------------------------------------------------------- test device

TEST_CASE("host test device: fill, verify and block on host streams", "[host_backend][device]") {
  auto dev = vmm::test::make_host_test_device();
  CHECK(std::string(dev->name()) == "host");
  const vmm::Stream s = dev->create_stream();  // before any backend exists
  std::unique_ptr<vmm::Backend> backend = dev->make_backend();
  vmm::Backend& b = *backend;
  const std::uintptr_t base = b.reserve(G, G);
  const vmm::PhysicalHandle h = b.create(G);
  b.map(base, G, h);
  b.set_access(base, G);

  dev->block(s, 50);
  dev->fill(s, ptr(base), G, 0x3c);
  const vmm::FenceHandle f = b.record_fence(s);  // the allocator's backend sees the work
  CHECK_FALSE(b.fence_completed(f));
  dev->verify(s, ptr(base), G, 0x3c);
  CHECK(dev->mismatches(s) == 0);
  CHECK(b.fence_completed(f));
  b.destroy_fence(f);

  dev->fill(s, ptr(base) + 10, 5, 0);
  dev->verify(s, ptr(base), G, 0x3c);
  CHECK(dev->mismatches(s) == 5);
  CHECK(dev->mismatches(s) == 0);  // reset by the read

  dev->fill(nullptr, ptr(base), G, 1);  // the default stream works too
  dev->verify(nullptr, ptr(base), G, 1);
  CHECK(dev->mismatches(nullptr) == 0);

  dev->synchronize(s);
  b.unmap(base, G);
  b.release(h);
  b.free_va(base, G);
  backend.reset();         // the backend may go first...
  dev->destroy_stream(s);  // ...its streams belong to the device
}
