#!/usr/bin/env python3
"""Writes the PyTorch memory snapshots vmmctl's tests read (tests/cli/pytorch_test.cpp):
dicts laid out as torch.cuda.memory._snapshot() returns them (segments with
blocks and frames, device_traces, allocator_settings), pickled as
torch.cuda.memory._dump_snapshot does (pickle.dump), plus hostile pickles.
No PyTorch needed; run it from this directory to regenerate them."""

import pickle

MIB = 1 << 20
BASE = 0x7F0000000000

frames = [{"filename": "train.py", "line": 42, "name": "forward"},
          {"filename": "model.py", "line": 7, "name": "__call__"}]


def block(addr, size, state, requested=None):
    return {"address": addr, "size": size, "requested_size": requested or size, "state": state,
            "frames": frames}  # the same list object each time: the pickle's memo shares it


segments = [
    {"device": 0, "address": BASE, "total_size": 20 * MIB, "allocated_size": 12 * MIB,
     "active_size": 12 * MIB, "requested_size": 12 * MIB - 100, "stream": 0, "segment_type": "large",
     "segment_pool_id": (0, 0), "is_expandable": False, "frames": frames,
     "blocks": [block(BASE, 8 * MIB, "active_allocated", 8 * MIB - 100),
                block(BASE + 8 * MIB, 4 * MIB, "active_pending_free"),
                block(BASE + 12 * MIB, 8 * MIB, "inactive")]},
    {"device": 0, "address": BASE + 64 * MIB, "total_size": 2 * MIB, "allocated_size": 512,
     "active_size": 512, "requested_size": 500, "stream": 0, "segment_type": "small",
     "segment_pool_id": (1, 0), "is_expandable": False, "frames": [],
     "blocks": [block(BASE + 64 * MIB, 512, "active_allocated", 500),
                block(BASE + 64 * MIB + 512, 2 * MIB - 512, "inactive")]},
]
traces = [[
    {"action": "segment_alloc", "addr": BASE, "size": 20 * MIB, "stream": 0, "time_us": 1000,
     "frames": frames},
    {"action": "alloc", "addr": BASE, "size": 8 * MIB, "stream": 0, "time_us": 1001, "frames": frames},
    {"action": "alloc", "addr": BASE + 8 * MIB, "size": 4 * MIB, "stream": 0, "time_us": 1002,
     "frames": frames},
    {"action": "free_requested", "addr": BASE + 8 * MIB, "size": 4 * MIB, "stream": 0, "time_us": 1003,
     "frames": frames},
    {"action": "segment_alloc", "addr": BASE + 64 * MIB, "size": 2 * MIB, "stream": 0,
     "time_us": 1004, "frames": []},
    {"action": "alloc", "addr": BASE + 64 * MIB, "size": 512, "stream": 0, "time_us": 1005,
     "frames": []},
    {"action": "oom", "addr": 123 * MIB, "size": 100 * MIB, "stream": 0, "time_us": 1006,
     "frames": frames},
]]
snapshot = {"segments": segments, "device_traces": traces,
            "allocator_settings": {"expandable_segments": False}, "external_annotations": []}

with open("pytorch_snapshot.pickle", "wb") as f:
    pickle.dump(snapshot, f, protocol=4)
with open("pytorch_snapshot_p2.pickle", "wb") as f:
    pickle.dump(snapshot, f, protocol=2)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


with open("hostile_reduce.pickle", "wb") as f:
    pickle.dump({"segments": [Evil()]}, f, protocol=4)
with open("hostile_truncated.pickle", "wb") as f:
    f.write(pickle.dumps(snapshot, protocol=4)[:300])
loop = []
loop.append(loop)
with open("hostile_cycle.pickle", "wb") as f:
    pickle.dump({"segments": loop}, f, protocol=4)
laughs = [1]
for _ in range(40):
    laughs = [laughs, laughs]
with open("hostile_shared.pickle", "wb") as f:
    pickle.dump({"segments": laughs}, f, protocol=4)
big = "A" * 65536  # one string, shared a million times over
with open("hostile_strings.pickle", "wb") as f:
    pickle.dump({"segments": [[[big] * 100] * 100] * 100}, f, protocol=4)
with open("hostile_devices.pickle", "wb") as f:
    pickle.dump({"segments": [{"device": 10**9, "address": BASE, "total_size": MIB}],
                 "device_traces": [[]] * 100000}, f, protocol=4)
# A lone surrogate (Python writes it with surrogatepass): not UTF-8 to JSON.
with open("hostile_surrogate.pickle", "wb") as f:
    pickle.dump({"segments": [{"device": 0, "address": BASE, "total_size": MIB, "segment_type": "x\udea1",
                               "blocks": []}]}, f, protocol=4)
