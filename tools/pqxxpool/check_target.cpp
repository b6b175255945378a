#include "check_target.hpp"

#include <cstdlib>
#include <utility>

namespace pqxxpool_cli {

namespace {

/// The variable's value, or nullopt when it is unset or empty.
std::optional<std::string> env(const char* name) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string{value};
}

}  // namespace

check_target resolve_check_target(const std::optional<std::string>& conninfo_option) {
  check_target out;
  if (conninfo_option) {
    out.conninfo = *conninfo_option;
    out.source = "--conninfo";
    return out;
  }
  if (std::optional<std::string> url = env("DATABASE_URL")) {
    out.conninfo = std::move(*url);
    out.source = "DATABASE_URL";
    return out;
  }
  out.source = "PG* variables";
  // libpq reads PGHOSTADDR itself; HOSTNAME supplies the name for SNI and verify-full.
  if (env("PGHOSTADDR") && !env("PGHOST")) {
    if (std::optional<std::string> hostname = env("HOSTNAME")) {
      out.params["host"] = std::move(*hostname);
      out.host_from_hostname = true;
    }
  }
  return out;
}

}  // namespace pqxxpool_cli
