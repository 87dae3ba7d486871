// workspace_demo: the project's main job in one program. Grows a
// vmm::Workspace through a sequence of sizes (512M,1G,2G,3G,4G,5G by default)
// and prints, for each grow, what is mapped, the base address (which never
// moves) and how long the grow took on the host; then shrinks back to the
// first size. Runs on the GPU where vmmalloc finds one, else on the host
// backend, and says which.
//
// Plain C++: no CUDA compiler and no CUDA header. On the GPU it never
// dereferences the workspace (device memory); on the host backend it writes
// the first and last page of every new part, to show the memory is really
// there and that earlier parts keep their contents.

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tools/cli.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/vmmalloc.h"
#include "vmmalloc/workspace.hpp"

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;

struct Options {
  std::vector<std::size_t> sizes{512 * kMiB, 1 * kGiB, 2 * kGiB, 3 * kGiB, 4 * kGiB, 5 * kGiB};
  int device = 0;
  std::string json_path;  // empty: no JSON; "-": stdout
};

using vmm::cli::parse_size;

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: workspace_demo [--sizes 512M,1G,2G,3G,4G,5G] [--device 0] [--json PATH|-]\n"
               "Grows one workspace through the sizes (ascending; suffixes K M G T), then\n"
               "shrinks it back to the first size. --json also writes the figures as JSON.\n");
}

Options parse_options(int argc, char** argv) {
  Options o;
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
      std::istringstream in(value());
      std::string item;
      while (std::getline(in, item, ',')) {
        if (!item.empty()) o.sizes.push_back(parse_size(item));
      }
    } else if (a == "--device") {
      o.device = std::stoi(value());
    } else if (a == "--json") {
      o.json_path = value();
    } else {
      throw std::invalid_argument("unknown option " + a);
    }
  }
  if (o.sizes.empty()) throw std::invalid_argument("--sizes is empty");
  for (std::size_t i = 0; i < o.sizes.size(); ++i) {
    if (o.sizes[i] == 0) throw std::invalid_argument("sizes must be positive");
    if (i > 0 && o.sizes[i] <= o.sizes[i - 1]) throw std::invalid_argument("sizes must ascend");
  }
  return o;
}

std::string human(std::size_t b) {
  char buf[32];
  if (b >= kGiB) std::snprintf(buf, sizeof buf, "%.2f GiB", static_cast<double>(b) / kGiB);
  else std::snprintf(buf, sizeof buf, "%.2f MiB", static_cast<double>(b) / kMiB);
  return buf;
}

std::string hex(const void* p) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%llx",
                static_cast<unsigned long long>(reinterpret_cast<std::uintptr_t>(p)));
  return buf;
}

std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      o += '\\';
      o += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      o += buf;
    } else {
      o += static_cast<char>(c);
    }
  }
  return o + "\"";
}

// What the driver says about the machine, for the report only: the GPU's
// name when vmmalloc uses it, or why there is no GPU when it does not. The
// library loads the driver the same way (at run time), so this program
// still starts where there is no libcuda.so.1.
struct DriverProbe {
  bool usable = false;
  std::string detail;  // device name, or the reason there is none
};

DriverProbe probe_driver(int device) {
  using InitFn = int (*)(unsigned int);
  using CountFn = int (*)(int*);
  using GetFn = int (*)(int*, int);
  using NameFn = int (*)(char*, int, int);
  void* lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return {false, why ? why : "libcuda.so.1 not found"};
  }
  // Not dlclose'd: unloading the driver under a live process is not safe.
  auto init = reinterpret_cast<InitFn>(dlsym(lib, "cuInit"));
  auto count = reinterpret_cast<CountFn>(dlsym(lib, "cuDeviceGetCount"));
  auto get = reinterpret_cast<GetFn>(dlsym(lib, "cuDeviceGet"));
  auto name = reinterpret_cast<NameFn>(dlsym(lib, "cuDeviceGetName"));
  if (!init || !count || !get || !name) return {false, "libcuda.so.1 lacks the basic entry points"};
  if (const int r = init(0); r != 0) return {false, "cuInit failed (CUresult " + std::to_string(r) + ")"};
  int n = 0;
  if (count(&n) != 0 || n == 0) return {false, "no CUDA device"};
  if (device < 0 || device >= n) return {false, "no CUDA device " + std::to_string(device)};
  int dev = 0;
  char buf[256] = {};
  if (get(&dev, device) != 0 || name(buf, sizeof buf - 1, dev) != 0) return {true, "device " + std::to_string(device)};
  return {true, buf};
}

struct Step {
  std::size_t target = 0;
  std::size_t mapped = 0;
  bool base_unchanged = true;
  double grow_us = 0;
};

