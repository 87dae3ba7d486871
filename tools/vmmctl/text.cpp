// Text helpers. See text.hpp.
#include "tools/vmmctl/text.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "allocator/base/units.hpp"  // internal: format_bytes is not in the public API

namespace vmmctl {

std::string bytes_text(std::uint64_t bytes) { return vmm::format_bytes(bytes); }

std::string signed_bytes_text(std::int64_t delta) {
  if (delta == 0) return "0 B";
  const std::uint64_t magnitude =
      delta < 0 ? static_cast<std::uint64_t>(-(delta + 1)) + 1 : static_cast<std::uint64_t>(delta);
  return (delta < 0 ? "-" : "+") + vmm::format_bytes(magnitude);
}

std::string hex(std::uint64_t value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
  return buf;
}

std::string time_text(std::uint64_t unix_ns) {
  const std::time_t secs = static_cast<std::time_t>(unix_ns / 1000000000ull);
  std::tm tm{};
  localtime_r(&secs, &tm);
  char buf[64];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03llu",
                static_cast<unsigned long long>((unix_ns / 1000000ull) % 1000));
  return buf;
}

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {}

void Table::add(std::vector<std::string> row) {
  row.resize(header_.size());
  rows_.push_back(std::move(row));
}

std::string Table::str(const std::string& indent) const {
  std::vector<std::size_t> width(header_.size(), 0);
  std::vector<bool> numeric(header_.size(), true);
  for (std::size_t c = 0; c < header_.size(); ++c) width[c] = header_[c].size();
  for (const auto& row : rows_) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
      const char first = row[c].empty() ? '0' : row[c][0];
      if (!((first >= '0' && first <= '9') || first == '+' || first == '-')) numeric[c] = false;
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out = indent;
    for (std::size_t c = 0; c < cells.size(); ++c) {
      const std::string& cell = cells[c];
      const std::string pad(width[c] - cell.size(), ' ');
      const bool last = c + 1 == cells.size();
      if (numeric[c]) {
        out += pad + cell;
      } else {
        out += cell;
        if (!last) out += pad;
      }
      if (!last) out += "  ";
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out + "\n";
  };
  std::string out = line(header_);
  for (const auto& row : rows_) out += line(row);
  return out;
}

}  // namespace vmmctl
