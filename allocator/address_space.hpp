// AddressSpace: a device's virtual address reservations, carved into ranges.
//
// VA is nearly free, physical memory is not: ranges are handed out with
// nothing mapped behind them. Reservations are sized from the device's memory
// (Config::va_reservation_factor x total, or va_reservation_size), never one
// giant range, and more are added as needed; a request larger than a
// reservation gets a dedicated one, freed to the driver when its range is.
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

struct VaRange {
  std::uintptr_t base = 0;
  std::size_t bytes = 0;
  std::uintptr_t end() const noexcept { return base + bytes; }
  bool empty() const noexcept { return bytes == 0; }
};

struct AddressSpaceStats {
  std::size_t reserved_bytes = 0;   // all reservations
  std::size_t allocated_bytes = 0;  // ranges handed out
  std::size_t reservations = 0;
  std::size_t reservation_size = 0;
};

class AddressSpace {
 public:
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
