// ForwardingBackend: a Backend that forwards every call to an inner backend.
//
// The base of the adaptors that wrap another backend (FaultInjectingBackend,
// PeerAccessBackend): each derives from it and overrides only the calls it
// changes, so a call added to Backend is forwarded by every adaptor without
// being written out again in each. name() reports the inner backend's name.
//
// Thread-safety: as thread-safe as the inner backend.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "allocator/backend/backend.hpp"

namespace vmm {

class ForwardingBackend : public Backend {
 public:
  // Wraps `inner`, which must outlive this object.
  explicit ForwardingBackend(Backend& inner) noexcept : inner_(inner) {}
  ForwardingBackend(const ForwardingBackend&) = delete;
  ForwardingBackend& operator=(const ForwardingBackend&) = delete;

  Backend& inner() noexcept { return inner_; }
  const Backend& inner() const noexcept { return inner_; }

  // --- Backend -----------------------------------------------------------
  const char* name() const noexcept override { return inner_.name(); }
  int device() const noexcept override { return inner_.device(); }
  int device_count() const noexcept override { return inner_.device_count(); }
  std::size_t granularity() const noexcept override { return inner_.granularity(); }
  DeviceMemoryInfo memory_info() override { return inner_.memory_info(); }
  LiveObjects live_objects() const override { return inner_.live_objects(); }

  std::uintptr_t reserve(std::size_t bytes, std::size_t alignment) override {
    return inner_.reserve(bytes, alignment);
  }
  void free_va(std::uintptr_t base, std::size_t bytes) override { inner_.free_va(base, bytes); }
  PhysicalHandle create(std::size_t bytes) override { return inner_.create(bytes); }
  void release(PhysicalHandle handle) override { inner_.release(handle); }
  void map(std::uintptr_t va, std::size_t bytes, PhysicalHandle handle) override {
    inner_.map(va, bytes, handle);
  }
  void unmap(std::uintptr_t va, std::size_t bytes) override { inner_.unmap(va, bytes); }
  void set_access(std::uintptr_t va, std::size_t bytes) override { inner_.set_access(va, bytes); }
  void set_access(std::uintptr_t va, std::size_t bytes, std::span<const int> devices) override {
    inner_.set_access(va, bytes, devices);
  }
  bool can_access_peer(int peer) override { return inner_.can_access_peer(peer); }
  int export_handle(PhysicalHandle handle) override { return inner_.export_handle(handle); }
  PhysicalHandle import_handle(int fd, std::size_t bytes) override {
    return inner_.import_handle(fd, bytes);
  }
  FenceHandle record_fence(Stream stream) override { return inner_.record_fence(stream); }
  bool fence_completed(FenceHandle fence) override { return inner_.fence_completed(fence); }
  void wait_fence(FenceHandle fence) override { inner_.wait_fence(fence); }
  void destroy_fence(FenceHandle fence) noexcept override { inner_.destroy_fence(fence); }
  void prepare_background_thread() override { inner_.prepare_background_thread(); }
  bool stream_capturing(Stream stream) override { return inner_.stream_capturing(stream); }
  bool stream_exists(Stream stream) override { return inner_.stream_exists(stream); }
  void synchronize_device() override { inner_.synchronize_device(); }
  void* alloc_pinned(std::size_t bytes) override { return inner_.alloc_pinned(bytes); }
  void free_pinned(void* ptr, std::size_t bytes) noexcept override {
    inner_.free_pinned(ptr, bytes);
  }
  Stream create_copy_stream() override { return inner_.create_copy_stream(); }
  void destroy_copy_stream(Stream stream) noexcept override { inner_.destroy_copy_stream(stream); }
  void copy(void* dst, const void* src, std::size_t bytes, Stream stream) override {
    inner_.copy(dst, src, bytes, stream);
  }

 private:
  Backend& inner_;
};

}  // namespace vmm
