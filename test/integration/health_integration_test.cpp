// pqxxpool::health_check and check_connection against the real server over verify-full TLS and
// through the DSQL emulator: the facts, an unreachable server, a check the server rejects, a
// check that hangs, and a server without pg_is_in_recovery() (simulated, as DSQL lacks it).

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/dsql_pool.hpp"
#include "pqxxpool/health.hpp"
#include "server.hpp"

namespace pqxxpool::itest {
namespace {

bool contains(const std::string& text, const char* needle) { return text.find(needle) != std::string::npos; }

/// A loopback TCP port nothing listens on: bound to learn a free one, then closed.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
    port = ntohs(addr.sin_port);
  ::close(fd);
  return port;
}

/// The server's own answer, asked as the superuser over the Unix socket.
std::string server_says(const char* setting) { return admin_query(std::string{"SHOW "} + setting); }

/// Every fact the healthy test cluster gives: TLS 1.3, the app role and database, a primary.
void expect_healthy_cluster_report(const health_report& r) {
  EXPECT_TRUE(r.ok) << r.failed_check << ": " << r.error;
  EXPECT_EQ(r.failed_check, "");
  EXPECT_EQ(r.error, "");
  EXPECT_EQ(r.sqlstate, "");
  EXPECT_EQ(r.server_version, server_says("server_version"));
  EXPECT_EQ(r.server_version_num, std::stoi(server_says("server_version_num")));
  EXPECT_GE(r.server_version_num, 150000);
  ASSERT_TRUE(r.in_recovery.has_value());
  EXPECT_FALSE(*r.in_recovery);
  // Set, and a plausible date (not a timing assertion: a day either way).
  ASSERT_TRUE(r.server_time.has_value());
  const auto now = std::chrono::system_clock::now();
  EXPECT_LT(*r.server_time, now + std::chrono::hours(24));
  EXPECT_GT(*r.server_time, now - std::chrono::hours(24));
  EXPECT_EQ(r.endpoint.dbname, "app");
  EXPECT_EQ(r.endpoint.user, "app");
  EXPECT_EQ(r.endpoint.host, "localhost");
  EXPECT_EQ(r.endpoint.hostaddr, "127.0.0.1");
  EXPECT_EQ(r.endpoint.port, env("PQXXPOOL_TEST_PORT"));
  EXPECT_TRUE(r.tls.in_use);
  EXPECT_EQ(r.tls.protocol, "TLSv1.3");
  EXPECT_FALSE(r.tls.cipher.empty());
  EXPECT_LE(r.acquire_latency, r.latency);
}

/// Functions that shadow pg_catalog.pg_is_in_recovery() for sessions whose search_path puts
/// their schema before pg_catalog: one that says it does not exist (as on DSQL), one that fails,
/// one that hangs. Created once, as the superuser; idempotent.
void create_shadow_functions() {
  admin_query(
      "CREATE SCHEMA IF NOT EXISTS health_missing; CREATE SCHEMA IF NOT EXISTS health_failing;"
      "CREATE SCHEMA IF NOT EXISTS health_hanging;"
      "GRANT USAGE ON SCHEMA health_missing, health_failing, health_hanging TO PUBLIC;"
      "CREATE OR REPLACE FUNCTION health_missing.pg_is_in_recovery() RETURNS boolean LANGUAGE plpgsql AS "
      "$$BEGIN RAISE EXCEPTION 'function pg_is_in_recovery() does not exist' USING ERRCODE = 'undefined_function'; "
      "END$$;"
      "CREATE OR REPLACE FUNCTION health_failing.pg_is_in_recovery() RETURNS boolean LANGUAGE plpgsql AS "
      "$$BEGIN RAISE EXCEPTION 'recovery state unavailable' USING ERRCODE = 'insufficient_privilege'; END$$;"
      "CREATE OR REPLACE FUNCTION health_hanging.pg_is_in_recovery() RETURNS boolean LANGUAGE sql AS "
      "$$SELECT pg_sleep(600) IS NULL$$;"
      "SELECT 1");
}

/// A pool of one connection whose session resolves pg_is_in_recovery() in `schema` first.
pool_config shadowed_config(const std::string& application_name, const std::string& schema) {
  pool_config cfg = app_config(application_name);
  cfg.max_size = 1;
  cfg.min_idle = 0;
  cfg.after_connect = [schema](connection& c) {
    pqxx::nontransaction tx{c};
    tx.exec("SET search_path = " + schema + ", pg_catalog, public");
  };
  return cfg;
}

TEST(health_integration, healthy_server_reports_version_time_tls_and_primary) {
  pool_config cfg = app_config("itest_health_ok");
  cfg.max_size = 2;
  cfg.min_idle = 1;
  pool p{cfg};
  const health_report r = health_check(p, 20s);
  expect_healthy_cluster_report(r);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.in_use, 0u) << "the lease went back";
  EXPECT_EQ(s.closed_discarded, 0u);
}

