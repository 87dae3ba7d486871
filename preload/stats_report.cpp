// The print_stats summary: what the interposer served from vmmalloc and
// passed to CUDA, and each served device's allocator counters, written to
// stderr at exit. The last line is machine-readable (key=value) for tests
// and scripts:
//
//   vmmalloc[1234] stats: preload served_allocations=120 served_frees=118 ...
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <string>

#include "preload/interposer.hpp"

namespace vmm::preload {
namespace {

std::string human_bytes(std::uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.2f %s", value, kUnits[unit]);
  return buf;
}

template <typename Array>
std::uint64_t sum(const Array& a) {
  std::uint64_t total = 0;
  for (std::uint64_t v : a) total += v;
  return total;
}

const char* state_name(DeviceState state) {
  switch (state) {
    case DeviceState::unknown: return "unused";
    case DeviceState::serving: return "served";
    case DeviceState::forwarding: return "left to CUDA";
    case DeviceState::reset: return "served until cudaDeviceReset";
  }
  return "?";
}

}  // namespace

void write_report(const InterposerReport& r, const Config& config) noexcept {
  try {
    const std::string prefix = "vmmalloc[" + std::to_string(::getpid()) + "] stats: ";
    std::string out;
    auto line = [&](const std::string& text) { out += prefix + text + "\n"; };
    char buf[512];

    line(std::string("LD_PRELOAD interposer summary (cudafree:") +
         cudafree_mode_name(config.cudafree) + ")");
    std::string calls;
    for (int i = 0; i < static_cast<int>(AllocCall::count_); ++i) {
      if (!calls.empty()) calls += ", ";
      calls += std::string(alloc_call_name(static_cast<AllocCall>(i))) + " " +
               std::to_string(r.served_allocations[static_cast<std::size_t>(i)]);
    }
    line("served by vmmalloc: " + std::to_string(sum(r.served_allocations)) + " allocations (" +
         human_bytes(r.served_bytes) + "): " + calls);
    calls.clear();
    for (int i = 0; i < static_cast<int>(FreeCall::count_); ++i) {
      if (!calls.empty()) calls += ", ";
      calls += std::string(free_call_name(static_cast<FreeCall>(i))) + " " +
               std::to_string(r.served_frees[static_cast<std::size_t>(i)]);
    }
    line("                    " + std::to_string(sum(r.served_frees)) + " frees: " + calls);
    line("device synchronizations avoided (cudaFree/cuMemFree that did not wait): " +
         std::to_string(r.syncs_avoided) +
         (config.cudafree == CudaFreeMode::order
              ? ", of which ordered on the GPU (reused at once): " + std::to_string(r.ordered_frees)
              : std::string()));
    line("passed to CUDA: " + std::to_string(sum(r.forwarded_allocations)) + " allocations, " +
         std::to_string(sum(r.forwarded_frees)) + " frees (" + std::to_string(r.invalid_frees) +
         " refused: double free or invalid pointer)");
    line("streams created: " + std::to_string(r.streams_created) + ", device resets: " +
         std::to_string(r.device_resets) + ", frees kept in stream captures: " +
         std::to_string(r.frees_kept_in_capture));

    for (int d = 0; d < kMaxDevices; ++d) {
      const DeviceState state = r.devices[static_cast<std::size_t>(d)];
      if (state == DeviceState::unknown) continue;
      vmm_allocator_stats s{};
      const char* backend = "?";
      if (state == DeviceState::forwarding || vmm_backend_name(d, &backend) != VMM_SUCCESS ||
          vmm_get_allocator_stats(d, &s) != VMM_SUCCESS) {
        line("device " + std::to_string(d) + ": " + state_name(state));
        continue;
      }
      const double ratio = s.peak_allocated_bytes == 0
                               ? 0.0
                               : static_cast<double>(s.peak_reserved_bytes) /
                                     static_cast<double>(s.peak_allocated_bytes);
      std::snprintf(buf, sizeof buf,
                    "device %d (%s, %s): peak in use %s, peak held %s (%.3fx), held now %s; "
                    "%" PRIu64 " chunks created, %" PRIu64 " released, %" PRIu64 " stitches, "
                    "%" PRIu64 " out-of-memory errors, %" PRIu64 " waits for the GPU "
                    "(fenced_free_limit)",
                    d, backend, state_name(state), human_bytes(s.peak_allocated_bytes).c_str(),
                    human_bytes(s.peak_reserved_bytes).c_str(), ratio,
                    human_bytes(s.reserved_bytes).c_str(), s.chunk_creates, s.chunk_releases,
                    s.stitches, s.ooms, s.fenced_free_waits);
      line(buf);
    }
    std::snprintf(buf, sizeof buf,
                  "preload served_allocations=%" PRIu64 " served_frees=%" PRIu64
                  " served_bytes=%" PRIu64 " forwarded_allocations=%" PRIu64
                  " forwarded_frees=%" PRIu64 " invalid_frees=%" PRIu64 " syncs_avoided=%" PRIu64
                  " device_resets=%" PRIu64 " ordered_frees=%" PRIu64,
                  sum(r.served_allocations), sum(r.served_frees), r.served_bytes,
                  sum(r.forwarded_allocations), sum(r.forwarded_frees), r.invalid_frees,
                  r.syncs_avoided, r.device_resets, r.ordered_frees);
    line(buf);
    std::fputs(out.c_str(), stderr);
    std::fflush(stderr);
  } catch (...) {
    // Out of host memory at exit: no report.
  }
}

}  // namespace vmm::preload
