#pragma once
/// @file health.hpp
/// Health checks: pqxxpool::health_check(pool) borrows a connection within a timeout and asks the
/// server a few questions it can answer on any PostgreSQL or Aurora DSQL endpoint; check_connection
/// does the same on one connection of its own, without a pool (what `pqxxpool check` runs).
///
/// ```cpp
/// pqxxpool::health_report r = pqxxpool::health_check(pool, std::chrono::seconds(2));
/// if (!r.ok) std::fprintf(stderr, "not ready: %s: %s\n", r.failed_check.c_str(), r.error.c_str());
/// ```
///
/// Guarantees: neither function throws; every failure comes back in the report. The checks run
/// outside any transaction, one statement each, and the whole call (acquire or connect included)
/// is bounded by its timeout. No field ever contains a password or token.

#include <chrono>
#include <optional>
#include <string>

#include "pqxxpool/config.hpp"
#include "pqxxpool/pool.hpp"

namespace pqxxpool {

/// Where a connection went, as libpq reports it for the open connection (PQhost, PQhostaddr,
/// PQport, PQdb, PQuser). Empty strings for what libpq does not know. Never a password.
struct endpoint_facts {
  std::string host;      ///< the host name (or socket directory) connected to; also the TLS SNI name
  std::string hostaddr;  ///< the numeric address connected to (a tunnel's or VPC endpoint's address)
  std::string port;      ///< the port connected to
  std::string dbname;    ///< the database
  std::string user;      ///< the role logged in as
};

/// TLS on a connection (PQsslInUse, PQsslAttribute).
struct tls_facts {
  bool in_use = false;   ///< whether the connection is encrypted
  std::string protocol;  ///< e.g. "TLSv1.3"; "" when not in use
  std::string cipher;    ///< e.g. "TLS_AES_256_GCM_SHA384"; "" when not in use
};

/// The outcome of one health check. A plain value type; not synchronised.
struct health_report {
  /// True when a connection was had and every supported check passed. Default false.
  bool ok = false;

  /// Which step failed, "" when ok: "config" (timeout ≤ 0; for check_connection also an invalid
  /// pool_config or a conninfo that cannot be parsed), "acquire" (health_check: no connection
  /// within the timeout, the pool is closed or has too many waiters), "connect"
  /// (check_connection: opening the connection failed), or the name of the failed check:
  /// "server_version", "server_time", "in_recovery".
  std::string failed_check;

  /// What went wrong, "" when ok: for "acquire" the acquire_timeout_error text with the pool's last
  /// connect error, for "connect" libpq's message (with a hint when pool_config::error_hint gives
  /// one), for a check the server's message. Never contains a password or token.
  std::string error;

  /// The SQLSTATE of the failure when the server or libpq reported one (e.g. "28P01"), else "".
  std::string sqlstate;

  /// Time to get the connection: acquire() for health_check (0 on the fast path when one was idle,
  /// a validation round trip included), the physical connect for check_connection. Default 0.
  std::chrono::nanoseconds acquire_latency{0};

  /// Time of the whole call: acquire (or connect) and every check. Default 0.
  std::chrono::nanoseconds latency{0};

  /// Where the connection went. Set whenever a connection was had, even if a check then failed.
  endpoint_facts endpoint;

  /// TLS on the connection. Set whenever a connection was had.
  tls_facts tls;

  /// The server's full version text (SHOW server_version), e.g. "15.14 (Debian 15.14-0+deb12u1)".
  /// "" until that check passes.
  std::string server_version;

  /// The server's version number as libpq reports it (PQserverVersion: 150014 for 15.14, the same
  /// as SHOW server_version_num). 0 when no connection was had.
  int server_version_num = 0;

  /// The server's clock (now(), which outside a transaction is the statement's start), to
  /// microseconds. nullopt until that check passes. Compare it with the local clock to see skew,
  /// which matters for IAM tokens.
  std::optional<std::chrono::system_clock::time_point> server_time;

  /// pg_is_in_recovery(): true on a hot standby (a read replica), false on a primary. nullopt when
  /// the server has no such function (SQLSTATE 42883, e.g. Aurora DSQL): that check is skipped, not
  /// failed. Also nullopt when an earlier check failed.
  std::optional<bool> in_recovery;
};

/// Borrows a connection from `pool` with acquire(timeout) and runs, each as its own statement
/// outside any transaction, SHOW server_version, SELECT now() and SELECT pg_is_in_recovery()
/// (skipped where the function does not exist). Each round trip is bounded by what is left of
/// `timeout` (non-blocking libpq, like the pool's validation), so the call returns within about
/// `timeout` even when the server hangs. A check that timed out or lost the connection closes it
/// (lease::discard(), counted in closed_discarded): it may be broken or mid-statement. Otherwise
/// (all passed, or the server rejected a statement and the connection is idle again) it goes back.
/// `timeout` must be > 0 (else step "config"); values above a year act as a year.
/// Never throws: even out of memory is reported (error "out of memory").
/// Thread-safe: any number of threads may check the same pool at once.
[[nodiscard]] health_report health_check(pool& pool,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(5)) noexcept;

/// Opens one connection the way a pool built from `cfg` would (same parameters, before_connect,
/// after_connect and error_hint hooks, the same connector), runs the checks of health_check on it
/// and closes it. No pool, no retries, no background threads: one attempt, whose error comes back
/// at once. The connect and the checks share `timeout`, which replaces cfg.connect_timeout and must
/// be > 0. cfg is validated as the pool validates it (step "config" on failure). Never throws
/// (see health_check). Thread-safe: independent calls share nothing (cfg's hooks are called on the calling thread).
[[nodiscard]] health_report check_connection(const pool_config& cfg,
                                             std::chrono::milliseconds timeout = std::chrono::seconds(5)) noexcept;

}  // namespace pqxxpool