TEST(health_integration, check_connection_opens_checks_and_closes_one_connection) {
  const health_report r = check_connection(app_config("itest_health_once"), 20s);
  expect_healthy_cluster_report(r);
  EXPECT_TRUE(eventually([] { return backends("itest_health_once") == 0; }, 30s, 20ms));
}

TEST(health_integration, unreachable_server_is_a_failed_report_not_a_throw) {
  const int port = closed_port();
  ASSERT_GT(port, 0);
  pool_config cfg = app_config("itest_health_down");
  cfg.params["port"] = std::to_string(port);
  cfg.max_size = 1;
  cfg.min_idle = 0;
  pool p{cfg};
  const health_report r = health_check(p, 3s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failed_check, "acquire");
  EXPECT_TRUE(contains(r.error, "Connection refused")) << r.error;
  EXPECT_TRUE(contains(r.error, "last connect error")) << r.error;
  EXPECT_EQ(r.server_version_num, 0);
  EXPECT_FALSE(r.server_time.has_value());
  EXPECT_FALSE(r.in_recovery.has_value());
  EXPECT_EQ(r.endpoint.port, "") << "no connection, no facts";

  const health_report once = check_connection(cfg, 3s);
  EXPECT_FALSE(once.ok);
  EXPECT_EQ(once.failed_check, "connect");
  EXPECT_TRUE(contains(once.error, "Connection refused")) << once.error;
  EXPECT_TRUE(contains(connect_hint(once.error), "tunnel")) << connect_hint(once.error);
}

// Each host of a list may take the whole connect timeout (the pool's rule), but a health check's
// timeout bounds the whole call: when the first host uses it up, the report says so at step
// "connect" and the next host is not tried (it would answer only after the timeout).
TEST(health_integration, check_connection_tries_no_host_past_its_timeout) {
  silent_listener silent;
  pool_config cfg = app_config("itest_health_hosts");
  cfg.params["host"] = "localhost,localhost";
  cfg.params["hostaddr"] = "127.0.0.1,127.0.0.1";
  cfg.params["port"] = std::to_string(silent.port) + "," + env("PQXXPOOL_TEST_PORT");
  const health_report r = check_connection(cfg, 1s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failed_check, "connect") << r.error;
  EXPECT_TRUE(contains(r.error, "timed out")) << r.error;
  EXPECT_TRUE(contains(r.error, "no time left to try the other hosts")) << r.error;
}

TEST(health_integration, wrong_password_comes_back_with_sqlstate_and_no_secret) {
  const std::string secret = "not-the-password-for-health-9c1d";
  pool_config cfg = app_config("itest_health_badpw");
  cfg.params["password"] = secret;
  const health_report r = check_connection(cfg, 20s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failed_check, "connect");
  EXPECT_EQ(r.sqlstate, "28P01");
  EXPECT_TRUE(contains(r.error, "password authentication failed")) << r.error;
  EXPECT_FALSE(contains(r.error, secret.c_str()));
  EXPECT_FALSE(contains(r.error, env("PQXXPOOL_TEST_APP_PASSWORD").c_str()));
}

TEST(health_integration, invalid_arguments_are_config_failures) {
  pool_config bad = app_config("itest_health_config");
  bad.conninfo = "host=localhost port";
  health_report r = check_connection(bad, 5s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failed_check, "config");
  EXPECT_TRUE(contains(r.error, "conninfo")) << r.error;

  r = check_connection(app_config("itest_health_config"), 0ms);
  EXPECT_EQ(r.failed_check, "config");
  EXPECT_TRUE(contains(r.error, "timeout")) << r.error;

  pool p{app_config("itest_health_config")};
  r = health_check(p, -1ms);
  EXPECT_EQ(r.failed_check, "config");
}

