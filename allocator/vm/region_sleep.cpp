// Region sleep and wake (region.hpp, docs/sleep.md): a tagged workspace's
// chunks handed back to the device and mapped again at the same addresses.
#include <algorithm>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/record/event_ring.hpp"
#include "allocator/vm/chunk_mapper.hpp"
#include "allocator/vm/device_context.hpp"
#include "allocator/vm/region.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

void Region::record_stream(Stream stream) {
  std::lock_guard lock(mutex_);
  check_usable_locked();
  if (tag_ == 0) return;  // never sleeps
  if (stream != nullptr && std::find(streams_.begin(), streams_.end(), stream) == streams_.end()) {
    streams_.push_back(stream);
  }
}

void Region::forget_stream(Stream stream) noexcept {
  std::lock_guard lock(mutex_);
  streams_.erase(std::remove(streams_.begin(), streams_.end(), stream), streams_.end());
}

bool Region::asleep() const {
  std::lock_guard lock(mutex_);
  return asleep_;
}

void Region::unmap_release_locked(const std::vector<Mapping>& all) {
  std::size_t done = 0;
  try {
    for (; done < all.size(); ++done) context_.backend().unmap(all[done].va, all[done].chunk.bytes);
  } catch (...) {
    try {
      map_chunks(context_.backend(), std::span<const Mapping>(all.data(), done),
                 "workspace sleep (undo)");
    } catch (const Error& e) {
      log(LogLevel::error, "workspace sleep: mapping back after a failed unmap failed: %s",
          e.what());
    }
    throw;
  }
  std::vector<Chunk> chunks;
  for (const Mapping& m : all) chunks.push_back(m.chunk);
  context_.pool().release_now(chunks);
  events::record_unmapped(context_.device(), all, {});
}

void Region::sleep(SleepMode mode, SleepReport& report) {
  std::lock_guard lock(mutex_);
  if (released_ || asleep_) return;
  if (share_) {
    throw InvalidArgumentError("sleep: a workspace of tag '" + tag_name(tag_) +
                               "' is shared with other processes (IPC) and cannot sleep");
  }
  // A fence recorded on a capturing stream would break the capture: refused
  // before anything changes.
  if (context_.backend().stream_capturing(nullptr) ||
      std::any_of(streams_.begin(), streams_.end(),
                  [&](Stream st) { return context_.backend().stream_capturing(st); })) {
    throw InvalidArgumentError("sleep: a stream that used a workspace of tag '" + tag_name(tag_) +
                               "' is being captured into a CUDA graph (end the capture first)");
  }
  // Settle: the tail pieces earlier shrinks queued (taken back: released
  // with the rest) and the work queued so far on the null stream and the
  // recorded streams.
  std::vector<Reclaimer::Cancelled> groups;
  for (Reclaimer::Ticket t : pending_) {
    if (auto c = context_.reclaimer().cancel(t)) groups.push_back(std::move(*c));
  }
  pending_.clear();
  std::vector<Mapping> all = chunks_;
  for (const Reclaimer::Cancelled& g : groups) all.insert(all.end(), g.mappings.begin(), g.mappings.end());
  const std::size_t size = size_.load();
  try {
    if (!all.empty()) {
      std::vector<Fence> fences;
      for (const Reclaimer::Cancelled& g : groups) fences.insert(fences.end(), g.fences.begin(), g.fences.end());
      fences.push_back(Fence::record(context_.backend(), nullptr));
      for (Stream st : streams_) fences.push_back(Fence::record(context_.backend(), st));
      for (const Fence& f : fences) f.wait();
    }
    if (mode == SleepMode::offload && size != 0) {
      if (host_.size() < size) {
        host_.reset();
        host_ = PinnedBuffer(context_.backend(), size);
        report.pinned_bytes += size;
      }
      const CopyRun run{range_.base, size, 0};
      copy_runs(context_.backend(), {&run, 1}, host_.data(), CopyDirection::to_host, report);
    } else {
      host_.reset();
    }
    unmap_release_locked(all);
  } catch (...) {
    if (mode == SleepMode::offload) host_.reset();
    requeue_locked(groups);
    throw;
  }
  std::size_t bytes = 0;
  for (const Mapping& m : all) bytes += m.chunk.bytes;
  chunks_.clear();
  mapped_.store(0, std::memory_order_release);
  asleep_ = true;
  sleep_mode_ = mode;
  report.live_bytes += size;
  report.device_bytes += bytes;
  if (bytes != 0) {
    log(LogLevel::info, "sleep: workspace of tag '%s': %s released", tag_name(tag_).c_str(),
        format_bytes(bytes).c_str());
  }
}

void Region::wake(bool keep_host, SleepReport& report) {
  std::lock_guard lock(mutex_);
  if (released_ || !asleep_) {
    if (!keep_host) host_.reset();
    return;
  }
  const std::size_t size = size_.load();
  const std::size_t target = align_up(size, granularity_);
  std::vector<Mapping> planned;
  if (target != 0) {
    // OutOfMemoryError: nothing changed, the region stays asleep.
    std::vector<Chunk> fresh = context_.pool().acquire(context_.pool().plan(target));
    std::uintptr_t va = range_.base;
    for (const Chunk& c : fresh) {
      planned.push_back({va, c});
      va += c.bytes;
    }
    std::vector<std::size_t> stuck;
    try {
      map_chunks(context_.backend(), planned, "workspace wake", &stuck);
    } catch (...) {
      std::vector<Chunk> back;
      for (std::size_t i = 0; i < fresh.size(); ++i) {
        if (std::find(stuck.begin(), stuck.end(), i) == stuck.end()) back.push_back(fresh[i]);
      }
      context_.pool().give_back(back);
      throw;
    }
    if (sleep_mode_ == SleepMode::offload && size != 0) {
      const CopyRun run{range_.base, size, 0};
      try {
        copy_runs(context_.backend(), {&run, 1}, host_.data(), CopyDirection::to_device, report);
      } catch (...) {
        std::vector<Chunk> back;
        for (const Mapping& m : planned) {
          try {
            context_.backend().unmap(m.va, m.chunk.bytes);
            back.push_back(m.chunk);
          } catch (const Error& e) {
            log(LogLevel::error, "workspace wake (undo): unmap failed, chunk kept mapped: %s",
                e.what());
          }
        }
        context_.pool().give_back(back);
        throw;
      }
    }
    events::record_map(context_.device(), planned);
  }
  chunks_ = std::move(planned);
  mapped_.store(target, std::memory_order_release);
  asleep_ = false;
  report.live_bytes += size;
  report.device_bytes += target;
  if (!keep_host) host_.reset();
}

}  // namespace vmm
