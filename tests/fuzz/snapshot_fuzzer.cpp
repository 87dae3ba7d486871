// libFuzzer target: vmmctl's snapshot reader (parse_snapshot in
// tools/vmmctl/snapshot_source.hpp), which every vmmctl command relies on to
// have checked the fields docs/snapshot.md promises - vmmalloc's JSON, and
// PyTorch's snapshots, pickled (tools/vmmctl/pickle.hpp) or as JSON.
//
// Any input must either parse into a checked document or throw CliError with
// kMalformed or kUnknownVersion and a message naming its origin ("fuzz: ...");
// nothing else may escape (a JSON type_error out of the checks would mean a
// field is read before its type is checked), and no input may crash, hang or
// trip a sanitizer. An accepted document, dumped and read again, is accepted
// again and equal.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tools/vmmctl/exit_codes.hpp"
#include "tools/vmmctl/snapshot_source.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  vmmctl::Json doc;
  try {
    doc = vmmctl::parse_snapshot(text, "fuzz");
  } catch (const vmmctl::CliError& e) {
    const bool known = e.code() == vmmctl::kMalformed || e.code() == vmmctl::kUnknownVersion;
    if (!known || std::string(e.what()).rfind("fuzz", 0) != 0) std::abort();
    return 0;
  }
  const vmmctl::Json again = vmmctl::parse_snapshot(doc.dump(), "fuzz again");
  if (again != doc) std::abort();
  return 0;
}
