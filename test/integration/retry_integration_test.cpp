// retry_transaction against real serialization failures: a role whose transactions run at
// REPEATABLE READ (as DSQL's always do), two writers on one row.

#include <atomic>
#include <future>
#include <thread>
#include <vector>

#include "pqxxpool/retry.hpp"
#include "server.hpp"

namespace pqxxpool::itest {
namespace {

const char* const occ_user = "occ_tester";
const char* const occ_password = secrets::occ_password;

/// A pool for a role whose default isolation is REPEATABLE READ, and a one-row counter table.
pool_config occ_config(const std::string& application_name) {
  admin_query(std::string("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '") + occ_user +
              "') THEN CREATE ROLE " + occ_user + " LOGIN PASSWORD '" + occ_password + "'; END IF; END $$");
  admin_query(std::string("ALTER ROLE ") + occ_user + " SET default_transaction_isolation = 'repeatable read'");
  admin_query("CREATE TABLE IF NOT EXISTS occ_counter (id int PRIMARY KEY, n int NOT NULL)");
  admin_query(std::string("GRANT SELECT, UPDATE, INSERT ON occ_counter TO ") + occ_user);
  admin_query("INSERT INTO occ_counter VALUES (1, 0) ON CONFLICT (id) DO UPDATE SET n = 0");
  pool_config cfg = app_config(application_name);
  cfg.params["user"] = occ_user;
  cfg.params["password"] = occ_password;
  cfg.max_size = 4;
  cfg.min_idle = 2;
  return cfg;
}

retry_policy fast_policy(unsigned retries) {
  retry_policy rp;
  rp.max_retries = retries;
  rp.initial_backoff = std::chrono::milliseconds(1);
  rp.max_backoff = std::chrono::milliseconds(5);
  return rp;
}

// A lease held too long inside retry_transaction is reported at the caller's line, not at the
// library's (a new-user trial found every such report naming src/retry.cpp).
TEST(retry_integration, a_leak_report_names_the_caller_of_retry_transaction) {
  pool_config cfg = app_config("itest_retry_leak");
  cfg.max_size = 1;
  cfg.min_idle = 1;
  cfg.leak_detection_threshold = 100ms;
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = ring_logger("itest_retry_leak", ring);
  pool p{cfg};
  p.wait_ready(20s);
  bool reported = false;
  retry_transaction(p, [&](pqxx::work& tx) {
    tx.exec("SELECT 1");
    reported = eventually([&] { return p.stats().leaks_suspected >= 1; });  // held until reported
  });
  ASSERT_TRUE(reported);
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  EXPECT_NE(log.find("possible connection leak"), std::string::npos) << log;
  EXPECT_NE(log.find("retry_integration_test.cpp:"), std::string::npos) << log;
  EXPECT_EQ(log.find("src/retry.cpp"), std::string::npos) << log;
}

TEST(retry_integration, a_serialization_failure_reruns_the_whole_transaction) {
  pool p{occ_config("itest_occ_orchestrated")};
  p.wait_ready(20s);
  std::promise<void> snapshot_taken;
  std::promise<void> other_committed;
  std::shared_future<void> other_done = other_committed.get_future().share();
  int attempts = 0;
  auto writer = std::async(std::launch::async, [&] {
    return retry_transaction(
        p,
        [&](pqxx::work& tx) {
          ++attempts;
          const int seen = tx.exec("SELECT n FROM occ_counter WHERE id = 1")[0][0].as<int>();  // snapshot
          if (attempts == 1) {
            snapshot_taken.set_value();
            other_done.wait();  // the other writer commits an update of the same row meanwhile
          }
          tx.exec("UPDATE occ_counter SET n = " + std::to_string(seen + 10) + " WHERE id = 1");
          return seen;
        },
        fast_policy(3));
  });
  snapshot_taken.get_future().wait();
  {
    lease c = p.acquire();
    pqxx::work tx{*c};
    tx.exec("UPDATE occ_counter SET n = n + 1 WHERE id = 1");
    tx.commit();
  }
  other_committed.set_value();
  const int seen_on_success = writer.get();
  EXPECT_EQ(attempts, 2) << "first attempt must fail with 40001 and the second succeed";
  EXPECT_EQ(seen_on_success, 1) << "the retry runs in a fresh snapshot";
  EXPECT_EQ(std::stoi(admin_query("SELECT n FROM occ_counter WHERE id = 1")), 11);
}

TEST(retry_integration, concurrent_increments_are_never_lost) {
  pool p{occ_config("itest_occ_concurrent")};
  p.wait_ready(20s);
  constexpr int threads = 4;
  constexpr int increments = 25;
  std::atomic<int> attempts{0};
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&] {
      for (int i = 0; i < increments; ++i) {
        retry_transaction(
            p,
            [&](pqxx::work& tx) {
              ++attempts;
              const int n = tx.exec("SELECT n FROM occ_counter WHERE id = 1")[0][0].as<int>();
              tx.exec("UPDATE occ_counter SET n = " + std::to_string(n + 1) + " WHERE id = 1");
            },
            fast_policy(200));
      }
    });
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(std::stoi(admin_query("SELECT n FROM occ_counter WHERE id = 1")), threads * increments)
      << attempts.load() << " attempts";
}

