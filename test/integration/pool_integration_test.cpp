// The pool against a real PostgreSQL 15 server over verify-full TLS: lifetimes, idle reaping,
// validation after pg_terminate_backend (and no silent reconnect), a server restart under load,
// password rotation through before_connect, dirty returns, and the tunnel/SNI recipe.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include <pqxx/pipeline>
#include <spdlog/sinks/ringbuffer_sink.h>

#include "../unit/scoped_env.hpp"
#include "server.hpp"

namespace pqxxpool::itest {
namespace {

/// Runs `threads` workers doing acquire → SELECT 1 → release until `stop` is set; counts.
struct load {
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0};
  std::atomic<long> failed{0};
  std::vector<std::thread> workers;
  std::mutex error_mu;
  std::string first_error;

  load(pool& p, int threads, const std::string& sql = "SELECT 1") {
    for (int i = 0; i < threads; ++i) {
      workers.emplace_back([this, &p, sql] {
        while (!stop) {
          try {
            lease c = p.acquire();
            pqxx::nontransaction tx{*c};
            tx.exec(sql);
            ++ok;
          } catch (const std::exception& e) {
            ++failed;
            std::lock_guard<std::mutex> g(error_mu);
            if (first_error.empty()) first_error = e.what();
          }
        }
      });
    }
  }
  void finish() {
    stop = true;
    for (auto& t : workers) t.join();
    workers.clear();
  }
  ~load() {
    if (!workers.empty()) finish();
  }
};

/// app_config with one connection, opened at start (max_size = min_idle = 1).
pool_config one_connection_config(const std::string& application_name) {
  pool_config cfg = app_config(application_name);
  cfg.max_size = 1;
  cfg.min_idle = 1;
  return cfg;
}

TEST(pool_integration, acquire_runs_queries_over_verify_full_tls) {
  pool_config cfg = app_config("itest_basic");
  pool p{cfg};
  p.wait_ready(20s);
  lease c = p.acquire();
  pqxx::work tx{*c};
  EXPECT_EQ(tx.exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0][0].as<bool>(), true);
  EXPECT_EQ(tx.exec("SELECT current_user")[0][0].as<std::string>(), "app");
  tx.commit();
  const pool_stats s = p.stats();
  EXPECT_EQ(s.total, s.idle + s.in_use + s.connecting);
  EXPECT_GE(s.connections_created, 2u);
}

TEST(pool_integration, lifetimes_recycle_under_multithreaded_load_without_failed_queries) {
  pool_config cfg = app_config("itest_lifetime");
  cfg.max_size = 4;
  cfg.min_idle = 2;
  cfg.max_lifetime = 1500ms;
  cfg.lifetime_jitter = 0.2;
  pool p{cfg};
  p.wait_ready(20s);
  load l(p, 8);
  // Run until every connection has been recycled a few times over (observed, not timed).
  ASSERT_TRUE(eventually([&] { return p.stats().closed_max_lifetime >= 12; }, 60s));
  l.finish();
  EXPECT_EQ(l.failed.load(), 0) << l.first_error;
  EXPECT_GT(l.ok.load(), 0);
  const pool_stats s = p.stats();
  EXPECT_GE(s.connections_created, 12u);
  EXPECT_LE(s.total, 4u);
  EXPECT_EQ(s.acquire_timeouts, 0u);
  // The server never saw more than max_size of our backends at once at the end.
  EXPECT_LE(backends("itest_lifetime"), 4);
}

TEST(pool_integration, idle_connections_beyond_min_idle_are_reaped) {
  pool_config cfg = app_config("itest_idle");
  cfg.max_size = 4;
  cfg.min_idle = 1;
  cfg.idle_timeout = 300ms;
  pool p{cfg};
  {
    std::vector<lease> held;
    for (int i = 0; i < 4; ++i) held.push_back(p.acquire());
  }
  ASSERT_TRUE(eventually([&] { return p.stats().closed_idle == 3; }));
  EXPECT_EQ(p.stats().idle, 1u);
  EXPECT_TRUE(eventually([&] { return backends("itest_idle") == 1; }, 30s, 20ms));
}

