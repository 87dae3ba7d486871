// A reader of Python pickles of plain data, for PyTorch's memory snapshots
// (torch.cuda.memory._dump_snapshot writes one with pickle.dump).
//
// It reads protocols 2 to 5 and only the opcodes that plain data needs:
// dicts, lists, tuples (as arrays), str, int, float, bool, None, and the
// memo. Anything that would make Python import or call something (GLOBAL,
// STACK_GLOBAL, REDUCE, BUILD, NEWOBJ, ...), bytes, and anything unknown
// are refused with the opcode and its offset: reading a hostile file runs
// nothing. The result is bounded as JSON input is: at most 2^24 values are
// read, the JSON made is at most kMaxDepth deep, holds at most 16 values per
// input byte (at least 2^20; or `max_values`) and at most 32 bytes of
// strings and values per input byte (at least 64 MiB) - a memo shared many
// times over cannot blow up - each failure a CliError(kMalformed).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "tools/vmmctl/snapshot_source.hpp"

namespace vmmctl {

// True if `text` starts as a binary pickle does (the PROTO opcode, 0x80).
bool looks_like_pickle(std::string_view text);

// The pickled value as JSON (dict keys that are not strings become their
// JSON text). `origin` names the input in messages.
Json read_pickle(std::string_view text, const std::string& origin,
                 std::size_t max_values = std::size_t{1} << 26);

}  // namespace vmmctl
