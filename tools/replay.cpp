// vmm_replay: replays an allocation trace (the format of docs/benchmarks.md,
// "replay"; plain or gzip) against vmmalloc's general allocator
// (vmm::Allocator) and reports how much physical memory it needed for the
// trace's live bytes, and how many driver calls it made.
//
//   vmm_replay [--backend auto|cuda|host] [--device N] [--touch] [--verify]
//              [--sample-hz N] [--system NAME] [--json] TRACE
//
// Backend: `auto` (the default) replays on the GPU where the CUDA driver
// loads and has a device, else on the host backend, and says which. The tool
// needs no CUDA compiler and never links libcuda: vmmalloc loads the driver
// at run time and so does the tool, for the few entry points it needs itself
// (streams, memset, cuMemGetInfo, the device's name).
//
// Streams: every stream number of the trace is a real stream. Stream 0 is
// the null stream (CUDA's legacy default stream; the host backend's default
// host stream), as in the PyTorch programs the traces come from; every other
// number gets a stream of its own (cuStreamCreate, non-blocking; on the host,
// a host stream of the backend's HostStreams set). A block is allocated on
// its event's stream and freed in that stream's order.
//
// --touch writes every block after allocating it (cuMemsetD8Async on the
// block's stream; on the host, a memset queued on the host stream), so the
// memory is really usable. --verify (host backend only) also checks, on the
// block's stream before it is freed, that the block still holds its own
// pattern: overlapping live blocks or memory unmapped too early fail it.
//
// Figures (the replay loop is timed; the teardown is not):
//   peak_live_bytes       largest sum of live requested sizes in the trace
//   allocator_peak_bytes  the physical pool's peak_created_bytes: the most
//                         physical memory vmmalloc held at once (any backend)
//   peak_device_bytes     CUDA only: device memory in use (cuMemGetInfo,
//                         total - free) minus the reading taken after set-up
//                         and before the first event; read after every event
//                         and by a background sampler (--sample-hz, default
//                         2000; 0 turns the sampler off)
//   peak_physical_bytes   peak_device_bytes on CUDA, allocator_peak_bytes on
//                         the host backend
//   ratio                 peak_physical_bytes / peak_live_bytes
//   driver_calls          backend calls during the replay (reserve, create,
//                         map, set access, unmap, release, fences...), counted
//                         by a disarmed FaultInjectingBackend around the
//                         backend; listed per kind in the text report
//   replay_s              wall time of the replay loop (including the
//                         per-event memory reading on CUDA, and queuing the
//                         touches)
//
// Output: a text report (stdout; stderr with --json), and with --json one
// JSON object - a results row of the `replay` bench - on stdout.
// Exit status: 0 on success, 1 if the replay failed (out of memory, a
// driver error, a verify mismatch), 2 for bad usage or an unreadable trace.
//
// This file holds the options, the replay loop and the reports; the streams,
// touches and the device-memory meter are in replay_devices.{hpp,cpp}.

#include <cuda.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cinttypes>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

// Internal: it builds a DeviceContext over a backend of its choice (host or the
// default), wrapped in a FaultInjectingBackend that counts driver calls.
#include "allocator/backend/backend.hpp"
#include "allocator/backend/cuda_driver.hpp"
#include "allocator/backend/default_backend.hpp"
#include "allocator/backend/fault_injecting_backend.hpp"
#include "allocator/backend/host_backend.hpp"
#include "allocator/vm/device_context.hpp"
#include "tools/replay_devices.hpp"
#include "tools/trace/trace_reader.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/config.hpp"
#include "vmmalloc/errors.hpp"

