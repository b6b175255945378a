#pragma once
/// @file dsql_pool.hpp
/// A pool for Amazon Aurora DSQL: IAM token per physical connection, verify-full TLS with SNI,
/// lifetimes inside DSQL's 60-minute connection limit, tunnels, and hints for DSQL's errors.
///
/// ```cpp
/// pqxxpool::dsql::config cfg;
/// cfg.host = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";   // or just the cluster id + region
/// auto pool = pqxxpool::dsql::make_pool(cfg);                      // std::unique_ptr<pqxxpool::pool>
/// // or: make_pool(pqxxpool::dsql::config_from_url("postgres://admin@<endpoint>/postgres?region=us-east-1"));
/// ```

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/config.hpp"
#include "pqxxpool/pool.hpp"

namespace pqxxpool::dsql {

/// Everything that makes a DSQL pool. Fields follow the AWS DSQL connector for Go; the pool's own
/// settings (sizes, lifetimes, hooks) live in `pool`, whose defaults already suit DSQL (max_size 10,
/// min_idle 2, max_lifetime 55 min with 10% jitter, idle_timeout 10 min).
struct config {
  /// The cluster endpoint ("<id>.dsql.<region>.on.aws"), or the 26-character cluster id, expanded
  /// to "<id>.dsql.<region>.on.aws". Required. Used for TLS SNI, certificate verification and the
  /// token, even when connecting through a tunnel.
  std::string host;
  /// AWS region. Default "": from host, else AWS_REGION, else AWS_DEFAULT_REGION (config_error
  /// naming "region" if none).
  std::string region;
  /// Database role. Default "admin" (admin tokens use DbConnectAdmin, others DbConnect).
  std::string user = "admin";
  /// Database. Default "postgres".
  std::string database = "postgres";
  /// The cluster's port. Default 5432.
  std::uint16_t port = 5432;
  /// AWS profile for credentials. Default "": aws::default_credentials_chain — environment keys,
  /// web identity, the profile from AWS_DEFAULT_PROFILE / AWS_PROFILE / "default" (keys,
  /// credential_process), the container endpoint, EC2 instance metadata. A profile given here
  /// skips the environment keys (as botocore with an explicit profile).
  std::string profile;
  /// Credentials source that overrides profile and the chain. Default: none. Either way the
  /// credentials are cached (aws::caching_provider) until 5 minutes before they expire, and
  /// fetched only on the pool's connect threads.
  std::shared_ptr<aws::credentials_provider> credentials;
  /// Lifetime of each token. Default 900 s; allowed 1 … 604800 s.
  std::chrono::seconds token_duration{900};
  /// Opt-in token reuse (what the DSQL Go connector once documented, later dropped by AWS as
  /// gaining nothing): reuse a token until 80% of its lifetime has passed (counted from its
  /// X-Amz-Date, whole seconds), leaving at least 1 s of it for the connect. Default false: a
  /// fresh token for every physical connection.
  bool token_cache = false;
  /// Where to connect instead of the endpoint (libpq hostaddr): an SSH/SSM tunnel's address or a
  /// VPC endpoint's IP, numeric (IPv4 or IPv6: "127.0.0.1", not "localhost"; else config_error).
  /// Default "": connect to host. SNI, verification and the token still use host.
  std::string tunnel_address;
  /// Port of the tunnel. Default 0 = port.
  std::uint16_t tunnel_port = 0;
  /// TLS mode. Default "verify-full"; anything weaker must be set here on purpose.
  std::string sslmode = "verify-full";
  /// CA bundle file. Default "": the system's (libpq ≥ 16: "system"; older libpq: OpenSSL's
  /// default certificate file).
  std::string sslrootcert;
  /// DSQL's hard connection age limit. Default 60 min.
  std::chrono::milliseconds server_max_age{60 * 60 * 1000};
  /// A connection is never handed out within this margin of server_max_age:
  /// pool.max_lifetime + handout_margin must not exceed server_max_age. Default 5 min; must be ≥ 0.
  std::chrono::milliseconds handout_margin{5 * 60 * 1000};
  /// The pool's settings. pool.max_connect_rate left at 0 becomes 100 (DSQL's limit of new
  /// connections per second). pool.conninfo and pool.params must be empty (they are set from the
  /// fields above; pool.params may add libpq keywords DSQL accepts). A user before_connect runs
  /// first, then the token is set.
  pool_config pool;
};

/// Parses "postgres://USER@ENDPOINT[:PORT]/DATABASE?region=R&profile=P&tokenDurationSecs=N" (or
/// postgresql://). Our keys are taken out; other query parameters go to libpq through pool.params.
/// Throws config_error naming the URL part.
[[nodiscard]] config config_from_url(std::string_view url);

/// The pool_config make_pool builds: validated, with libpq parameters, the token hook and the
/// error hints. libpq_version is PQlibVersion()'s value (sslnegotiation=direct only from 170000);
/// 0 = the linked libpq's. Throws config_error naming the field.
[[nodiscard]] pool_config make_pool_config(const config& cfg, int libpq_version = 0);

/// A ready pool (never blocks on connecting). Throws config_error naming the field.
[[nodiscard]] std::unique_ptr<pqxxpool::pool> make_pool(const config& cfg);

/// A hint for a DSQL connection error message, or "" when none applies: missing or wrong SNI,
/// "access denied" (expired token, wrong action for the user, region mismatch, revoked access),
/// 53300 (too many connections), 53400 (connection rate exceeded). Never throws.
[[nodiscard]] std::string hint_for(std::string_view message);

}  // namespace pqxxpool::dsql
