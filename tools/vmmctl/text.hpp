// Text helpers for vmmctl's reports: sizes, addresses, times, and aligned
// tables.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace vmmctl {

std::string bytes_text(std::uint64_t bytes);        // "1.50 GiB" (vmm::format_bytes)
std::string signed_bytes_text(std::int64_t delta);  // "+64 MiB", "-2 MiB", "0 B"
std::string hex(std::uint64_t value);               // "0x7f0000000000"
std::string time_text(std::uint64_t unix_ns);       // "2025-01-31 12:00:00.123" (local time)

// A table printed with columns aligned: numbers (cells starting with a digit,
// '+' or '-') right-aligned, text left-aligned.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  void add(std::vector<std::string> row);
  std::size_t rows() const { return rows_.size(); }
  // Each line starts with `indent`.
  std::string str(const std::string& indent = "") const;

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

}  // namespace vmmctl
