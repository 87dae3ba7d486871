// The live socket's sleep and wake requests, answered by the allocators
// (see live_control.hpp and allocator/observe/live_socket.hpp).
#include "allocator/api/live_control.hpp"

#include <algorithm>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "allocator/observe/live_socket.hpp"
#include "allocator/observe/process_context.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/tags.hpp"

namespace vmm {

namespace {

// Throws what tag_id and sleep/wake throw; the server sends the message
// back as a "failed" error.
std::string answer(const live::Request& request) {
  // Only tags the process has made: a typo is refused, not made a new tag.
  const std::vector<std::string> known = tag_names();
  std::vector<TagId> ids;
  for (const std::string& name : request.tags) {
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::string list;
      for (const std::string& k : known) list += (list.empty() ? "" : ", ") + k;
      throw InvalidArgumentError("no tag '" + name + "' in this process (its tags: " +
                                 (list.empty() ? std::string("none") : list) + ")");
    }
    ids.push_back(tag_id(name));
  }
  const bool sleep = request.kind == live::Request::Kind::sleep;
  const SleepReport r =
      sleep ? Allocator::sleep_everywhere(ids, request.discard ? SleepMode::discard
                                                                : SleepMode::offload)
            : Allocator::wake_everywhere(ids, request.keep_host);
  nlohmann::ordered_json j;
  j["ok"] = true;
  j["request"] = sleep ? "sleep" : "wake";
  if (sleep) j["mode"] = request.discard ? "discard" : "offload";
  if (!sleep) j["keep_host"] = request.keep_host;
  j["tags"] = request.tags;
  j["report"] = {{"live_bytes", r.live_bytes},     {"copied_bytes", r.copied_bytes},
                 {"device_bytes", r.device_bytes}, {"pinned_bytes", r.pinned_bytes},
                 {"tags_changed", r.tags_changed}, {"copy_seconds", r.copy_seconds}};
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace

DeviceContext& api_context(int device) {
  static std::once_flag once;
  std::call_once(once, [] { live::set_control_handler(&answer); });
  return process_context(device);
}

}  // namespace vmm
