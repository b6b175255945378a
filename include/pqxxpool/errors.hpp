#pragma once
/// @file errors.hpp
/// The exceptions pqxxpool throws. The hierarchy is shallow: everything derives from
/// pqxxpool::error (itself a std::runtime_error). No message ever contains a password or token.

#include <chrono>
#include <stdexcept>
#include <string>
#include <string_view>

#include "pqxxpool/stats.hpp"

namespace pqxxpool {

/// Base of every pqxxpool exception.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A pool_config field (or environment variable / URI parameter) holds a value that is not
/// allowed. field() names it, e.g. "max_size" or "params[\"sslmode\"]"; what() says what is allowed.
class config_error : public error {
 public:
  config_error(std::string field, const std::string& message);
  /// The offending field's name. Never throws.
  [[nodiscard]] const std::string& field() const noexcept { return m_field; }

 private:
  std::string m_field;
};

/// Opening a physical connection failed (libpq error, connect_timeout, or a hook that threw).
class connect_error : public error {
 public:
  explicit connect_error(const std::string& message, std::string sqlstate = {});
  /// SQLSTATE reported by the server or libpq, or "" when there was none. Never throws.
  [[nodiscard]] const std::string& sqlstate() const noexcept { return m_sqlstate; }

 private:
  std::string m_sqlstate;
};

/// acquire() gave up at its deadline. Carries how long it waited, a snapshot of the pool at that
/// moment, and the pool's last connect error while connects are failing (empty once a connect
/// has succeeded since; pool::stats().last_error keeps the most recent failure regardless).
/// what(): "pqxxpool[NAME]: no connection available after waiting N ms (total …, idle …, in use …,
/// connecting …, waiting …)", then the last connect error and the note, if any.
class acquire_timeout_error : public error {
 public:
  /// note: appended to the message when not empty (why the wait ended as it did). Throws
  /// std::bad_alloc (building the message) only. Thread-safety: a value; copies share nothing.
  acquire_timeout_error(std::chrono::milliseconds waited, pool_stats snapshot, const std::string& note = {});
  /// How long the acquire waited before giving up: its time in the queue, or, when a validation
  /// round trip that failed or did not finish took the time (the message then says so), the time
  /// since the acquire began. Never throws.
  [[nodiscard]] std::chrono::milliseconds waited() const noexcept { return m_waited; }
  /// The pool's state when the acquire gave up. Never throws.
  [[nodiscard]] const pool_stats& snapshot() const noexcept { return m_snapshot; }
  /// The pool's most recent connect failure, with its SQLSTATE, if the latest connect attempt
  /// failed; empty() otherwise. Never throws.
  [[nodiscard]] const error_info& last_connect_error() const noexcept { return m_snapshot.last_error; }

 private:
  std::chrono::milliseconds m_waited;
  pool_stats m_snapshot;
};

/// The pool was closed (before or while acquire() waited). what(): "pqxxpool[NAME]: the pool is
/// closed", NAME being pool_config::name ("default" when empty).
class pool_closed : public error {
 public:
  /// pool: the pool's name for the message. Throws std::bad_alloc (building the message) only.
  explicit pool_closed(const std::string& pool = {});
};

/// acquire() was refused at once because pool_config::max_waiting threads were already waiting.
/// what() begins with "pqxxpool[NAME]: ", as acquire_timeout_error's does.
class too_many_waiters : public error {
 public:
  /// pool: the pool's name for the message. Throws std::bad_alloc (building the message) only.
  explicit too_many_waiters(std::size_t max_waiting, const std::string& pool = {});
};

/// An IAM authentication token could not be made: credentials were missing, malformed, expired
/// or come from a source pqxxpool does not support yet, or signing failed. source() names where
/// the credentials were looked for (e.g. "environment", "profile 'dev'"); what() says that and
/// why it failed. Neither ever contains a secret key, a session token or a token.
class token_error : public error {
 public:
  token_error(std::string source, const std::string& message);
  /// The credential source (or step) that failed. Never throws.
  [[nodiscard]] const std::string& source() const noexcept { return m_source; }

 private:
  std::string m_source;
};

/// A hint for a failed connect's message (libpq's English text, verbose or not), or "" when none
/// applies. Covers the usual mistakes of connecting through a tunnel:
/// - "Connection refused": nothing listens there; is the tunnel up, on the port connected to?
/// - "password authentication failed": a wrong password, or an RDS IAM token sent to a user who
///   authenticates with a password;
/// - "does not match host name": with sslmode=verify-full, host must be a name on the server's
///   certificate (connect through a tunnel with host = that name, hostaddr = the tunnel);
/// - PostgreSQL's "too many clients already" / reserved slots: max_connections is reached;
/// - a role's or database's CONNECTION LIMIT ("too many connections for role/database");
/// - PgBouncer's refusals: "SASL authentication failed" (its password check), "unsupported
///   startup parameter" (options=-c …: use ALTER ROLE … SET), "no more connections allowed"
///   (max_client_conn), "server login has been failing" (it cannot reach the server behind it);
/// - and, through dsql::hint_for, Aurora DSQL's "sni" as a word of its own (set host to the
///   endpoint and hostaddr to the tunnel; a name containing "sni" does not count), "access
///   denied" (token expired, wrong action for the user, region), 53300 and 53400.
/// `pqxxpool check` prints it under the error. Throws std::bad_alloc only.
[[nodiscard]] std::string connect_hint(std::string_view message);

}  // namespace pqxxpool
