// The pool behind PgBouncer in transaction mode (one server connection, query_wait_timeout 2 s),
// which test/support/pgbouncer_test.sh starts in front of the test cluster: what docs/pgbouncer.md
// tells users works, and the failures it describes read as it says.

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "server.hpp"

namespace pqxxpool::itest {
namespace {

pool_config bouncer_config() {
  pool_config cfg;
  cfg.conninfo = env("PQXXPOOL_TEST_PGBOUNCER_CONNINFO");
  cfg.acquire_timeout = 20s;
  return cfg;
}

std::string joined(const std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt>& ring) {
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  return log;
}

// Parameters without a statement name (exec_params: libpq's unnamed statement, prepared and run
// in one round trip) are what transaction mode allows; the pool's own traffic (startup
// parameters, validation, ROLLBACK) passes too.
TEST(pgbouncer, transaction_mode_serves_threads_with_unnamed_statements) {
  pool_config cfg = bouncer_config();
  cfg.max_size = 4;
  cfg.min_idle = 4;
  cfg.validate_after_idle = 0ms;  // validate on every acquire: the empty query through PgBouncer
  pool p{cfg};
  p.wait_ready(20s);
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&p, &ok, &failed, t] {
      for (int i = 0; i < 50; ++i) {
        try {
          lease c = p.acquire();
          pqxx::work tx{*c};
          const int n = t * 1000 + i;
          if (tx.exec_params("SELECT $1::int + 1", n)[0][0].as<int>() == n + 1) ++ok;
          tx.commit();
        } catch (const std::exception& e) {
          log_caught(e);
          ++failed;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0) << "see the log for the errors";
  EXPECT_EQ(ok.load(), 200);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.acquires, 200u);
  EXPECT_EQ(s.closed_broken, 0u);
  EXPECT_EQ(s.closed_validation_failed, 0u);
  EXPECT_EQ(s.connect_errors, 0u);
}

// PgBouncer ends a client whose query waited query_wait_timeout for a server connection. The
// exception the user gets is libpqxx's; the pool's warning carries PgBouncer's reason.
TEST(pgbouncer, a_client_pgbouncer_ends_is_logged_with_its_reason) {
  pool_config cfg = bouncer_config();
  cfg.max_size = 2;
  cfg.min_idle = 2;
  cfg.validate_after_idle = std::chrono::hours(1);  // the user's query meets the wait, not a validation
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = ring_logger("itest_pgbouncer_wait", ring);
  pool p{cfg};
  p.wait_ready(20s);
  lease holder = p.acquire();
  pqxx::work held{*holder};
  held.exec("SELECT 1");  // the only server connection stays with this transaction
  {
    lease waiter = p.acquire();
    EXPECT_THROW(
        {
          pqxx::nontransaction tx{*waiter};
          tx.exec("SELECT 1");  // queued in PgBouncer until query_wait_timeout ends this client
        },
        pqxx::failure);
  }
  held.commit();
  EXPECT_EQ(p.stats().closed_broken, 1u);
  const std::string log = joined(ring);
  const std::size_t why = log.find(": the connection was lost: ");
  ASSERT_NE(why, std::string::npos) << log;
  EXPECT_NE(log.find("query_wait_timeout", why), std::string::npos) << log;
}

// PgBouncer refuses the libpq `options` startup parameter on every connect; with connect_hint as
// the pool's error_hint, wait_ready's error says what to do instead.
TEST(pgbouncer, the_options_parameter_is_refused_with_a_hint) {
  pool_config cfg = bouncer_config();
  cfg.max_size = 1;
  cfg.min_idle = 1;
  cfg.params["options"] = "-c default_transaction_read_only=on";
  cfg.error_hint = [](const std::string& message) { return connect_hint(message); };
  pool p{cfg};
  try {
    p.wait_ready(2s);
    ADD_FAILURE() << "wait_ready returned: PgBouncer accepted options";
  } catch (const connect_error& e) {
    log_caught(e);
    const std::string what = e.what();
    EXPECT_NE(what.find("unsupported startup parameter"), std::string::npos) << what;
    EXPECT_NE(what.find("ALTER ROLE"), std::string::npos) << what;
    EXPECT_EQ(what.find(env("PQXXPOOL_TEST_APP_PASSWORD")), std::string::npos);
  }
  EXPECT_GE(p.stats().connect_errors, 1u);
}

}  // namespace
}  // namespace pqxxpool::itest
