#pragma once
/// @file aws/sigv4.hpp
/// AWS Signature Version 4 query presigning of `GET https://<host>/?<params>`, the scheme of Aurora
/// DSQL and RDS IAM authentication tokens. Most users want dsql.hpp instead; this header is the
/// building block, exposed for tests and for other AWS services that authenticate the same way.
///
/// The time is always a parameter, so a signature is reproducible. The signing itself uses
/// OpenSSL (HMAC-SHA256, SHA-256) inside the library; no OpenSSL header is included here.

#include <chrono>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pqxxpool/aws/credentials.hpp"

namespace pqxxpool::aws {

/// Shortest and longest expiry of a presigned URL (X-Amz-Expires): 1 s and 7 days.
inline constexpr std::chrono::seconds min_presign_expires{1};
inline constexpr std::chrono::seconds max_presign_expires{604'800};

/// What to presign.
struct presign_request {
  /// The host as signed in the `host` header and written in the URL: a lowercase host name, with
  /// ":port" appended when the port is not 443. Required.
  std::string host;
  /// The AWS region, e.g. "us-east-1". Required.
  std::string region;
  /// The service's signing name, e.g. "dsql" or "rds-db". Required.
  std::string service;
  /// The operation's query parameters, unencoded, in the order they are written in the URL
  /// (before the X-Amz-* ones), e.g. {{"Action", "DbConnect"}}. Default none.
  std::vector<std::pair<std::string, std::string>> params;
  /// X-Amz-Expires. Default 900 s; allowed min_presign_expires … max_presign_expires.
  std::chrono::seconds expires{900};
};

/// A presigned URL.
struct presigned_url {
  /// `<host>/?<query>`: the URL without its `https://` scheme, which is what DSQL and RDS take as
  /// a password. The query is in botocore's order: params, X-Amz-Algorithm, X-Amz-Credential,
  /// X-Amz-Date, X-Amz-Expires, X-Amz-SignedHeaders, [X-Amz-Security-Token], X-Amz-Signature.
  /// A bearer credential (and it contains the session token): never log it.
  std::string url;
  /// X-Amz-Signature: 64 lowercase hex digits.
  std::string signature;
};

/// Presigns `GET https://<request.host>/?<request.params>` with SigV4 for the time now (truncated
/// to whole seconds): signed header `host` only, payload hash of the empty string, and a session
/// token (when creds has one) added as X-Amz-Security-Token before signing.
/// Throws config_error naming "host", "region" or "service" when one is empty, or "expires" when
/// it is out of range; token_error when creds lacks its access key id or secret access key, or
/// when OpenSSL fails; std::bad_alloc. Thread-safety: may be called from several threads at once.
[[nodiscard]] presigned_url presign_url(const presign_request& request, const credentials& creds,
                                        std::chrono::system_clock::time_point now);

/// Throws config_error("expires", …) unless min_presign_expires ≤ expires ≤ max_presign_expires.
/// Thread-safety: pure.
void check_presign_expires(std::chrono::seconds expires);

/// Percent-encodes s as SigV4 requires (RFC 3986): every byte except A–Z a–z 0–9 - _ . ~ becomes
/// %XX with uppercase hex digits. Throws std::bad_alloc only. Thread-safety: pure.
[[nodiscard]] std::string percent_encode(std::string_view s);

/// now in SigV4's basic ISO 8601 form, UTC, e.g. "20241107T173933Z". Throws std::bad_alloc only
/// (and token_error for a time the C library cannot convert). Thread-safety: pure.
[[nodiscard]] std::string amz_date(std::chrono::system_clock::time_point now);

}  // namespace pqxxpool::aws
