// HostBackend: the CUDA VMM semantics in host memory (see
// host_backend.hpp for the mapping of each call and the lock overview).
//
// A host stream is a worker thread and a FIFO queue. Each work item enqueued
// takes the next ticket (enqueued_ + 1); the worker bumps completed_ after
// running it. A fence is (stream, ticket of the last work queued before it)
// and is complete once completed_ >= ticket: it waits for that stream's
// earlier work only, never for later work or other streams. A fence holds the
// stream by shared_ptr, so it stays valid after the stream is destroyed (by
// then everything queued has run, so it is complete).
//
// Locks: HostStreams::mutex_ guards the stream table; HostStream::mutex_
// guards one stream's queue, counters, error and stopping flag (the worker
// runs work with it released). HostBackend::mutex_ guards the memory tables,
// HostBackend::fences_mutex_ the fence table. No two are held at once: a
// stream is looked up under the table lock, the shared_ptr copied, the lock
// dropped, and only then is the stream's own lock taken.
#include "allocator/backend/host_backend.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <iterator>
#include <string>
#include <thread>
#include <utility>

#include "allocator/backend/host_stream.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

// ------------------------------------------------------------- HostBackend

struct HostBackend::Fence {
  std::shared_ptr<HostStream> stream;
  std::uint64_t ticket = 0;
};

namespace {

std::string hex(std::uintptr_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%jx", static_cast<std::uintmax_t>(v));
  return buf;
}

std::string range_text(std::uintptr_t va, std::size_t bytes) {
  return "[" + hex(va) + ", " + hex(va + bytes) + ")";
}

// Misuse the driver would reject with CUDA_ERROR_INVALID_VALUE.
[[noreturn]] void invalid(BackendCall call, const std::string& why) {
  const char* name = backend_call_name(call);
  throw DriverError(name, EINVAL,
                    std::string("host backend ") + name + ": " + why + " (invalid value)");
}

// A system call failed; `err` is its errno.
[[noreturn]] void system_failed(BackendCall call, const char* syscall, int err) {
  const char* name = backend_call_name(call);
  throw DriverError(
      name, err,
      std::string("host backend ") + name + ": " + syscall + " failed: " + std::strerror(err));
}

// Access is recorded as a 64-bit mask per mapping.
constexpr int kMaxHostDevices = 64;

// The seals of every memfd create() makes, checked by import_handle().
constexpr int kHandleSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
// Seals that would make a mapping read-only: refused on import.
#ifdef F_SEAL_FUTURE_WRITE
constexpr int kWriteSeals = F_SEAL_WRITE | F_SEAL_FUTURE_WRITE;
#else
constexpr int kWriteSeals = F_SEAL_WRITE;
#endif
constexpr int kReservedProt = PROT_NONE;
constexpr int kReservedFlags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE;

// Turns [va, va+bytes) back into reserved, inaccessible VA.
bool rereserve(std::uintptr_t va, std::size_t bytes) {
  void* p =
      ::mmap(reinterpret_cast<void*>(va), bytes, kReservedProt, kReservedFlags | MAP_FIXED, -1, 0);
  return p != MAP_FAILED;
}

}  // namespace

HostBackend::HostBackend(Options options)
    : options_(std::move(options)),
      device_count_(options_.device_count == 0 ? options_.device + 1 : options_.device_count),
      streams_(options_.streams ? options_.streams : std::make_shared<HostStreams>()),
      owns_streams_(!options_.streams) {
  const long page = ::sysconf(_SC_PAGESIZE);
  if (!is_power_of_two(options_.granularity) || page <= 0 ||
      options_.granularity % static_cast<std::size_t>(page) != 0) {
    throw InvalidArgumentError("host backend: granularity " + std::to_string(options_.granularity) +
                               " is not a power of two multiple of the page size");
  }
  if (options_.device < 0 || options_.device >= kMaxHostDevices) {
    throw InvalidArgumentError("host backend: device " + std::to_string(options_.device) +
                               " is not in 0.." + std::to_string(kMaxHostDevices - 1));
  }
  if (device_count_ < 1 || device_count_ > kMaxHostDevices || options_.device >= device_count_) {
    throw InvalidArgumentError("host backend: device_count " + std::to_string(device_count_) +
                               " is not in " + std::to_string(options_.device + 1) + ".." +
                               std::to_string(kMaxHostDevices) + " (or 0) for device " +
                               std::to_string(options_.device));
  }
}

