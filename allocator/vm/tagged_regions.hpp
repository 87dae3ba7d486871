// TaggedRegions: the tagged workspace regions of one device, for sleep and
// wake (docs/sleep.md). A Region made under a tag adds itself and removes
// itself when destroyed; one made while its tag is asleep starts asleep.
//
// sleep(tag) puts every region of the tag to sleep, or none: on a failure
// it wakes those it put to sleep and rethrows. wake(tag) wakes them all;
// on a failure the regions already woken stay awake and the tag stays
// asleep (a later wake finishes). Thread-safe: one mutex, taken before any
// region's (lock order: tagged regions -> region).
#pragma once

#include <mutex>
#include <unordered_set>
#include <vector>

#include "allocator/base/types.hpp"
#include "vmmalloc/tags.hpp"

namespace vmm {

// What TaggedRegions needs of a region (Region implements it; kept apart so
// the device context, which owns the set, does not depend on Region).
class SleepingRegion {
 public:
  virtual TagId tag() const noexcept = 0;
  virtual void sleep(SleepMode mode, SleepReport& report) = 0;
  virtual void wake(bool keep_host, SleepReport& report) = 0;
  virtual void forget_stream(Stream stream) noexcept = 0;

 protected:
  ~SleepingRegion() = default;
};

class TaggedRegions {
 public:
  void add(SleepingRegion& region);
  void remove(SleepingRegion& region) noexcept;
  void sleep(TagId tag, SleepMode mode, SleepReport& report);
  void wake(TagId tag, bool keep_host, SleepReport& report);
  bool asleep(TagId tag) const;
  // Region::forget_stream on every tagged region.
  void forget_stream(Stream stream) noexcept;

 private:
  std::vector<SleepingRegion*> of_tag_locked(TagId tag) const;

  mutable std::mutex mutex_;
  std::vector<SleepingRegion*> regions_;
  std::unordered_set<TagId> asleep_;
};

}  // namespace vmm
