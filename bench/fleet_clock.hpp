#pragma once
// fleet_clock.hpp — a fake clock that drives many real pool cores at once, with a quiescence
// barrier, for the fleet simulation (fleet_sim.cpp).
//
// What it guarantees: time moves only in advance_to(), which the driver calls only once every
// pool thread is blocked in wait_until() with no wake-up pending (wait_quiescent()). So all the
// work that one instant of fake time causes (a connection expiring, the connect worker it wakes,
// the maintenance sweep that connect wakes, …) happens at that instant, whatever the real
// scheduling, and nothing is done late because a thread had not run yet when time moved.
//
// How it knows that nothing is pending: a thread blocked in wait_until() is "registered" on its
// condition variable; the pool core wakes its threads with notify_one/notify_all on those same
// condition variables (always under the pool's mutex). fleet_sim.cpp interposes
// pthread_cond_signal/pthread_cond_broadcast (which std::condition_variable calls) and reports
// each one here before it happens (note_signal): a signal on a condition variable with registered
// waiters marks one of them (all of them for a broadcast) as woken-but-not-yet-running. The
// barrier holds when registered == expected thread count and pending == 0. A thread that wakes
// deregisters (and clears one pending mark on its condition variable) under the pool mutex.
//
// Unlike test/unit/fakes.hpp's fake_clock (one pool, notify_all on every advance), advance_to()
// wakes only the condition variables of waiters whose deadline has passed (waiters are kept in
// deadline order), so a step costs a few wake-ups, not one per thread of the fleet.
//
// The caller's obligations: add_threads() before constructing a pool, remove_threads() after its
// threads are joined; advance_to() only after wait_quiescent(); only pool threads call
// wait_until(). Every member is thread-safe.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/clock.hpp"

namespace pqxxpool::fleet {

using core::duration;
using core::time_point;

class sim_clock final : public core::clock {
 public:
  explicit sim_clock(time_point start) : m_now(start.time_since_epoch().count()) {}

  time_point now() noexcept override { return time_point(duration(m_now.load(std::memory_order_acquire))); }
  time_point coarse_now() noexcept override { return now(); }
  duration coarse_lag() const noexcept override { return duration::zero(); }

  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk, time_point deadline) override {
    const void* key = cv.native_handle();
    entry e{&cv, lk.mutex()};
    bool tell_driver = false;
    {
      std::lock_guard<std::mutex> g(m_mu);
      if (now() >= deadline) return;
      ++m_cvs[key].waiting;
      if (deadline != time_point::max()) {
        e.pos = m_deadlines.emplace(deadline, &e);
        e.timed = true;
      }
      ++m_blocked;
      tell_driver = quiescent_locked();
    }
    // Still holding the pool mutex: nobody can signal cv (every signal is sent under it) before
    // cv.wait() releases it, so registering first loses no wake-up.
    if (tell_driver) m_quiet_cv.notify_one();
    cv.wait(lk);
    std::lock_guard<std::mutex> g(m_mu);
    auto it = m_cvs.find(key);
    cv_state& st = it->second;
    --st.waiting;
    if (st.pending > 0) {
      --st.pending;
      --m_pending;
    }
    if (st.waiting == 0) m_cvs.erase(it);
    if (e.timed) m_deadlines.erase(e.pos);
    --m_blocked;
    ++m_wakeups;
  }

  /// Called (through the interposer) before every pthread_cond_signal/broadcast in the process.
  /// Never blocks beyond m_mu. Thread-safe.
  void note_signal(const void* cond, bool all) noexcept {
    std::lock_guard<std::mutex> g(m_mu);
    auto it = m_cvs.find(cond);
    if (it == m_cvs.end()) return;
    cv_state& st = it->second;
    const std::size_t avail = st.waiting - st.pending;
    const std::size_t add = all ? avail : std::min<std::size_t>(avail, 1);
    st.pending += add;
    m_pending += add;
  }

