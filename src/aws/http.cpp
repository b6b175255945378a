#include "aws/http.hpp"

#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <string>

#include <curl/curl.h>

namespace pqxxpool::aws::detail {
namespace {

constexpr std::size_t max_body = std::size_t{1024} * 1024;

struct body_sink {
  std::string body;
  bool too_large = false;
};

std::size_t write_body(char* data, std::size_t size, std::size_t count, void* user) {
  auto* sink = static_cast<body_sink*>(user);
  const std::size_t n = size * count;
  if (sink->body.size() + n > max_body) {
    sink->too_large = true;
    return 0;  // makes curl stop with CURLE_WRITE_ERROR
  }
  try {
    sink->body.append(data, n);
  } catch (const std::bad_alloc&) {
    return 0;
  }
  return n;
}

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw http_error("curl_global_init failed");
  });
}

struct easy_deleter {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct slist_deleter {
  void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};

void check(CURLcode rc, const char* what) {
  if (rc != CURLE_OK) throw http_error(std::string(what) + ": " + curl_easy_strerror(rc));
}

}  // namespace

std::string url_for_messages(const std::string& url) { return url.substr(0, url.find_first_of("?#")); }

http_response http_send(const http_request& request) {
  global_init();
  std::unique_ptr<CURL, easy_deleter> curl(curl_easy_init());
  if (!curl) throw http_error("curl_easy_init failed");
  CURL* h = curl.get();

  std::unique_ptr<curl_slist, slist_deleter> headers;
  auto add_header = [&](const std::string& line) {
    curl_slist* l = curl_slist_append(headers.get(), line.c_str());
    if (l == nullptr) throw std::bad_alloc();
    (void)headers.release();
    headers.reset(l);
  };
  for (const auto& [name, value] : request.headers) {
    if (name.find_first_of("\r\n:") != std::string::npos || value.find_first_of("\r\n") != std::string::npos)
      throw http_error("header " + name + " is malformed (a line break, or ':' in its name)");  // never the value
    std::string line = name;
    line.append(": ").append(value);
    add_header(line);
  }
  add_header("Expect:");  // no "100-continue" round trip for larger bodies

  body_sink sink;
  char error_buffer[CURL_ERROR_SIZE] = {};
  const long connect_ms = static_cast<long>(request.connect_timeout.count());
  const long total_ms = static_cast<long>(request.timeout.count());

  check(curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error_buffer), "CURLOPT_ERRORBUFFER");
  check(curl_easy_setopt(h, CURLOPT_URL, request.url.c_str()), "bad URL");
#if LIBCURL_VERSION_NUM >= 0x075500  // 7.85
  check(curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https"), "CURLOPT_PROTOCOLS_STR");
#else
  check(curl_easy_setopt(h, CURLOPT_PROTOCOLS, static_cast<long>(CURLPROTO_HTTP | CURLPROTO_HTTPS)),
        "CURLOPT_PROTOCOLS");
#endif
  check(curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L), "CURLOPT_NOSIGNAL");
  check(curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L), "CURLOPT_FOLLOWLOCATION");
  check(curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms), "CURLOPT_CONNECTTIMEOUT_MS");
  check(curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, total_ms), "CURLOPT_TIMEOUT_MS");
  check(curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get()), "CURLOPT_HTTPHEADER");
  check(curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &write_body), "CURLOPT_WRITEFUNCTION");
  check(curl_easy_setopt(h, CURLOPT_WRITEDATA, &sink), "CURLOPT_WRITEDATA");
  if (!request.use_proxy) check(curl_easy_setopt(h, CURLOPT_NOPROXY, "*"), "CURLOPT_NOPROXY");
  if (request.method == "PUT" || request.method == "POST") {
    check(curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(request.body.size())),
          "CURLOPT_POSTFIELDSIZE_LARGE");
    check(curl_easy_setopt(h, CURLOPT_POSTFIELDS, request.body.c_str()), "CURLOPT_POSTFIELDS");
    if (request.method == "PUT") check(curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "PUT"), "CURLOPT_CUSTOMREQUEST");
  } else if (request.method != "GET") {
    throw http_error("unsupported method " + request.method);
  }

  const CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) {
    if (sink.too_large) throw http_error("the response is larger than 1 MiB");
    std::string message = error_buffer[0] != '\0' ? std::string(error_buffer) : std::string(curl_easy_strerror(rc));
    long os_errno = 0;  // e.g. ECONNREFUSED, which older curl words as "Couldn't connect to server"
    if (curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK && os_errno != 0) {
      const std::string reason = std::strerror(static_cast<int>(os_errno));
      if (message.find(reason) == std::string::npos) message += " (" + reason + ")";
    }
    throw http_error(message);
  }
  http_response response;
  check(curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &response.status), "CURLINFO_RESPONSE_CODE");
  response.body = std::move(sink.body);
  return response;
}

}  // namespace pqxxpool::aws::detail