namespace {

using vmm_replay::CudaDevice;
using vmm_replay::CudaExtras;
using vmm_replay::Device;
using vmm_replay::DeviceMeter;
using vmm_replay::HostDevice;

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;
// Stream numbers index a table; traces number their streams 0, 1, 2...
constexpr std::uint32_t kMaxStreamNumber = 65535;

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Options {
  std::string trace;
  std::string backend = "auto";
  int device = 0;
  bool touch = false;
  bool verify = false;
  bool json = false;
  int sample_hz = 2000;
  std::string system = "vmmalloc";
};

void usage(std::FILE* f) {
  std::fprintf(f,
               "usage: vmm_replay [options] TRACE\n"
               "Replays an allocation trace (.trace or .trace.gz) against vmmalloc.\n"
               "  --backend auto|cuda|host  where to replay (default auto: CUDA if a GPU is usable)\n"
               "  --device N                CUDA device (default 0)\n"
               "  --touch                   write every block after allocating it\n"
               "  --verify                  host backend: also check each block's contents before its free\n"
               "  --sample-hz N             CUDA: device-memory sampler rate (default 2000, 0: off)\n"
               "  --system NAME             system name in the JSON row (default vmmalloc)\n"
               "  --json                    print one JSON result row on stdout (report on stderr)\n"
               "VMMALLOC_CONF configures the allocator as usual.\n");
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    auto integer = [&](const std::string& v) {
      try {
        std::size_t pos = 0;
        const int n = std::stoi(v, &pos);
        if (pos != v.size() || n < 0) throw std::invalid_argument(v);
        return n;
      } catch (const std::exception&) {
        throw UsageError(a + ": bad value '" + v + "'");
      }
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--backend") {
      o.backend = value();
      if (o.backend != "auto" && o.backend != "cuda" && o.backend != "host") {
        throw UsageError("--backend must be auto, cuda or host, not '" + o.backend + "'");
      }
    } else if (a == "--device") {
      o.device = integer(value());
    } else if (a == "--touch") {
      o.touch = true;
    } else if (a == "--verify") {
      o.verify = true;
      o.touch = true;
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--sample-hz") {
      o.sample_hz = integer(value());
    } else if (a == "--system") {
      o.system = value();
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option " + a);
    } else if (o.trace.empty()) {
      o.trace = a;
    } else {
      throw UsageError("more than one trace given ('" + o.trace + "', '" + a + "')");
    }
  }
  if (o.trace.empty()) throw UsageError("no trace given");
  return o;
}

// ------------------------------------------------------------ the replay

struct Result {
  std::string backend;
  std::string device_name;
  std::size_t events = 0;
  std::uint64_t peak_live_bytes = 0;
  std::size_t allocator_peak_bytes = 0;
  bool have_device = false;
  std::size_t peak_device_bytes = 0;
  std::size_t device_baseline_bytes = 0;
  double sampler_hz = 0;
  std::uint64_t driver_calls = 0;
  std::array<std::uint64_t, vmm::kBackendCallKinds> calls_by_kind{};
  double replay_s = 0;
  double load_s = 0;
  vmm::AllocatorStats stats{};
  std::uint64_t verify_mismatches = 0;

  std::size_t peak_physical_bytes() const { return have_device ? peak_device_bytes : allocator_peak_bytes; }
  double ratio() const {
    return peak_live_bytes ? static_cast<double>(peak_physical_bytes()) / static_cast<double>(peak_live_bytes) : 0;
  }
};

using Counts = std::array<std::uint64_t, vmm::kBackendCallKinds>;

Counts snapshot(const vmm::FaultInjectingBackend& b) {
  Counts c{};
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    c[static_cast<std::size_t>(k)] = b.calls(static_cast<vmm::BackendCall>(k));
  }
  return c;
}

std::size_t round_up(std::size_t n, std::size_t unit) { return (n + unit - 1) / unit * unit; }

// A fill pattern per block: never 0, so untouched (zero) memory never matches.
std::uint8_t pattern_of(std::uint32_t block) { return static_cast<std::uint8_t>(block % 251 + 1); }

