// AddressSpace implementation: first fit by address within each reservation,
// free ranges coalesced with their neighbours. See address_space.hpp.
#include "allocator/vm/address_space.hpp"

#include <algorithm>
#include <iterator>
#include <string>

#include "allocator/base/log.hpp"
#include "allocator/base/units.hpp"
#include "allocator/record/snapshot_views.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {
// A single request beyond this is certainly a bug (the whole user address
// space of x86-64 is 128 TiB).
constexpr std::size_t kMaxRangeBytes = std::size_t{64} << 40;
}  // namespace

std::size_t AddressSpace::reservation_budget(int device_count) noexcept {
  return kProcessVaBudget / static_cast<std::size_t>(std::max(device_count, 1));
}

AddressSpace::AddressSpace(Backend& backend, const Config& config)
    : backend_(backend), granularity_(backend.granularity()) {
  std::size_t size = config.va_reservation_size;
  if (size == 0) {
    const DeviceMemoryInfo info = backend_.memory_info();
    const double want = static_cast<double>(info.total_bytes) * config.va_reservation_factor;
    // Capped before rounding up, so neither the conversion nor the rounding
    // can overflow (the budget below caps it again, to the device's share).
    size = align_up(std::min(saturating_size(want), kProcessVaBudget), GiB);
  }
  // Every device of the process reserves: each keeps to its share, so all of
  // them fit in the user address space together.
  const std::size_t budget = align_down(reservation_budget(backend_.device_count()), granularity_);
  if (size > budget) {
    log(LogLevel::info, "device %d: VA reservations of %s capped at %s (%s shared by %d device(s))",
        backend_.device(), format_bytes(size).c_str(), format_bytes(budget).c_str(),
        format_bytes(kProcessVaBudget).c_str(), backend_.device_count());
    size = budget;
  }
  reservation_size_ = std::max(align_up(size, granularity_), granularity_);
  stats_.reservation_size = reservation_size_;
}

AddressSpace::~AddressSpace() {
  std::lock_guard lock(mutex_);
  for (const Reservation& r : reservations_) {
    if (r.allocated != 0) {
      log(LogLevel::warn, "address space destroyed with %s of ranges still in use",
          format_bytes(r.allocated).c_str());
      continue;  // something may still be mapped there: leave it reserved
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      try {
        backend_.free_va(r.range.base, r.range.bytes);
        break;
      } catch (const Error& e) {
        log(LogLevel::warn, "freeing a VA reservation failed: %s", e.what());
      }
    }
  }
}

VaRange AddressSpace::allocate(std::size_t bytes) {
  if (bytes == 0 || bytes > kMaxRangeBytes) {
    throw InvalidArgumentError("address range of " + std::to_string(bytes) +
                               " bytes requested (valid: 1 byte to 64 TiB)");
  }
  bytes = align_up(bytes, granularity_);
  std::lock_guard lock(mutex_);
  for (Reservation& r : reservations_) {
    if (r.dedicated) continue;
    for (auto it = r.free.begin(); it != r.free.end(); ++it) {
      if (it->second < bytes) continue;
      const VaRange out{it->first, bytes};
      const std::size_t rest = it->second - bytes;
      r.free.erase(it);
      if (rest != 0) r.free.emplace(out.base + bytes, rest);
      r.allocated += bytes;
      stats_.allocated_bytes += bytes;
      return out;
    }
  }
  // No room: a new reservation (dedicated if the request is larger).
  const bool dedicated = bytes > reservation_size_;
  const std::size_t size = dedicated ? bytes : reservation_size_;
  std::uintptr_t base = 0;
  try {
    base = backend_.reserve(size, granularity_);
  } catch (const DriverError& e) {
    throw OutOfMemoryError("address space exhausted: reserving " + format_bytes(size) +
                           " of virtual addresses failed (" + e.what() + ")");
  }
  Reservation r;
  r.range = {base, size};
  r.dedicated = dedicated;
  r.allocated = bytes;
  if (size > bytes) r.free.emplace(base + bytes, size - bytes);
  reservations_.push_back(std::move(r));
  stats_.reserved_bytes += size;
  stats_.allocated_bytes += bytes;
  stats_.reservations = reservations_.size();
  return {base, bytes};
}

AddressSpace::Reservation* AddressSpace::find_locked(std::uintptr_t address) {
  for (Reservation& r : reservations_) {
    if (address >= r.range.base && address < r.range.end()) return &r;
  }
  return nullptr;
}

void AddressSpace::deallocate(VaRange range) {
  if (range.empty()) return;
  std::lock_guard lock(mutex_);
  Reservation* r = find_locked(range.base);
  if (r == nullptr || range.end() > r->range.end() || r->allocated < range.bytes) {
    throw InvalidArgumentError("address space: range not handed out by this device");
  }
  if (r->dedicated) {
    if (range.base != r->range.base) {
      throw InvalidArgumentError("address space: range not handed out by this device");
    }
    const VaRange whole = r->range;
    try {
      backend_.free_va(whole.base, whole.bytes);
    } catch (const Error& e) {
      // Keep it as an ordinary, empty reservation: reused, freed at exit.
      log(LogLevel::warn, "freeing a dedicated VA reservation failed (kept): %s", e.what());
      r->dedicated = false;
      r->free.emplace(whole.base, whole.bytes);
      r->allocated -= range.bytes;  // empty now, so the destructor frees it
      stats_.allocated_bytes -= range.bytes;
      return;
    }
    stats_.reserved_bytes -= whole.bytes;
    stats_.allocated_bytes -= range.bytes;
    reservations_.erase(reservations_.begin() + (r - reservations_.data()));
    stats_.reservations = reservations_.size();
    return;
  }
  // Insert and coalesce with neighbours.
  auto [it, inserted] = r->free.emplace(range.base, range.bytes);
  if (!inserted) throw InvalidArgumentError("address space: range freed twice");
  r->allocated -= range.bytes;
  stats_.allocated_bytes -= range.bytes;
  if (it != r->free.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second == it->first) {
      prev->second += it->second;
      r->free.erase(it);
      it = prev;
    }
  }
  auto next = std::next(it);
  if (next != r->free.end() && it->first + it->second == next->first) {
    it->second += next->second;
    r->free.erase(next);
  }
}

AddressSpaceStats AddressSpace::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

// The reservations and their free ranges, for snapshots.
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
