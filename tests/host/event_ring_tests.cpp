// The event ring (allocator/record/event_ring.hpp) that snapshots and
// allocation events read: it keeps the newest events in order and counts the
// ones it lost, and concurrent writers and readers never see a torn event.
#include <atomic>
#include <cstdint>
#include <map>
#include <thread>
#include <vector>

#include "allocator/record/event_ring.hpp"
#include "tests/common/catch.hpp"

using namespace vmm;

TEST_CASE("event ring: keeps the newest events in order, counts the rest", "[snapshot][events]") {
  EventRing ring(16);
  CHECK(ring.read().events.empty());
  for (std::uint64_t i = 0; i < 100; ++i) {
    Event e;
    e.kind = EventKind::map;
    e.addr = i;
    e.bytes = i * 2;
    e.device = 3;
    e.mapped_after = -static_cast<std::int64_t>(i);
    ring.record(e);
  }
  const EventRing::Contents c = ring.read();
  CHECK(c.recorded == 100);
  CHECK(c.lost == 84);
  REQUIRE(c.events.size() == 16);
  for (std::size_t i = 0; i < 16; ++i) {
    CHECK(c.events[i].addr == 84 + i);
    CHECK(c.events[i].bytes == (84 + i) * 2);
    CHECK(c.events[i].device == 3);
    CHECK(c.events[i].kind == EventKind::map);
    CHECK(c.events[i].mapped_after == -static_cast<std::int64_t>(84 + i));
  }
}

TEST_CASE("event ring: concurrent writers and readers never see a torn event",
          "[snapshot][events]") {
  EventRing ring(64);
  constexpr int kWriters = 4;
  constexpr std::uint64_t kEach = 20000;
  std::atomic<bool> done{false}, reading{false};
  std::atomic<std::uint64_t> torn{0}, out_of_order{0}, read_events{0};
  std::thread reader([&] {
    reading = true;
    for (bool final_read = false; !final_read;) {
      final_read = done.load();  // one more read once the writers are done
      const EventRing::Contents c = ring.read();
      std::map<std::uint64_t, std::uint64_t> last;  // writer -> last sequence seen
      for (const Event& e : c.events) {
        const std::uint64_t writer = e.addr >> 40, seq = e.addr & ((1ull << 40) - 1);
        if (e.bytes != e.addr * 3 + 1 || e.detail != ~e.addr || e.stream != (e.addr ^ 0x5555) ||
            e.device != static_cast<int>(writer)) {
          ++torn;
        }
        auto it = last.find(writer);
        if (it != last.end() && seq <= it->second) ++out_of_order;
        last[writer] = seq;
      }
      read_events += c.events.size();
    }
  });
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&ring, &reading, w] {
      while (!reading.load()) std::this_thread::yield();
      for (std::uint64_t i = 0; i < kEach; ++i) {
        Event e;
        e.addr = (static_cast<std::uint64_t>(w) << 40) | i;
        e.bytes = e.addr * 3 + 1;
        e.detail = ~e.addr;
        e.stream = e.addr ^ 0x5555;
        e.device = w;
        ring.record(e);
      }
    });
  }
  for (std::thread& t : writers) t.join();
  done = true;
  reader.join();
  CHECK(torn == 0);
  CHECK(out_of_order == 0);
  CHECK(read_events > 0);
  const EventRing::Contents c = ring.read();
  CHECK(c.recorded == kWriters * kEach);
  CHECK(c.events.size() == 64);
  CHECK(c.lost == kWriters * kEach - 64);
}
