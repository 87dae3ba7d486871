// See config_values.hpp. Numbers go through std::from_chars/to_chars, not
// strtod/printf, so parsing does not depend on the application's locale.
#include "allocator/base/config_values.hpp"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <utility>

#include "allocator/base/units.hpp"

namespace vmm::config_values {

std::size_t parse_size_value(std::string_view text) {
  bool overflowed = false;
  const auto size = parse_size(trim(text), &overflowed);
  if (!size) {
    throw BadValue{overflowed ? std::string(trim(text)) + " does not fit in 64 bits" : ""};
  }
  return *size;
}

// A finite decimal number: "0.9", "4", "1e-3".
std::optional<double> parse_number(std::string_view text) {
  double value = 0.0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size() ||
      !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

// Shortest text that parses back to exactly `value`.
std::string format_number(double value) {
  std::array<char, 64> buf{};
  char* end = std::to_chars(buf.data(), buf.data() + buf.size(), value).ptr;
  return std::string(buf.data(), end);
}

std::vector<std::size_t> parse_size_list(std::string_view text) {
  text = trim(text);
  if (text.empty()) throw BadValue{""};
  std::vector<std::size_t> sizes;
  for (std::size_t start = 0;;) {
    const std::size_t plus = text.find('+', start);
    const std::string_view item =
        trim(text.substr(start, plus == std::string_view::npos ? plus : plus - start));
    if (item.empty()) throw BadValue{"empty list item"};
    try {
      sizes.push_back(parse_size_value(item));
    } catch (BadValue& bad) {
      // Name the offending item, unless it is the whole value (already quoted).
      if (bad.reason.empty() && item != text) bad.reason = std::string(item) + " is not a size";
      throw;
    }
    if (plus == std::string_view::npos) break;
    start = plus + 1;
  }
  return sizes;
}

std::string format_size_list(const std::vector<std::size_t>& sizes) {
  std::string out;
  for (std::size_t s : sizes) {
    if (!out.empty()) out += '+';
    out += format_size(s);
  }
  return out;
}

// peer_access: none, all, or device ordinals joined with '+'.
constexpr int kMaxPeerDevice = 63;

void parse_peer_access(Config& c, std::string_view text) {
  text = trim(text);
  if (equals_nocase(text, "none")) {
    c.peer_access = PeerAccessMode::none;
    c.peer_access_devices.clear();
    return;
  }
  if (equals_nocase(text, "all")) {
    c.peer_access = PeerAccessMode::all;
    c.peer_access_devices.clear();
    return;
  }
  if (text.empty()) throw BadValue{""};
  std::vector<int> devices;
  for (std::size_t start = 0;;) {
    const std::size_t plus = text.find('+', start);
    const std::string_view item =
        trim(text.substr(start, plus == std::string_view::npos ? plus : plus - start));
    if (item.empty()) throw BadValue{"empty list item"};
    int device = -1;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), device);
    if (ec != std::errc{} || ptr != item.data() + item.size() || device < 0 ||
        device > kMaxPeerDevice) {
      throw BadValue{item == text ? "" : std::string(item) + " is not a device ordinal"};
    }
    devices.push_back(device);
    if (plus == std::string_view::npos) break;
    start = plus + 1;
  }
  c.peer_access = PeerAccessMode::list;
  c.peer_access_devices = std::move(devices);
}

void check_peer_access(const Config& c) {
  const std::vector<int>& devices = c.peer_access_devices;
  if (c.peer_access == PeerAccessMode::none || c.peer_access == PeerAccessMode::all) {
    if (!devices.empty()) {
      throw BadValue{"peer_access_devices is set but the mode is not a list"};
    }
    return;
  }
  if (c.peer_access != PeerAccessMode::list) throw BadValue{"not a peer access mode"};
  if (devices.empty()) throw BadValue{"no device given"};
  for (std::size_t i = 0; i < devices.size(); ++i) {
    if (devices[i] < 0 || devices[i] > kMaxPeerDevice) {
      throw BadValue{std::to_string(devices[i]) + " is not a device ordinal"};
    }
    for (std::size_t j = 0; j < i; ++j) {
      if (devices[j] == devices[i]) throw BadValue{std::to_string(devices[i]) + " is listed twice"};
    }
  }
}

std::string format_peer_access(const Config& c) {
  switch (c.peer_access) {
    case PeerAccessMode::none:
      return "none";
    case PeerAccessMode::all:
      return "all";
    case PeerAccessMode::list:
      break;
  }
  std::string out;
  for (int d : c.peer_access_devices) {
    if (!out.empty()) out += '+';
    out += std::to_string(d);
  }
  return out;
}

