// The Python extension of vmmalloc.torch: a thin binding of the adapter
// (torch_allocator), the workspace tensors (torch_workspace) and vmmalloc's
// C++/C API. Argument checking with messages for users lives in
// vmmalloc/torch.py; this layer turns every C++ error into the matching
// Python exception (out of memory: torch.OutOfMemoryError; bad argument:
// ValueError; anything else: RuntimeError) with its message and no C++
// backtrace.
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "devices.hpp"
#include "torch_allocator.hpp"
#include "torch_workspace.hpp"
#include "vmmalloc/allocator.hpp"
#include "vmmalloc/errors.hpp"
#include "vmmalloc/tags.hpp"
#include "vmmalloc/vmmalloc.h"

namespace py = pybind11;

namespace vmmalloc_torch {
namespace {

[[noreturn]] void raise_out_of_memory(const std::string& message) {
  py::object cls = py::module_::import("torch").attr("OutOfMemoryError");
  PyErr_SetString(cls.ptr(), message.c_str());
  throw py::error_already_set();
}

[[noreturn]] void raise_status(vmm_status status, const std::string& message) {
  switch (status) {
    case VMM_ERROR_OUT_OF_MEMORY:
      raise_out_of_memory(message);
    case VMM_ERROR_INVALID_VALUE:
    case VMM_ERROR_CONFIG:
    case VMM_ERROR_UNKNOWN_POINTER:
      throw py::value_error(message);
    default:
      throw std::runtime_error(message);  // RuntimeError
  }
}

// Runs `fn`, turning C++ errors into Python exceptions.
template <typename Fn>
auto guarded(const char* what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const vmm::Error& e) {
    raise_status(e.status(), std::string("vmmalloc: ") + what + ": " + e.what());
  } catch (const c10::OutOfMemoryError& e) {
    raise_out_of_memory(e.what_without_backtrace());
  } catch (const c10::ValueError& e) {
    throw py::value_error(e.what_without_backtrace());
  } catch (const c10::Error& e) {
    throw std::runtime_error(e.what_without_backtrace());
  }
}

void check(vmm_status status, const char* what) {
  if (status != VMM_SUCCESS) {
    raise_status(status, std::string("vmmalloc: ") + what + ": " + vmm_last_error());
  }
}

cudaStream_t as_stream(std::uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

py::dict report_dict(const vmm::SleepReport& r) {
  py::dict d;
  d["live_bytes"] = r.live_bytes;
  d["copied_bytes"] = r.copied_bytes;
  d["device_bytes"] = r.device_bytes;
  d["pinned_bytes"] = r.pinned_bytes;
  d["tags_changed"] = r.tags_changed;
  d["copy_seconds"] = r.copy_seconds;
  return d;
}

std::vector<vmm::TagId> tag_ids(const std::vector<std::string>& names) {
  std::vector<vmm::TagId> ids;
  for (const std::string& n : names) ids.push_back(vmm::tag_id(n));
  return ids;
}

py::dict stats_dict(const vmm::AllocatorStats& s) {
  // Every counter of vmm::AllocatorStats (VMM_ALLOCATOR_STATS in
  // include/vmmalloc/stats.hpp), under its member's name.
  py::dict d;
  for (const vmm::AllocatorStatField& f : vmm::kAllocatorStatFields) d[f.name] = f.value(s);
  return d;
}

}  // namespace
}  // namespace vmmalloc_torch

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace vmmalloc_torch;
  m.doc() = "vmmalloc's PyTorch adapter (use it through vmmalloc.torch)";

  m.def("install", [] { return guarded("install", [] { return TorchAllocator::install(); }); },
        "Makes vmmalloc PyTorch's CUDA allocator; False if it already was.");
  m.def("installed", [] { return TorchAllocator::installed(); });

  m.def(
      "configure", [](const std::string& conf) { check(vmm_configure(conf.c_str()), "configure"); },
      py::arg("conf"));
  m.def(
      "backend_name",
      [](int device) {
        const char* name = nullptr;
        check(vmm_backend_name(device, &name), "backend_name");
        return std::string(name);
      },
      py::arg("device"));
  m.def(
      "allocator_stats",
      [](int device) {
        return guarded("allocator_stats", [&] {
          vmm::Allocator& a = vmm::Allocator::instance(device);
          note_device(device);
          return stats_dict(a.stats());
        });
      },
      py::arg("device"));
  m.def(
      "reset_peak_stats",
      [](int device) {
        guarded("reset_peak_stats", [&] {
          vmm::Allocator::instance(device).reset_peak_stats();
          note_device(device);
        });
      },
      py::arg("device"));
  m.def(
      "empty_cache",
      [](int device) {
        return guarded("empty_cache", [&] {
          std::size_t released = 0;
          if (device >= 0) {
            released = vmm::Allocator::instance(device).empty_cache();
            note_device(device);
          } else {
            for (int d : noted_devices()) released += vmm::Allocator::instance(d).empty_cache();
          }
          return released;
        });
      },
      py::arg("device"), "device -1: every device vmmalloc has served in this process");
  m.def(
      "workspace_totals",
      [](int device) {
        const TorchWorkspace::Totals t = TorchWorkspace::totals(device);
        py::dict d;
        d["workspaces"] = t.count;
        d["workspace_bytes"] = t.size_bytes;
        d["workspace_mapped_bytes"] = t.mapped_bytes;
        return d;
      },
      py::arg("device"));
  m.def("noted_devices", [] { return noted_devices(); });
  // Sleep and wake (docs/sleep.md): on every device's allocator.
  m.def(
      "tag_push",
      [](const std::string& name) { guarded("tag", [&] { vmm::push_tag(vmm::tag_id(name)); }); },
      py::arg("name"));
  m.def("tag_pop", [] { guarded("tag", [] { vmm::pop_tag(); }); });
  m.def("tag_names", [] { return vmm::tag_names(); });
  m.def(
      "sleep",
      [](const std::vector<std::string>& names, bool discard) {
        const vmm::SleepReport r = guarded("sleep", [&] {
          const std::vector<vmm::TagId> ids = tag_ids(names);
          py::gil_scoped_release no_gil;  // copies take a while; other threads run
          return vmm::Allocator::sleep_everywhere(
              ids, discard ? vmm::SleepMode::discard : vmm::SleepMode::offload);
        });
        return report_dict(r);
      },
      py::arg("tags"), py::arg("discard"));
  m.def(
      "wake",
      [](const std::vector<std::string>& names, bool keep_host) {
        const vmm::SleepReport r = guarded("wake", [&] {
          const std::vector<vmm::TagId> ids = tag_ids(names);
          py::gil_scoped_release no_gil;
          return vmm::Allocator::wake_everywhere(ids, keep_host);
        });
        return report_dict(r);
      },
      py::arg("tags"), py::arg("keep_host"));
  m.def(
      "asleep",
      [](const std::string& name, int device) {
        return guarded("is_sleeping",
                       [&] { return vmm::Allocator::instance(device).asleep(vmm::tag_id(name)); });
      },
      py::arg("tag"), py::arg("device"));
  m.def("snapshot_json", [] {
    char* json = nullptr;
    std::size_t length = 0;
    check(vmm_snapshot_json(&json, &length), "snapshot");
    std::string out(json, length);
    vmm_snapshot_free(json);
    return out;
  });

  py::class_<TorchWorkspace, std::shared_ptr<TorchWorkspace>>(m, "Workspace")
      .def(py::init([](std::size_t capacity, int device, std::uintptr_t release_stream,
                       const std::string& name) {
             return guarded("Workspace", [&] {
               auto ws = std::make_shared<TorchWorkspace>(capacity, device,
                                                          as_stream(release_stream));
               if (!name.empty()) ws->set_name(name);
               return ws;
             });
           }),
           py::arg("capacity"), py::arg("device"), py::arg("release_stream"), py::arg("name"))
      .def(
          "grow",
          [](TorchWorkspace& ws, std::size_t n) {
            guarded("Workspace.grow", [&] { ws.grow(n); });
          },
          py::arg("nbytes"))
      .def(
          "shrink",
          [](TorchWorkspace& ws, std::size_t n, std::uintptr_t stream) {
            guarded("Workspace.shrink", [&] { ws.shrink(n, as_stream(stream)); });
          },
          py::arg("nbytes"), py::arg("stream"))
      .def("bytes",
           [](const std::shared_ptr<TorchWorkspace>& self, std::size_t offset, std::size_t nbytes) {
             return guarded("Workspace.tensor",
                            [&] { return TorchWorkspace::bytes(self, offset, nbytes); });
           })
      .def_property_readonly("size", &TorchWorkspace::size)
      .def_property_readonly("capacity", &TorchWorkspace::capacity)
      .def_property_readonly("mapped_bytes", &TorchWorkspace::mapped_bytes)
      .def_property_readonly("device", &TorchWorkspace::device)
      .def_property_readonly("data_ptr", &TorchWorkspace::data_ptr)
      .def_property_readonly("name", &TorchWorkspace::name);

  // For vmmalloc.torch.mem_pool(): the C functions PyTorch's
  // CUDAPluggableAllocator loads from this module's file (pool_allocator.cpp).
  m.attr("pool_malloc_symbol") = "vmmalloc_torch_pool_malloc";
  m.attr("pool_free_symbol") = "vmmalloc_torch_pool_free";
}