TEST(pool_integration, terminated_idle_connections_are_caught_by_validation) {
  pool_config cfg = app_config("itest_terminate");
  cfg.max_size = 3;
  cfg.min_idle = 3;
  cfg.validate_after_idle = 0ms;  // validate on every acquire
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = ring_logger("itest_terminate", ring);
  pool p{cfg};
  p.wait_ready(20s);
  ASSERT_EQ(terminate_backends("itest_terminate"), 3);
  for (int i = 0; i < 5; ++i) {
    lease c = p.acquire();
    pqxx::nontransaction tx{*c};
    EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
  }
  EXPECT_GE(p.stats().closed_validation_failed, 1u);
  EXPECT_LE(backends("itest_terminate"), 3);
  // The close line says why, in the server's words (not just "failed").
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  EXPECT_NE(log.find("failed its validation round trip after"), std::string::npos) << log;
  const std::size_t why = log.find(": the connection was lost: ");
  ASSERT_NE(why, std::string::npos) << log;
  // The server's FATAL when libpq read it as the answer to the round trip, else what the socket
  // said (the write may meet the closed connection first).
  EXPECT_TRUE(log.find("terminating connection due to administrator command", why) != std::string::npos ||
              log.find("closed unexpectedly", why) != std::string::npos)
      << log;
}

TEST(pool_integration, a_terminated_connection_is_never_silently_reopened) {
  pool_config cfg = app_config("itest_noreconnect");
  cfg.max_size = 1;
  cfg.min_idle = 1;
  cfg.validate_after_idle = std::chrono::hours(1);  // skip validation: the user meets the dead link
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = ring_logger("itest_noreconnect", ring);
  pool p{cfg};
  p.wait_ready(20s);
  lease c = p.acquire();
  const int pid = c->backendpid();
  ASSERT_GT(pid, 0);
  ASSERT_EQ(terminate_backends("itest_noreconnect"), 1);
  ASSERT_TRUE(eventually([&] { return backends("itest_noreconnect") == 0; }, 30s, 20ms));
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW(
        {
          pqxx::nontransaction tx{*c};
          tx.exec("SELECT 1");
        },
        pqxx::broken_connection);
  }
  // libpqxx 6 would have reconnected here with its stored conninfo; ours has none to use.
  EXPECT_EQ(backends("itest_noreconnect"), 0);
  EXPECT_EQ(p.stats().connections_created, 1u);
  c.release();
  EXPECT_EQ(p.stats().closed_broken, 1u);
  // The close line carries libpq's word on the connection. Found dead when idle, that is the
  // server's FATAL if libpq read it as a result, else "SSL connection has been closed
  // unexpectedly" (a FATAL during a query, such as PgBouncer's query_wait_timeout, is kept as
  // it came; test below).
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  const std::size_t why = log.find(": the connection was lost: ");
  ASSERT_NE(why, std::string::npos) << log;
  EXPECT_TRUE(log.find("closed unexpectedly", why) != std::string::npos ||
              log.find("terminating connection due to administrator command", why) != std::string::npos)
      << log;
  lease again = p.acquire();
  pqxx::nontransaction tx{*again};
  EXPECT_NE(tx.exec("SELECT pg_backend_pid()")[0][0].as<int>(), pid);
  EXPECT_EQ(p.stats().connections_created, 2u);
}

// A connection that dies during a query (here the backend ends itself, as a server shutdown or
// PgBouncer's query_wait_timeout would) is logged with what the server said then, even when the
// user tried the dead connection again before giving the lease back (libpq then only says "no
// connection to the server").
TEST(pool_integration, the_reason_a_connection_died_mid_query_is_logged_when_it_comes_back) {
  pool_config cfg = app_config("itest_died_mid_query");
  cfg.max_size = 1;
  cfg.min_idle = 1;
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = ring_logger("itest_died_mid_query", ring);
  pool p{cfg};
  p.wait_ready(20s);
  {
    lease c = p.acquire();
    EXPECT_THROW(
        {
          pqxx::nontransaction tx{*c};
          tx.exec("SELECT pg_terminate_backend(pg_backend_pid())");
        },
        pqxx::failure);
    EXPECT_THROW(
        {
          pqxx::nontransaction tx{*c};
          tx.exec("SELECT 1");
        },
        pqxx::failure);
  }
  EXPECT_EQ(p.stats().closed_broken, 1u);
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  const std::size_t why = log.find(": the connection was lost: ");
  ASSERT_NE(why, std::string::npos) << log;
  EXPECT_NE(log.find("terminating connection due to administrator command", why), std::string::npos) << log;
}