// ipc_peer_uids: same, any, or uids joined with '+'. A uid is 0 to 2^32 - 2
// ((uid_t)-1 means "no change" to the kernel, never a process's uid).
constexpr std::size_t kMaxIpcPeerUids = 64;

void parse_ipc_peer_uids(Config& c, std::string_view text) {
  text = trim(text);
  for (const auto mode : {IpcPeerMode::same, IpcPeerMode::any}) {
    if (equals_nocase(text, mode == IpcPeerMode::same ? "same" : "any")) {
      c.ipc_peer_mode = mode;
      c.ipc_peer_uid_list.clear();
      return;
    }
  }
  if (text.empty()) throw BadValue{""};
  std::vector<std::uint32_t> uids;
  for (std::size_t start = 0;;) {
    const std::size_t plus = text.find('+', start);
    const std::string_view item =
        trim(text.substr(start, plus == std::string_view::npos ? plus : plus - start));
    if (item.empty()) throw BadValue{"empty list item"};
    std::uint32_t uid = 0;
    const auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), uid);
    if (ec != std::errc{} || ptr != item.data() + item.size() || uid == UINT32_MAX) {
      throw BadValue{item == text ? "" : std::string(item) + " is not a uid"};
    }
    uids.push_back(uid);
    if (plus == std::string_view::npos) break;
    start = plus + 1;
  }
  c.ipc_peer_mode = IpcPeerMode::list;
  c.ipc_peer_uid_list = std::move(uids);
}

void check_ipc_peer_uids(const Config& c) {
  const std::vector<std::uint32_t>& uids = c.ipc_peer_uid_list;
  if (c.ipc_peer_mode == IpcPeerMode::same || c.ipc_peer_mode == IpcPeerMode::any) {
    if (!uids.empty()) throw BadValue{"ipc_peer_uid_list is set but the mode is not a list"};
    return;
  }
  if (c.ipc_peer_mode != IpcPeerMode::list) throw BadValue{"not an ipc_peer_uids mode"};
  if (uids.empty()) throw BadValue{"no uid given"};
  if (uids.size() > kMaxIpcPeerUids) {
    throw BadValue{std::to_string(uids.size()) + " uids given, at most " +
                   std::to_string(kMaxIpcPeerUids) + " allowed"};
  }
  for (std::size_t i = 0; i < uids.size(); ++i) {
    if (uids[i] == UINT32_MAX) throw BadValue{std::to_string(uids[i]) + " is not a uid"};
    for (std::size_t j = 0; j < i; ++j) {
      if (uids[j] == uids[i]) throw BadValue{std::to_string(uids[i]) + " is listed twice"};
    }
  }
}

std::string format_ipc_peer_uids(const Config& c) {
  switch (c.ipc_peer_mode) {
    case IpcPeerMode::same:
      return "same";
    case IpcPeerMode::any:
      return "any";
    case IpcPeerMode::list:
      break;
  }
  std::string out;
  for (std::uint32_t uid : c.ipc_peer_uid_list) {
    if (!out.empty()) out += '+';
    out += std::to_string(uid);
  }
  return out;
}

// on/off switches: on, off, true, false, 1, 0 (any case); printed on/off.
bool parse_switch(std::string_view text) {
  text = trim(text);
  for (const char* on : {"on", "true", "1"}) {
    if (equals_nocase(text, on)) return true;
  }
  for (const char* off : {"off", "false", "0"}) {
    if (equals_nocase(text, off)) return false;
  }
  throw BadValue{""};
}

std::string format_switch(bool on) { return on ? "on" : "off"; }

// File and directory paths: the whole value, trimmed (a ',' would end it).
// Snapshot paths may hold "%p" (the process id) and "%%"; nothing else
// after a '%'.
void check_path_text(const std::string& path) {
  if (path.find(',') != std::string::npos) throw BadValue{"a path cannot contain ','"};
  if (trim(path) != path) throw BadValue{"leading or trailing whitespace"};
  if (path.find('\0') != std::string::npos) throw BadValue{"a NUL character"};
}

void check_snapshot_path(const std::string& path) {
  check_path_text(path);
  for (std::size_t i = 0; i < path.size(); ++i) {
    if (path[i] != '%') continue;
    if (i + 1 < path.size() && (path[i + 1] == 'p' || path[i + 1] == '%')) {
      ++i;
      continue;
    }
    throw BadValue{"unknown '%' sequence (valid: %p for the process id, %% for %)"};
  }
}

}  // namespace vmm::config_values
