// Allocation traces (the format of docs/benchmarks.md, "replay"), read into
// memory.
//
// A trace is text, optionally gzip-compressed (recognised by its magic bytes,
// not its name): a first line starting with '#' (a free-form header), then
// one event per line, four fields separated by blanks:
//
//   a 7f39a343ae00 4096 0      allocate 4096 bytes on stream 0
//   f 7f39a343ae00 4096 0      free that block
//
// The address (hex, no 0x) is only an identity: it names a block from its
// allocation to its free, and may be reused after the free. Blank lines are
// skipped. A block still live at the end of the trace is allowed (the model's
// weights, say); everything else is checked, and a malformed line is a
// TraceError naming the file and line: an unknown op, a field that is not a
// number, a size of 0, sizes whose sum exceeds 2^64 bytes (the live
// figures would wrap), missing or extra fields, an allocation of an address
// that is live, a free of an address that is not, a free whose size differs
// from its allocation's.
//
// Reading keeps the whole trace in memory as compact events, each naming its
// block by a dense index (the order of allocations), so a replayer needs no
// hash lookup per event.
//
// .gz files are read with zlib where the build found it (VMM_TRACE_HAVE_ZLIB),
// else through `gzip -dc` (popen).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace vmm::trace {

class TraceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Op : std::uint8_t { alloc, free };

struct Event {
  Op op = Op::alloc;
  std::uint32_t stream = 0;  // the trace's stream number
  std::uint32_t block = 0;   // dense index of the block: 0, 1, ... in allocation order
  std::uint64_t bytes = 0;   // size as requested (for a free: the block's size)
};

struct Trace {
  std::string name;    // the file it came from (or the name given to parse_trace)
  std::string header;  // the first line, '#' included
  std::vector<Event> events;
  std::size_t blocks = 0;                // allocations in the trace
  std::size_t frees = 0;
  std::vector<std::uint32_t> streams;    // distinct stream numbers, ascending
  std::uint64_t peak_live_bytes = 0;     // largest sum of live requested sizes
  std::size_t peak_live_blocks = 0;      // largest number of live blocks
  std::uint64_t final_live_bytes = 0;    // still live at the end
  std::size_t final_live_blocks = 0;
  std::uint64_t max_request_bytes = 0;
  std::uint64_t total_requested_bytes = 0;  // sum over all allocations
};

// Parses trace text (already decompressed). `name` is used in error messages.
// Throws TraceError.
Trace parse_trace(std::string_view text, const std::string& name);

// Reads a file, decompressing it if it is gzip. Throws TraceError (also when
// the file cannot be opened or decompressed).
Trace read_trace(const std::string& path);

// The file's bytes, decompressed if gzip. Throws TraceError.
std::string read_trace_text(const std::string& path);

// The trace's name without directories and .gz/.trace suffixes
// ("/x/gpt2-train.trace.gz" -> "gpt2-train").
std::string trace_stem(const std::string& path);

// Peak live bytes of a sequence of events (what parse_trace computes),
// for callers that build events themselves.
std::uint64_t peak_live_bytes(const std::vector<Event>& events);

}  // namespace vmm::trace