// A user may close() the leased connection (or, on libpqxx 7, move it out of the lease): the
// pool must count it as broken, close nothing twice, and never hand that connection on.
TEST(pool_integration, a_connection_the_user_closed_is_replaced_not_handed_on) {
  pool p{one_connection_config("itest_user_close")};
  p.wait_ready(20s);
  int pid = 0;
  {
    lease c = p.acquire();
    pid = c->backendpid();
#if PQXX_VERSION_MAJOR >= 7
    c->close();
#else
    c->disconnect();  // libpqxx 6's public close
#endif
  }
  EXPECT_EQ(p.stats().closed_broken, 1u);
  lease again = p.acquire();
  {
    pqxx::nontransaction tx{*again};
    EXPECT_NE(tx.exec("SELECT pg_backend_pid()")[0][0].as<int>(), pid);
  }
#if PQXX_VERSION_MAJOR >= 7
  // Moved out: the user owns that connection now; the pool replaces it.
  pqxx::connection mine{std::move(again.get())};
  again.release();
  EXPECT_EQ(p.stats().closed_broken, 2u);
  pqxx::nontransaction tx{mine};
  EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1) << "the moved-out connection still works";
  lease third = p.acquire();
  EXPECT_NE(third->backendpid(), mine.backendpid());
  // Another connection moved onto the leased one (which closes the pool's first): the pool must
  // not take the newcomer's handle for its own; it counts its connection lost and closes both.
  third.get() = pqxx::connection{env("PQXXPOOL_TEST_CONNINFO")};
  third.release();
  EXPECT_EQ(p.stats().closed_broken, 3u);
  lease fourth = p.acquire();
  pqxx::nontransaction tx4{*fourth};
  EXPECT_EQ(tx4.exec("SELECT 1")[0][0].as<int>(), 1);
#endif
}

// libpqxx 6.4's pipeline, ended with a query still out, asks the server to cancel it and
// leaves its results unread: libpq is still busy when the lease ends. The pool must not hand
// that connection on (the next user would read the old results), and its log line must say why.
TEST(pool_integration, a_connection_given_back_with_a_query_still_running_is_closed_and_says_why) {
  pool_config cfg = app_config("itest_busy_return");
  cfg.max_size = 1;
  cfg.min_idle = 1;
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = std::make_shared<spdlog::logger>("itest_busy_return", ring);
  pool p{cfg};
  p.wait_ready(20s);
  int pid = 0;
  {
    lease c = p.acquire();
    pid = c->backendpid();
    pqxx::nontransaction tx{*c};
    pqxx::pipeline pipe{tx};
    pipe.insert("SELECT pg_sleep(0.2)");
    pipe.resume();  // sent now, its result never read
  }
  EXPECT_EQ(p.stats().closed_broken, 1u);
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  EXPECT_NE(log.find("broken (lost, or a rollback/reset failed) after"), std::string::npos) << log;
  EXPECT_NE(log.find("given back with a query still running"), std::string::npos) << log;
  lease again = p.acquire();
  pqxx::nontransaction tx{*again};
  EXPECT_NE(tx.exec("SELECT pg_backend_pid()")[0][0].as<int>(), pid);
}

TEST(pool_integration, pool_recovers_by_itself_after_a_server_restart_under_load) {
  pool_config cfg = app_config("itest_restart");
  cfg.max_size = 4;
  cfg.min_idle = 2;
  cfg.acquire_timeout = 10s;
  cfg.connect_backoff_initial = 50ms;
  cfg.connect_backoff_max = 500ms;
  pool p{cfg};
  p.wait_ready(20s);
  load l(p, 6);
  ASSERT_TRUE(eventually([&] { return l.ok.load() > 100; }));
  const std::string script = env("PQXXPOOL_TEST_CLUSTER_SCRIPT");
  const std::string dir = env("PQXXPOOL_TEST_DIR");
  ASSERT_EQ(std::system((script + " restart '" + dir + "' >/dev/null 2>&1").c_str()), 0);
  // After the restart, the load goes on: wait for 200 more successful queries.
  const long after_restart = l.ok.load();
  ASSERT_TRUE(eventually([&] { return l.ok.load() > after_restart + 200; }, 60s)) << l.first_error;
  l.finish();
  // From now on every query succeeds: the pool weeded out the dead connections by itself.
  for (int i = 0; i < 20; ++i) {
    lease c = p.acquire();
    pqxx::nontransaction tx{*c};
    EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
  }
  const pool_stats s = p.stats();
  EXPECT_GE(s.closed_broken + s.closed_validation_failed, 1u);
  EXPECT_GT(s.connections_created, 2u);
  EXPECT_LE(s.total, 4u);
}

