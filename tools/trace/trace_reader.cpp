// Trace reading: see trace_reader.hpp for the format and its checks.
#include "tools/trace/trace_reader.hpp"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <set>
#include <sys/wait.h>
#include <unordered_map>

#ifdef VMM_TRACE_HAVE_ZLIB
#include <zlib.h>
#endif

namespace vmm::trace {
namespace {

[[noreturn]] void fail(const std::string& name, std::size_t line, const std::string& what) {
  throw TraceError(name + ":" + std::to_string(line) + ": " + what);
}

[[noreturn]] void fail_file(const std::string& name, const std::string& what) {
  throw TraceError(name + ": " + what);
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

// Splits a line into blank-separated fields (at most `max` + 1, so extra
// fields are seen).
std::size_t split_fields(std::string_view line, std::string_view* out, std::size_t max) {
  std::size_t n = 0;
  std::size_t i = 0;
  while (i < line.size()) {
    while (i < line.size() && is_blank(line[i])) ++i;
    if (i >= line.size()) break;
    std::size_t j = i;
    while (j < line.size() && !is_blank(line[j])) ++j;
    if (n > max) break;
    if (n < max) out[n] = line.substr(i, j - i);
    ++n;
    i = j;
  }
  return n;
}

template <typename T>
bool parse_number(std::string_view s, int base, T& value) {
  if (s.empty()) return false;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), value, base);
  return ec == std::errc() && ptr == s.data() + s.size();
}

std::string quote(std::string_view s) {
  std::string q = "'";
  for (char c : s.substr(0, 40)) q += c;
  if (s.size() > 40) q += "...";
  return q + "'";
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail_file(path, std::string("cannot open: ") + std::strerror(errno));
  std::string data((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) fail_file(path, "read error");
  return data;
}

#ifdef VMM_TRACE_HAVE_ZLIB
std::string gunzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (f == nullptr) fail_file(path, std::string("cannot open: ") + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const int n = gzread(f, buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const std::string msg = gzerror(f, &code);
      gzclose(f);
      fail_file(path, "gzip data is corrupt: " + msg);
    }
    if (n == 0) break;
    out.append(buf, static_cast<std::size_t>(n));
  }
  int code = 0;
  const char* msg = gzerror(f, &code);
  if (code != Z_OK) {
    const std::string m = msg;
    gzclose(f);
    fail_file(path, "gzip data is corrupt: " + m);
  }
  if (gzclose(f) != Z_OK) fail_file(path, "gzip data is corrupt (truncated?)");
  return out;
}
#else
std::string gunzip(const std::string& path) {
  std::string cmd = "gzip -dc -- '";
  for (char c : path) {
    if (c == '\'') {
      cmd += "'\\''";
    } else {
      cmd += c;
    }
  }
  cmd += "' 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) fail_file(path, std::string("cannot run gzip -dc: ") + std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = ::pclose(p);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fail_file(path, "gzip -dc failed (corrupt or truncated gzip data, or no gzip program)");
  }
  return out;
}
#endif

}  // namespace

std::string read_trace_text(const std::string& path) {
  std::string raw = read_file_bytes(path);
  const bool gz = raw.size() >= 2 && static_cast<unsigned char>(raw[0]) == 0x1f &&
                  static_cast<unsigned char>(raw[1]) == 0x8b;
  if (!gz) return raw;
  raw.clear();
  return gunzip(path);
}

