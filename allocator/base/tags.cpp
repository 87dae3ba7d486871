// The tag registry and each thread's tag scopes (include/vmmalloc/tags.hpp).
// Names are interned once under a mutex; the thread's innermost tag is a
// thread_local read (allocate() asks on every call).
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "vmmalloc/errors.hpp"
#include "vmmalloc/tags.hpp"

namespace vmm {

namespace {

constexpr std::size_t kMaxTagName = 64;
constexpr std::size_t kMaxTagDepth = 64;

struct Registry {
  std::mutex mutex;
  std::unordered_map<std::string, TagId> ids;
  std::vector<std::string> names{""};  // names[id]; 0 is untagged
};

Registry& registry() {
  static Registry* r = new Registry;  // never destroyed: used at exit
  return *r;
}

thread_local TagId t_stack[kMaxTagDepth];
thread_local std::size_t t_depth = 0;
thread_local TagId t_current = 0;

bool valid_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.' || c == ':' || c == '-';
}

}  // namespace

TagId tag_id(std::string_view name) {
  if (name.empty() || name.size() > kMaxTagName) {
    throw InvalidArgumentError("tag name '" + std::string(name.substr(0, kMaxTagName)) +
                               "': must be 1 to 64 characters of [A-Za-z0-9_.:-]");
  }
  for (char c : name) {
    if (!valid_char(c)) {
      throw InvalidArgumentError("tag name '" + std::string(name) +
                                 "': must be 1 to 64 characters of [A-Za-z0-9_.:-]");
    }
  }
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  auto [it, fresh] = r.ids.emplace(std::string(name), static_cast<TagId>(r.names.size()));
  if (fresh) r.names.emplace_back(name);
  return it->second;
}

std::string tag_name(TagId tag) {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  if (tag >= r.names.size()) {
    throw InvalidArgumentError("tag " + std::to_string(tag) + " does not exist");
  }
  return r.names[tag];
}

std::vector<std::string> tag_names() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  return {r.names.begin() + 1, r.names.end()};
}

TagId current_tag() noexcept { return t_current; }

void push_tag(TagId tag) {
  if (tag != 0) tag_name(tag);  // throws for an id never made
  if (t_depth == kMaxTagDepth) {
    throw InvalidArgumentError("push_tag: tag scopes nest at most 64 deep");
  }
  t_stack[t_depth++] = tag;
  t_current = tag;
}

void pop_tag() {
  if (t_depth == 0) throw InvalidArgumentError("pop_tag: no tag scope is open on this thread");
  --t_depth;
  t_current = t_depth == 0 ? 0 : t_stack[t_depth - 1];
}

}  // namespace vmm