HostBackend::~HostBackend() {
  // Queued work may still touch our memory: let it finish first.
  if (owns_streams_) streams_.reset();
  {
    std::lock_guard lock(fences_mutex_);
    fences_.clear();
  }
  std::lock_guard lock(mutex_);
  // Unmapping each reservation also removes the mappings inside it.
  for (const auto& [base, bytes] : reservations_) {
    ::munmap(reinterpret_cast<void*>(base), bytes);
  }
  for (const auto& [value, handle] : handles_) ::close(handle.fd);
}

void HostBackend::count(BackendCall kind) noexcept {
  calls_[static_cast<std::size_t>(kind)].fetch_add(1, std::memory_order_relaxed);
}

std::uint64_t HostBackend::calls(BackendCall kind) const noexcept {
  const auto i = static_cast<std::size_t>(kind);
  return i < calls_.size() ? calls_[i].load(std::memory_order_relaxed) : 0;
}

DeviceMemoryInfo HostBackend::memory_info() {
  std::lock_guard lock(mutex_);
  return {options_.device_memory - created_bytes_, options_.device_memory};
}

// ----------------------------------------------------------------- VA

std::uintptr_t HostBackend::reserve(std::size_t bytes, std::size_t alignment) {
  count(BackendCall::reserve);
  const std::size_t g = options_.granularity;
  if (bytes == 0 || bytes % g != 0) {
    invalid(BackendCall::reserve,
            "size " + std::to_string(bytes) + " is not a positive multiple of the granularity");
  }
  if (alignment == 0) alignment = g;
  if (!is_power_of_two(alignment)) {
    invalid(BackendCall::reserve,
            "alignment " + std::to_string(alignment) + " is not a power of two");
  }
  if (alignment < g) alignment = g;
  if (bytes > SIZE_MAX - alignment) {
    invalid(BackendCall::reserve, "size " + std::to_string(bytes) + " is too large");
  }

  // mmap only promises page alignment: over-allocate by `alignment`, then
  // give back the unaligned head and the tail.
  const std::size_t span = bytes + alignment;
  void* raw = ::mmap(nullptr, span, kReservedProt, kReservedFlags, -1, 0);
  if (raw == MAP_FAILED) system_failed(BackendCall::reserve, "mmap", errno);
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t base = align_up(start, alignment);
  if (base > start) ::munmap(raw, base - start);
  const std::uintptr_t tail = base + bytes;
  if (start + span > tail) ::munmap(reinterpret_cast<void*>(tail), start + span - tail);

  std::lock_guard lock(mutex_);
  reservations_.emplace(base, bytes);
  return base;
}

void HostBackend::free_va(std::uintptr_t base, std::size_t bytes) {
  count(BackendCall::free_va);
  std::lock_guard lock(mutex_);
  auto it = reservations_.find(base);
  if (it == reservations_.end()) {
    invalid(BackendCall::free_va, range_text(base, bytes) + " is not a reservation");
  }
  if (it->second != bytes) {
    invalid(BackendCall::free_va, range_text(base, bytes) + " does not match the reservation " +
                                      range_text(base, it->second));
  }
  auto m = mappings_.lower_bound(base);
  if (m != mappings_.end() && m->first < base + bytes) {
    invalid(BackendCall::free_va,
            range_text(base, bytes) + " still has a mapping at " + hex(m->first));
  }
  if (::munmap(reinterpret_cast<void*>(base), bytes) != 0) {
    system_failed(BackendCall::free_va, "munmap", errno);
  }
  reservations_.erase(it);
}

