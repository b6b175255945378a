#include "pqxxpool/aws/dsql.hpp"

#include <algorithm>
#include <string>
#include <utility>

#include "aws/ascii.hpp"
#include "pqxxpool/aws/sigv4.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool {

namespace {

using std::chrono::seconds;
using time_point = std::chrono::system_clock::time_point;

/// Whole seconds the credentials have left at now, or nullopt when they do not expire. Throws
/// token_error when they have expired already (or would within the second).
std::optional<seconds> remaining_life(const aws::credentials& creds, time_point now) {
  if (!creds.expiration) return std::nullopt;
  const seconds left = std::chrono::floor<seconds>(*creds.expiration - now);
  if (left < aws::min_presign_expires)
    throw token_error("credentials", *creds.expiration > now
                                         ? "the temporary credentials expire at " + aws::amz_date(*creds.expiration) +
                                               ", less than 1 s from now: too late to sign a token with them"
                                         : "the temporary credentials expired at " + aws::amz_date(*creds.expiration));
  return left;
}

}  // namespace

namespace dsql {

std::optional<std::string> region_from_host(std::string_view host) {
  // The pattern \.dsql[^.]*\.([^.]+)\.on\.aws$, matched by hand: GCC 12's <regex> trips
  // -Wmaybe-uninitialized under -O2 with sanitizers, and this is three rfind()s.
  const std::string lower = aws::detail::ascii_lowercase(host);
  constexpr std::string_view suffix = ".on.aws";
  if (lower.size() <= suffix.size() || std::string_view(lower).substr(lower.size() - suffix.size()) != suffix)
    return std::nullopt;
  std::string_view rest = std::string_view(lower).substr(0, lower.size() - suffix.size());
  const std::size_t region_dot = rest.rfind('.');
  if (region_dot == std::string_view::npos || region_dot + 1 == rest.size()) return std::nullopt;
  const std::string_view region = rest.substr(region_dot + 1);
  rest = rest.substr(0, region_dot);
  const std::size_t label_dot = rest.rfind('.');
  if (label_dot == std::string_view::npos || rest.substr(label_dot + 1).substr(0, 4) != "dsql") return std::nullopt;
  return std::string(region);
}

std::string generate_token(const token_request& request, const aws::credentials& creds, time_point now) {
  aws::check_presign_expires(request.expires);
  if (request.host.empty()) throw config_error("host", "must not be empty");
  if (request.user.empty()) throw config_error("user", "must not be empty");

  aws::presign_request p;
  p.host = aws::detail::ascii_lowercase(request.host);
  if (!request.region.empty()) {
    p.region = request.region;
  } else if (std::optional<std::string> r = region_from_host(p.host)) {
    p.region = std::move(*r);
  } else {
    throw config_error("region", "not given, and host is not a DSQL endpoint (<cluster>.dsql.<region>.on.aws)");
  }
  p.service = "dsql";
  p.params.emplace_back("Action", request.user == "admin" ? "DbConnectAdmin" : "DbConnect");
  p.expires = request.expires;
  if (const std::optional<seconds> left = remaining_life(creds, now)) p.expires = std::min(p.expires, *left);
  return aws::presign_url(p, creds, now).url;
}

}  // namespace dsql

namespace rds {

std::string generate_token(std::string_view host, std::uint16_t port, std::string_view region, std::string_view user,
                           const aws::credentials& creds, time_point now) {
  if (host.empty()) throw config_error("host", "must not be empty");
  if (port == 0) throw config_error("port", "must be between 1 and 65535");
  if (user.empty()) throw config_error("user", "must not be empty");
  (void)remaining_life(creds, now);  // refuse expired credentials; the expiry stays 900 s

  aws::presign_request p;
  p.host = aws::detail::ascii_lowercase(host) + ":" + std::to_string(port);
  p.region = std::string(region);
  p.service = "rds-db";
  p.params.emplace_back("Action", "connect");
  p.params.emplace_back("DBUser", std::string(user));
  p.expires = seconds{900};
  return aws::presign_url(p, creds, now).url;
}

}  // namespace rds

}  // namespace pqxxpool
