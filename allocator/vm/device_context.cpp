// DeviceContext wiring and the process-wide contexts (one per device).
//
// The process-wide contexts are created on first use and deliberately never
// destroyed: static destructors run in no reliable order against the CUDA
// driver's own teardown, and unmapping after the driver is gone can only
// fail. The operating system reclaims everything at exit.
#include "allocator/vm/device_context.hpp"

#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "allocator/backend/default_backend.hpp"
#include "allocator/base/fork_guard.hpp"
#include "allocator/base/log.hpp"
#include "allocator/record/inspect_registry.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

DeviceContext::DeviceContext(std::unique_ptr<Backend> backend, const Config& config)
    : backend_(std::move(backend)), config_(config) {
  config_.validate();
  if (!backend_) throw InvalidArgumentError("DeviceContext: null backend");
  access_ = std::make_unique<PeerAccessBackend>(*backend_);
  const std::vector<int> peers = configured_peers(config_, *backend_);
  if (!peers.empty()) access_->grant_peers(peers);  // nothing is mapped yet
  pool_ = std::make_unique<PhysicalPool>(*access_, config_);
  address_space_ = std::make_unique<AddressSpace>(*access_, config_);
  reclaimer_ = std::make_unique<Reclaimer>(*access_, *pool_, *address_space_);
  inspect::add_context(*this);  // snapshots see it from now on
}

DeviceContext::~DeviceContext() {
  inspect::remove_context(*this);
  reclaimer_.reset();  // drains pending reclaims into the pool
  pool_.reset();       // releases cached chunks
  address_space_.reset();
}

namespace {

struct ProcessState {
  std::mutex mutex;
  std::optional<Config> config;  // set by configure_process or on first use
  std::map<int, DeviceContext*> contexts;
};

ProcessState& process_state() {
  static ProcessState* state = new ProcessState();  // never destroyed: see top
  return *state;
}

// Runs at exit before the CUDA driver's own teardown (exit handlers run in
// reverse order of registration, and ours is registered after the backend
// initialised the driver): the reclaimer threads stop, so none queries a
// driver that is going away. Pending reclaims are left to the OS.
//
// In a forked child it does nothing: a thread of the parent may have held
// the process state's lock (or a reclaimer's) at the fork, and nothing in
// the child would ever release it (fork_guard.hpp).
void stop_reclaimers_at_exit() {
  if (in_forked_child()) return;
  ProcessState& st = process_state();
  std::lock_guard lock(st.mutex);
  for (auto& [device, ctx] : st.contexts) ctx->reclaimer().stop_background_thread();
}

}  // namespace

void configure_process(const Config& config) {
  config.validate();
  ProcessState& st = process_state();
  std::lock_guard lock(st.mutex);
  if (!st.contexts.empty()) {
    throw InvalidArgumentError(
        "vmmalloc is already in use on a device; configure it before the first allocation");
  }
  st.config = config;
  set_log_level(config.log_level);
}

std::vector<int> process_devices() {
  if (in_forked_child()) return {};
  ProcessState& st = process_state();
  std::lock_guard lock(st.mutex);
  std::vector<int> out;
  for (const auto& [device, ctx] : st.contexts) out.push_back(device);
  return out;
}

DeviceContext& device_context(int device) {
  // Before the lock: a thread of the parent may have held it at the fork.
  if (in_forked_child()) throw NotSupportedError(forked_child_message());
  if (device < -1) {
    throw InvalidArgumentError("device " + std::to_string(device) +
                               " does not exist (valid: -1 for the current device, or an "
                               "ordinal from 0)");
  }
  ProcessState& st = process_state();
  std::lock_guard lock(st.mutex);
  if (!st.config) {
    st.config = Config::from_environment();
    set_log_level(st.config->log_level);
  }
  if (device < 0) device = default_backend_current_device(*st.config);
  auto it = st.contexts.find(device);
  if (it != st.contexts.end()) return *it->second;
  // Before the first context's threads and locks exist: a child forked from
  // now on cannot use this state, and its exit handlers leave it alone.
  if (st.contexts.empty()) install_fork_guard();
  auto* ctx = new DeviceContext(make_default_backend(*st.config, device), *st.config);
  if (st.contexts.empty()) std::atexit(stop_reclaimers_at_exit);
  st.contexts.emplace(device, ctx);
  log(LogLevel::info, "device %d: %s backend ready", device, ctx->backend().name());
  return *ctx;
}

}  // namespace vmm