// ------------------------------------------------------------ handles

PhysicalHandle HostBackend::create(std::size_t bytes) {
  count(BackendCall::create);
  if (bytes == 0 || bytes % options_.granularity != 0) {
    invalid(BackendCall::create,
            "size " + std::to_string(bytes) + " is not a positive multiple of the granularity");
  }
  std::lock_guard lock(mutex_);
  if (bytes > options_.device_memory - created_bytes_) {
    throw DeviceOutOfMemoryError(backend_call_name(BackendCall::create), ENOMEM,
                                 "create failed: out of memory (host backend device " +
                                     std::to_string(options_.device) + ": " +
                                     std::to_string(bytes) + " bytes asked, " +
                                     std::to_string(options_.device_memory - created_bytes_) +
                                     " of " + std::to_string(options_.device_memory) + " free)");
  }
  // Sealed at its size: no process it is exported to can shrink it under
  // another's mapping (a SIGBUS there) or grow it; importers check the seals.
  const int fd = ::memfd_create("vmmalloc-host-handle", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) system_failed(BackendCall::create, "memfd_create", errno);
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int err = errno;
    ::close(fd);
    system_failed(BackendCall::create, "ftruncate", err);
  }
  if (::fcntl(fd, F_ADD_SEALS, kHandleSeals) != 0) {
    const int err = errno;
    ::close(fd);
    system_failed(BackendCall::create, "fcntl(F_ADD_SEALS)", err);
  }
  const std::uint64_t value = next_handle_++;
  handles_.emplace(value, Handle{fd, bytes, 0, false, false});
  ++live_handles_;
  created_bytes_ += bytes;
  return PhysicalHandle{value};
}

void HostBackend::free_handle_locked(std::unordered_map<std::uint64_t, Handle>::iterator it) {
  ::close(it->second.fd);
  (it->second.imported ? imported_bytes_ : created_bytes_) -= it->second.bytes;
  handles_.erase(it);
}

void HostBackend::release(PhysicalHandle handle) {
  count(BackendCall::release);
  std::lock_guard lock(mutex_);
  auto it = handles_.find(handle.value);
  if (it == handles_.end() || it->second.released) {
    invalid(BackendCall::release,
            "unknown or already released handle " + std::to_string(handle.value));
  }
  --live_handles_;
  if (it->second.map_count > 0) {
    it->second.released = true;  // freed by the last unmap, as CUDA does
  } else {
    free_handle_locked(it);
  }
}

// ------------------------------------------------------------ mappings

bool HostBackend::fully_mapped_locked(std::uintptr_t va, std::size_t bytes) const {
  const std::uintptr_t end = va + bytes;
  auto it = mappings_.upper_bound(va);
  if (it == mappings_.begin()) return false;
  --it;  // the last mapping starting at or before va
  std::uintptr_t covered = it->first + it->second.bytes;
  if (covered <= va) return false;
  for (++it; covered < end && it != mappings_.end() && it->first == covered; ++it) {
    covered += it->second.bytes;
  }
  return covered >= end;
}