TEST(pool_integration, password_rotation_through_before_connect) {
  const std::string user = env("PQXXPOOL_TEST_ROTATION_USER");
  const std::string initial = secrets::rotation_initial;
  const std::string rotated = secrets::rotation_rotated;
  admin_query("ALTER ROLE " + user + " PASSWORD '" + initial + "'");

  std::mutex secret_mu;
  std::string secret = initial;
  std::atomic<int> hook_calls{0};
  pool_config cfg = app_config("itest_rotation");
  cfg.params["user"] = user;
  cfg.params["dbname"] = "app";
  cfg.max_size = 3;
  cfg.min_idle = 1;
  cfg.before_connect = [&](connect_params& params) {
    ++hook_calls;
    std::lock_guard<std::mutex> g(secret_mu);
    params.set("password", secret);
  };
  pool p{cfg};
  p.wait_ready(20s);
  lease old_conn = p.acquire();
  {
    pqxx::nontransaction tx{*old_conn};
    EXPECT_EQ(tx.exec("SELECT current_user")[0][0].as<std::string>(), user);
  }
  // Let min_idle settle so no connect is in flight while the password changes underneath.
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1 && p.stats().connecting == 0; }));
  // Rotate: the server now wants the new password, and the hook hands it out.
  admin_query("ALTER ROLE " + user + " PASSWORD '" + rotated + "'");
  {
    std::lock_guard<std::mutex> g(secret_mu);
    secret = rotated;
  }
  const int calls_before = hook_calls.load();
  p.evict_all();  // new physical connections from here on
  lease fresh = p.acquire();
  {
    pqxx::nontransaction tx{*fresh};
    EXPECT_EQ(tx.exec("SELECT current_user")[0][0].as<std::string>(), user);
  }
  EXPECT_GT(hook_calls.load(), calls_before);
  // The old connection, authenticated with the old password, lives on.
  {
    pqxx::nontransaction tx{*old_conn};
    EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
  }
  EXPECT_EQ(p.stats().connect_errors, 0u);
  admin_query("ALTER ROLE " + user + " PASSWORD '" + env("PQXXPOOL_TEST_ROTATION_PASSWORD") + "'");
}

/// The app role's pool with a two-host list (both named localhost, as the server certificate
/// is) on the given ports, and a short connect_timeout.
pool_config two_hosts_config(const std::string& application_name, int first_port, const std::string& second_port) {
  pool_config cfg = app_config(application_name);
  cfg.params["host"] = "localhost,localhost";
  cfg.params["hostaddr"] = "127.0.0.1,127.0.0.1";
  cfg.params["port"] = std::to_string(first_port) + "," + second_port;
  cfg.connect_timeout = 500ms;
  cfg.max_size = 1;
  cfg.min_idle = 1;
  return cfg;
}

// libpq moves on to the next host of a list when one cannot be reached, and its blocking connect
// also when one does not answer within connect_timeout; the pool's non-blocking connect must do
// the same, or a hung first host would keep a pool from ever reaching the second.
TEST(pool_integration, a_host_that_never_answers_is_skipped_after_connect_timeout) {
  silent_listener silent;
  pool p{two_hosts_config("itest_multihost", silent.port, env("PQXXPOOL_TEST_PORT"))};
  p.wait_ready(20s);
  lease c = p.acquire();
  EXPECT_EQ(std::string{c->port()}, env("PQXXPOOL_TEST_PORT"));
  pqxx::nontransaction tx{*c};
  EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
  EXPECT_EQ(p.stats().connect_errors, 0u);
}

