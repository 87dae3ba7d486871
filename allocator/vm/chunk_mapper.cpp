#include "allocator/vm/chunk_mapper.hpp"

#include "allocator/base/log.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

void map_chunks(Backend& backend, std::span<const Mapping> mappings, const char* what,
                std::vector<std::size_t>* still_mapped) {
  std::size_t mapped = 0;
  try {
    for (; mapped < mappings.size(); ++mapped) {
      const Mapping& m = mappings[mapped];
      backend.map(m.va, m.chunk.bytes, m.chunk.handle);
    }
    for (std::size_t a = 0; a < mappings.size();) {
      std::size_t b = a + 1;
      while (b < mappings.size() && mappings[b].va == mappings[b - 1].end()) ++b;
      backend.set_access(mappings[a].va, mappings[b - 1].end() - mappings[a].va);
      a = b;
    }
  } catch (...) {
    for (std::size_t i = 0; i < mapped; ++i) {
      try {
        backend.unmap(mappings[i].va, mappings[i].chunk.bytes);
      } catch (const Error& e) {
        if (still_mapped != nullptr) still_mapped->push_back(i);
        log(LogLevel::error, "%s: undoing a failed map: unmap failed: %s", what, e.what());
      }
    }
    throw;
  }
}

}  // namespace vmm
