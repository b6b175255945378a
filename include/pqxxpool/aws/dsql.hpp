#pragma once
/// @file aws/dsql.hpp
/// IAM authentication tokens for Aurora DSQL (pqxxpool::dsql) and RDS (pqxxpool::rds): the
/// password to send for one login. A token is a SigV4-presigned URL without its scheme; it matters
/// only at login (a connection stays open after its token expires), so make a fresh one for every
/// connect, e.g. in pool_config::before_connect.
///
/// Tokens are bearer credentials: never log them.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pqxxpool/aws/credentials.hpp"

namespace pqxxpool::dsql {

/// What to make a DSQL token for.
struct token_request {
  /// The cluster endpoint, e.g. "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws". Lowercased
  /// before signing. Required.
  std::string host;
  /// The AWS region. Default "": taken from host with region_from_host() (config_error naming
  /// "region" when host is not a DSQL endpoint).
  std::string region;
  /// The database role. Default "admin". The action signed is DbConnectAdmin when user is exactly
  /// "admin", else DbConnect.
  std::string user = "admin";
  /// How long the token can be used to log in. Default 900 s; allowed 1 … 604800 s. Shortened to
  /// the remaining life of temporary credentials that carry an expiration.
  std::chrono::seconds expires{900};
};

/// A DSQL token for request, signed with creds at now.
/// Throws config_error naming "host", "region", "user" or "expires" for a bad request;
/// token_error when creds lacks a key, has already expired, or signing fails; std::bad_alloc.
/// Thread-safety: may be called from several threads at once.
[[nodiscard]] std::string generate_token(const token_request& request, const aws::credentials& creds,
                                         std::chrono::system_clock::time_point now);

/// The region in a DSQL endpoint: the text matched by `\.dsql[^.]*\.([^.]+)\.on\.aws$`
/// (case-insensitive), e.g. "us-east-1" for "abc.dsql.us-east-1.on.aws"; std::nullopt for any other
/// host. Throws std::bad_alloc only. Thread-safety: may be called from several threads at once.
[[nodiscard]] std::optional<std::string> region_from_host(std::string_view host);

}  // namespace pqxxpool::dsql

namespace pqxxpool::rds {

/// An RDS (or Aurora PostgreSQL/MySQL) IAM token: service rds-db, Action=connect&DBUser=user,
/// signed and written host "host:port" (host lowercased), expiring after 900 s (fixed by RDS).
/// Throws config_error naming "host", "port" (0), "region" or "user" (empty); token_error when
/// creds lacks a key, has already expired, or signing fails; std::bad_alloc.
/// Thread-safety: may be called from several threads at once.
[[nodiscard]] std::string generate_token(std::string_view host, std::uint16_t port, std::string_view region,
                                         std::string_view user, const aws::credentials& creds,
                                         std::chrono::system_clock::time_point now);

}  // namespace pqxxpool::rds
