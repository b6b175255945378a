// Many threads against a pool smaller than the thread count, on the real server, with short
// lifetimes and random discards and dirty returns: run under ThreadSanitizer in CI.

#include <atomic>
#include <thread>
#include <vector>

#include "server.hpp"

namespace pqxxpool::itest {
namespace {

TEST(server_stress, sixteen_threads_on_a_pool_of_four) {
  pool_config cfg = app_config("itest_stress");
  cfg.max_size = 4;
  cfg.min_idle = 2;
  cfg.max_lifetime = 800ms;
  cfg.validate_after_idle = 0ms;
  cfg.acquire_timeout = 60s;
  pool p{cfg};
  p.wait_ready(20s);
  constexpr int threads = 16;
  constexpr int iterations = 60;
  std::atomic<int> failed{0};
  std::atomic<int> in_hand{0};
  std::atomic<int> max_in_hand{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      for (int i = 0; i < iterations; ++i) {
        try {
          lease c = p.acquire();
          const int now = ++in_hand;
          int seen = max_in_hand.load();
          while (now > seen && !max_in_hand.compare_exchange_weak(seen, now)) {
          }
          {
            pqxx::nontransaction tx{*c};  // ended before the lease: discard() closes the connection
            if ((t + i) % 9 == 0) tx.exec("BEGIN");  // returned dirty: the pool rolls it back
            tx.exec("SELECT 1");
          }
          --in_hand;
          if ((t + i) % 17 == 0) c.discard();
        } catch (const std::exception& e) {
          ++failed;
          ADD_FAILURE() << e.what();
        }
      }
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_LE(max_in_hand.load(), 4);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.acquires, static_cast<std::uint64_t>(threads * iterations));
  EXPECT_GT(s.rollbacks, 0u);
  EXPECT_GT(s.closed_discarded, 0u);
  EXPECT_LE(s.total, 4u);
  p.close();
  EXPECT_TRUE(eventually([] { return backends("itest_stress") == 0; }, 30s, 20ms));
}

}  // namespace
}  // namespace pqxxpool::itest
