// bench/workspace_growth's command line: see workspace_growth_options.hpp.
#include "workspace_growth_options.hpp"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>

#include "tools/cli.hpp"
#include "workspace_growth_cuda.hpp"
#include "workspace_growth_systems.hpp"

namespace vmm::bench::growth {

using vmm::cli::parse_size;
using vmm::cli::split;

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: workspace_growth [--sizes 512M,1G,2G,3G,4G,5G] [--work-ms 50]\n"
               "                        [--systems cudamalloc,cudamallocasync,vmm-naive-2mib,"
               "vmmalloc-workspace]\n"
               "                        [--device 0] [--sample-hz 2000]\n"
               "                        [--out bench/results/workspace_growth.json] [--commit SHA]\n"
               "Sizes take binary suffixes K M G T, ascending, multiples of 4 bytes; the first is\n"
               "the initial allocation, each later one a timed resize. --commit defaults to\n"
               "$VMMALLOC_COMMIT, else \"unknown\".\n");
}

Options parse_options(int argc, char** argv) {
  Options o;
  o.sizes = {512 * kMiB, 1 * kGiB, 2 * kGiB, 3 * kGiB, 4 * kGiB, 5 * kGiB};
  o.systems = all_systems();
  if (const char* c = std::getenv("VMMALLOC_COMMIT"); c != nullptr && *c != '\0') o.commit = c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--sizes") {
      o.sizes.clear();
      for (const auto& s : split(value(), ',')) o.sizes.push_back(parse_size(s));
    } else if (a == "--systems") {
      o.systems = split(value(), ',');
    } else if (a == "--work-ms") {
      o.work_ms = std::stod(value());
    } else if (a == "--device") {
      o.device = std::stoi(value());
    } else if (a == "--sample-hz") {
      o.sample_hz = std::stoi(value());
    } else if (a == "--out") {
      o.out = value();
    } else if (a == "--commit") {
      o.commit = value();
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  if (o.commit.empty()) o.commit = "unknown";
  if (o.sizes.size() < 2) throw std::invalid_argument("--sizes needs at least two sizes");
  for (std::size_t i = 0; i < o.sizes.size(); ++i) {
    if (o.sizes[i] == 0 || o.sizes[i] % 4 != 0) {
      throw std::invalid_argument("sizes must be positive multiples of 4 bytes");
    }
    if (i > 0 && o.sizes[i] <= o.sizes[i - 1]) throw std::invalid_argument("sizes must ascend");
  }
  if (o.systems.empty()) throw std::invalid_argument("--systems is empty");
  for (const auto& s : o.systems) {
    if (std::find(all_systems().begin(), all_systems().end(), s) == all_systems().end()) {
      throw std::invalid_argument("unknown system '" + s + "'");
    }
  }
  if (!(o.work_ms > 0)) throw std::invalid_argument("--work-ms must be positive");
  if (o.sample_hz <= 0) throw std::invalid_argument("--sample-hz must be positive");
  return o;
}

}  // namespace vmm::bench::growth