// Picks the backend; on `auto`, says why it fell back to the host.
std::string choose_backend(const Options& o, std::FILE* report) {
  if (o.backend != "auto") return o.backend;
  const vmm::cuda::LoadResult& r = vmm::cuda::load();
  if (r.driver != nullptr) return "cuda";
  std::fprintf(report, "backend: auto -> host (no usable GPU: %s)\n", r.error.c_str());
  return "host";
}

Result replay(const Options& o, const vmm::trace::Trace& trace, std::FILE* report) {
  Result res;
  res.events = trace.events.size();
  res.peak_live_bytes = trace.peak_live_bytes;
  res.backend = choose_backend(o, report);
  if (o.verify && res.backend != "host") throw UsageError("--verify needs the host backend");

  vmm::Config config = vmm::Config::from_environment();
  std::unique_ptr<vmm::Backend> inner;
  std::unique_ptr<CudaExtras> extras;  // before `device`, which uses it: destroyed after it
  std::unique_ptr<Device> device;
  const vmm::cuda::Driver* drv = nullptr;
  CUcontext primary = nullptr;
  CUdevice cu_device = 0;
  if (res.backend == "host") {
    config.backend = vmm::BackendKind::host;
    // The simulated device must hold the trace: pages only materialise where
    // touched, so a large simulated capacity costs nothing.
    config.host_device_memory =
        std::max(config.host_device_memory, round_up(2 * trace.peak_live_bytes + kGiB, 2 * kMiB));
    config.validate();
    auto streams = std::make_shared<vmm::HostStreams>();
    vmm::HostBackend::Options ho;
    ho.device = 0;
    ho.device_memory = config.host_device_memory;
    ho.streams = streams;
    inner = std::make_unique<vmm::HostBackend>(ho);
    device = std::make_unique<HostDevice>(streams);
    res.device_name = "host";
  } else {
    config.backend = vmm::BackendKind::cuda;
    config.validate();
    inner = vmm::make_default_backend(config, o.device);
    drv = &vmm::cuda::driver();
    extras = std::make_unique<CudaExtras>(CudaExtras::load());
    vmm::cuda::check(drv->DeviceGet(&cu_device, o.device), "cuDeviceGet");
    vmm::cuda::check(drv->DevicePrimaryCtxRetain(&primary, cu_device), "cuDevicePrimaryCtxRetain");
    vmm::cuda::check(drv->CtxSetCurrent(primary), "cuCtxSetCurrent");
    char name[256] = {};
    vmm::cuda::check(extras->device_get_name(name, sizeof name, cu_device), "cuDeviceGetName");
    res.device_name = name;
    device = std::make_unique<CudaDevice>(*extras);
  }
  std::fprintf(report, "backend: %s (device %d: %s)\n", res.backend.c_str(), o.device, res.device_name.c_str());

  auto counting_owner = std::make_unique<vmm::FaultInjectingBackend>(std::move(inner));
  vmm::FaultInjectingBackend& counter = *counting_owner;
  {
    vmm::DeviceContext context(std::move(counting_owner), config);
    vmm::Allocator allocator(context);

    // Streams: 0 -> the null stream, every other number its own stream.
    if (!trace.streams.empty() && trace.streams.back() > kMaxStreamNumber) {
      throw UsageError("stream number " + std::to_string(trace.streams.back()) + " in the trace: at most " +
                       std::to_string(kMaxStreamNumber) + " supported");
    }
    std::map<std::uint32_t, vmm::Stream> stream_of;
    for (std::uint32_t s : trace.streams) stream_of[s] = s == 0 ? nullptr : device->make_stream();
    std::vector<vmm::Stream> streams(trace.streams.empty() ? 1 : trace.streams.back() + 1, nullptr);
    for (const auto& [n, s] : stream_of) streams[n] = s;

    std::unique_ptr<DeviceMeter> meter;
    if (drv != nullptr) {
      meter = std::make_unique<DeviceMeter>(*drv, primary);
      res.device_baseline_bytes = meter->read();
      meter->start(o.sample_hz);
      res.have_device = true;
    }

    std::vector<void*> ptrs(trace.blocks, nullptr);
    const Counts before = snapshot(counter);
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t i = 0;
    try {
      for (; i < trace.events.size(); ++i) {
        const vmm::trace::Event& e = trace.events[i];
        const vmm::Stream s = streams[e.stream];
        if (e.op == vmm::trace::Op::alloc) {
          void* p = allocator.allocate(static_cast<std::size_t>(e.bytes), s);
          ptrs[e.block] = p;
          if (o.touch) device->touch(s, p, static_cast<std::size_t>(e.bytes), pattern_of(e.block));
        } else {
          void* p = ptrs[e.block];
          if (o.verify) device->verify(s, p, static_cast<std::size_t>(e.bytes), pattern_of(e.block));
          allocator.deallocate(p);
          ptrs[e.block] = nullptr;
        }
        if (meter) meter->sample();
      }
    } catch (const std::exception& ex) {
      const vmm::trace::Event& e = trace.events[i];
      throw std::runtime_error("event " + std::to_string(i + 1) + " (" + (e.op == vmm::trace::Op::alloc ? "allocate " : "free ") +
                               std::to_string(e.bytes) + " bytes, stream " + std::to_string(e.stream) +
                               "): " + ex.what());
    }
    const auto t1 = std::chrono::steady_clock::now();
    const Counts after = snapshot(counter);
    res.replay_s = std::chrono::duration<double>(t1 - t0).count();
    for (std::size_t k = 0; k < after.size(); ++k) {
      res.calls_by_kind[k] = after[k] - before[k];
      res.driver_calls += res.calls_by_kind[k];
    }
    for (const auto& [n, s] : stream_of) device->synchronize(s);
    if (meter) {
      meter->sample();
      meter->stop();
      const std::size_t peak = meter->peak();
      res.peak_device_bytes = peak > res.device_baseline_bytes ? peak - res.device_baseline_bytes : 0;
      res.sampler_hz = meter->sample_rate_hz();
    }
    res.stats = allocator.stats();
    res.allocator_peak_bytes = context.pool().stats().peak_created_bytes;
    res.verify_mismatches = device->mismatches();

    // Teardown (untimed): blocks the trace leaves live, then the streams.
    for (void* p : ptrs) {
      if (p != nullptr) allocator.deallocate(p);
    }
    for (const auto& [n, s] : stream_of) device->synchronize(s);
    res.verify_mismatches = device->mismatches();
  }  // the allocator, then its context, go before the streams
  device.reset();
  if (primary != nullptr) drv->DevicePrimaryCtxRelease(cu_device);
  return res;
}

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string gib(std::size_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f GiB", static_cast<double>(bytes) / static_cast<double>(kGiB));
  return buf;
}

