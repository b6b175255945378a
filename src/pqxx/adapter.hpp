#pragma once
// The only code in pqxxpool that touches libpqxx or libpq. Everything here runs outside the pool's
// lock. Supporting libpqxx 7 means changing adapter.cpp alone.

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "core/connector.hpp"
#include "pqxxpool/config.hpp"

struct pg_conn;  // libpq's PGconn, without including libpq-fe.h here

namespace pqxxpool::pqxx_adapter {

/// Parses cfg.conninfo with PQconninfoParse (URI or key=value) and lays cfg.params over it
/// (a value in params wins). Adds pool defaults where the user gave none: keepalives=1,
/// keepalives_idle=30, keepalives_interval=10, keepalives_count=3, connect_timeout (seconds,
/// rounded up from cfg.connect_timeout), application_name=pqxxpool.
/// Throws config_error for "conninfo" (parse error; quoted fragments of the input are elided so a
/// password cannot leak, except a keyword or a near miss of one), params["key"] (keyword libpq
/// does not know), or whichever of conninfo, params["key"] or the environment variable libpq
/// would read (PGPORT, PGSSLMODE, …) holds a value libpq would refuse when connecting: a port
/// outside 1-65535, a non-integer connect_timeout/keepalives*/tcp_user_timeout, an unknown
/// sslmode, gssencmode, channel_binding or target_session_attrs.
connect_params build_params(const pool_config& cfg);

/// libpq's connect_timeout if cfg.conninfo or cfg.params sets it (nullopt if not, or if it is not
/// an integer, which build_params reports), in libpq's reading: whole seconds, 1 counts as 2, 0 or
/// less means no limit (milliseconds::max()). The pool then uses it instead of cfg.connect_timeout.
/// Throws config_error like build_params for a conninfo that cannot be parsed.
std::optional<std::chrono::milliseconds> user_connect_timeout(const pool_config& cfg);

/// A core::connector that, per connect: copies `base`, runs cfg.before_connect on the copy,
/// connects with PQconnectStartParams + PQconnectPoll against the deadline (verbose errors, so the
/// SQLSTATE can be read), wraps the handle in a libpqxx connection whose automatic reactivation is
/// inhibited, and runs cfg.after_connect. Failures throw connect_error (message never contains
/// the password; SQLSTATE parsed from libpq's verbose text when present).
std::unique_ptr<core::connector> make_connector(const pool_config& cfg, connect_params base);

/// libpq's version as PQlibVersion() reports it (e.g. 150018 for 15.18).
int libpq_version() noexcept;

/// The SQLSTATE in a verbose libpq message ("FATAL:  28P01: password …"), or "" if none.
std::string sqlstate_from_message(std::string_view message);

/// libpq's message about a connection that broke, made fit for one log line: its lines joined
/// with single spaces ("server closed the connection unexpectedly\n\tThis probably means …" →
/// "… unexpectedly This probably means …"), LOCATION lines dropped, and the server's DETAIL,
/// HINT, CONTEXT, QUERY, STATEMENT and LINE parts left out with their continuation lines: they
/// can quote the user's data (a key's value, a query's text), which a warning must not spread.
/// "" for "". Never throws (out of memory gives "").
std::string loss_text(std::string_view message) noexcept;

/// The libpq handle of a connection, or nullptr once libpqxx has dropped it. Precondition: conn
/// was opened by make_connector's connector (every connection a pool hands out was; a test fake's
/// lease has none). For src/pqxx only. Never throws.
::pg_conn* native_handle(connection& conn) noexcept;

/// What run_statement found.
struct statement_result {
  enum class status {
    ok,      ///< the statement succeeded; value / is_null hold the first field of the first row
    failed,  ///< the server (or libpq) rejected the statement; the connection is still usable
    lost,    ///< timed out or the connection broke: it must not be used again
  };
  status outcome = status::lost;
  std::string value;     ///< first column of the first row ("" when there is no row or it is NULL)
  bool is_null = true;   ///< no row, or the first field is NULL
  std::string error;     ///< the error text when outcome != ok (libpq's, default verbosity)
  std::string sqlstate;  ///< the SQLSTATE of a failed statement, "" when none
};

/// Runs one statement that returns rows (simple query protocol, outside any transaction when the
/// connection is idle) without blocking past deadline: the same non-blocking round trip as the
/// pool's validation. After `failed` the connection is idle and back in blocking mode; after
/// `lost` it is in an unknown state and must be closed. Throws std::bad_alloc only.
statement_result run_statement(connection& conn, const char* sql, core::time_point deadline);

}  // namespace pqxxpool::pqxx_adapter