// libpq's connect_timeout in the conninfo is honoured as psql honours it (it used to be
// overwritten by pool_config::connect_timeout, 90 s here: wait_ready would then have timed out
// with no connect failed yet: an acquire_timeout_error, not a connect_error).
TEST(pool_integration, a_connect_timeout_in_the_conninfo_applies) {
  silent_listener silent;
  pool_config cfg = app_config("itest_conninfo_timeout");
  cfg.params["host"] = "localhost";
  cfg.params["hostaddr"] = "127.0.0.1";
  cfg.params["port"] = std::to_string(silent.port);
  cfg.params["connect_timeout"] = "2";
  cfg.connect_timeout = 90s;
  cfg.max_size = 1;
  cfg.min_idle = 1;
  pool p{cfg};
  EXPECT_EQ(p.config().connect_timeout, 2s);
  try {
    p.wait_ready(8s);  // throws the last connect error then; none with a 90 s connect timeout
    FAIL() << "connected to a host that never answers";
  } catch (const connect_error& e) {
    log_caught(e);
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
}

TEST(pool_integration, when_no_host_answers_the_error_names_each_one) {
  silent_listener first;
  silent_listener second;
  pool p{two_hosts_config("itest_multihost_none", first.port, std::to_string(second.port))};
  try {
    p.wait_ready(3s);
    FAIL() << "connected to hosts that never answer";
  } catch (const connect_error& e) {
    log_caught(e);
    const std::string what = e.what();
    EXPECT_NE(what.find("timed out"), std::string::npos) << what;
    EXPECT_NE(what.find("port " + std::to_string(first.port)), std::string::npos) << what;
    EXPECT_NE(what.find("port " + std::to_string(second.port)), std::string::npos) << what;
  }
}

// After a server's answer other than "cannot connect now" (here a failed password) libpq does not
// try the next host, and neither does the pool: the error is the server's, not a timeout.
TEST(pool_integration, a_refused_password_does_not_move_on_to_the_next_host) {
  silent_listener silent;
  pool_config cfg = two_hosts_config("itest_multihost_badpw", std::stoi(env("PQXXPOOL_TEST_PORT")), std::to_string(silent.port));
  cfg.before_connect = [](connect_params& params) { params.set("password", secrets::wrong_password); };
  // The real server must get to refuse the password: on a busy machine (a build beside the tests)
  // a TLS + SCRAM login took over 500 ms, the first host timed out and the error was a timeout.
  cfg.connect_timeout = 5s;
  pool p{cfg};
  try {
    p.wait_ready(3s);
    FAIL() << "connected with a wrong password";
  } catch (const connect_error& e) {
    log_caught(e);
    EXPECT_EQ(e.sqlstate(), "28P01");
    EXPECT_EQ(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
}

// close() joins the connect workers; one busy with a host that never answers must give up at
// once, not keep close() waiting for connect_timeout and then go on to the next host. (Were it to
// wait, close() would return only after the 90 s below, with the first host's timeout counted as
// a connect error and logged as a timeout rather than as given up.)
TEST(pool_integration, closing_the_pool_abandons_a_connect_in_flight) {
  silent_listener first;
  silent_listener second;
  pool_config cfg = two_hosts_config("itest_multihost_close", first.port, std::to_string(second.port));
  cfg.connect_timeout = 90s;
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = std::make_shared<spdlog::logger>("itest_close", ring);
  cfg.logger->set_level(spdlog::level::debug);
  pool p{cfg};  // min_idle 1: a worker starts connecting to the first host at once
  ASSERT_TRUE(first.has_client(20s)) << "the pool never tried the first host";
  p.close();
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  EXPECT_NE(log.find("]: connect to host localhost port " + std::to_string(first.port) +
                     " abandoned: the pool is closing"),
            std::string::npos) << log;
  const pool_stats s = p.stats();
  EXPECT_EQ(s.connect_errors, 0u) << "an abandoned connect counted as a failure: " << s.last_error.message;
  EXPECT_TRUE(s.last_error.empty()) << s.last_error.message;
  EXPECT_FALSE(second.has_client(0ms)) << "the closing pool went on to the second host";
}

/// A server process stopped with SIGSTOP (a server that stops answering on an open connection)
/// and continued when this goes out of scope or on resume().
class stopped_backend {
 public:
  explicit stopped_backend(int pid) : m_pid{::kill(pid, SIGSTOP) == 0 ? pid : 0} {}
  ~stopped_backend() { resume(); }
  stopped_backend(const stopped_backend&) = delete;
  stopped_backend& operator=(const stopped_backend&) = delete;
  [[nodiscard]] bool stopped() const { return m_pid > 0; }
  void resume() {
    if (m_pid > 0) ::kill(m_pid, SIGCONT);
    m_pid = 0;
  }

 private:
  int m_pid;
};

// close() must also end a validation round trip in flight, which would otherwise run until
// validation_timeout (here an hour) against a server that stopped answering: the acquire that
// was validating fails with pool_closed at once, and the connection is not counted as failing
// validation (the pool closed it).
/// One connection, validated on every acquire, each round trip allowed an hour.
pool_config one_connection_validated_every_time(const std::string& name) {
  pool_config cfg = app_config(name);
  cfg.max_size = 1;
  cfg.min_idle = 1;
  cfg.validate_after_idle = 0ms;
  cfg.validation_timeout = std::chrono::hours(1);
  cfg.acquire_timeout = std::chrono::hours(2);
  return cfg;
}

/// The backend pid of the pool's only connection, once it is open.
int backend_of_the_one_connection(pool& p) {
  p.wait_ready(20s);
  lease c = p.acquire();
  return c->backendpid();
}

TEST(pool_integration, closing_the_pool_ends_a_validation_in_flight) {
  pool p{one_connection_validated_every_time("itest_close_validation")};
  const int pid = backend_of_the_one_connection(p);
  stopped_backend frozen{pid};
  ASSERT_TRUE(frozen.stopped()) << "could not stop backend " << pid;
  auto acquiring = std::async(std::launch::async, [&p] { lease c = p.acquire(); });
  // in_use 1: the acquire has taken the connection and validates it (or is about to).
  ASSERT_TRUE(eventually([&] { return p.stats().in_use == 1; }));
  p.close();
  const bool ended = acquiring.wait_for(60s) == std::future_status::ready;  // a bound, not a speed
  frozen.resume();
  ASSERT_TRUE(ended) << "the acquire still validates after close()";
  EXPECT_THROW(acquiring.get(), pool_closed);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.closed_validation_failed, 0u);
  EXPECT_EQ(s.total, 0u);
}

TEST(pool_integration, a_validation_cut_by_a_short_acquire_timeout_keeps_the_connection) {
  // The backend stalls while an acquire(100ms) validates its connection (validation_timeout is an
  // hour): the caller times out, but the connection is not known to be bad, so it is neither
  // counted as failed nor closed; once the backend answers, it serves the next acquire.
  pool p{one_connection_validated_every_time("itest_cut_validation")};
  const int pid = backend_of_the_one_connection(p);
  {
    stopped_backend frozen{pid};
    ASSERT_TRUE(frozen.stopped()) << "could not stop backend " << pid;
    EXPECT_THROW((void)p.acquire(100ms), acquire_timeout_error);
  }  // resumed
  lease c = p.acquire(60s);  // a bound, not a speed
  EXPECT_EQ(c->backendpid(), pid) << "the stalled connection was replaced";
  pqxx::nontransaction tx{*c};
  EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.closed_validation_failed, 0u);
  EXPECT_EQ(s.connections_created, 1u);
}

/// A hook body that runs an hour-long query and records that it failed (as it must when close()
/// interrupts it), then rethrows.
void sleep_an_hour(connection& c, std::atomic<bool>& failed) {
  try {
    pqxx::nontransaction tx{c};
    tx.exec("SELECT pg_sleep(3600)");
  } catch (const std::exception&) {
    failed = true;
    throw;
  }
}

/// Runs p.close() and says whether it returned within a generous bound (a hang check, not a
/// speed); if not, ends the stuck hook's query so that the test can finish.
bool close_returns(pool& p, const std::string& application_name) {
  auto closing = std::async(std::launch::async, [&p] { p.close(); });
  const bool closed = closing.wait_for(60s) == std::future_status::ready;
  if (!closed) terminate_backends(application_name);
  return closed;
}

// A hook's queries are blocking libpq calls, out of reach of the stop signal: close() shuts the
// socket down under them. Without that, close() would wait for the hour-long query below.
TEST(pool_integration, closing_the_pool_interrupts_an_after_connect_hook) {
  pool_config cfg = app_config("itest_close_after_connect");
  cfg.max_size = 1;
  cfg.min_idle = 1;
  std::promise<void> entered;
  std::atomic<int> calls{0};
  std::atomic<bool> hook_query_failed{false};
  cfg.after_connect = [&](connection& c) {
    if (calls++ == 0) entered.set_value();
    sleep_an_hour(c, hook_query_failed);
  };
  auto ring = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  cfg.logger = std::make_shared<spdlog::logger>("itest_close_hook", ring);
  cfg.logger->set_level(spdlog::level::debug);
  pool p{cfg};  // min_idle 1: a worker connects and runs the hook at once
  ASSERT_EQ(entered.get_future().wait_for(20s), std::future_status::ready) << "the hook never ran";
  ASSERT_TRUE(close_returns(p, "itest_close_after_connect")) << "close() waits for the after_connect hook";
  EXPECT_TRUE(hook_query_failed);
  EXPECT_EQ(calls, 1);
  std::string log;
  for (const std::string& line : ring->last_formatted()) log += line;
  EXPECT_NE(log.find("connect abandoned during the after_connect hook: the pool is closing"), std::string::npos)
      << log;
  const pool_stats s = p.stats();
  EXPECT_EQ(s.connect_errors, 0u) << s.last_error.message;
}

// The same for a reset hook, which runs on the maintenance thread after a return.
TEST(pool_integration, closing_the_pool_interrupts_a_reset_hook) {
  pool_config cfg = app_config("itest_close_reset");
  cfg.max_size = 1;
  cfg.min_idle = 1;
  std::promise<void> entered;
  std::atomic<bool> hook_query_failed{false};
  cfg.reset = [&](connection& c) {
    entered.set_value();  // one return only, so one reset
    sleep_an_hour(c, hook_query_failed);
  };
  pool p{cfg};
  p.wait_ready(20s);
  p.acquire().release();
  ASSERT_EQ(entered.get_future().wait_for(20s), std::future_status::ready) << "the reset hook never ran";
  ASSERT_TRUE(close_returns(p, "itest_close_reset")) << "close() waits for the reset hook";
  EXPECT_TRUE(hook_query_failed);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.total, 0u);
  EXPECT_EQ(s.closed_broken, 0u) << "a reset ended by close() counted as a broken connection";
}

