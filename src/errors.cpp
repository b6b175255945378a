#include "pqxxpool/errors.hpp"

#include <string>

namespace pqxxpool {

config_error::config_error(std::string field, const std::string& message)
    : error("pqxxpool: invalid " + field + ": " + message), m_field(std::move(field)) {}

connect_error::connect_error(const std::string& message, std::string sqlstate)
    : error(message), m_sqlstate(std::move(sqlstate)) {}

namespace {
std::string timeout_message(std::chrono::milliseconds waited, const pool_stats& s) {
  std::string m = "pqxxpool: no connection available after waiting " + std::to_string(waited.count()) +
                  " ms (total " + std::to_string(s.total) + "/" + std::to_string(s.max_size) + ", idle " +
                  std::to_string(s.idle) + ", in use " + std::to_string(s.in_use) + ", connecting " +
                  std::to_string(s.connecting) + ", waiting " + std::to_string(s.waiting) + ")";
  if (!s.last_error.empty()) {
    m += "; last connect error";
    if (!s.last_error.sqlstate.empty()) m += " [" + s.last_error.sqlstate + "]";
    m += ": " + s.last_error.message;
  }
  return m;
}
}  // namespace

acquire_timeout_error::acquire_timeout_error(std::chrono::milliseconds waited, pool_stats snapshot)
    : error(timeout_message(waited, snapshot)), m_waited(waited), m_snapshot(std::move(snapshot)) {}

pool_closed::pool_closed() : error("pqxxpool: the pool is closed") {}

too_many_waiters::too_many_waiters(std::size_t max_waiting)
    : error("pqxxpool: too many threads waiting for a connection (max_waiting = " + std::to_string(max_waiting) + ")") {}

token_error::token_error(std::string source, const std::string& message)
    : error("pqxxpool: IAM token: " + source + ": " + message), m_source(std::move(source)) {}

}  // namespace pqxxpool
