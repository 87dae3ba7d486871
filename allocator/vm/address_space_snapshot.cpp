// AddressSpace::describe: the reservations and their free ranges, for
// snapshots (see allocator/record/snapshot_views.hpp).
#include "allocator/record/snapshot_views.hpp"
#include "allocator/vm/address_space.hpp"

namespace vmm {

std::vector<ReservationView> AddressSpace::describe() const {
  std::lock_guard lock(mutex_);
  std::vector<ReservationView> out;
  out.reserve(reservations_.size());
  for (const Reservation& r : reservations_) {
    ReservationView v;
    v.range = r.range;
    v.dedicated = r.dedicated;
    v.allocated_bytes = r.allocated;
    for (const auto& [base, bytes] : r.free) v.free.push_back({base, bytes});
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace vmm
