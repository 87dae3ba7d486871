// The results file every C++ benchmark writes, bench/results/<bench>.json
// (the format of docs/benchmarks.md, "Results files"):
//
//   {
//     "bench": "<name>", "commit": "<sha>", "device": "<card>",
//     "driver": "<kernel module version>" or null, "date": "<UTC ISO 8601>",
//     "command": "<the command line>",
//     "rows": [ {...}, ... ]
//   }
//
// The envelope is written here once; each benchmark builds its rows.
// Compiled into each benchmark as a source of its own (not a library), so
// alloc_latency_torch can build it with torch's C++ ABI setting.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace vmm::bench {

using Json = nlohmann::ordered_json;  // keeps the keys in the order written

struct RunInfo {
  std::string bench;
  std::string commit;
  std::string device;
  std::optional<std::string> driver;  // null in the file when unknown
  std::string date;
  std::string command;
};

// bench and commit as given, the date now and the command line of argv;
// device and driver are the caller's to fill in.
RunInfo run_info(std::string bench, std::string commit, int argc, char** argv);

// argv joined with spaces, each argument shell-quoted where it needs it.
std::string command_line(int argc, char** argv);

// Now, UTC: "2026-11-28T07:00:00Z".
std::string utc_now_iso();

// The NVIDIA kernel module's version ("580.159.04") from
// /proc/driver/nvidia/version, where the driver publishes it.
std::optional<std::string> kernel_driver_version();

// v rounded to `decimals` decimal places: an integer where the rounded value
// is one (written without ".0"), null where v is not finite.
Json rounded(double v, int decimals);

// How the rows are laid out; the envelope is the same either way.
enum class RowLayout {
  kIndented,       // every value on a line of its own (JSON indented by 2)
  kOneLinePerRow,  // each row one line: {"key": value, ...}
};

// The whole file's text. `rows` must be a JSON array of objects.
std::string results_json(const RunInfo& info, const Json& rows, RowLayout layout);

// Writes results_json() to `path`, creating its directory; throws
// std::runtime_error if the file cannot be written.
void write_results(const std::string& path, const RunInfo& info, const Json& rows,
                   RowLayout layout);

}  // namespace vmm::bench