// A service file (service=, PGSERVICE) can supply the ports of a host list: libpq pairs them,
// so the pool must not split the list into single-host attempts that each inherit every port.
TEST(pool_integration, a_host_list_whose_ports_come_from_a_service_file_connects) {
  const std::string port = env("PQXXPOOL_TEST_PORT");
  const std::string file = ::testing::TempDir() + "pqxxpool_itest_pg_service.conf";
  {
    std::ofstream out(file);
    out << "[itest_svc]\nport=" << port << "," << port << "\n";
  }
  struct remove_on_exit {
    std::string path;
    ~remove_on_exit() { std::remove(path.c_str()); }
  } cleanup{file};
  const test::scoped_env service_file("PGSERVICEFILE", file);
  pool_config cfg = app_config("itest_multihost_service");
  // The test's conninfo names the port ("... port=N ..."): drop it, the service file gives it.
  // (Plain string work: GCC 12 warns inside <regex> under the sanitizers.)
  const std::size_t at = (" " + cfg.conninfo).find(" port=");
  ASSERT_NE(at, std::string::npos) << cfg.conninfo;
  const std::size_t end = cfg.conninfo.find(' ', at);
  cfg.conninfo.erase(at, end == std::string::npos ? std::string::npos : end + 1 - at);
  ASSERT_EQ(cfg.conninfo.find("port="), std::string::npos) << "the test's conninfo still names a port";
  cfg.params["service"] = "itest_svc";
  cfg.params["host"] = "localhost,localhost";
  cfg.params["hostaddr"] = "127.0.0.1,127.0.0.1";
  cfg.max_size = 1;
  cfg.min_idle = 1;
  pool p{cfg};
  p.wait_ready(20s);
  lease c = p.acquire();
  EXPECT_EQ(std::string{c->port()}, port);
  pqxx::nontransaction tx{*c};
  EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
}

