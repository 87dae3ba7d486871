// Tags: names for memory that sleep() and wake() act on (docs/sleep.md).
//
// Memory is tagged when it is allocated: by the calling thread's innermost
// tag scope (TagScope, or vmm_tag_push/vmm_tag_pop in C), by the tag of the
// graph pool a capture allocates into, or by the tag a Workspace was made
// with. Untagged memory (tag 0) is never touched by sleep.
//
// Tag names are interned process-wide: 1 to 64 characters of [A-Za-z0-9_.:-].
// Thread-safety: every function may be called from any thread; scopes are
// per thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "vmmalloc/export.h"

namespace vmm {

// 0 is "untagged"; tags made by tag_id() are 1, 2, ...
using TagId = std::uint32_t;

// The id of tag `name`, made on first use. Throws InvalidArgumentError for
// a name that is empty, longer than 64 characters or has other characters.
VMM_API TagId tag_id(std::string_view name);
// The name of `tag` ("" for 0). Throws InvalidArgumentError for an id
// tag_id() never returned.
VMM_API std::string tag_name(TagId tag);
// Every tag made so far, by id (1, 2, ...).
VMM_API std::vector<std::string> tag_names();
// The calling thread's innermost tag scope, or 0.
VMM_API TagId current_tag() noexcept;

// Opens a tag scope on the calling thread (they nest); pop_tag() closes the
// innermost. pop_tag() throws InvalidArgumentError when none is open.
VMM_API void push_tag(TagId tag);
VMM_API void pop_tag();

// RAII tag scope: allocations on this thread while it lives are tagged.
class VMM_API TagScope {
 public:
  explicit TagScope(std::string_view name) { push_tag(tag_id(name)); }
  explicit TagScope(TagId tag) { push_tag(tag); }
  ~TagScope() {
    try {
      pop_tag();
    } catch (...) {
    }
  }
  TagScope(const TagScope&) = delete;
  TagScope& operator=(const TagScope&) = delete;
};

// What sleep does with a tag's live bytes.
enum class SleepMode : int {
  offload = 0,  // copied to pinned host memory, restored by wake
  discard = 1,  // dropped: contents undefined after wake
};

// What one sleep() or wake() did (summed over the tags and devices).
struct SleepReport {
  std::size_t live_bytes = 0;      // bytes of live blocks under the tags
  std::size_t copied_bytes = 0;    // bytes copied (to host by sleep, back by wake)
  std::size_t device_bytes = 0;    // physical memory released (sleep) or mapped (wake)
  std::size_t pinned_bytes = 0;    // pinned host memory allocated by this call
  std::size_t tags_changed = 0;    // tags that went to sleep / woke up
  double copy_seconds = 0;         // time spent in copies

  SleepReport& operator+=(const SleepReport& o) noexcept {
    live_bytes += o.live_bytes;
    copied_bytes += o.copied_bytes;
    device_bytes += o.device_bytes;
    pinned_bytes += o.pinned_bytes;
    tags_changed += o.tags_changed;
    copy_seconds += o.copy_seconds;
    return *this;
  }
};

}  // namespace vmm
