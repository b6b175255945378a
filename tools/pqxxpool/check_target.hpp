#pragma once
/// @file check_target.hpp
/// Where `pqxxpool check` connects: the connectivity test of a tunnel program, which hands the
/// target over in the environment. Kept apart from check.cpp (and free of CLI11) so that the unit
/// tests can compile it.

#include <map>
#include <optional>
#include <string>

namespace pqxxpool_cli {

/// The connection target, as pool_config::conninfo and pool_config::params.
struct check_target {
  /// libpq connection string (key=value or URI); "" means libpq's defaults and PG* variables.
  /// May contain a password: never print it.
  std::string conninfo;
  /// Keywords laid over conninfo; the HOSTNAME rule sets "host" here.
  std::map<std::string, std::string> params;
  /// Where the target came from, for the output: "--conninfo", "DATABASE_URL" or "PG* variables".
  std::string source;
  /// Set when "host" was taken from HOSTNAME, to say so in the output.
  bool host_from_hostname = false;
};

/// Resolves the target, in this order:
/// 1. `conninfo_option` (--conninfo) when given: the environment's DATABASE_URL and HOSTNAME are
///    not looked at;
/// 2. else DATABASE_URL when set and not empty;
/// 3. else libpq's own PG* variables (PGHOST, PGHOSTADDR, PGPORT, PGDATABASE, PGUSER, PGPASSWORD,
///    PGSSLMODE, …), read by libpq itself when it connects; and HOSTNAME becomes the host only
///    when PGHOSTADDR is set and PGHOST is not (shells set HOSTNAME to the machine's name, so it
///    means something only next to a tunnel address). Empty variables count as unset.
/// In every case libpq still fills keywords the string leaves out from the PG* variables (as psql
/// does). Reads the environment (std::getenv): not thread-safe against setenv.
/// Throws std::bad_alloc only.
[[nodiscard]] check_target resolve_check_target(const std::optional<std::string>& conninfo_option);

}  // namespace pqxxpool_cli
