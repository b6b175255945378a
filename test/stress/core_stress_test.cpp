// Many threads against a core smaller than the thread count (fake connections, real clock):
// run under ThreadSanitizer in CI. Checks the invariants a user can observe.

#include <atomic>
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

}  // namespace
}  // namespace pqxxpool::test
