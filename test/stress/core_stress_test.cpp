// Many threads against a core smaller than the thread count (fake connections, real clock):
// run under ThreadSanitizer in CI. Checks the invariants a user can observe.

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "fakes.hpp"

namespace pqxxpool::test {
namespace {

TEST(core_stress, many_threads_small_pool_invariants_hold) {
  pool_config cfg;
  cfg.max_size = 4;
  cfg.min_idle = 1;
  cfg.validate_after_idle = std::chrono::milliseconds(0);  // a validation on every acquire
  cfg.max_lifetime = std::chrono::milliseconds(5);          // constant recycling
  // (Below the 100 ms pool_config::validate() demands, on purpose: most connections count as
  // expired within a coarse-clock tick of opening, so the core churns through them; the core
  // itself does not validate.)
  cfg.lifetime_jitter = 0.5;
  auto fake_clk = std::make_shared<fake_clock>();
  auto connector = std::make_unique<fake_connector>(fake_clk);
  auto* core = new core::pool_core(cfg, std::move(connector), core::make_system_clock(), 7);

  constexpr int threads = 16;
  constexpr int iterations = 400;
  std::atomic<int> in_hand{0};
  std::atomic<int> max_in_hand{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < iterations; ++i) {
        try {
          lease l = (i % 7 == 0) ? core->try_acquire() : core->acquire(std::chrono::seconds(30));
          if (!l) continue;
          const int now = ++in_hand;
          int seen = max_in_hand.load();
          while (now > seen && !max_in_hand.compare_exchange_weak(seen, now)) {
          }
          if ((i + t) % 11 == 0) state_of(l).dirty = true;
          --in_hand;
          if ((i + t) % 13 == 0) l.discard();
          if (i % 97 == 0) core->evict_all();
          const pool_stats s = core->stats();
          if (s.total > s.max_size || s.total != s.idle + s.in_use + s.connecting) ++failures;
        } catch (const std::exception&) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(max_in_hand.load(), 4);
  const pool_stats s = core->stats();
  EXPECT_GT(s.acquires, 0u);
  EXPECT_EQ(s.in_use + s.idle + s.connecting, s.total);
  core->destroy_from_owner();
}

// A full pool with one connection of headroom (recycle_t3's shape) and replacements that hang
// now and then: early retirements in expiry order and connections serving on into their jitter
// while a replacement connects, raced by real threads (the unit tests cover their logic).
TEST(core_stress, full_pool_with_late_replacements_invariants_hold) {
  pool_config cfg;
  cfg.max_size = 4;
  cfg.min_idle = 4;                                    // always full: early retirements
  cfg.max_lifetime = std::chrono::milliseconds(100);   // the shortest allowed: recycling
  cfg.lifetime_jitter = 0.5;                           // room to serve on into
  cfg.validate_after_idle = std::chrono::milliseconds(1000);
  auto fake_clk = std::make_shared<fake_clock>();
  auto connector = std::make_unique<fake_connector>(fake_clk);
  fake_connector* gate = connector.get();
  auto* core = new core::pool_core(cfg, std::move(connector), core::make_system_clock(), 11);

  constexpr int threads = 3;
  constexpr std::uint64_t retirements = 20;  // run until this many expired (real time passes)
  constexpr int cap = 50'000'000;             // per thread: turns a stalled pool into a failure
  std::atomic<int> failures{0};
  std::atomic<int> running{threads};
  // Holds connects at the gate for stretches of the workers' progress (no sleeping: it yields).
  std::thread toggler([&] {
    for (unsigned n = 0; running.load() > 0; ++n) {
      if (n % 2 == 0)
        gate->close_gate();
      else
        gate->open_gate();
      for (int k = 0; k < 200 && running.load() > 0; ++k) std::this_thread::yield();
    }
    gate->open_gate();
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < cap; ++i) {
        try {
          lease l = core->acquire(std::chrono::seconds(30));
          if (!l) ++failures;
          const pool_stats s = core->stats();
          if (s.total > s.max_size || s.total != s.idle + s.in_use + s.connecting) ++failures;
          if (s.closed_max_lifetime >= retirements) break;
        } catch (const std::exception&) {
          ++failures;
        }
      }
      --running;
    });
  }
  for (auto& th : workers) th.join();
  toggler.join();
  EXPECT_EQ(failures.load(), 0);
  const pool_stats s = core->stats();
  EXPECT_GE(s.closed_max_lifetime, retirements);
  EXPECT_EQ(s.in_use + s.idle + s.connecting, s.total);
  core->destroy_from_owner();
}

// The real clock, but each worker says which CPU it runs on (half of them 0, half 1, whatever
// the scheduler does), so that the CPU grace's cases (a quick returner on another CPU than the
// oldest waiter, past its window) come up in every run and race the hand-offs, drains and look_at
// timers for real.
class two_cpu_clock final : public core::clock {
 public:
  time_point now() noexcept override { return m_real->now(); }
  time_point coarse_now() noexcept override { return m_real->coarse_now(); }
  duration coarse_lag() const noexcept override { return m_real->coarse_lag(); }
  void wait_until(std::condition_variable& cv, std::unique_lock<std::mutex>& lk, time_point deadline) override {
    m_real->wait_until(cv, lk, deadline);
  }
  int cpu_of_caller() noexcept override { return t_cpu; }
  static inline thread_local int t_cpu = 0;

 private:
  std::shared_ptr<core::clock> m_real = core::make_system_clock();
};

TEST(core_stress, quick_returners_on_two_cpus_are_all_served) {
  pool_config cfg;
  cfg.max_size = 4;
  cfg.min_idle = 4;  // at its size: quick returners park
  cfg.validate_after_idle = std::chrono::milliseconds(1000);
  cfg.fairness_window = std::chrono::microseconds(1000);  // grace 100 µs
  auto fake_clk = std::make_shared<fake_clock>();
  auto connector = std::make_unique<fake_connector>(fake_clk);
  auto* core = new core::pool_core(cfg, std::move(connector), std::make_shared<two_cpu_clock>(), 13);
  core->wait_ready(std::chrono::seconds(30));

  constexpr int threads = 16;
  constexpr int iterations = 5000;
  std::atomic<int> in_hand{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      two_cpu_clock::t_cpu = t % 2;
      for (int i = 0; i < iterations; ++i) {
        try {
          lease l = core->acquire(std::chrono::seconds(30));  // a timeout would be a stranded waiter
          if (!l || ++in_hand > 4) ++failures;
          std::this_thread::yield();  // a hold during which others run (and find the pool busy)
          --in_hand;
        } catch (const std::exception&) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : workers) th.join();
  EXPECT_EQ(failures.load(), 0);
  const pool_stats s = core->stats();
  EXPECT_EQ(s.acquires, static_cast<std::uint64_t>(threads) * iterations);
  EXPECT_GT(s.waited_acquires, 0u) << "nobody waited: the case did not come up";
  EXPECT_EQ(s.acquire_timeouts, 0u);
  EXPECT_EQ(s.total, 4u);
  EXPECT_EQ(s.idle, 4u) << "a connection was lost";
  core->destroy_from_owner();
}

}  // namespace
}  // namespace pqxxpool::test