TEST(health_integration, a_server_without_pg_is_in_recovery_skips_that_check) {
  create_shadow_functions();
  pool p{shadowed_config("itest_health_missing", "health_missing")};
  const health_report r = health_check(p, 20s);
  EXPECT_TRUE(r.ok) << r.failed_check << ": " << r.error;
  EXPECT_FALSE(r.in_recovery.has_value()) << "42883 means skipped";
  EXPECT_FALSE(r.server_version.empty());
  EXPECT_TRUE(r.server_time.has_value());
}

TEST(health_integration, a_check_the_server_rejects_fails_the_report_and_keeps_the_connection) {
  create_shadow_functions();
  pool p{shadowed_config("itest_health_failing", "health_failing")};
  const health_report r = health_check(p, 20s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failed_check, "in_recovery");
  EXPECT_EQ(r.sqlstate, "42501");
  EXPECT_TRUE(contains(r.error, "recovery state unavailable")) << r.error;
  EXPECT_FALSE(r.in_recovery.has_value());
  EXPECT_FALSE(r.server_version.empty()) << "the checks before it passed";
  // The connection answered; it is idle and sound, so it went back rather than being closed.
  const pool_stats s = p.stats();
  EXPECT_EQ(s.closed_discarded, 0u);
  EXPECT_EQ(s.idle, 1u);
  lease c = p.acquire(20s);
  pqxx::nontransaction tx{*c};
  EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
}

TEST(health_integration, a_check_that_hangs_is_cut_off_at_the_timeout_and_the_connection_discarded) {
  create_shadow_functions();
  pool p{shadowed_config("itest_health_hang", "health_hanging")};
  p.wait_ready(20s);  // the connect is not what this test times out
  const health_report r = health_check(p, 1s);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.failed_check, "in_recovery");
  EXPECT_TRUE(contains(r.error, "deadline")) << r.error;
  EXPECT_EQ(p.stats().closed_discarded, 1u) << "a connection left mid-statement must not be reused";
  // The backend is still in pg_sleep until it notices: end it rather than leave it to linger.
  EXPECT_TRUE(eventually(
      [] { return terminate_backends("itest_health_hang") == 0 && backends("itest_health_hang") == 0; }, 30s, 20ms));
}

/// The DSQL pool through the emulator that scripts/test.sh starts (its credentials in the env).
dsql::config emulator_config() {
  dsql::config cfg;
  cfg.host = env("PQXXPOOL_DSQL_TEST_CLUSTER");
  cfg.region = env("PQXXPOOL_DSQL_TEST_REGION");
  cfg.tunnel_address = "127.0.0.1";
  cfg.tunnel_port = static_cast<std::uint16_t>(std::stoi(env("PQXXPOOL_DSQL_EMULATOR_PORT")));
  cfg.sslrootcert = env("PQXXPOOL_TEST_CA");
  cfg.credentials = std::make_shared<aws::static_credentials>(
      aws::credentials{env("PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID"), env("PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY"), "", {}});
  cfg.pool.max_size = 1;
  cfg.pool.min_idle = 0;
  return cfg;
}

void expect_emulator_report(const health_report& r) {
  EXPECT_TRUE(r.ok) << r.failed_check << ": " << r.error;
  EXPECT_EQ(r.endpoint.host, env("PQXXPOOL_DSQL_TEST_CLUSTER"));
  EXPECT_EQ(r.endpoint.hostaddr, "127.0.0.1");
  EXPECT_EQ(r.endpoint.user, "admin");
  EXPECT_EQ(r.endpoint.dbname, "postgres");
  EXPECT_TRUE(r.tls.in_use);
  EXPECT_FALSE(r.tls.protocol.empty());
  EXPECT_GE(r.server_version_num, 150000);
  EXPECT_TRUE(r.server_time.has_value());
  // The emulator relays every statement to its PostgreSQL 15 backend, which has
  // pg_is_in_recovery(): false here. Real DSQL lacks it (nullopt), which
  // a_server_without_pg_is_in_recovery_skips_that_check simulates.
  ASSERT_TRUE(r.in_recovery.has_value());
  EXPECT_FALSE(*r.in_recovery);
}

TEST(health_integration, dsql_pool_through_the_emulator_is_healthy) {
  auto p = dsql::make_pool(emulator_config());
  expect_emulator_report(health_check(*p, 20s));
}

TEST(health_integration, check_connection_runs_the_dsql_token_hook) {
  expect_emulator_report(check_connection(dsql::make_pool_config(emulator_config()), 20s));
}

}  // namespace
}  // namespace pqxxpool::itest
