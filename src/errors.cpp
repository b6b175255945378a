#include "pqxxpool/errors.hpp"

#include <string>
#include <string_view>

#include "pqxxpool/dsql_pool.hpp"

namespace pqxxpool {

config_error::config_error(std::string field, const std::string& message)
    : error("pqxxpool: invalid " + field + ": " + message), m_field(std::move(field)) {}

connect_error::connect_error(const std::string& message, std::string sqlstate)
    : error(message), m_sqlstate(std::move(sqlstate)) {}

namespace {
// "pqxxpool[orders]: ", as the pool's log lines begin; an unnamed pool is "default" there too.
std::string prefix(const std::string& pool) { return "pqxxpool[" + (pool.empty() ? std::string("default") : pool) + "]: "; }

std::string timeout_message(std::chrono::milliseconds waited, const pool_stats& s, const std::string& note) {
  std::string m = prefix(s.name) + "no connection available after waiting " + std::to_string(waited.count()) +
                  " ms (total " + std::to_string(s.total) + "/" + std::to_string(s.max_size) + ", idle " +
                  std::to_string(s.idle) + ", in use " + std::to_string(s.in_use) + ", connecting " +
                  std::to_string(s.connecting) + ", waiting " + std::to_string(s.waiting) + ")";
  if (!s.last_error.empty()) {
    m += "; last connect error";
    if (!s.last_error.sqlstate.empty()) m += " [" + s.last_error.sqlstate + "]";
    m += ": " + s.last_error.message;
  }
  if (!note.empty()) m += "; " + note;
  return m;
}
}  // namespace

acquire_timeout_error::acquire_timeout_error(std::chrono::milliseconds waited, pool_stats snapshot,
                                             const std::string& note)
    : error(timeout_message(waited, snapshot, note)), m_waited(waited), m_snapshot(std::move(snapshot)) {}

pool_closed::pool_closed(const std::string& pool) : error(prefix(pool) + "the pool is closed") {}

too_many_waiters::too_many_waiters(std::size_t max_waiting, const std::string& pool)
    : error(prefix(pool) + "too many threads waiting for a connection (max_waiting = " + std::to_string(max_waiting) +
            ")") {}

std::string connect_hint(std::string_view message) {
  // libpq's texts (strerror's for a refused TCP connect), matched as libpq 15 writes them.
  const auto has = [message](std::string_view text) { return message.find(text) != std::string_view::npos; };
  if (has("Connection refused"))
    return "nothing accepts connections at that address and port: is the tunnel up (the SSH/SSM port "
           "forward running, listening on the port connected to)? Without a tunnel: is the server running "
           "and listening on that address?";
  if (has("password authentication failed"))
    return "the server rejected the password: it is wrong for this user (check the URL, PGPASSWORD, "
           "~/.pgpass), or it is an RDS IAM token sent to a user who logs in with a password (such users "
           "need the rds_iam role)";
  if (has("does not match host name"))
    return "sslmode=verify-full checks the server's certificate against host: host must be a name on the "
           "certificate (the server's DNS name, not an IP address or a tunnel's name). Through a tunnel, set "
           "host to that name and hostaddr to the tunnel's address";
  if (has("too many clients already") || has("remaining connection slots are reserved"))
    return "the server's max_connections is reached: every pool and client on it counts, so lower max_size "
           "(across all instances of the application) or raise max_connections on the server";
  if (has("too many connections for role") || has("too many connections for database"))
    return "the role's or database's CONNECTION LIMIT is reached (ALTER ROLE/DATABASE … CONNECTION LIMIT): "
           "every connection of that user or to that database counts, so lower max_size (across all instances "
           "of the application) or raise the limit";
  // PgBouncer's own refusals (its texts as of 1.18): the pooler, not PostgreSQL, said no.
  if (has("SASL authentication failed"))
    return "a connection pooler (PgBouncer) rejected the password: it is wrong for this user, or the "
           "pooler's auth_file / auth_query does not have this user's current password";
  if (has("unsupported startup parameter"))
    return "a connection pooler (PgBouncer) refuses a startup parameter it does not pass on, usually "
           "options=-c …: set those settings with ALTER ROLE … SET (or in a SQL statement) instead; its "
           "ignore_startup_parameters would drop the setting silently";
  if (has("no more connections allowed"))
    return "the connection pooler's limit of client connections (PgBouncer's max_client_conn) is reached: "
           "every pool and client behind it counts, so lower max_size (across all instances of the "
           "application) or raise max_client_conn";
  if (has("server login has been failing"))
    return "the connection pooler (PgBouncer) cannot log in to the PostgreSQL server behind it (its "
           "server_login_retry): check that server, and the pooler's credentials for it";
  return dsql::hint_for(message);  // SNI, access denied, DSQL's connection limits
}

token_error::token_error(std::string source, const std::string& message)
    : error("pqxxpool: IAM token: " + source + ": " + message), m_source(std::move(source)) {}

}  // namespace pqxxpool