void print_report(std::FILE* f, const Options& o, const vmm::trace::Trace& t, const Result& r) {
  std::fprintf(f, "trace: %s (%s)\n", o.trace.c_str(), t.header.c_str());
  std::fprintf(f, "  events %zu (%zu allocations, %zu frees), streams %zu, read in %.3f s\n", t.events.size(),
               t.blocks, t.frees, t.streams.size(), r.load_s);
  std::fprintf(f, "  peak live %s (%" PRIu64 " B, %zu blocks); live at the end %s (%zu blocks)\n",
               gib(t.peak_live_bytes).c_str(), t.peak_live_bytes, t.peak_live_blocks,
               gib(t.final_live_bytes).c_str(), t.final_live_blocks);
  std::fprintf(f, "replay: %.3f s (%.2f us/event)%s\n", r.replay_s,
               r.events ? r.replay_s * 1e6 / static_cast<double>(r.events) : 0.0, o.touch ? ", blocks touched" : "");
  std::fprintf(f, "  allocator peak (pool peak_created_bytes): %s (%zu B), %.4fx peak live\n",
               gib(r.allocator_peak_bytes).c_str(), r.allocator_peak_bytes,
               r.peak_live_bytes ? static_cast<double>(r.allocator_peak_bytes) / static_cast<double>(r.peak_live_bytes) : 0.0);
  if (r.have_device) {
    std::fprintf(f, "  device peak (cuMemGetInfo - baseline %s): %s (%zu B), %.4fx peak live; sampler %.0f Hz\n",
                 gib(r.device_baseline_bytes).c_str(), gib(r.peak_device_bytes).c_str(), r.peak_device_bytes,
                 r.ratio(), r.sampler_hz);
  }
  std::fprintf(f, "  allocator stats: peak requested %s, peak allocated %s, peak reserved %s, stitches %" PRIu64
                  ", chunk creates %" PRIu64 ", releases %" PRIu64 "\n",
               gib(r.stats.peak_requested_bytes).c_str(), gib(r.stats.peak_allocated_bytes).c_str(),
               gib(r.stats.peak_reserved_bytes).c_str(), r.stats.stitches, r.stats.chunk_creates,
               r.stats.chunk_releases);
  std::fprintf(f, "  driver calls: %" PRIu64, r.driver_calls);
  const char* sep = " (";
  for (int k = 0; k < vmm::kBackendCallKinds; ++k) {
    const std::uint64_t n = r.calls_by_kind[static_cast<std::size_t>(k)];
    if (n == 0) continue;
    std::fprintf(f, "%s%s %" PRIu64, sep, vmm::backend_call_name(static_cast<vmm::BackendCall>(k)), n);
    sep = ", ";
  }
  std::fprintf(f, "%s\n", r.driver_calls ? ")" : "");
  if (o.verify) std::fprintf(f, "  verify: %" PRIu64 " bytes differed from their block's pattern\n", r.verify_mismatches);
  std::fprintf(f, "peak physical %s / peak live %s = ratio %.4f\n", gib(r.peak_physical_bytes()).c_str(),
               gib(t.peak_live_bytes).c_str(), r.ratio());
}

