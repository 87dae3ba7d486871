// HostStream: one stream of the host backend - a worker thread and a FIFO
// queue (host_backend.cpp's opening comment explains tickets and fences).
// Used by HostStreams (host_streams.cpp) and by HostBackend's fences.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "vmmalloc/errors.hpp"

namespace vmm {

class HostStream {
 public:
  HostStream() : worker_([this] { run(); }) {}
  ~HostStream() { stop_and_join(); }
  HostStream(const HostStream&) = delete;
  HostStream& operator=(const HostStream&) = delete;

  // Throws InvalidArgumentError once the stream is being destroyed (the
  // work would never run).
  void enqueue(std::function<void()> work) {
    {
      std::lock_guard lock(mutex_);
      if (stopping_) throw InvalidArgumentError("host stream: enqueue on a destroyed stream");
      queue_.push_back(std::move(work));
      ++enqueued_;
    }
    work_cv_.notify_one();
  }

  // Ticket of the last work queued so far: complete when completed_ reaches it.
  std::uint64_t ticket() {
    std::lock_guard lock(mutex_);
    return enqueued_;
  }
  bool reached(std::uint64_t ticket) {
    std::lock_guard lock(mutex_);
    return completed_ >= ticket;
  }
  void wait_for(std::uint64_t ticket) {
    std::unique_lock lock(mutex_);
    done_cv_.wait(lock, [&] { return completed_ >= ticket; });
  }

  void synchronize() {
    std::exception_ptr error;
    {
      std::unique_lock lock(mutex_);
      const std::uint64_t ticket = enqueued_;
      done_cv_.wait(lock, [&] { return completed_ >= ticket; });
      error = std::exchange(error_, nullptr);
    }
    if (error) std::rethrow_exception(error);
  }

  bool is_worker_thread() const { return std::this_thread::get_id() == worker_.get_id(); }

  // Lets the worker drain the queue, then joins it. Idempotent.
  void stop_and_join() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    work_cv_.notify_one();
    if (worker_.joinable()) worker_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      work_cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      std::function<void()> work = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      std::exception_ptr error;
      try {
        work();
      } catch (...) {
        error = std::current_exception();
      }
      work = nullptr;  // destroy captures before the work counts as done
      lock.lock();
      if (error && !error_) error_ = error;
      ++completed_;
      done_cv_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_;  // worker: work queued or stopping
  std::condition_variable done_cv_;  // waiters: completed_ advanced
  std::deque<std::function<void()>> queue_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t completed_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
  std::thread worker_;  // last: starts once the members above exist
};

}  // namespace vmm
