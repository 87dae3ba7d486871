// HostStreams: the host backend's table of streams (host_backend.hpp).
// HostStreams::mutex_ guards the table only: a stream is looked up under it,
// the shared_ptr copied, the lock dropped, and only then is the stream's own
// lock taken.
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "allocator/backend/host_backend.hpp"
#include "allocator/backend/host_stream.hpp"
#include "vmmalloc/errors.hpp"

namespace vmm {

namespace {

Stream as_stream(HostStream* s) { return reinterpret_cast<Stream>(s); }

std::string stream_text(Stream stream) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%p", static_cast<void*>(stream));
  return buf;
}

}  // namespace

HostStreams::HostStreams() = default;

HostStreams::~HostStreams() {
  std::unordered_map<Stream, std::shared_ptr<HostStream>> streams;
  std::shared_ptr<HostStream> default_stream;
  {
    std::lock_guard lock(mutex_);
    streams.swap(streams_);
    default_stream.swap(default_);
  }
  for (auto& [value, stream] : streams) stream->stop_and_join();
  if (default_stream) default_stream->stop_and_join();
}

Stream HostStreams::create() {
  auto stream = std::make_shared<HostStream>();
  const Stream value = as_stream(stream.get());
  std::lock_guard lock(mutex_);
  streams_.emplace(value, std::move(stream));
  return value;
}

void HostStreams::destroy(Stream stream) {
  if (stream == nullptr) {
    throw InvalidArgumentError("host stream: the default stream (0) cannot be destroyed");
  }
  std::shared_ptr<HostStream> s;
  {
    std::lock_guard lock(mutex_);
    auto it = streams_.find(stream);
    if (it == streams_.end()) {
      throw InvalidArgumentError("host stream: destroy of unknown stream " + stream_text(stream));
    }
    if (it->second->is_worker_thread()) {
      throw InvalidArgumentError("host stream: a stream cannot destroy itself from its own work");
    }
    s = std::move(it->second);
    streams_.erase(it);
  }
  s->stop_and_join();
}

std::shared_ptr<HostStream> HostStreams::find(Stream stream) {
  std::lock_guard lock(mutex_);
  if (stream == nullptr) {
    if (!default_) default_ = std::make_shared<HostStream>();
    return default_;
  }
  auto it = streams_.find(stream);
  if (it == streams_.end()) {
    throw InvalidArgumentError("host stream: unknown stream " + stream_text(stream) +
                               " (not made by this backend's HostStreams, or destroyed)");
  }
  return it->second;
}

void HostStreams::enqueue(Stream stream, std::function<void()> work) {
  find(stream)->enqueue(std::move(work));
}

void HostStreams::synchronize(Stream stream) {
  std::shared_ptr<HostStream> s = find(stream);
  if (s->is_worker_thread()) {
    throw InvalidArgumentError("host stream: a stream cannot synchronize itself from its own work");
  }
  s->synchronize();
}

std::size_t HostStreams::live_streams() const {
  std::lock_guard lock(mutex_);
  return streams_.size();
}

bool HostStreams::exists(Stream stream) const {
  if (stream == nullptr) return true;
  std::lock_guard lock(mutex_);
  return streams_.count(stream) != 0;
}

void HostStreams::synchronize_all() {
  std::vector<std::shared_ptr<HostStream>> all;
  {
    std::lock_guard lock(mutex_);
    all.reserve(streams_.size() + 1);
    for (const auto& [value, stream] : streams_) all.push_back(stream);
    if (default_) all.push_back(default_);
  }
  for (const std::shared_ptr<HostStream>& s : all) {
    if (!s->is_worker_thread()) s->wait_for(s->ticket());
  }
}

}  // namespace vmm
