// libFuzzer target: the VMMALLOC_CONF parser.
//
// Any input must either parse into a valid Config or throw ConfigError (a
// message naming the key); nothing else may escape, and no input may crash,
// hang or trip a sanitizer. A parsed config must survive a round trip
// through to_string() unchanged, and apply() of the same text over the
// defaults must agree with parse().
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  vmm::Config parsed;
  try {
    parsed = vmm::Config::parse(text);
  } catch (const vmm::ConfigError& e) {
    if (e.key().empty() && std::string_view(e.what()).empty()) std::abort();
    return 0;
  }
  // Round trip: what to_string() prints parses back to the same config.
  const vmm::Config again = vmm::Config::parse(parsed.to_string());
  if (!(again == parsed)) std::abort();
  vmm::Config applied;
  applied.apply(text);
  if (!(applied == parsed)) std::abort();
  return 0;
}
