#include "pqxxpool/aws/sigv4.hpp"

#include <algorithm>
#include <array>
#include <cstddef>
#include <ctime>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ascii.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::aws {

namespace {

constexpr const char* algorithm = "AWS4-HMAC-SHA256";
constexpr std::size_t sha256_size = 32;
using digest = std::array<unsigned char, sha256_size>;

/// Zeroes a buffer that held key material when it goes out of scope.
template <class Buffer>
class cleanse_on_exit {
 public:
  explicit cleanse_on_exit(Buffer& b) noexcept : m_b(b) {}
  ~cleanse_on_exit() { OPENSSL_cleanse(m_b.data(), m_b.size()); }
  cleanse_on_exit(const cleanse_on_exit&) = delete;
  cleanse_on_exit& operator=(const cleanse_on_exit&) = delete;

 private:
  Buffer& m_b;
};

std::string to_hex(const unsigned char* data, std::size_t size) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) {
    out += digits[data[i] >> 4];
    out += digits[data[i] & 0x0f];
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  digest md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1 || len != md.size())
    throw token_error("SigV4 signing", "OpenSSL SHA-256 failed");
  return to_hex(md.data(), md.size());
}

digest hmac_sha256(const unsigned char* key, std::size_t key_size, std::string_view data) {
  digest md{};
  unsigned int len = 0;
  if (key_size > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      HMAC(EVP_sha256(), key, static_cast<int>(key_size), reinterpret_cast<const unsigned char*>(data.data()),
           data.size(), md.data(), &len) == nullptr ||
      len != md.size())
    throw token_error("SigV4 signing", "OpenSSL HMAC-SHA256 failed");
  return md;
}

digest hmac_sha256(const digest& key, std::string_view data) { return hmac_sha256(key.data(), key.size(), data); }

/// The SigV4 signing key: HMAC chain over date, region, service and "aws4_request".
digest signing_key(const std::string& secret, std::string_view date, std::string_view region,
                   std::string_view service) {
  std::string k_secret = "AWS4" + secret;
  const cleanse_on_exit<std::string> wipe_secret(k_secret);
  digest k_date = hmac_sha256(reinterpret_cast<const unsigned char*>(k_secret.data()), k_secret.size(), date);
  const cleanse_on_exit<digest> wipe_date(k_date);
  digest k_region = hmac_sha256(k_date, region);
  const cleanse_on_exit<digest> wipe_region(k_region);
  digest k_service = hmac_sha256(k_region, service);
  const cleanse_on_exit<digest> wipe_service(k_service);
  return hmac_sha256(k_service, "aws4_request");
}

bool is_host_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' || c == ':' || c == '[' ||
         c == ']';
}

void check_request(const presign_request& r) {
  if (r.host.empty()) throw config_error("host", "must not be empty");
  if (!std::all_of(r.host.begin(), r.host.end(), is_host_char))
    throw config_error("host", "must be a lowercase host name (letters, digits, '.', '-', optionally ':port')");
  if (r.region.empty()) throw config_error("region", "must not be empty");
  if (!detail::is_region_name(r.region)) throw config_error("region", detail::bad_region_message);
  if (r.service.empty()) throw config_error("service", "must not be empty");
  check_presign_expires(r.expires);
}

}  // namespace

void check_presign_expires(std::chrono::seconds expires) {
  if (expires < min_presign_expires || expires > max_presign_expires)
    throw config_error("expires", "must be between " + std::to_string(min_presign_expires.count()) + " and " +
                                      std::to_string(max_presign_expires.count()) + " seconds, not " +
                                      std::to_string(expires.count()));
}

std::string percent_encode(std::string_view s) {
  static constexpr char digits[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
        c == '.' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += digits[c >> 4];
      out += digits[c & 0x0f];
    }
  }
  return out;
}

std::string amz_date(std::chrono::system_clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::floor<std::chrono::seconds>(now));
  std::tm tm{};
  char buf[32];
  if (gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm) != 16)
    throw token_error("SigV4 signing", "cannot format the signing time as a UTC date");
  return buf;
}

presigned_url presign_url(const presign_request& request, const credentials& creds,
                          std::chrono::system_clock::time_point now) {
  check_request(request);
  if (creds.access_key_id.empty()) throw token_error("SigV4 signing", "the access key id is empty");
  if (creds.secret_access_key.empty()) throw token_error("SigV4 signing", "the secret access key is empty");

  const std::string timestamp = amz_date(now);
  const std::string date = timestamp.substr(0, 8);
  const std::string scope = date + "/" + request.region + "/" + request.service + "/aws4_request";

  // Every parameter but the signature, encoded, in the order of the final URL.
  std::vector<std::pair<std::string, std::string>> query;
  query.reserve(request.params.size() + 6);
  for (const auto& [k, v] : request.params) query.emplace_back(percent_encode(k), percent_encode(v));
  query.emplace_back("X-Amz-Algorithm", algorithm);
  query.emplace_back("X-Amz-Credential", percent_encode(creds.access_key_id + "/" + scope));
  query.emplace_back("X-Amz-Date", timestamp);
  query.emplace_back("X-Amz-Expires", std::to_string(request.expires.count()));
  query.emplace_back("X-Amz-SignedHeaders", "host");
  if (!creds.session_token.empty()) query.emplace_back("X-Amz-Security-Token", percent_encode(creds.session_token));

  auto join = [](const std::vector<std::pair<std::string, std::string>>& pairs) {
    std::string s;
    for (const auto& [k, v] : pairs) {
      if (!s.empty()) s += '&';
      s += k;
      s += '=';
      s += v;
    }
    return s;
  };

  // Canonical query: the encoded pairs sorted by key (then value), byte-wise.
  std::vector<std::pair<std::string, std::string>> sorted = query;
  std::sort(sorted.begin(), sorted.end());
  const std::string canonical_request =
      "GET\n/\n" + join(sorted) + "\nhost:" + request.host + "\n\nhost\n" + sha256_hex("");
  const std::string string_to_sign =
      std::string(algorithm) + "\n" + timestamp + "\n" + scope + "\n" + sha256_hex(canonical_request);

  digest key = signing_key(creds.secret_access_key, date, request.region, request.service);
  const cleanse_on_exit<digest> wipe_key(key);
  const digest sig = hmac_sha256(key, string_to_sign);

  presigned_url out;
  out.signature = to_hex(sig.data(), sig.size());
  out.url = request.host + "/?" + join(query) + "&X-Amz-Signature=" + out.signature;
  return out;
}

}  // namespace pqxxpool::aws
