#pragma once
// The one HTTP client of the AWS credential sources (STS, container endpoint, instance metadata),
// on libcurl (internal, not installed).

#include <chrono>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace pqxxpool::aws::detail {

struct http_request {
  /// "GET", "PUT" or "POST". PUT and POST always send body (with Content-Length, even 0).
  std::string method = "GET";
  /// http:// or https:// only; redirects are not followed.
  std::string url;
  /// Extra request headers. Values must not contain CR or LF (http_error otherwise).
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds connect_timeout{1000};
  /// The whole exchange, connect included.
  std::chrono::milliseconds timeout{2000};
  /// false: ignore http_proxy/https_proxy/all_proxy (for link-local and loopback endpoints, which a
  /// proxy cannot reach on our behalf).
  bool use_proxy = true;
};

struct http_response {
  long status = 0;
  std::string body;
};

/// No HTTP response: connection refused, timeout, TLS failure, a response over 1 MiB, a bad URL.
/// what() is curl's description, e.g. "Failed to connect to 127.0.0.1 port 1 after 0 ms: Couldn't
/// connect to server"; it never contains request headers or bodies.
class http_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Sends one request, one attempt. Any HTTP status is a response (the caller judges it). Throws
/// http_error, std::bad_alloc. Thread-safe (one curl handle per call).
[[nodiscard]] http_response http_send(const http_request& request);

/// url without its query string and fragment, for messages.
[[nodiscard]] std::string url_for_messages(const std::string& url);

}  // namespace pqxxpool::aws::detail
