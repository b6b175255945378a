#pragma once
// The pool core's notion of time. Injected so that lifetimes, idle reaping, backoff and timeouts
// are unit-tested with a fake clock in microseconds of real time.

#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>

namespace pqxxpool::core {

using time_point = std::chrono::steady_clock::time_point;
using duration = std::chrono::steady_clock::duration;

/// Thread-safety: every member may be called from any thread at once.
class clock {
 public:
  virtual ~clock() = default;
  /// Precise monotonic time (≈ 26 ns here). Used off the hot path and for measured waits.
  virtual time_point now() noexcept = 0;
  /// Monotonic time that may lag now() by up to coarse_lag() (CLOCK_MONOTONIC_COARSE, ≈ 4 ns).
  /// Used on the hot path; comparisons against deadlines add coarse_lag() to stay strict.
  virtual time_point coarse_now() noexcept = 0;
  /// How far coarse_now() may lag now().
  virtual duration coarse_lag() const noexcept = 0;
  /// Blocks on cv (whose mutex lk holds) until notified, spuriously woken, or `deadline` has
  /// passed on this clock. time_point::max() means no deadline. The caller re-checks its predicate.
  virtual void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk,
                          time_point deadline) = 0;
  /// The CPU the calling thread runs on now (sched_getcpu(), a few ns through rseq), or -1 if
  /// unknown. Not time, but the same kind of seam: a hint for the hand-off (see
  /// pool_core::park()) that unit tests pin per thread.
  virtual int cpu_of_caller() noexcept;
};

/// The real clock: steady_clock and CLOCK_MONOTONIC_COARSE (the same epoch on Linux).
std::shared_ptr<clock> make_system_clock();

}  // namespace pqxxpool::core
