// bench/workspace_growth's results table and rows: see workspace_growth_report.hpp.
#include "workspace_growth_report.hpp"

#include <cmath>
#include <cstdio>
#include <utility>

#include "workspace_growth_cuda.hpp"

namespace vmm::bench::growth {

namespace {

double round_to(double v, double unit) { return std::round(v / unit) * unit; }

std::string gib(std::size_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / static_cast<double>(kGiB));
  return buf;
}

std::string size_label(std::size_t b) {
  char buf[32];
  if (b % kGiB == 0) std::snprintf(buf, sizeof buf, "%zuG", b / kGiB);
  else if (b % kMiB == 0) std::snprintf(buf, sizeof buf, "%zuM", b / kMiB);
  else std::snprintf(buf, sizeof buf, "%zu", b);
  return buf;
}

}  // namespace

void print_table(const Options& o, const std::vector<Row>& rows) {
  std::string steps;
  for (std::size_t i = 1; i < o.sizes.size(); ++i) {
    if (i > 1) steps += ", ";
    steps += size_label(o.sizes[i - 1]) + "->" + size_label(o.sizes[i]);
  }
  std::printf("\nresizes: %s (%.0f ms of GPU work queued before each)\n\n", steps.c_str(), o.work_ms);
  std::printf("%-20s %-44s %9s %10s %10s %6s %6s %6s %9s\n", "system", "resize_ms", "max_ms",
              "final", "peak", "peak/f", "waited", "stable", "data");
  for (const auto& r : rows) {
    std::string list;
    for (double v : r.resize_ms) {
      char buf[24];
      std::snprintf(buf, sizeof buf, "%s%.3f", list.empty() ? "" : " ", v);
      list += buf;
    }
    std::printf("%-20s %-44s %9.3f %10s %10s %6.2f %6s %6s %9s\n", r.system.c_str(), list.c_str(),
                r.max_resize_ms, gib(r.final_bytes).c_str(), gib(r.peak_device_bytes).c_str(),
                static_cast<double>(r.peak_device_bytes) / static_cast<double>(r.final_bytes),
                r.waited_for_queue ? "yes" : "no", r.address_stable ? "yes" : "no",
                r.mismatches == 0 ? "ok" : "CORRUPT");
  }
  std::printf("\n");
  for (const auto& r : rows) {
    std::printf("%s: initial allocation %.3f ms; held after release %s; sampler %.0f Hz (max gap "
                "%.2f ms)%s%s\n",
                r.system.c_str(), r.initial_alloc_ms, gib(r.held_after_release).c_str(), r.sample_hz,
                r.sample_max_gap_ms, r.note.empty() ? "" : "; ", r.note.c_str());
  }
}

vmm::bench::Json rows_json(const std::vector<Row>& rows) {
  using vmm::bench::Json;
  Json out = Json::array();
  for (const auto& r : rows) {
    Json j;
    j["system"] = r.system;
    j["final_bytes"] = r.final_bytes;
    j["peak_device_bytes"] = r.peak_device_bytes;
    j["resize_ms"] = Json::array();
    for (double v : r.resize_ms) j["resize_ms"].push_back(round_to(v, 1e-4));
    j["max_resize_ms"] = round_to(r.max_resize_ms, 1e-4);
    j["waited_for_queue"] = r.waited_for_queue;
    j["address_stable"] = r.address_stable;
    out.push_back(std::move(j));
  }
  return out;
}

}  // namespace vmm::bench::growth
