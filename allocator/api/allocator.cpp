// vmm::Allocator: the public face of the heap (include/vmmalloc/allocator.hpp),
// and the process-wide allocators, one per device.
//
// The process-wide allocators are created on first use and never destroyed,
// like the device contexts they live on (see device_context.cpp). They are
// published in a fixed array of atomics, so finding the owner of a pointer
// (vmm_free) takes no process-wide lock.
#include "vmmalloc/allocator.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <mutex>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/heap/heap.hpp"
#include "allocator/heap/size_classes.hpp"
#include "allocator/api/live_control.hpp"
#include "allocator/observe/process_context.hpp"
#include "allocator/observe/snapshot.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/record/inspect_registry.hpp"
#include "allocator/vm/device_context.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

constexpr int kMaxDevices = 64;

struct Registry {
  std::mutex mutex;  // serialises creation only
  std::array<std::atomic<Allocator*>, kMaxDevices> by_device{};
};

Registry& registry() {
  static Registry* r = new Registry();  // never destroyed: see the top
  return *r;
}

}  // namespace

Allocator& Allocator::instance(int device) {
  // An explicit device already served: one atomic load, no lock (vmm_malloc
  // calls this on every allocation). -1 goes through the device context,
  // which asks the driver for the current device under the process lock.
  if (device >= 0 && device < kMaxDevices) {
    if (Allocator* a = registry().by_device[static_cast<std::size_t>(device)].load(
            std::memory_order_acquire)) {
      return *a;
    }
  }
  DeviceContext& ctx = api_context(device);
  const int d = ctx.device();
  if (d < 0 || d >= kMaxDevices) {
    throw InvalidArgumentError("device " + std::to_string(d) + " is beyond vmmalloc's limit of " +
                               std::to_string(kMaxDevices) + " devices");
  }
  Registry& r = registry();
  if (Allocator* a = r.by_device[static_cast<std::size_t>(d)].load(std::memory_order_acquire)) {
    return *a;
  }
  std::lock_guard lock(r.mutex);
  if (Allocator* a = r.by_device[static_cast<std::size_t>(d)].load(std::memory_order_acquire)) {
    return *a;
  }
  auto* a = new Allocator(ctx);
  r.by_device[static_cast<std::size_t>(d)].store(a, std::memory_order_release);
  return *a;
}

Allocator* Allocator::owner_of(const void* ptr) noexcept {
  if (ptr == nullptr) return nullptr;
  for (auto& slot : registry().by_device) {
    Allocator* a = slot.load(std::memory_order_acquire);
    if (a != nullptr && a->heap_->owns(ptr)) return a;
  }
  return nullptr;
}

void Allocator::release_stream_everywhere(Stream stream) {
  // Every device used, also those with workspaces only (their tagged
  // regions keep streams too).
  for (int d : process_devices()) instance(d).release_stream(stream);
}

// Over every device with a process-wide context (an allocator is made for
// one that has only workspaces).
SleepReport Allocator::sleep_everywhere(const std::vector<TagId>& tags, SleepMode mode) {
  SleepReport total;
  for (int d : process_devices()) total += instance(d).sleep(tags, mode);
  return total;
}

SleepReport Allocator::wake_everywhere(const std::vector<TagId>& tags, bool keep_host) {
  SleepReport total;
  for (int d : process_devices()) total += instance(d).wake(tags, keep_host);
  return total;
}

Allocator::Allocator(DeviceContext& context) : heap_(std::make_unique<Heap>(context)) {
  inspect::add_heap(*heap_);  // snapshots see it from now on
}

Allocator::~Allocator() { inspect::remove_heap(*heap_); }

// Events (allocator/record/event_ring.hpp): allocate and free are recorded only
// while allocation events are on, at the cost of one relaxed load while off;
// an out-of-memory error is always noted (and may write a snapshot).
void* Allocator::allocate(std::size_t bytes, Stream stream) {
  void* p = nullptr;
  try {
    p = heap_->allocate(bytes, stream);
  } catch (const OutOfMemoryError&) {
    note_out_of_memory(heap_->context(), bytes, stream, /*workspace=*/false);
    throw;
  }
  if (events::allocation_events_on() && p != nullptr) [[unlikely]] {
    events::record_allocate(device(), reinterpret_cast<std::uintptr_t>(p), round_request(bytes),
                            bytes, stream);
  }
  return p;
}

namespace {
// A free's event, recorded before the free while the block's size is known.
void record_free_event(const Heap& heap, void* ptr, Stream stream) noexcept {
  try {
    events::record_free(heap.context().device(), reinterpret_cast<std::uintptr_t>(ptr),
                        heap.block_size(ptr), stream);
  } catch (const Error&) {
    // Not a live block: the free itself reports it.
  }
}
}  // namespace

void Allocator::deallocate(void* ptr) {
  if (events::allocation_events_on() && ptr != nullptr) [[unlikely]] {
    record_free_event(*heap_, ptr, nullptr);
  }
  heap_->deallocate(ptr, nullptr, true);
}

void Allocator::deallocate(void* ptr, Stream stream) {
  if (events::allocation_events_on() && ptr != nullptr) [[unlikely]] {
    record_free_event(*heap_, ptr, stream);
  }
  heap_->deallocate(ptr, stream, false);
}

