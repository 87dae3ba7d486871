#include "results_writer.hpp"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace vmm::bench {
namespace {

// Arguments made only of these characters are written unquoted.
constexpr const char* kShellSafe =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=,:+-@%";

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of(kShellSafe) == std::string::npos) return s;
  std::string q = "'";
  for (char ch : s) {
    if (ch == '\'')
      q += "'\\''";
    else
      q += ch;
  }
  return q + "'";
}

// A value as compact JSON; invalid UTF-8 (an odd byte in a command line) is
// replaced rather than failing the write at the end of a long run.
std::string dump(const Json& v, int indent = -1) {
  return v.dump(indent, ' ', false, Json::error_handler_t::replace);
}

Json envelope(const RunInfo& info) {
  Json doc;
  doc["bench"] = info.bench;
  doc["commit"] = info.commit;
  doc["device"] = info.device;
  doc["driver"] = info.driver ? Json(*info.driver) : Json(nullptr);
  doc["date"] = info.date;
  doc["command"] = info.command;
  return doc;
}

// {"key": value, ...} on one line, with a space after each colon and comma.
std::string one_line(const Json& row) {
  std::string o = "{";
  bool first = true;
  for (const auto& [key, value] : row.items()) {
    if (!first) o += ", ";
    first = false;
    o += dump(Json(key)) + ": " + dump(value);
  }
  return o + "}";
}

}  // namespace

RunInfo run_info(std::string bench, std::string commit, int argc, char** argv) {
  RunInfo info;
  info.bench = std::move(bench);
  info.commit = std::move(commit);
  info.date = utc_now_iso();
  info.command = command_line(argc, argv);
  return info;
}

std::string command_line(int argc, char** argv) {
  std::string cmd;
  for (int i = 0; i < argc; ++i) {
    if (i) cmd += ' ';
    cmd += shell_quote(argv[i]);
  }
  return cmd;
}

std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<std::string> kernel_driver_version() {
  std::ifstream f("/proc/driver/nvidia/version");
  std::string line;
  if (!f || !std::getline(f, line)) return std::nullopt;
  // "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  ..."
  std::istringstream in(line);
  std::string word;
  while (in >> word) {
    const bool digits_and_dots = std::isdigit(static_cast<unsigned char>(word[0])) &&
                                 word.find_first_not_of("0123456789.") == std::string::npos &&
                                 word.find('.') != std::string::npos;
    if (digits_and_dots) return word;
  }
  return std::nullopt;
}

Json rounded(double v, int decimals) {
  if (!std::isfinite(v)) return nullptr;
  const double scale = std::pow(10.0, decimals);
  const double r = std::round(v * scale) / scale;
  // Integers exactly representable as doubles (below 2^53) are written as
  // integers, as the shortest decimal form of such a double would be.
  constexpr double kExactLimit = 9007199254740992.0;
  if (r == std::floor(r) && std::fabs(r) < kExactLimit) return static_cast<std::int64_t>(r);
  return r;
}

std::string results_json(const RunInfo& info, const Json& rows, RowLayout layout) {
  if (!rows.is_array()) throw std::invalid_argument("results rows must be a JSON array");
  Json doc = envelope(info);
  if (layout == RowLayout::kIndented) {
    doc["rows"] = rows;
    return dump(doc, 2) + "\n";
  }
  std::string o = "{\n";
  for (const auto& [key, value] : doc.items())
    o += "  " + dump(Json(key)) + ": " + dump(value) + ",\n";
  o += "  \"rows\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) o += (i ? ",\n    " : "\n    ") + one_line(rows[i]);
  o += rows.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return o;
}

void write_results(const std::string& path, const RunInfo& info, const Json& rows,
                   RowLayout layout) {
  const std::string text = results_json(info, rows, layout);
  const std::filesystem::path p(path);
  if (p.has_parent_path()) std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << text;
  f.close();
  if (!f) throw std::runtime_error("cannot write " + path);
}

}  // namespace vmm::bench