void print_json(const Options& o, const vmm::trace::Trace& t, const Result& r) {
  std::printf("{\"system\": %s, \"trace\": %s, \"events\": %zu, \"peak_live_bytes\": %" PRIu64
              ", \"peak_physical_bytes\": %zu, \"ratio\": %.6f, \"driver_calls\": %" PRIu64
              ", \"replay_s\": %.6f, \"backend\": %s, \"allocator_peak_bytes\": %zu, \"peak_device_bytes\": %s}\n",
              json_string(o.system).c_str(), json_string(vmm::trace::trace_stem(o.trace)).c_str(), t.events.size(),
              t.peak_live_bytes, r.peak_physical_bytes(), r.ratio(), r.driver_calls, r.replay_s,
              json_string(r.backend).c_str(), r.allocator_peak_bytes,
              r.have_device ? std::to_string(r.peak_device_bytes).c_str() : "null");
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  vmm::trace::Trace trace;
  double load_s = 0;
  try {
    o = parse_options(argc, argv);
    const auto t0 = std::chrono::steady_clock::now();
    trace = vmm::trace::read_trace(o.trace);
    load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vmm_replay: %s\n", e.what());
    usage(stderr);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm_replay: %s\n", e.what());
    return 2;
  }
  std::FILE* report = o.json ? stderr : stdout;
  try {
    Result r = replay(o, trace, report);
    r.load_s = load_s;
    print_report(report, o, trace, r);
    if (o.verify && r.verify_mismatches != 0) {
      std::fprintf(stderr, "vmm_replay: verify failed: %" PRIu64 " bytes differed\n", r.verify_mismatches);
      return 1;
    }
    if (o.json) print_json(o, trace, r);
    return 0;
  } catch (const UsageError& e) {
    std::fprintf(stderr, "vmm_replay: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vmm_replay: %s\n", e.what());
    return 1;
  }
}