void Allocator::record_stream(void* ptr, Stream stream) { heap_->record_stream(ptr, stream); }

void Allocator::release_stream(Stream stream) {
  heap_->release_stream(stream);
  context().tagged_regions().forget_stream(stream);
}

std::size_t Allocator::empty_cache() { return heap_->empty_cache(); }

PoolId Allocator::create_pool() { return heap_->create_pool(); }
void Allocator::begin_pool(PoolId pool, Stream stream) { heap_->begin_pool(pool, stream); }
void Allocator::end_pool(PoolId pool) { heap_->end_pool(pool); }
void Allocator::release_pool(PoolId pool) { heap_->release_pool(pool); }
void Allocator::set_pool_use_on_oom(PoolId pool, bool on) { heap_->set_pool_use_on_oom(pool, on); }
void Allocator::set_pool_no_split(PoolId pool) { heap_->set_pool_no_split(pool); }
PoolCheckpoint Allocator::checkpoint_pool(PoolId pool) const { return heap_->checkpoint_pool(pool); }
CheckpointDelta Allocator::restore_pool(const PoolCheckpoint& checkpoint) {
  return heap_->restore_pool(checkpoint);
}
std::vector<void*> Allocator::pool_live_blocks(PoolId pool) const {
  return heap_->pool_live_blocks(pool);
}

// Sleep and wake, tag by tag: the heap's blocks (allocator/heap/heap_sleep.cpp),
// then the tag's workspaces (allocator/vm/tagged_regions.hpp). If the
// workspaces fail to sleep, the blocks put to sleep are woken again; if they
// fail to wake, the tag stays asleep (asleep() says so) until a wake succeeds.
SleepReport Allocator::sleep(const std::vector<TagId>& tags, SleepMode mode) {
  SleepReport total;
  for (TagId tag : tags) {
    const TagId one[] = {tag};
    SleepReport r = heap_->sleep(one, mode);
    try {
      context().tagged_regions().sleep(tag, mode, r);
    } catch (...) {
      if (r.tags_changed != 0) {
        try {
          heap_->wake(one, /*keep_host=*/false);
        } catch (const Error& e) {
          // The workspaces' error is the one the caller gets; the blocks stay
          // asleep (asleep(tag) says so) until a wake succeeds.
          log(LogLevel::error, "sleep (undo): waking tag '%s' again failed: %s",
              tag_name(tag).c_str(), e.what());
        }
      }
      throw;
    }
    total += r;
  }
  return total;
}
SleepReport Allocator::wake(const std::vector<TagId>& tags, bool keep_host) {
  SleepReport total;
  for (TagId tag : tags) {
    const TagId one[] = {tag};
    total += heap_->wake(one, keep_host);
    context().tagged_regions().wake(tag, keep_host, total);
  }
  return total;
}
bool Allocator::asleep(TagId tag) const {
  return heap_->asleep(tag) || context().tagged_regions().asleep(tag);
}
void Allocator::tag_pool(PoolId pool, TagId tag) { heap_->tag_pool(pool, tag); }

AllocatorStats Allocator::stats() const { return heap_->stats(); }
void Allocator::reset_peak_stats() { heap_->reset_peak_stats(); }
std::size_t Allocator::block_size(const void* ptr) const { return heap_->block_size(ptr); }
int Allocator::device() const noexcept { return heap_->context().device(); }
DeviceContext& Allocator::context() const noexcept { return heap_->context(); }
std::size_t Allocator::trim_to_limit() { return heap_->trim_to_limit(); }

void Allocator::set_memory_cap(std::size_t bytes) {
  apply_memory_cap(bytes);
  fraction_set_.store(-1.0);
}

void Allocator::apply_memory_cap(std::size_t bytes) {
  const std::size_t g = context().pool().granularity();
  context().pool().set_memory_cap(bytes == 0 ? 0 : std::max(g, bytes / g * g));
}

std::size_t Allocator::memory_cap() const { return context().pool().stats().memory_cap_bytes; }

void Allocator::set_memory_fraction(double fraction) {
  if (!(fraction >= 0.0 && fraction <= 1.0)) {
    throw InvalidArgumentError("invalid memory fraction " + std::to_string(fraction) +
                               " (valid: 0 <= fraction <= 1)");
  }
  if (fraction == 1.0) {
    apply_memory_cap(0);  // as PyTorch: the whole device, no cap
  } else if (fraction == 0.0) {
    context().pool().set_memory_cap(1);  // no new device memory at all
  } else {
    const std::size_t total = context().backend().memory_info().total_bytes;
    apply_memory_cap(static_cast<std::size_t>(static_cast<double>(total) * fraction));
  }
  fraction_set_.store(fraction);
}

double Allocator::memory_fraction() const {
  const double set = fraction_set_.load();
  if (set >= 0.0) return set;
  const std::size_t cap = memory_cap();
  if (cap == 0) return 1.0;
  const std::size_t total = context().backend().memory_info().total_bytes;
  return total == 0 ? 1.0 : std::min(1.0, static_cast<double>(cap) / static_cast<double>(total));
}

}  // namespace vmm
