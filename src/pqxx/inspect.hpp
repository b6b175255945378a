#pragma once
// What a connection and its server say about themselves, for health checks and `pqxxpool check`.
// Part of the libpq/libpqxx adapter (src/pqxx), the only code that touches libpq. Every function
// takes a connection opened by the pool's connector (see pqxx_adapter::native_handle); once
// libpqxx has dropped its handle the facts are empty and the checks fail.

#include <chrono>
#include <optional>
#include <string>

#include "core/clock.hpp"
#include "pqxxpool/config.hpp"
#include "pqxxpool/health.hpp"

namespace pqxxpool::pqxx_adapter {

/// Host, address, port, database and user of an open connection (no I/O). Throws std::bad_alloc only.
endpoint_facts endpoint_of(connection& conn);

/// TLS status, protocol and cipher of an open connection (no I/O). Throws std::bad_alloc only.
tls_facts tls_of(connection& conn);

/// PQserverVersion (from the login handshake, no I/O), e.g. 150014; 0 if unknown. Never throws.
int server_version_num(connection& conn) noexcept;

/// The answers of the server checks, in the order they run; the first failure stops the rest.
struct server_facts {
  std::string server_version;                                        ///< SHOW server_version
  std::optional<std::chrono::system_clock::time_point> server_time;  ///< now(), to microseconds
  std::optional<bool> in_recovery;  ///< pg_is_in_recovery(); nullopt when the function is missing (42883)
  std::string failed_check;         ///< "" when all passed, else "server_version", "server_time", "in_recovery"
  std::string error;                ///< the failed check's message
  std::string sqlstate;             ///< the failed check's SQLSTATE, "" when none
  bool connection_lost = false;     ///< a check timed out or the connection broke
};

/// Runs the checks, each as its own statement outside any transaction (run_statement: simple
/// query protocol, non-blocking, bounded by deadline). 42883 (undefined_function) from
/// pg_is_in_recovery() means the server lacks it: that check is skipped, not failed.
/// Throws std::bad_alloc only.
server_facts query_server_facts(connection& conn, core::time_point deadline);

}  // namespace pqxxpool::pqxx_adapter