TEST(retry_integration, retries_run_out_and_the_last_error_is_rethrown) {
  pool p{occ_config("itest_occ_exhausted")};
  int attempts = 0;
  EXPECT_THROW(retry_transaction(
                   p,
                   [&](pqxx::work& tx) {
                     ++attempts;
                     tx.exec("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = "
                             "'mutation conflicts with another transaction, retry as needed (OC000)'; END $$");
                   },
                   fast_policy(2)),
               pqxx::serialization_failure);
  EXPECT_EQ(attempts, 3);
  EXPECT_EQ(p.stats().closed_discarded, 0u) << "OC000 keeps the connection";
}

TEST(retry_integration, oc001_discards_the_connection_with_the_stale_catalog) {
  pool p{occ_config("itest_occ_oc001")};
  int attempts = 0;
  const int result = retry_transaction(
      p,
      [&](pqxx::work& tx) {
        if (++attempts == 1)
          tx.exec("DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = "
                  "'schema has been updated by another transaction, please retry: (OC001)'; END $$");
        return tx.exec("SELECT 7")[0][0].as<int>();
      },
      fast_policy(3));
  EXPECT_EQ(result, 7);
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(p.stats().closed_discarded, 1u);
}

TEST(retry_integration, other_errors_are_not_retried) {
  pool p{occ_config("itest_occ_other")};
  int attempts = 0;
  EXPECT_THROW(retry_transaction(
                   p,
                   [&](pqxx::work& tx) {
                     ++attempts;
                     tx.exec("SELECT * FROM no_such_table");
                   },
                   fast_policy(3)),
               pqxx::sql_error);
  EXPECT_EQ(attempts, 1);
  const pqxx::result r = retry_exec(p, "SELECT 41 + 1", fast_policy(1));
  EXPECT_EQ(r[0][0].as<int>(), 42);
}

// A COMMIT whose outcome the client cannot know: a deferred constraint trigger ends its own
// backend while COMMIT runs (for rows whose note is 'die'), so the connection is lost in the
// middle of the commit and libpqxx throws pqxx::in_doubt_error.
pool_config in_doubt_config(const std::string& application_name) {
  admin_query("CREATE TABLE IF NOT EXISTS doubt_log (id serial PRIMARY KEY, note text NOT NULL)");
  admin_query("CREATE OR REPLACE FUNCTION doubt_log_die() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
              "IF NEW.note = 'die' THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF; RETURN NULL; END $$");
  admin_query("DROP TRIGGER IF EXISTS doubt_log_die ON doubt_log");
  admin_query("CREATE CONSTRAINT TRIGGER doubt_log_die AFTER INSERT ON doubt_log DEFERRABLE INITIALLY DEFERRED "
              "FOR EACH ROW EXECUTE FUNCTION doubt_log_die()");
  admin_query("TRUNCATE doubt_log");
  pool_config cfg = app_config(application_name);
  admin_query("GRANT SELECT, INSERT ON doubt_log TO PUBLIC");
  admin_query("GRANT USAGE ON SEQUENCE doubt_log_id_seq TO PUBLIC");
  cfg.max_size = 2;
  cfg.min_idle = 1;
  return cfg;
}

TEST(retry_integration, a_commit_in_doubt_is_not_retried_unless_the_work_is_idempotent) {
  pool p{in_doubt_config("itest_in_doubt")};
  int attempts = 0;
  EXPECT_THROW(retry_transaction(
                   p,
                   [&](pqxx::work& tx) {
                     ++attempts;
                     tx.exec("INSERT INTO doubt_log (note) VALUES ('die')");
                   },
                   fast_policy(3)),
               pqxx::in_doubt_error);
  EXPECT_EQ(attempts, 1) << "work that may have committed must not run twice by default";

  retry_policy idempotent = fast_policy(3);
  idempotent.idempotent = true;
  attempts = 0;
  const int done = retry_transaction(
      p,
      [&](pqxx::work& tx) {
        tx.exec(std::string("INSERT INTO doubt_log (note) VALUES ('") + (++attempts == 1 ? "die" : "ok") + "')");
        return attempts;
      },
      idempotent);
  EXPECT_EQ(done, 2);
  EXPECT_EQ(admin_query("SELECT string_agg(note, ',') FROM doubt_log"), "ok");
  // Both lost connections are counted where a monitor looks for them, the retried one included.
  EXPECT_EQ(p.stats().closed_broken, 2u) << "a lost connection not counted as broken";
  EXPECT_EQ(p.stats().closed_discarded, 0u);
  lease c = p.acquire();  // the pool goes on with fresh connections
  pqxx::work tx{*c};
  EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
}

// A function that returns a reference (to something outside the transaction) gets a copy back:
// the result is kept by value between the attempt and the return.
TEST(retry_integration, a_function_returning_a_reference_gets_a_copy) {
  pool p{occ_config("itest_occ_ref")};
  std::string label = "before";
  const std::string got = retry_transaction(p, [&label](pqxx::work& tx) -> std::string& {
    label = tx.exec("SELECT 'from the server'")[0][0].as<std::string>();
    return label;
  });
  EXPECT_EQ(got, "from the server");
}

TEST(retry_integration, bad_policy_is_a_config_error) {
  pool p{occ_config("itest_occ_policy")};
  retry_policy rp;
  rp.jitter = 2;
  try {
    retry_exec(p, "SELECT 1", rp);
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "jitter");
  }
}

}  // namespace
}  // namespace pqxxpool::itest
