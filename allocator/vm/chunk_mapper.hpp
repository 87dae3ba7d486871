// map_chunks: the one place that backs address ranges with physical chunks.
// It maps every chunk, then grants access once per run of contiguous
// mappings (access is per call, so fewer, longer runs are cheaper), and on
// any failure unmaps what it mapped before rethrowing: the caller sees all
// of the mappings made, or none. It never creates or releases chunks; they
// stay the caller's either way. Used by Region (workspace growth), the
// heap's growth, and the IPC importer.
#pragma once

#include <cstddef>
#include <cstddef>
#include <span>
#include <vector>
#include <vector>

#include "allocator/backend/backend.hpp"
#include "allocator/base/types.hpp"

namespace vmm {

// Maps `mappings` (ascending, non-overlapping, each into reserved and
// unmapped VA) through `backend` and sets access on them. Throws what the
// backend threw, after undoing. An unmap that fails while undoing is logged
// with `what` ("workspace grow", ...) and its index into `mappings` is
// appended to `*still_mapped` (if given): that chunk may still be mapped
// there, so the caller must neither reuse the chunk nor map into its range
// again.
void map_chunks(Backend& backend, std::span<const Mapping> mappings, const char* what,
                std::vector<std::size_t>* still_mapped = nullptr);

}  // namespace vmm