void HostBackend::map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) {
  count(BackendCall::map);
  const std::size_t g = options_.granularity;
  const std::string where = range_text(va, bytes);
  if (va % g != 0 || bytes == 0 || bytes % g != 0 || va + bytes < va) {
    invalid(BackendCall::map, where + " is not a granularity-aligned range");
  }
  std::lock_guard lock(mutex_);
  auto h = handles_.find(handle.value);
  if (h == handles_.end() || h->second.released) {
    invalid(BackendCall::map, "unknown or released handle " + std::to_string(handle.value));
  }
  if (h->second.bytes != bytes) {
    invalid(BackendCall::map, where + " does not match the handle's size " +
                                  std::to_string(h->second.bytes) + " (a handle maps whole)");
  }
  auto r = reservations_.upper_bound(va);
  if (r == reservations_.begin() || std::prev(r)->first + std::prev(r)->second < va + bytes) {
    invalid(BackendCall::map, where + " is not inside one reservation");
  }
  auto m = mappings_.lower_bound(va);
  const bool overlaps_next = m != mappings_.end() && m->first < va + bytes;
  const bool overlaps_prev =
      m != mappings_.begin() && std::prev(m)->first + std::prev(m)->second.bytes > va;
  if (overlaps_next || overlaps_prev) {
    invalid(BackendCall::map, where + " overlaps a mapped range");
  }
  void* p = ::mmap(reinterpret_cast<void*>(va), bytes, PROT_NONE, MAP_SHARED | MAP_FIXED,
                   h->second.fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    rereserve(va, bytes);  // a failed MAP_FIXED may have dropped the reservation's pages
    system_failed(BackendCall::map, "mmap", err);
  }
  mappings_.emplace(va, Mapping{bytes, handle.value});
  ++h->second.map_count;
  mapped_bytes_ += bytes;
}

void HostBackend::unmap(std::uintptr_t va, std::size_t bytes) {
  count(BackendCall::unmap);
  const std::uintptr_t end = va + bytes;
  std::lock_guard lock(mutex_);
  auto first = mappings_.find(va);
  if (bytes == 0 || end < va || first == mappings_.end()) {
    invalid(BackendCall::unmap, range_text(va, bytes) + " does not start at a mapping");
  }
  // The range must be whole mappings back to back, ending exactly at `end`.
  auto last = first;
  std::uintptr_t covered = va;
  while (last != mappings_.end() && last->first == covered && covered < end) {
    covered += last->second.bytes;
    ++last;
  }
  if (covered != end) {
    invalid(BackendCall::unmap,
            range_text(va, bytes) +
                (covered > end ? " splits a mapping" : " is not mapped throughout"));
  }
  if (!rereserve(va, bytes)) system_failed(BackendCall::unmap, "mmap", errno);
  for (auto it = first; it != last;) {
    auto h = handles_.find(it->second.handle);
    if (--h->second.map_count == 0 && h->second.released) free_handle_locked(h);
    mapped_bytes_ -= it->second.bytes;
    it = mappings_.erase(it);
  }
}

void HostBackend::set_access(std::uintptr_t va, std::size_t bytes) {
  count(BackendCall::set_access);
  grant(va, bytes, std::uint64_t{1} << options_.device);
}

void HostBackend::set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) {
  count(BackendCall::set_access);
  std::uint64_t mask = 0;
  for (int d : devices) {
    if (d < 0 || d >= device_count_) {
      invalid(BackendCall::set_access, "device " + std::to_string(d) +
                                           " does not exist (valid: 0 to " +
                                           std::to_string(device_count_ - 1) + ")");
    }
    if (!can_reach(d)) {
      invalid(BackendCall::set_access, "device " + std::to_string(d) +
                                           " cannot access memory of device " +
                                           std::to_string(options_.device));
    }
    mask |= std::uint64_t{1} << d;
  }
  if (mask != 0) grant(va, bytes, mask);
}

bool HostBackend::can_reach(int peer) const noexcept {
  return peer == options_.device ||
         std::find(options_.unreachable_peers.begin(), options_.unreachable_peers.end(), peer) ==
             options_.unreachable_peers.end();
}

bool HostBackend::can_access_peer(int peer) {
  count(BackendCall::can_access_peer);
  if (peer < 0 || peer >= device_count_) {
    throw InvalidArgumentError("peer device " + std::to_string(peer) +
                               " does not exist: the host backend has " +
                               std::to_string(device_count_) + " device(s)");
  }
  return can_reach(peer);
}

