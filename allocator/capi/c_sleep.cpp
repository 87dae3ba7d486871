// The C ABI of tags, sleep and wake (include/vmmalloc/vmmalloc.h,
// docs/sleep.md): a thin adapter over vmmalloc/tags.hpp and
// vmm::Allocator::sleep/wake/asleep, reporting failures as the rest of the
// C ABI does (c_status.hpp).
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "allocator/capi/c_status.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/tags.hpp"
#include "vmmalloc/vmmalloc.h"

// vmm_sleep_report is plain C and mirrors vmm::SleepReport field for field;
// it is filled member by member, so this only keeps the two from drifting
// apart unnoticed.
static_assert(sizeof(vmm_sleep_report) == sizeof(vmm::SleepReport),
              "vmm_sleep_report differs from vmm::SleepReport");
static_assert(static_cast<int>(VMM_SLEEP_OFFLOAD) == static_cast<int>(vmm::SleepMode::offload) &&
                  static_cast<int>(VMM_SLEEP_DISCARD) == static_cast<int>(vmm::SleepMode::discard),
              "vmm_sleep_mode differs from vmm::SleepMode");

namespace {

using vmm::capi::guarded;
using vmm::capi::null_argument;

// The ids of `ntags` names (tags may be NULL only when ntags is 0). Throws
// InvalidArgumentError for a NULL name or one tag_id() refuses; a name
// never used before becomes a tag (with nothing under it).
std::vector<vmm::TagId> tag_ids(const char* call, const char* const* tags, std::size_t ntags) {
  std::vector<vmm::TagId> ids;
  ids.reserve(ntags);
  for (std::size_t i = 0; i < ntags; ++i) {
    if (tags[i] == nullptr) {
      throw vmm::InvalidArgumentError(std::string(call) + ": tags[" + std::to_string(i) +
                                      "] is NULL");
    }
    ids.push_back(vmm::tag_id(tags[i]));
  }
  return ids;
}

void copy_report(const vmm::SleepReport& r, vmm_sleep_report* out) {
  if (out == nullptr) return;
  out->live_bytes = r.live_bytes;
  out->copied_bytes = r.copied_bytes;
  out->device_bytes = r.device_bytes;
  out->pinned_bytes = r.pinned_bytes;
  out->tags_changed = r.tags_changed;
  out->copy_seconds = r.copy_seconds;
}

}  // namespace

extern "C" {

vmm_status vmm_tag_push(const char* name) {
  if (name == nullptr) return null_argument("name");
  return guarded([&] { vmm::push_tag(vmm::tag_id(name)); });
}

vmm_status vmm_tag_pop(void) {
  return guarded([] { vmm::pop_tag(); });
}

vmm_status vmm_sleep(int device, const char* const* tags, size_t ntags, vmm_sleep_mode mode,
                     vmm_sleep_report* report) {
  if (tags == nullptr && ntags != 0) return null_argument("tags");
  return guarded([&] {
    if (mode != VMM_SLEEP_OFFLOAD && mode != VMM_SLEEP_DISCARD) {
      throw vmm::InvalidArgumentError(
          "vmm_sleep: mode " + std::to_string(static_cast<int>(mode)) +
          " is neither VMM_SLEEP_OFFLOAD (0) nor VMM_SLEEP_DISCARD (1)");
    }
    const std::vector<vmm::TagId> ids = tag_ids("vmm_sleep", tags, ntags);
    const auto m = static_cast<vmm::SleepMode>(mode);
    // -1: every device's allocator created so far (a device never used
    // holds no memory to sleep).
    const vmm::SleepReport r = device == -1 ? vmm::Allocator::sleep_everywhere(ids, m)
                                            : vmm::Allocator::instance(device).sleep(ids, m);
    copy_report(r, report);
  });
}

vmm_status vmm_wake(int device, const char* const* tags, size_t ntags, int keep_host,
                    vmm_sleep_report* report) {
  if (tags == nullptr && ntags != 0) return null_argument("tags");
  return guarded([&] {
    const std::vector<vmm::TagId> ids = tag_ids("vmm_wake", tags, ntags);
    const bool keep = keep_host != 0;
    const vmm::SleepReport r = device == -1 ? vmm::Allocator::wake_everywhere(ids, keep)
                                            : vmm::Allocator::instance(device).wake(ids, keep);
    copy_report(r, report);
  });
}

vmm_status vmm_is_sleeping(int device, const char* tag, int* asleep) {
  if (tag == nullptr) return null_argument("tag");
  if (asleep == nullptr) return null_argument("asleep");
  return guarded([&] {
    const vmm::TagId id = vmm::tag_id(tag);
    *asleep = vmm::Allocator::instance(device).asleep(id) ? 1 : 0;
  });
}

}  // extern "C"
