// Byte sizes as text: format_bytes for people (logs, stats), parse_size and
// format_size for VMMALLOC_CONF. Number formatting uses std::to_chars so the
// output does not depend on the process locale (a host application may have
// called setlocale and made "%.2f" print "1,50").
#include "allocator/base/units.hpp"

#include <array>
#include <charconv>
#include <limits>

namespace vmm {

namespace {

// Binary suffixes in VMMALLOC_CONF, and their shift.
struct Suffix {
  char letter;  // upper case
  unsigned shift;
};
constexpr std::array<Suffix, 4> kSuffixes{{{'K', 10}, {'M', 20}, {'G', 30}, {'T', 40}}};

char upper(char c) { return (c >= 'a' && c <= 'z') ? static_cast<char>(c - 'a' + 'A') : c; }

bool equals_nocase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (upper(a[i]) != upper(b[i])) return false;
  }
  return true;
}

// Shift of a size suffix ("", "B", "K", "KB", "KiB", ...), or -1.
int suffix_shift(std::string_view s) {
  if (s.empty() || equals_nocase(s, "B")) return 0;
  for (const Suffix& suf : kSuffixes) {
    if (upper(s[0]) != suf.letter) continue;
    const std::string_view rest = s.substr(1);
    if (rest.empty() || equals_nocase(rest, "B") || equals_nocase(rest, "iB")) {
      return static_cast<int>(suf.shift);
    }
  }
  return -1;
}

}  // namespace

std::string format_bytes(std::size_t bytes) {
  static constexpr std::array<const char*, 7> kUnits{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  std::size_t unit = 0;
  while (unit + 1 < kUnits.size() && (bytes >> (10 * (unit + 1))) != 0) ++unit;
  const std::size_t whole = bytes >> (10 * unit);
  std::array<char, 32> buf{};
  char* end = nullptr;
  if (whole << (10 * unit) == bytes) {
    end = std::to_chars(buf.data(), buf.data() + buf.size(), whole).ptr;
  } else {
    double value = static_cast<double>(bytes) / static_cast<double>(std::size_t{1} << (10 * unit));
    // 1023.999 KiB would print as "1024.00 KiB": say "1.00 MiB" instead.
    if (value >= 1023.995 && unit + 1 < kUnits.size()) {
      value /= 1024.0;
      ++unit;
    }
    end =
        std::to_chars(buf.data(), buf.data() + buf.size(), value, std::chars_format::fixed, 2).ptr;
  }
  std::string out(buf.data(), end);
  out += ' ';
  out += kUnits[unit];
  return out;
}

std::string format_size_like_pytorch(std::size_t bytes) {
  if (bytes <= 1024) return std::to_string(bytes) + " bytes";
  const char* unit = "KiB";
  double value = static_cast<double>(bytes) / 1024.0;
  if (bytes > (std::size_t{1} << 20)) {
    unit = "MiB";
    value = static_cast<double>(bytes) / static_cast<double>(std::size_t{1} << 20);
  }
  if (bytes > (std::size_t{1} << 30)) {
    unit = "GiB";
    value = static_cast<double>(bytes) / static_cast<double>(std::size_t{1} << 30);
  }
  std::array<char, 48> buf{};
  char* end =
      std::to_chars(buf.data(), buf.data() + buf.size(), value, std::chars_format::fixed, 2).ptr;
  return std::string(buf.data(), end) + " " + unit;
}

std::size_t saturating_size(double value) noexcept {
  // 2^64 exactly: the first double above every size_t.
  constexpr double kLimit = 18446744073709551616.0;
  if (!(value >= 1.0)) return 0;  // NaN too
  if (value >= kLimit) return std::numeric_limits<std::size_t>::max();
  return static_cast<std::size_t>(value);
}

std::optional<std::size_t> parse_size(std::string_view text, bool* overflowed) {
  if (overflowed != nullptr) *overflowed = false;
  std::size_t digits = 0;
  while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') ++digits;
  if (digits == 0) return std::nullopt;
  const int shift = suffix_shift(text.substr(digits));
  if (shift < 0) return std::nullopt;

  std::size_t value = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, value);
  const bool fits = ec == std::errc{} && ptr == text.data() + digits &&
                    value <= (std::numeric_limits<std::size_t>::max() >> shift);
  if (!fits) {
    if (overflowed != nullptr) *overflowed = true;
    return std::nullopt;
  }
  return value << shift;
}

std::string format_size(std::size_t bytes) {
  std::string suffix;
  if (bytes != 0) {
    for (auto it = kSuffixes.rbegin(); it != kSuffixes.rend(); ++it) {
      if ((bytes & ((std::size_t{1} << it->shift) - 1)) == 0) {
        bytes >>= it->shift;
        suffix = it->letter;
        break;
      }
    }
  }
  return std::to_string(bytes) + suffix;
}

}  // namespace vmm
