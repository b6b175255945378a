// health_check(pool) and check_connection(cfg): get a connection (a lease, or one physical
// connection from the pool's own connector), then ask the server through src/pqxx/inspect.

#include "pqxxpool/health.hpp"

#include <algorithm>
#include <exception>
#include <memory>
#include <new>
#include <string>
#include <utility>

#include "core/connector.hpp"
#include "pqxx/adapter.hpp"
#include "pqxx/inspect.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool {

namespace {

using std::chrono::steady_clock;

// A year is far beyond any sensible health check; clamping keeps now + timeout from overflowing.
core::time_point deadline_after(steady_clock::time_point start, std::chrono::milliseconds timeout) {
  return start + std::min<std::chrono::milliseconds>(timeout, std::chrono::hours(24 * 366));
}

// Fills the report from the connection; report.ok says whether every check passed. Returns true
// when a check timed out or the connection broke: it may be unusable.
bool inspect(connection& conn, core::time_point deadline, health_report& report) {
  report.endpoint = pqxx_adapter::endpoint_of(conn);
  report.tls = pqxx_adapter::tls_of(conn);
  report.server_version_num = pqxx_adapter::server_version_num(conn);
  pqxx_adapter::server_facts facts = pqxx_adapter::query_server_facts(conn, deadline);
  report.server_version = std::move(facts.server_version);
  report.server_time = facts.server_time;
  report.in_recovery = facts.in_recovery;
  report.ok = facts.failed_check.empty();
  report.failed_check = std::move(facts.failed_check);
  report.error = std::move(facts.error);
  report.sqlstate = std::move(facts.sqlstate);
  return facts.connection_lost;
}

void fail(health_report& report, const char* step, std::string error, std::string sqlstate = {}) {
  report.ok = false;
  report.failed_check = step;
  report.error = std::move(error);
  report.sqlstate = std::move(sqlstate);
}

// The last resort of both noexcept functions: no allocation needed ("out of memory" fits the
// small-string buffer, and the strings it replaces are cleared first).
void out_of_memory(health_report& report) noexcept {
  report.ok = false;
  report.failed_check.clear();
  report.error.clear();
  report.sqlstate.clear();
  try {
    report.error = "out of memory";
  } catch (...) {
    // Cannot happen for a 13-character string; the report then says only ok == false.
  }
}

// An exception nothing should throw: reported under the step that was running.
void unexpected(health_report& report, const char* step, const std::exception& e) noexcept {
  try {
    report.ok = false;
    if (report.failed_check.empty()) report.failed_check = step;
    report.error = e.what();
  } catch (...) {
    out_of_memory(report);
  }
}

bool check_timeout(health_report& report, std::chrono::milliseconds timeout) {
  if (timeout.count() > 0) return true;
  fail(report, "config", "pqxxpool: invalid timeout: must be > 0, got " + std::to_string(timeout.count()) + " ms");
  return false;
}

}  // namespace

health_report health_check(pool& pool, std::chrono::milliseconds timeout) noexcept {
  health_report report;
  const auto start = steady_clock::now();
  try {
    if (!check_timeout(report, timeout)) return report;
    const core::time_point deadline = deadline_after(start, timeout);
    lease conn;
    try {
      conn = pool.acquire(timeout);
    } catch (const acquire_timeout_error& e) {
      fail(report, "acquire", e.what(), e.last_connect_error().sqlstate);
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {  // pool_closed, too_many_waiters
      fail(report, "acquire", e.what());
    }
    report.acquire_latency = steady_clock::now() - start;
    // A check that timed out or lost the connection leaves it broken or mid-statement: it must
    // not be handed out again. One the server merely rejected leaves it idle and sound.
    if (conn && inspect(*conn, deadline, report)) conn.discard();
  } catch (const std::bad_alloc&) {
    out_of_memory(report);
  } catch (const std::exception& e) {  // nothing else is expected; keep the promise anyway
    unexpected(report, "acquire", e);
  }
  report.latency = steady_clock::now() - start;
  return report;
}

health_report check_connection(const pool_config& cfg, std::chrono::milliseconds timeout) noexcept {
  health_report report;
  const auto start = steady_clock::now();
  try {
    if (!check_timeout(report, timeout)) return report;
    const core::time_point deadline = deadline_after(start, timeout);
    std::unique_ptr<core::connector> connector;
    try {
      pool_config copy = cfg;
      copy.connect_timeout = timeout;
      copy.validate();
      connector = pqxx_adapter::make_connector(copy, pqxx_adapter::build_params(copy));
    } catch (const config_error& e) {
      fail(report, "config", e.what());
      report.latency = steady_clock::now() - start;
      return report;
    }
    // The pool's own connector: parameters, hooks, verbose errors with SQLSTATE, password
    // scrubbing and error hints are exactly what a pool built from cfg would use.
    std::unique_ptr<core::physical> physical;
    try {
      // timeout bounds the whole call: with several hosts they are tried in turn while time is
      // left, and none is tried or waited for past the deadline.
      physical = connector->connect({deadline, deadline, -1});
    } catch (const connect_error& e) {
      fail(report, "connect", e.what(), e.sqlstate());
    }
    report.acquire_latency = steady_clock::now() - start;
    if (physical) {
      connection* const conn = physical->user_connection();
      if (conn == nullptr) {
        fail(report, "connect", "the connector returned no libpqxx connection");
      } else {
        (void)inspect(*conn, deadline, report);  // closed below either way
      }
      physical.reset();  // closes it (a Terminate message; non-blocking after a lost round trip)
    }
  } catch (const std::bad_alloc&) {
    out_of_memory(report);
  } catch (const std::exception& e) {  // nothing else is expected; keep the promise anyway
    unexpected(report, "connect", e);
  }
  report.latency = steady_clock::now() - start;
  return report;
}

}  // namespace pqxxpool