void HostBackend::grant(std::uintptr_t va, std::size_t bytes, std::uint64_t mask) {
  const std::size_t g = options_.granularity;
  if (va % g != 0 || bytes == 0 || bytes % g != 0 || va + bytes < va) {
    invalid(BackendCall::set_access, range_text(va, bytes) + " is not a granularity-aligned range");
  }
  std::lock_guard lock(mutex_);
  if (!fully_mapped_locked(va, bytes)) {
    invalid(BackendCall::set_access, range_text(va, bytes) + " is not mapped throughout");
  }
  if (::mprotect(reinterpret_cast<void*>(va), bytes, PROT_READ | PROT_WRITE) != 0) {
    system_failed(BackendCall::set_access, "mprotect", errno);
  }
  auto it = std::prev(mappings_.upper_bound(va));  // fully mapped: exists
  for (; it != mappings_.end() && it->first < va + bytes; ++it) it->second.access |= mask;
}

// ------------------------------------------------------------ IPC

int HostBackend::export_handle(PhysicalHandle handle) {
  count(BackendCall::export_handle);
  std::lock_guard lock(mutex_);
  auto it = handles_.find(handle.value);
  if (it == handles_.end() || it->second.released) {
    invalid(BackendCall::export_handle,
            "unknown or released handle " + std::to_string(handle.value));
  }
  const int fd = ::fcntl(it->second.fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) system_failed(BackendCall::export_handle, "fcntl(F_DUPFD_CLOEXEC)", errno);
  return fd;
}

PhysicalHandle HostBackend::import_handle(int fd, std::size_t bytes) {
  count(BackendCall::import_handle);
  if (bytes == 0 || bytes % options_.granularity != 0) {
    invalid(BackendCall::import_handle,
            "size " + std::to_string(bytes) + " is not a positive multiple of the granularity");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    invalid(BackendCall::import_handle,
            "descriptor " + std::to_string(fd) + " is not open (" + std::strerror(errno) + ")");
  }
  // Only a memfd made by create() is mapped: sealed so that it keeps its
  // size (only memfds carry these seals), of exactly `bytes`, writable. A
  // file that could shrink would kill this process with SIGBUS.
  const int seals = S_ISREG(st.st_mode) ? ::fcntl(fd, F_GET_SEALS) : -1;
  std::string wrong;
  if (!S_ISREG(st.st_mode)) {
    wrong = "not a memfd";
  } else if (seals < 0 || (seals & kHandleSeals) != kHandleSeals) {
    wrong = "not sealed against shrinking and growing: not a memfd made by vmmalloc";
  } else if ((seals & kWriteSeals) != 0) {
    wrong = "sealed against writing";
  } else if (static_cast<std::size_t>(st.st_size) != bytes) {
    wrong = std::to_string(st.st_size) + " bytes";
  }
  if (!wrong.empty()) {
    invalid(BackendCall::import_handle, "descriptor " + std::to_string(fd) +
                                            " is not an exported handle of " +
                                            std::to_string(bytes) + " bytes (" + wrong + ")");
  }
  const int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) system_failed(BackendCall::import_handle, "fcntl(F_DUPFD_CLOEXEC)", errno);
  std::lock_guard lock(mutex_);
  const std::uint64_t value = next_handle_++;
  handles_.emplace(value, Handle{own, bytes, 0, false, true});
  ++live_handles_;
  imported_bytes_ += bytes;
  return PhysicalHandle{value};
}

// ------------------------------------------------------------ fences

bool HostBackend::stream_capturing(Stream stream) {
  std::lock_guard lock(fences_mutex_);
  return std::find(capturing_.begin(), capturing_.end(), stream) != capturing_.end();
}

void HostBackend::set_stream_capturing(Stream stream, bool capturing) {
  std::lock_guard lock(fences_mutex_);
  auto it = std::find(capturing_.begin(), capturing_.end(), stream);
  if (capturing && it == capturing_.end()) capturing_.push_back(stream);
  if (!capturing && it != capturing_.end()) capturing_.erase(it);
}

