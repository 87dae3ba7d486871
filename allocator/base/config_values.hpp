// The value kinds of VMMALLOC_CONF options (config.cpp's option table uses
// them): sizes, numbers, size lists, peer-access lists, switches and paths,
// each parsed, checked and printed back in the grammar. Internal to the
// library. Errors are thrown as BadValue, which Config::set() and validate()
// turn into a ConfigError naming the key and the accepted values.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vmmalloc/config.hpp"

namespace vmm::config_values {

// Thrown by an option's parse or check functions; set() and validate() turn
// it into a ConfigError that also names the key, quotes the value and says
// what is accepted. `reason` is what exactly is wrong, or empty when the
// quoted value and the accepted forms say it all.
struct BadValue {
  std::string reason;
};

inline std::string_view trim(std::string_view s) {
  constexpr std::string_view kSpace = " \t\n\r\v\f";
  const std::size_t first = s.find_first_not_of(kSpace);
  if (first == std::string_view::npos) return {};
  return s.substr(first, s.find_last_not_of(kSpace) - first + 1);
}

inline bool equals_nocase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c; };
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::size_t parse_size_value(std::string_view text);
// A finite decimal number: "0.9", "4", "1e-3".
std::optional<double> parse_number(std::string_view text);
// Shortest text that parses back to exactly `value`.
std::string format_number(double value);
// Sizes joined with '+': "2M+32M+512M".
std::vector<std::size_t> parse_size_list(std::string_view text);
std::string format_size_list(const std::vector<std::size_t>& sizes);

// peer_access: none, all, or device ordinals joined with '+'.
void parse_peer_access(Config& c, std::string_view text);
void check_peer_access(const Config& c);
std::string format_peer_access(const Config& c);

// ipc_peer_uids: same, any, or uids joined with '+'.
void parse_ipc_peer_uids(Config& c, std::string_view text);
void check_ipc_peer_uids(const Config& c);
std::string format_ipc_peer_uids(const Config& c);

// on/off switches: on, off, true, false, 1, 0 (any case); printed on/off.
bool parse_switch(std::string_view text);
std::string format_switch(bool on);

// File and directory paths: the whole value, trimmed (a ',' would end it).
// Snapshot paths may hold "%p" (the process id) and "%%"; nothing else
// after a '%'.
void check_path_text(const std::string& path);
void check_snapshot_path(const std::string& path);

}  // namespace vmm::config_values