TEST(pool_integration, wrong_password_gives_acquire_timeout_with_sqlstate_and_no_secret) {
  const std::string secret = secrets::wrong_password;
  pool_config cfg = app_config("itest_badpw");
  cfg.max_size = 1;
  cfg.min_idle = 0;
  cfg.before_connect = [&](connect_params& params) { params.set("password", secret); };
  pool p{cfg};
  try {
    lease c = p.acquire(2s);
    FAIL() << "connected with a wrong password";
  } catch (const acquire_timeout_error& e) {
    log_caught(e);
    EXPECT_EQ(e.last_connect_error().sqlstate, "28P01");
    EXPECT_NE(std::string(e.what()).find("password authentication failed"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos);
    EXPECT_EQ(std::string(e.what()).find(env("PQXXPOOL_TEST_APP_PASSWORD")), std::string::npos);
  }
  try {
    p.wait_ready(1s);
    FAIL() << "wait_ready succeeded with a wrong password";
  } catch (const connect_error& e) {
    log_caught(e);
    EXPECT_EQ(e.sqlstate(), "28P01");
    EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos);
  }
}

TEST(pool_integration, a_connection_returned_inside_a_transaction_is_never_handed_out_dirty) {
  pool p{one_connection_config("itest_dirty")};
  p.wait_ready(20s);
  {
    lease c = p.acquire();
    pqxx::nontransaction tx{*c};
    tx.exec("BEGIN");
    tx.exec("CREATE TEMP TABLE dirty_marker (x int)");
  }  // returned with the transaction open
  lease c = p.acquire();
  pqxx::nontransaction tx{*c};
  EXPECT_TRUE(tx.exec("SELECT to_regclass('pg_temp.dirty_marker') IS NULL")[0][0].as<bool>())
      << "the open transaction must have been rolled back";
  EXPECT_TRUE(tx.exec("SELECT xact_start = statement_timestamp() FROM pg_stat_activity WHERE pid = pg_backend_pid()")[0][0]
                  .as<bool>())
      << "the next user starts outside any transaction";
  EXPECT_EQ(p.stats().rollbacks, 1u);
  EXPECT_EQ(p.stats().connections_created, 1u) << "rolled back, not replaced";
}