FenceHandle HostBackend::record_fence(Stream stream) {
  count(BackendCall::record_fence);
  if (stream_capturing(stream)) {
    throw DriverError(backend_call_name(BackendCall::record_fence), EPERM,
                      "host backend: record_fence on a capturing stream (a CUDA capture "
                      "would be invalidated)");
  }
  std::shared_ptr<HostStream> s;
  try {
    s = streams_->find(stream);
  } catch (const InvalidArgumentError& e) {
    invalid(BackendCall::record_fence, e.what());
  }
  auto fence = std::make_unique<Fence>();
  fence->ticket = s->ticket();
  fence->stream = std::move(s);
  Fence* key = fence.get();
  std::lock_guard lock(fences_mutex_);
  fences_.emplace(key, std::move(fence));
  return FenceHandle{key};
}

HostBackend::Fence HostBackend::fence_state(FenceHandle fence, BackendCall call) const {
  // Copied under the table lock: another thread may destroy the fence as
  // soon as it is dropped, while the copy keeps the stream alive.
  std::lock_guard lock(fences_mutex_);
  auto it = fences_.find(static_cast<Fence*>(fence.value));
  if (it == fences_.end()) {
    invalid(call,
            "unknown or destroyed fence " + hex(reinterpret_cast<std::uintptr_t>(fence.value)));
  }
  return *it->second;
}

bool HostBackend::fence_completed(FenceHandle fence) {
  count(BackendCall::query_fence);
  const Fence f = fence_state(fence, BackendCall::query_fence);
  return f.stream->reached(f.ticket);
}

void HostBackend::wait_fence(FenceHandle fence) {
  count(BackendCall::wait_fence);
  const Fence f = fence_state(fence, BackendCall::wait_fence);
  f.stream->wait_for(f.ticket);
}

void HostBackend::destroy_fence(FenceHandle fence) noexcept {
  std::unique_ptr<Fence> doomed;  // destroyed after the lock is dropped
  std::lock_guard lock(fences_mutex_);
  auto it = fences_.find(static_cast<Fence*>(fence.value));
  if (it == fences_.end()) return;
  doomed = std::move(it->second);
  fences_.erase(it);
}

// ------------------------------------------------------------ accounting

LiveObjects HostBackend::live_objects() const {
  std::lock_guard lock(mutex_);
  LiveObjects out;
  out.handles = live_handles_;
  out.handle_bytes = created_bytes_ + imported_bytes_;
  out.reservations = reservations_.size();
  for (const auto& [base, bytes] : reservations_) out.reserved_bytes += bytes;
  out.mapped_bytes = mapped_bytes_;
  out.pinned_bytes = pinned_bytes_;
  return out;
}

std::size_t HostBackend::live_handles() const {
  std::lock_guard lock(mutex_);
  return live_handles_;
}

std::size_t HostBackend::created_bytes() const {
  std::lock_guard lock(mutex_);
  return created_bytes_;
}

std::size_t HostBackend::live_reservations() const {
  std::lock_guard lock(mutex_);
  return reservations_.size();
}

std::size_t HostBackend::mapped_bytes() const {
  std::lock_guard lock(mutex_);
  return mapped_bytes_;
}

std::size_t HostBackend::live_fences() const {
  std::lock_guard lock(fences_mutex_);
  return fences_.size();
}

std::vector<int> HostBackend::access_devices(std::uintptr_t va) const {
  std::lock_guard lock(mutex_);
  std::vector<int> devices;
  auto it = mappings_.upper_bound(va);
  if (it == mappings_.begin()) return devices;
  --it;
  if (va >= it->first + it->second.bytes) return devices;
  for (int d = 0; d < kMaxHostDevices; ++d) {
    if ((it->second.access >> d) & 1) devices.push_back(d);
  }
  return devices;
}

}  // namespace vmm
