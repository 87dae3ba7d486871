// bench/workspace_growth's results: one Row per system, printed as a table
// (stdout) and written as the rows of the results file (the format of
// docs/benchmarks.md, through bench/results_writer.hpp).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "results_writer.hpp"
#include "workspace_growth_options.hpp"

namespace vmm::bench::growth {

struct Row {
  std::string system;
  std::size_t final_bytes = 0;
  std::size_t peak_device_bytes = 0;
  std::vector<double> resize_ms;
  double max_resize_ms = 0;
  bool waited_for_queue = false;
  bool address_stable = true;
  // Reported on stdout only (not fields of the results file's row).
  double initial_alloc_ms = 0;
  unsigned long long mismatches = 0;
  unsigned long long first_bad_word = 0;
  std::size_t held_after_release = 0;
  double sample_hz = 0;
  double sample_max_gap_ms = 0;
  std::string note;
};

// The table of the rows, and a line of details per system under it.
void print_table(const Options& o, const std::vector<Row>& rows);

// The rows of the results file, every value on a line of its own as
// nlohmann_json indents it; times rounded to 0.1 us.
vmm::bench::Json rows_json(const std::vector<Row>& rows);

}  // namespace vmm::bench::growth
