#pragma once
// Test doubles for the pool core: a fake clock that moves only when told, and a fake connector
// whose connections can be made to fail, break, or come back dirty.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <spdlog/logger.h>

#include "core/clock.hpp"
#include "core/connector.hpp"
#include "core/pool_core.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::test {

using core::duration;
using core::time_point;
using namespace std::chrono_literals;

/// A clock that stands still until advance(). Every wait in the core uses the pool's single
/// mutex; the fake records it and notifies registered waiters while holding it, so a wake-up is
/// never lost and a waiter's condition variable is never touched after it left its wait.
class fake_clock final : public core::clock {
 public:
  time_point now() noexcept override { return time_point(duration(m_now.load())); }
  time_point coarse_now() noexcept override { return now() - duration(m_coarse_lag.load()); }
  duration coarse_lag() const noexcept override { return duration(m_coarse_lag.load()); }
  /// Makes coarse_now() lag now() by d, as CLOCK_MONOTONIC_COARSE lags by up to a tick. Default 0.
  void set_coarse_lag(duration d) noexcept { m_coarse_lag.store(d.count()); }

  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk, time_point deadline) override {
    {
      std::lock_guard<std::mutex> g(m_reg);
      m_pool_mutex = lk.mutex();
    }
    if (now() >= deadline) return;
    ++m_blocking_waits;
    entry e{&cv, deadline};
    m_waits.push_back(&e);  // guarded by the pool mutex (held by lk)
    cv.wait(lk);
    m_waits.erase(std::find(m_waits.begin(), m_waits.end(), &e));
  }

  /// Moves time forward and wakes every waiter.
  void advance(duration d) { move_time(d, true); }

  /// Moves time forward and wakes only the waiters whose deadline has come, as a real clock
  /// would (advance() wakes every waiter, so background threads look at the pool each time).
  void advance_waking_due(duration d) { move_time(d, false); }

  /// How many times a thread has started to block here (any deadline): a test that must know a
  /// background thread has looked at the pool again waits for this to grow.
  int blocking_waits() const noexcept { return m_blocking_waits.load(); }

  /// Every thread of a test runs on CPU 0 unless it pins itself elsewhere (the CPU grace of
  /// pool_core::park() compares a returner's CPU with the oldest waiter's).
  int cpu_of_caller() noexcept override { return t_cpu; }
  static void set_cpu_of_this_thread(int cpu) noexcept { t_cpu = cpu; }

  /// How many threads are blocked waiting for exactly this deadline.
  int waiters_until(time_point deadline) {
    std::mutex* mu = nullptr;
    {
      std::lock_guard<std::mutex> g(m_reg);
      mu = m_pool_mutex;
    }
    if (mu == nullptr) return 0;
    std::lock_guard<std::mutex> g(*mu);
    return static_cast<int>(std::count_if(m_waits.begin(), m_waits.end(), [&](entry* e) { return e->deadline == deadline; }));
  }

  /// Whether some thread is blocked waiting for exactly this deadline.
  bool has_waiter_until(time_point deadline) {
    std::mutex* mu = nullptr;
    {
      std::lock_guard<std::mutex> g(m_reg);
      mu = m_pool_mutex;
    }
    if (mu == nullptr) return false;
    std::lock_guard<std::mutex> g(*mu);
    return std::any_of(m_waits.begin(), m_waits.end(), [&](entry* e) { return e->deadline == deadline; });
  }

 private:
  void move_time(duration d, bool wake_all) {
    std::mutex* mu = nullptr;
    {
      // No waiter has registered its mutex yet: move time under m_reg, which a first waiter
      // takes before it reads the time, so it cannot miss this step.
      std::lock_guard<std::mutex> g(m_reg);
      mu = m_pool_mutex;
      if (mu == nullptr) {
        m_now += d.count();
        return;
      }
    }
    std::lock_guard<std::mutex> g(*mu);
    m_now += d.count();
    for (entry* e : m_waits)
      if (wake_all || e->deadline <= now()) e->cv->notify_all();
  }

  struct entry {
    std::condition_variable* cv;
    time_point deadline;
  };
  static inline thread_local int t_cpu = 0;
  std::atomic<duration::rep> m_coarse_lag{0};
  std::atomic<duration::rep> m_now{std::chrono::duration_cast<duration>(std::chrono::hours(1000)).count()};
  std::atomic<int> m_blocking_waits{0};
  std::mutex m_reg;
  std::mutex* m_pool_mutex = nullptr;  // guarded by m_reg
  std::vector<entry*> m_waits;         // guarded by *m_pool_mutex
};