int run(const Options& opt) {
  const char* backend = nullptr;
  if (vmm_backend_name(opt.device, &backend) != VMM_SUCCESS) {
    throw std::runtime_error(std::string("vmm_backend_name: ") + vmm_last_error());
  }
  const bool on_host = std::strcmp(backend, "host") == 0;
  const DriverProbe probe = probe_driver(opt.device);
  std::string detail;
  if (!on_host) {
    detail = probe.detail + ", device " + std::to_string(opt.device);
  } else if (!probe.usable) {
    detail = "no GPU: " + probe.detail;
  } else {
    // A GPU is there but vmmalloc was told (or chose) not to use it.
    const char* conf = std::getenv("VMMALLOC_CONF");
    const char* last = vmm_last_error();
    detail = std::string("GPU present (") + probe.detail + ") but not used: " +
             (conf && std::strstr(conf, "backend:host") ? "VMMALLOC_CONF selects backend:host"
              : (last && *last)                         ? last
                                                        : "no usable CUDA driver");
  }
  std::printf("backend: %s (%s)\n", backend, detail.c_str());

  const std::size_t capacity = opt.sizes.back();
  vmm::Workspace ws(capacity, opt.device);
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  std::printf("workspace: capacity %s reserved, %s mapped\n\n", human(ws.capacity()).c_str(),
              human(ws.mapped_bytes()).c_str());
  std::printf("  %-12s %-12s %-18s %-10s %12s\n", "grow to", "mapped", "base", "", "grow time");

  bool ok = true;
  std::vector<Step> steps;
  void* base = nullptr;
  std::size_t previous = 0;
  // On the host backend: the pages written, checked again after every later
  // grow and after the shrink.
  struct Touched {
    std::size_t offset, length;
    unsigned char marker;
  };
  std::vector<Touched> touched;

  auto check_touched = [&](std::size_t limit, const char* when) {
    if (!on_host) return;
    const auto* bytes = static_cast<const unsigned char*>(ws.data());
    for (const Touched& t : touched) {
      if (t.offset + t.length > limit) continue;
      if (bytes[t.offset] != t.marker || bytes[t.offset + t.length - 1] != t.marker) {
        std::fprintf(stderr, "error: contents at offset %zu lost %s\n", t.offset, when);
        ok = false;
      }
    }
  };

  for (std::size_t i = 0; i < opt.sizes.size(); ++i) {
    const std::size_t target = opt.sizes[i];
    const auto t0 = std::chrono::steady_clock::now();
    ws.grow_to(target);
    const auto t1 = std::chrono::steady_clock::now();
    Step s;
    s.target = target;
    s.mapped = ws.mapped_bytes();
    s.grow_us = std::chrono::duration<double, std::micro>(t1 - t0).count();
    if (i == 0) base = ws.data();
    s.base_unchanged = ws.data() == base;
    std::printf("  %-12s %-12s %-18s %-10s %9.1f us\n", human(target).c_str(), human(s.mapped).c_str(),
                hex(ws.data()).c_str(), i == 0 ? "" : (s.base_unchanged ? "(same)" : "(MOVED)"),
                s.grow_us);
    if (!s.base_unchanged) {
      std::fprintf(stderr, "error: the base address moved\n");
      ok = false;
    }
    if (s.mapped < target || ws.size() < target) {
      std::fprintf(stderr, "error: grow_to(%zu) left size %zu, mapped %zu\n", target, ws.size(), s.mapped);
      ok = false;
    }
    if (on_host) {
      // Host memory: write the first and last page of the new part.
      auto* bytes = static_cast<unsigned char*>(ws.data());
      const auto marker = static_cast<unsigned char>(0xA0 + i);
      const std::size_t first = previous;
      const std::size_t last = std::max(previous, (target - 1) / page * page);
      for (std::size_t offset : {first, last}) {
        const std::size_t length = std::min(page, target - offset);
        std::memset(bytes + offset, marker, length);
        touched.push_back({offset, length, marker});
      }
      check_touched(target, "after a grow");
    }
    steps.push_back(s);
    previous = target;
  }

  const std::size_t shrink_target = opt.sizes.front();
  ws.shrink_to(shrink_target, nullptr);
  const std::size_t mapped_after_shrink = ws.mapped_bytes();
  const bool base_after_shrink = ws.data() == base;
  std::printf("\nshrink to %s (stream 0): mapped %s%s\n", human(shrink_target).c_str(),
              human(mapped_after_shrink).c_str(),
              base_after_shrink ? ", base unchanged" : ", BASE MOVED");
  std::printf("(the tail is unmapped once the work queued on stream 0 has completed; the call does "
              "not wait)\n");
  if (!base_after_shrink || ws.size() != shrink_target) {
    std::fprintf(stderr, "error: shrink left size %zu, base %s\n", ws.size(), hex(ws.data()).c_str());
    ok = false;
  }
  check_touched(shrink_target, "after the shrink");

  if (!opt.json_path.empty()) {
    std::ostringstream j;
    j << "{\n  \"backend\": " << json_string(backend) << ",\n  \"detail\": " << json_string(detail)
      << ",\n  \"device\": " << opt.device << ",\n  \"capacity_bytes\": " << ws.capacity()
      << ",\n  \"base\": " << json_string(hex(base)) << ",\n  \"steps\": [";
    for (std::size_t i = 0; i < steps.size(); ++i) {
      const Step& s = steps[i];
      j << (i ? ",\n    " : "\n    ") << "{\"target_bytes\": " << s.target
        << ", \"mapped_bytes\": " << s.mapped
        << ", \"base_unchanged\": " << (s.base_unchanged ? "true" : "false")
        << ", \"grow_us\": " << s.grow_us << "}";
    }
    j << "\n  ],\n  \"shrink\": {\"target_bytes\": " << shrink_target
      << ", \"mapped_bytes\": " << mapped_after_shrink
      << ", \"base_unchanged\": " << (base_after_shrink ? "true" : "false")
      << "},\n  \"ok\": " << (ok ? "true" : "false") << "\n}\n";
    if (opt.json_path == "-") {
      std::cout << j.str();
    } else {
      std::ofstream f(opt.json_path, std::ios::trunc);
      f << j.str();
      f.close();
      if (!f) throw std::runtime_error("cannot write " + opt.json_path);
    }
  }

  if (!ok) {
    std::fprintf(stderr, "workspace_demo: FAILED\n");
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    opt = parse_options(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "workspace_demo: %s\n", e.what());
    usage(stderr);
    return 2;
  }
  try {
    return run(opt);
  } catch (const vmm::Error& e) {
    std::fflush(stdout);  // the steps so far, then the error
    std::fprintf(stderr, "workspace_demo: %s (%s)\n", e.what(), vmm_status_name(e.status()));
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "workspace_demo: %s\n", e.what());
    return 1;
  }
}
