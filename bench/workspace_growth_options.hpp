// bench/workspace_growth's command line: the sizes to grow through, the
// systems to run, the queued work before each resize, the device, the
// sampler's rate, the results file and the commit it names.
#pragma once

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

namespace vmm::bench::growth {

struct Options {
  std::vector<std::size_t> sizes;
  std::vector<std::string> systems;
  double work_ms = 50.0;
  int device = 0;
  int sample_hz = 2000;
  std::string out = "bench/results/workspace_growth.json";
  std::string commit;
};

void usage(std::FILE* f);

// Throws std::invalid_argument on bad usage; --help prints the usage and exits.
Options parse_options(int argc, char** argv);

}  // namespace vmm::bench::growth
