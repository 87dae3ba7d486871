// AddressSpace: a device's virtual address reservations, carved into ranges.
//
// VA is nearly free, physical memory is not: ranges are handed out with
// nothing mapped behind them. Reservations are sized from the device's memory
// (Config::va_reservation_factor x total, or va_reservation_size), never one
// giant range, and more are added as needed; a request larger than a
// reservation gets a dedicated one, freed to the driver when its range is.
// Each device's reservations are at most its share of kProcessVaBudget
// (split evenly over the devices the driver offers), so eight GPUs with
// 141 GB each, or a large va_reservation_factor, still fit together in the
// 128 TiB user address space next to the driver's own ranges.
//
// Thread-safety: one mutex guards the reservation list and free lists; the
// backend's reserve/free calls happen under it (they are rare and fast).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "vmmalloc/config.hpp"

namespace vmm {

struct ReservationView;

struct AddressSpaceStats {
  std::size_t reserved_bytes = 0;   // all reservations
  std::size_t allocated_bytes = 0;  // ranges handed out
  std::size_t reservations = 0;
  std::size_t reservation_size = 0;
};

class AddressSpace {
 public:
  // The address space all devices' reservations may share: a quarter of
  // x86-64's 128 TiB user space (reserving 128 TiB at once failed on one
  // machine; the driver and the program need room of their own).
  static constexpr std::size_t kProcessVaBudget = std::size_t{32} << 40;
  // One device's share of kProcessVaBudget when the driver offers
  // `device_count` devices: the most one reservation of a device may be.
  static std::size_t reservation_budget(int device_count) noexcept;

  AddressSpace(Backend& backend, const Config& config);
  // Frees every reservation (ranges still handed out are a caller bug: logged).
  ~AddressSpace();
  AddressSpace(const AddressSpace&) = delete;
  AddressSpace& operator=(const AddressSpace&) = delete;

  // A range of `bytes` (rounded up to the granularity), aligned to the
  // granularity. Throws InvalidArgumentError for 0 or absurd sizes,
  // OutOfMemoryError when the driver refuses more address space.
  VaRange allocate(std::size_t bytes);
  // Returns a range from allocate(); nothing may be mapped in it.
  // Throws InvalidArgumentError for a range this space did not hand out.
  void deallocate(VaRange range);

  AddressSpaceStats stats() const;
  // Every reservation with its free ranges, for snapshots
  // (address_space.cpp). Never calls the driver.
  std::vector<ReservationView> describe() const;
  std::size_t reservation_size() const noexcept { return reservation_size_; }

 private:
  struct Reservation {
    VaRange range;
    bool dedicated = false;
    std::map<std::uintptr_t, std::size_t> free;  // base -> bytes, coalesced
    std::size_t allocated = 0;
  };
  Reservation* find_locked(std::uintptr_t address);

  Backend& backend_;
  std::size_t granularity_;
  std::size_t reservation_size_;
  mutable std::mutex mutex_;
  std::vector<Reservation> reservations_;
  AddressSpaceStats stats_;
};

}  // namespace vmm