/// Shared switches of one fake connection.
struct fake_state {
  std::atomic<bool> broken{false};
  std::atomic<bool> dirty{false};
  std::atomic<bool> validate_ok{true};
  // validate() is cut by its deadline with the round trip still in flight (a slow network): it
  // returns false and validation_in_flight() true; finish_validation() then returns finish_ok.
  std::atomic<bool> validate_in_flight{false};
  std::atomic<bool> finish_ok{true};
  std::atomic<int> finishes{0};
  std::atomic<int> validations{0};
  std::atomic<int> resets{0};
  std::atomic<bool> reset_fails{false};  // reset() fails as a throwing reset hook would
  std::atomic<bool> closed{false};  // the pool closed (destroyed) this connection
  // Called inside validate() (outside the pool's lock), e.g. to look at stats() mid-round-trip.
  // Set before the validation it is for; the pool's lock orders that write before the call.
  std::function<void()> on_validate;
  int id = 0;
};

class fake_connector;

class fake_physical final : public core::physical {
 public:
  fake_physical(std::shared_ptr<fake_state> st, std::atomic<int>& live) : m_state(std::move(st)), m_live(live) {
    ++m_live;
  }
  ~fake_physical() override {
    m_state->closed = true;
    --m_live;
  }
  core::return_state check_return() noexcept override {
    if (m_state->broken) return core::return_state::broken;
    return m_state->dirty ? core::return_state::dirty : core::return_state::clean;
  }
  bool validate(time_point) noexcept override {
    ++m_state->validations;
    if (m_state->on_validate) m_state->on_validate();
    m_in_flight = !m_state->broken && m_state->validate_in_flight;
    return !m_state->broken && m_state->validate_ok && !m_in_flight;
  }
  bool validation_in_flight() noexcept override { return m_in_flight; }
  bool finish_validation(time_point) noexcept override {
    ++m_state->finishes;
    m_in_flight = false;
    return !m_state->broken && m_state->finish_ok;
  }
  bool reset(time_point, const std::function<void(connection&)>&) noexcept override {
    ++m_state->resets;
    m_state->dirty = false;
    return !m_state->broken && !m_state->reset_fails;
  }
  std::string failure() override { return m_state->reset_fails ? "the reset hook threw: boom" : ""; }
  connection* user_connection() noexcept override { return nullptr; }
  int backend_pid() noexcept override { return 1000 + m_state->id; }
  fake_state& state() { return *m_state; }

 private:
  std::shared_ptr<fake_state> m_state;
  std::atomic<int>& m_live;
  bool m_in_flight = false;  // the core calls one member at a time
};

/// Connects instantly unless told to fail, to hold connects at a gate, or to take time.
class fake_connector final : public core::connector {
 public:
  /// Fake time each successful connect takes (advance() while it runs); set before connects.
  duration takes{};

  explicit fake_connector(std::shared_ptr<fake_clock> clk) : m_clock(std::move(clk)) {}
  ~fake_connector() override {
    if (gone) *gone = true;
  }
  fake_connector(const fake_connector&) = delete;
  fake_connector& operator=(const fake_connector&) = delete;

  /// Set when the connector is destroyed, i.e. when the pool core that owns it is deleted (set
  /// before the pool starts, in fake_pool's setup): a test can tell a core that was never freed.
  std::shared_ptr<std::atomic<bool>> gone;

