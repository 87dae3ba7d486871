// PyTorch's memory snapshots in vmmctl (docs/tools.md#vmmctl): the dict
// torch.cuda.memory._snapshot() returns and _dump_snapshot pickles, read as
// a vmmalloc snapshot so show, map, diff and html work on it unchanged.
//
// Mapping: each PyTorch segment is a heap region (id "segment:<address>",
// name its segment_type, one chunk covering total_size, pool its
// segment_pool_id); its blocks keep address, size and requested_size, with
// state "live" (active_allocated, active_pending_free) or "free" (inactive),
// the PyTorch state and frames kept beside. device_traces become events:
// alloc -> allocate, free_completed -> free, segment_alloc/segment_map ->
// map, segment_free/segment_unmap -> unmap, oom -> oom (others dropped);
// mapped_after is worked back from the segments at the end. The document
// says "reason": "pytorch", pid 0 (PyTorch's snapshot does not name its
// process). Throws CliError(kMalformed) for a document that is not one.
#pragma once

#include <string>

#include "tools/vmmctl/snapshot_source.hpp"

namespace vmmctl {

// True for a dict with a "segments" list and no vmmalloc "schema".
bool is_pytorch_snapshot(const Json& doc);
Json from_pytorch_snapshot(const Json& pytorch, const std::string& origin);

}  // namespace vmmctl