TEST(pool_integration, tunnel_recipe_verifies_the_certificate_against_the_cluster_name) {
  pool_config cfg = app_config("itest_tunnel");
  cfg.params["host"] = "testcluster.dsql.us-east-1.on.aws";  // SNI and certificate name
  cfg.params["hostaddr"] = "127.0.0.1";                       // where the tunnel listens
  cfg.params["sslmode"] = "verify-full";
  pool p{cfg};
  p.wait_ready(20s);
  lease c = p.acquire();
  pqxx::nontransaction tx{*c};
  EXPECT_TRUE(tx.exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")[0][0].as<bool>());
}

TEST(pool_integration, an_ip_address_as_host_fails_verify_full_with_a_clear_error) {
  pool_config cfg = app_config("itest_ip");
  cfg.params["host"] = "127.0.0.1";
  cfg.params["hostaddr"] = "127.0.0.1";
  cfg.params["sslmode"] = "verify-full";
  cfg.min_idle = 1;
  pool p{cfg};
  try {
    p.wait_ready(1s);
    FAIL() << "verify-full accepted a certificate that does not name 127.0.0.1";
  } catch (const connect_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not match host name"), std::string::npos) << e.what();
  }
}

TEST(pool_integration, bad_conninfo_and_params_are_config_errors) {
  pool_config cfg;
  cfg.conninfo = "host=localhost port";
  try {
    pool p{cfg};
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "conninfo");
  }
  cfg.conninfo = env("PQXXPOOL_TEST_CONNINFO");
  cfg.params["no_such_keyword"] = "1";
  try {
    pool p{cfg};
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "params[\"no_such_keyword\"]");
  }
}

TEST(pool_integration, leases_outliving_the_pool_close_on_return) {
  auto p = std::make_unique<pool>(app_config("itest_outlive"));
  p->wait_ready(20s);
  lease c = p->acquire();
  p.reset();
  {
    pqxx::nontransaction tx{*c};
    EXPECT_EQ(tx.exec("SELECT 1")[0][0].as<int>(), 1);
  }
  c.release();
  EXPECT_TRUE(eventually([] { return backends("itest_outlive") == 0; }, 30s, 20ms));
}

}  // namespace
}  // namespace pqxxpool::itest