  std::unique_ptr<core::physical> connect(const core::connect_limits&) override {
    std::unique_lock<std::mutex> lk(m_mu);
    const int index = attempts++;
    attempt_times.push_back(m_clock->now());
    ++m_in_flight;
    max_in_flight = std::max(max_in_flight, m_in_flight);
    m_cv.wait(lk, [&] { return !m_gate_closed || m_released.count(index) != 0; });
    --m_in_flight;
    if (fail) throw connect_error(fail_message, fail_sqlstate);
    if (takes > duration::zero()) {  // a slow connect: fake time passes while it runs
      lk.unlock();
      m_clock->advance(takes);
      lk.lock();
    }
    auto st = std::make_shared<fake_state>();
    st->id = ++m_next_id;
    states.push_back(st);
    return std::make_unique<fake_physical>(st, live);
  }

  void close_gate() {
    std::lock_guard<std::mutex> g(m_mu);
    m_gate_closed = true;
  }
  void open_gate() {
    std::lock_guard<std::mutex> g(m_mu);
    m_gate_closed = false;
    m_cv.notify_all();
  }
  /// Lets one attempt through a closed gate: the index-th connect() call (from 0).
  void release(int index) {
    std::lock_guard<std::mutex> g(m_mu);
    m_released.insert(index);
    m_cv.notify_all();
  }
  int in_flight() {
    std::lock_guard<std::mutex> g(m_mu);
    return m_in_flight;
  }
  /// The most connects that were ever in flight at once.
  int max_in_flight_so_far() {
    std::lock_guard<std::mutex> g(m_mu);
    return max_in_flight;
  }
  /// Switches of every connection made so far.
  std::vector<std::shared_ptr<fake_state>> made() {
    std::lock_guard<std::mutex> g(m_mu);
    return states;
  }
  std::vector<time_point> attempts_so_far() {
    std::lock_guard<std::mutex> g(m_mu);
    return attempt_times;
  }
  void set_failure(bool on, std::string message = "FATAL:  28P01: password authentication failed",
                   std::string sqlstate = "28P01") {
    std::lock_guard<std::mutex> g(m_mu);
    fail = on;
    fail_message = std::move(message);
    fail_sqlstate = std::move(sqlstate);
  }

  std::atomic<int> live{0};  // open fake connections
  std::atomic<int> attempts{0};
 private:
  int max_in_flight = 0;  // guarded by m_mu
  std::shared_ptr<fake_clock> m_clock;
  std::mutex m_mu;
  std::condition_variable m_cv;
  bool m_gate_closed = false;
  std::set<int> m_released;  // attempts let through the closed gate
  int m_in_flight = 0;
  int m_next_id = 0;
  bool fail = false;
  std::string fail_message, fail_sqlstate;
  std::vector<time_point> attempt_times;
  std::vector<std::shared_ptr<fake_state>> states;  // guarded by m_mu
};

/// Waits (bounded by 20 s of real time) until pred() holds; the bound only turns a hang into a
/// failure. It polls with yield, never sleeps: no timing is asserted.
inline bool eventually(const std::function<bool()>& pred) {
  const auto give_up = std::chrono::steady_clock::now() + 20s;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

inline fake_state& state_of(const lease& l) {
  return static_cast<fake_physical*>(core::pool_core::physical_of(l))->state();
}

/// A pool core over the fakes, deleted through destroy_from_owner like pqxxpool::pool does.
struct fake_pool {
  std::shared_ptr<fake_clock> clock = std::make_shared<fake_clock>();
  fake_connector* connector = nullptr;
  core::pool_core* core = nullptr;

  /// setup runs on the connector before the pool's threads start (e.g. to make connects fail).
  explicit fake_pool(pool_config cfg, const std::function<void(fake_connector&)>& setup = {},
                     std::uint64_t seed = 42) {
    cfg.validate();
    // Quiet unless the test brings its own logger: a logger without sinks drops every line.
    if (!cfg.logger) cfg.logger = std::make_shared<spdlog::logger>("quiet");
    auto c = std::make_unique<fake_connector>(clock);
    connector = c.get();
    if (setup) setup(*c);
    core = new core::pool_core(std::move(cfg), std::move(c), clock, seed);
  }
  ~fake_pool() {
    if (core != nullptr) core->destroy_from_owner();
  }
  fake_pool(const fake_pool&) = delete;
  fake_pool& operator=(const fake_pool&) = delete;
  pool_stats stats() const { return core->stats(); }
};

}  // namespace pqxxpool::test
