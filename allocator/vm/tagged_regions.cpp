// TaggedRegions implementation. See tagged_regions.hpp for the contract.
#include "allocator/vm/tagged_regions.hpp"

#include <algorithm>

#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

void TaggedRegions::add(SleepingRegion& region) {
  std::lock_guard lock(mutex_);
  regions_.push_back(&region);
  if (asleep_.count(region.tag()) != 0) {
    SleepReport unused;
    region.sleep(SleepMode::discard, unused);  // nothing mapped yet: no driver call
  }
}

void TaggedRegions::remove(SleepingRegion& region) noexcept {
  std::lock_guard lock(mutex_);
  regions_.erase(std::remove(regions_.begin(), regions_.end(), &region), regions_.end());
}

std::vector<SleepingRegion*> TaggedRegions::of_tag_locked(TagId tag) const {
  std::vector<SleepingRegion*> out;
  for (SleepingRegion* r : regions_) {
    if (r->tag() == tag) out.push_back(r);
  }
  return out;
}

void TaggedRegions::forget_stream(Stream stream) noexcept {
  std::lock_guard lock(mutex_);
  for (SleepingRegion* r : regions_) r->forget_stream(stream);
}

bool TaggedRegions::asleep(TagId tag) const {
  std::lock_guard lock(mutex_);
  return asleep_.count(tag) != 0;
}

void TaggedRegions::sleep(TagId tag, SleepMode mode, SleepReport& report) {
  std::lock_guard lock(mutex_);
  // Every region, also when the tag is marked asleep: after a partial wake
  // some are awake (Region::sleep skips those asleep).
  const std::vector<SleepingRegion*> regions = of_tag_locked(tag);
  SleepReport mine;
  std::size_t done = 0;
  try {
    for (; done < regions.size(); ++done) regions[done]->sleep(mode, mine);
  } catch (...) {
    for (std::size_t i = 0; i < done; ++i) {
      try {
        SleepReport unused;
        regions[i]->wake(/*keep_host=*/false, unused);
      } catch (const Error& e) {
        log(LogLevel::error, "sleep (undo): a workspace of tag '%s' stays asleep: %s",
            tag_name(tag).c_str(), e.what());
      }
    }
    throw;
  }
  asleep_.insert(tag);
  report += mine;
}

void TaggedRegions::wake(TagId tag, bool keep_host, SleepReport& report) {
  std::lock_guard lock(mutex_);
  for (SleepingRegion* r : of_tag_locked(tag)) r->wake(keep_host, report);
  asleep_.erase(tag);
}

}  // namespace vmm