  /// Pool threads that will exist (call before a pool is constructed). Thread-safe.
  void add_threads(std::size_t n) {
    std::lock_guard<std::mutex> g(m_mu);
    m_expected += n;
  }
  /// Pool threads that have ended (call after a pool's threads are joined). Thread-safe.
  void remove_threads(std::size_t n) {
    std::lock_guard<std::mutex> g(m_mu);
    m_expected -= n;
  }

  /// Blocks until every expected pool thread is blocked in wait_until() with no wake-up pending.
  /// A barrier that does not hold within `limit` of real time is a bug (a pool thread blocked
  /// outside the clock): the state is printed and the program aborts.
  void wait_quiescent(std::chrono::seconds limit = std::chrono::seconds(300)) {
    std::unique_lock<std::mutex> lk(m_mu);
    if (!m_quiet_cv.wait_for(lk, limit, [&] { return quiescent_locked(); })) {
      std::fprintf(stderr, "fleet_sim: no quiescence after %lld s: %zu of %zu threads blocked, %zu wake-ups pending\n",
                   static_cast<long long>(limit.count()), m_blocked, m_expected, m_pending);
      std::abort();
    }
  }

  /// The earliest deadline a blocked thread waits for, if any. Thread-safe.
  std::optional<time_point> next_deadline() {
    std::lock_guard<std::mutex> g(m_mu);
    if (m_deadlines.empty()) return std::nullopt;
    return m_deadlines.begin()->first;
  }

  /// Sets the time to t (≥ now) and wakes every condition variable with a waiter whose deadline
  /// has passed (notify_all: the core re-checks its predicates, so a co-waiter woken early just
  /// waits again). Call only when quiescent; follow with wait_quiescent().
  void advance_to(time_point t) {
    std::vector<std::pair<std::mutex*, std::condition_variable*>> wake;
    {
      std::lock_guard<std::mutex> g(m_mu);
      if (t > now()) m_now.store(t.time_since_epoch().count(), std::memory_order_release);
      for (auto it = m_deadlines.begin(); it != m_deadlines.end() && it->first <= t; ++it) {
        const entry* e = it->second;
        cv_state& st = m_cvs.at(e->cv->native_handle());
        if (st.pending < st.waiting) {
          m_pending += st.waiting - st.pending;
          st.pending = st.waiting;
          wake.emplace_back(e->mu, e->cv);
        }
      }
      ++m_steps;
    }
    // The condition variables are members of live pool cores (the driver destroys pools only
    // between steps), so they outlive this loop. Notified under the pool mutex, as the core does.
    for (auto& [mu, cv] : wake) {
      std::lock_guard<std::mutex> g(*mu);
      cv->notify_all();
    }
  }

  /// Steps taken and thread wake-ups seen so far (for the report). Thread-safe.
  std::pair<std::uint64_t, std::uint64_t> counters() {
    std::lock_guard<std::mutex> g(m_mu);
    return {m_steps, m_wakeups};
  }

 private:
  struct entry {
    std::condition_variable* cv;
    std::mutex* mu;  // the pool mutex held by the waiter
    std::multimap<time_point, entry*>::iterator pos{};
    bool timed = false;
  };
  struct cv_state {
    std::size_t waiting = 0;  // threads blocked on this condition variable
    std::size_t pending = 0;  // of them: signalled, not yet running
  };
  bool quiescent_locked() const noexcept { return m_blocked == m_expected && m_pending == 0; }

  std::atomic<duration::rep> m_now;
  std::mutex m_mu;
  std::condition_variable m_quiet_cv;  // the driver waits here; never registered, so not tracked
  // guarded by m_mu:
  std::unordered_map<const void*, cv_state> m_cvs;  // keyed by the pthread_cond_t
  std::multimap<time_point, entry*> m_deadlines;    // finite deadlines of blocked threads
  std::size_t m_blocked = 0;
  std::size_t m_pending = 0;
  std::size_t m_expected = 0;
  std::uint64_t m_steps = 0;
  std::uint64_t m_wakeups = 0;
};

}  // namespace pqxxpool::fleet