Trace parse_trace(std::string_view text, const std::string& name) {
  Trace t;
  t.name = name;
  std::unordered_map<std::uint64_t, std::pair<std::uint32_t, std::uint64_t>> live;  // addr -> block, bytes
  std::set<std::uint32_t> streams;
  std::uint64_t live_bytes = 0;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  bool header_seen = false;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!header_seen) {
      if (line.empty() || line[0] != '#') {
        fail(name, line_no, "the first line must be a header starting with '#'" +
                                (line.empty() ? std::string() : ", got " + quote(line)));
      }
      t.header = std::string(line);
      if (!t.header.empty() && t.header.back() == '\r') t.header.pop_back();
      header_seen = true;
      continue;
    }
    std::string_view f[4];
    const std::size_t n = split_fields(line, f, 4);
    if (n == 0) continue;  // blank line
    if (n != 4) {
      fail(name, line_no, "expected 4 fields (op addr size stream), got " + std::to_string(n) +
                              ": " + quote(line));
    }
    Event e;
    if (f[0] == "a") {
      e.op = Op::alloc;
    } else if (f[0] == "f") {
      e.op = Op::free;
    } else {
      fail(name, line_no, "unknown op " + quote(f[0]) + " (expected 'a' or 'f')");
    }
    std::uint64_t addr = 0;
    if (!parse_number(f[1], 16, addr)) fail(name, line_no, "bad address " + quote(f[1]) + " (hex, no 0x)");
    if (!parse_number(f[2], 10, e.bytes)) fail(name, line_no, "bad size " + quote(f[2]) + " (decimal bytes)");
    if (!parse_number(f[3], 10, e.stream)) fail(name, line_no, "bad stream " + quote(f[3]) + " (decimal)");
    if (e.op == Op::alloc) {
      if (e.bytes == 0) fail(name, line_no, "allocation of 0 bytes");
      // Live bytes never exceed the total, so this keeps every sum exact.
      if (e.bytes > UINT64_MAX - t.total_requested_bytes) {
        fail(name, line_no, "allocation of " + std::string(f[2]) +
                                " bytes takes the trace's total past 2^64 bytes");
      }
      if (t.blocks >= UINT32_MAX) fail(name, line_no, "too many allocations");
      e.block = static_cast<std::uint32_t>(t.blocks);
      if (!live.emplace(addr, std::make_pair(e.block, e.bytes)).second) {
        fail(name, line_no, "allocation at address " + std::string(f[1]) +
                                ", which is already live (allocated and not freed)");
      }
      ++t.blocks;
      live_bytes += e.bytes;
      t.total_requested_bytes += e.bytes;
      t.max_request_bytes = std::max(t.max_request_bytes, e.bytes);
      t.peak_live_bytes = std::max(t.peak_live_bytes, live_bytes);
      t.peak_live_blocks = std::max(t.peak_live_blocks, live.size());
    } else {
      const auto it = live.find(addr);
      if (it == live.end()) {
        fail(name, line_no, "free of address " + std::string(f[1]) + ", which is not live");
      }
      if (it->second.second != e.bytes) {
        fail(name, line_no, "free of " + std::to_string(e.bytes) + " bytes at " + std::string(f[1]) +
                                ", allocated with " + std::to_string(it->second.second) + " bytes");
      }
      e.block = it->second.first;
      live_bytes -= e.bytes;
      live.erase(it);
      ++t.frees;
    }
    streams.insert(e.stream);
    t.events.push_back(e);
  }
  if (!header_seen) fail_file(name, "empty trace (no header line)");
  t.streams.assign(streams.begin(), streams.end());
  t.final_live_bytes = live_bytes;
  t.final_live_blocks = live.size();
  return t;
}

Trace read_trace(const std::string& path) { return parse_trace(read_trace_text(path), path); }

std::string trace_stem(const std::string& path) {
  std::string s = path;
  const auto slash = s.find_last_of('/');
  if (slash != std::string::npos) s = s.substr(slash + 1);
  for (const char* suffix : {".gz", ".trace"}) {
    const std::size_t n = std::strlen(suffix);
    if (s.size() > n && s.compare(s.size() - n, n, suffix) == 0) s.resize(s.size() - n);
  }
  return s;
}

std::uint64_t peak_live_bytes(const std::vector<Event>& events) {
  std::uint64_t live = 0;
  std::uint64_t peak = 0;
  for (const Event& e : events) {
    if (e.op == Op::alloc) {
      live += e.bytes;
      peak = std::max(peak, live);
    } else {
      live -= e.bytes;
    }
  }
  return peak;
}

}  // namespace vmm::trace
