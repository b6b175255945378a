// Connection and server facts for health checks: libpq's view of an open connection (no I/O) and
// three short statements sent through the adapter's deadline-bounded round trip.

#include "pqxx/inspect.hpp"

#include <cerrno>
#include <cstdlib>
#include <string>
#include <utility>

#include <libpq-fe.h>

#include "pqxx/adapter.hpp"

namespace pqxxpool::pqxx_adapter {

namespace {

std::string or_empty(const char* text) { return text != nullptr ? std::string{text} : std::string{}; }

// now() as whole microseconds since the Unix epoch, so no floating point and no time zone parsing.
// Outside a transaction now() is the start of this very statement.
constexpr const char* server_time_sql = "SELECT (extract(epoch FROM now()) * 1000000)::bigint";

}  // namespace

endpoint_facts endpoint_of(connection& conn) {
  endpoint_facts out;
  PGconn* const handle = native_handle(conn);
  if (handle == nullptr) return out;
  out.host = or_empty(PQhost(handle));
  out.hostaddr = or_empty(PQhostaddr(handle));
  out.port = or_empty(PQport(handle));
  out.dbname = or_empty(PQdb(handle));
  out.user = or_empty(PQuser(handle));
  return out;
}

tls_facts tls_of(connection& conn) {
  tls_facts out;
  PGconn* const handle = native_handle(conn);
  if (handle == nullptr || PQsslInUse(handle) == 0) return out;
  out.in_use = true;
  out.protocol = or_empty(PQsslAttribute(handle, "protocol"));
  out.cipher = or_empty(PQsslAttribute(handle, "cipher"));
  return out;
}

int server_version_num(connection& conn) noexcept {
  PGconn* const handle = native_handle(conn);
  return handle != nullptr ? PQserverVersion(handle) : 0;
}

server_facts query_server_facts(connection& conn, core::time_point deadline) {
  using status = statement_result::status;
  server_facts out;
  // Records a failed check and returns the facts so far: the remaining checks do not run.
  const auto fail = [&out](const char* check, statement_result&& r) {
    out.failed_check = check;
    out.error = std::move(r.error);
    out.sqlstate = std::move(r.sqlstate);
    out.connection_lost = r.outcome == status::lost;
    return std::move(out);
  };

  statement_result version = run_statement(conn, "SHOW server_version", deadline);
  if (version.outcome != status::ok) return fail("server_version", std::move(version));
  out.server_version = std::move(version.value);

  statement_result time = run_statement(conn, server_time_sql, deadline);
  if (time.outcome != status::ok) return fail("server_time", std::move(time));
  if (!time.is_null) {
    errno = 0;
    char* end = nullptr;
    const long long micros = std::strtoll(time.value.c_str(), &end, 10);
    if (errno != 0 || end == time.value.c_str() || *end != '\0') {
      time.outcome = status::failed;
      time.error = "the server's time is not a number of microseconds: \"" + time.value + "\"";
      return fail("server_time", std::move(time));
    }
    out.server_time = std::chrono::system_clock::time_point{
        std::chrono::duration_cast<std::chrono::system_clock::duration>(std::chrono::microseconds{micros})};
  }

  statement_result recovery = run_statement(conn, "SELECT pg_is_in_recovery()", deadline);
  if (recovery.outcome == status::failed && recovery.sqlstate == "42883") return out;  // no such function: skipped
  if (recovery.outcome != status::ok) return fail("in_recovery", std::move(recovery));
  if (!recovery.is_null) out.in_recovery = recovery.value == "t";
  return out;
}

}  // namespace pqxxpool::pqxx_adapter
