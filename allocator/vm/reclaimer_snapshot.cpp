// Reclaimer::describe: the pending reclaims and their fences, for snapshots
// (see allocator/record/snapshot_views.hpp). Fences are reported as seen so far
// (Fence::known_complete), never queried: no driver call.
#include "allocator/record/snapshot_views.hpp"
#include "allocator/vm/reclaimer.hpp"

namespace vmm {

std::vector<ReclaimView> Reclaimer::describe() const {
  std::lock_guard lock(mutex_);
  std::vector<ReclaimView> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) {
    ReclaimView v;
    v.ticket = e.ticket;
    v.bytes = e.bytes;
    v.in_progress = e.in_progress;
    for (const Fence& f : e.fences) v.fences_complete.push_back(f.known_complete());
    for (const Mapping& m : e.mappings) v.mappings.push_back({m.va, m.chunk.bytes, m.alias});
    v.range = e.range;
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace vmm
