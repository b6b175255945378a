#include "pqxxpool/dsql_pool.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <utility>

#include <netdb.h>

#include <openssl/x509.h>
#include <spdlog/logger.h>
#include <spdlog/spdlog.h>

#include "aws/ascii.hpp"
#include "dsql_token_reuse.hpp"

#include "pqxx/adapter.hpp"
#include "pqxxpool/aws/dsql.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/version.hpp"

namespace pqxxpool::dsql {
namespace {

using std::chrono::system_clock;

bool is_cluster_id(std::string_view host) {
  return host.size() == 26 && std::all_of(host.begin(), host.end(), [](char c) {
           return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c));
         });
}

bool contains_nocase(std::string_view text, std::string_view needle) {
  const auto it = std::search(text.begin(), text.end(), needle.begin(), needle.end(), [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  });
  return it != text.end();
}

/// Whether needle occurs in text (ASCII case-insensitively) as a word of its own, not inside a
/// longer word or a name: no letter, digit, '_' or '-' right before or after it, and no '.' that
/// joins it to a name (".x" before it, or "." followed by a letter or digit after it). So DSQL's
/// "sni was not received", "invalid sni" and "invalid sni." match, and a database "snippets", a
/// role "unisnic" or a host "sni.example.com" in an unrelated error do not.
bool contains_word_nocase(std::string_view text, std::string_view needle) {
  const auto word_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '-';
  };
  const auto same = [](char a, char b) {
    return std::tolower(static_cast<unsigned char>(a)) == std::tolower(static_cast<unsigned char>(b));
  };
  for (auto it = text.begin();; ++it) {
    it = std::search(it, text.end(), needle.begin(), needle.end(), same);
    if (it == text.end()) return false;
    const auto end = it + static_cast<std::ptrdiff_t>(needle.size());
    const bool joined_before = it != text.begin() && (word_char(*(it - 1)) || *(it - 1) == '.');
    const bool joined_after =
        end != text.end() && (word_char(*end) || (*end == '.' && end + 1 != text.end() && word_char(*(end + 1))));
    if (!joined_before && !joined_after) return true;
  }
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// cfg.credentials, else the default chain (cfg.profile, when given, drops the environment keys),
// cached until 5 minutes before the credentials expire. get() runs only in before_connect, i.e. on
// the pool's connect threads, never on the acquire path.
std::shared_ptr<aws::credentials_provider> provider_for(const config& cfg, const std::string& region) {
  aws::chain_options options;
  options.provider = cfg.credentials;
  options.profile = cfg.profile;
  options.region = region;  // STS for web identity: the cluster's region
  return std::make_shared<aws::caching_provider>(aws::default_credentials_chain(std::move(options)));
}

// Makes the token for each connect; with token_cache, reuses one until 80% of its lifetime.
// Runs on the pool's connect threads (before_connect), never under the pool's lock. Logs each new
// token at debug level: who and what for, never the token.
class token_source {
 public:
  using clock_function = std::function<system_clock::time_point()>;

  token_source(token_request request, std::shared_ptr<aws::credentials_provider> creds, bool cache,
               std::shared_ptr<spdlog::logger> logger, std::string pool, clock_function now)
      : m_now(now ? std::move(now) : clock_function([] { return system_clock::now(); })),
        m_request(std::move(request)),
        m_creds(std::move(creds)),
        m_cache(cache),
        m_logger(logger ? std::move(logger) : spdlog::default_logger()),
        m_pool(std::move(pool)) {}
  std::string next() {
    const auto now = m_now();
    if (!m_cache) {
      std::string token = generate_token(m_request, m_creds->get(), now);
      {
        std::lock_guard<std::mutex> lk(m_mu);
        m_last_sent_made_at = now;
      }
      log_new_token(lifetime_of(token));
      return token;
    }
    bool made = false;
    std::string token;
    std::chrono::seconds lifetime{0};
    {
      std::lock_guard<std::mutex> lk(m_mu);  // guards the cached token; held across one signing
      if (m_token.empty() || now >= m_reuse_until) {
        m_token = generate_token(m_request, m_creds->get(), now);
        m_made_at = now;
        // The token's own lifetime: shorter than requested when the credentials expire sooner.
        lifetime = lifetime_of(m_token);
        m_reuse_until = token_reuse_until(now, lifetime);
        made = true;
      }
      m_last_sent_made_at = m_made_at;
      token = m_token;
    }
    if (made) log_new_token(lifetime);
    return token;
  }
  /// Age of the token most recently handed to a connect, for error hints ("" if none yet).
  std::string last_token_age() {
    std::lock_guard<std::mutex> lk(m_mu);
    if (m_last_sent_made_at == system_clock::time_point{}) return "";
    const auto age = std::chrono::duration_cast<std::chrono::seconds>(m_now() - m_last_sent_made_at);
    return "; the last token sent was made " + std::to_string(age.count()) + " s ago";
  }

 private:
  /// The lifetime a token was signed with (its X-Amz-Expires): generate_token shortens the
  /// requested one to what the credentials have left. The requested one if the field is missing.
  std::chrono::seconds lifetime_of(const std::string& token) const {
    constexpr std::string_view key = "X-Amz-Expires=";
    const std::size_t at = token.find(key);
    if (at == std::string::npos) return m_request.expires;
    char* end = nullptr;
    const long long secs = std::strtoll(token.c_str() + at + key.size(), &end, 10);
    return secs > 0 ? std::chrono::seconds(secs) : m_request.expires;
  }

  void log_new_token(std::chrono::seconds lifetime) {
    if (m_logger)
      m_logger->debug("pqxxpool[{}]: new IAM token for user {} at {} (region {}, valid {} s{}{})", m_pool,
                      m_request.user, m_request.host, m_request.region, lifetime.count(),
                      lifetime < m_request.expires ? " (shortened: the credentials expire sooner)" : "",
                      m_cache ? ", cached for 80% of that" : "");
  }

  const clock_function m_now;  // system_clock::now, or a test's clock
  const token_request m_request;
  const std::shared_ptr<aws::credentials_provider> m_creds;
  const bool m_cache;
  const std::shared_ptr<spdlog::logger> m_logger;
  const std::string m_pool;
  std::mutex m_mu;
  std::string m_token;                              // guarded by m_mu
  system_clock::time_point m_made_at{};             // guarded by m_mu
  system_clock::time_point m_reuse_until{};         // guarded by m_mu
  system_clock::time_point m_last_sent_made_at{};   // guarded by m_mu
};

std::string resolve_region(const config& cfg, const std::string& host) {
  // Checked here, at construction, rather than by the signer at every connect.
  const auto checked = [](std::string region, const char* field) {
    if (!aws::detail::is_region_name(region)) throw config_error(field, aws::detail::bad_region_message);
    return region;
  };
  if (!cfg.region.empty()) return checked(cfg.region, "region");
  if (std::optional<std::string> r = region_from_host(host)) return checked(*r, "host");
  for (const char* name : {"AWS_REGION", "AWS_DEFAULT_REGION"}) {
    std::string v = env_or_empty(name);
    if (!v.empty()) return checked(std::move(v), name);
  }
  throw config_error("region", "not given, not in the endpoint name (<id>.dsql.<region>.on.aws), and neither "
                               "AWS_REGION nor AWS_DEFAULT_REGION is set");
}

std::string percent_decode(std::string_view text, const char* part) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size() || !std::isxdigit(static_cast<unsigned char>(text[i + 1])) ||
        !std::isxdigit(static_cast<unsigned char>(text[i + 2])))
      throw config_error(part, "has a bad percent escape");
    out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
    i += 2;
  }
  return out;
}

}  // namespace

config config_from_url(std::string_view url) {
  config cfg;
  std::string_view rest;
  for (std::string_view scheme : {"postgres://", "postgresql://"})
    if (url.substr(0, scheme.size()) == scheme) rest = url.substr(scheme.size());
  if (rest.empty()) throw config_error("url", "must start with postgres:// or postgresql://");
  std::string_view query;
  if (const auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  std::string_view authority = rest;
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    if (slash + 1 < rest.size()) cfg.database = percent_decode(rest.substr(slash + 1), "url database");
  }
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    const std::string_view userinfo = authority.substr(0, at);
    if (userinfo.find(':') != std::string_view::npos)
      throw config_error("url user", "must not carry a password: DSQL authenticates with IAM tokens");
    cfg.user = percent_decode(userinfo, "url user");
    authority = authority.substr(at + 1);
  }
  if (const auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    const std::string port(authority.substr(colon + 1));
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p < 1 || p > 65535) throw config_error("url port", "must be 1…65535");
    cfg.port = static_cast<std::uint16_t>(p);
    authority = authority.substr(0, colon);
  }
  cfg.host = std::string(authority);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    const std::string key(pair.substr(0, eq));
    const std::string value = eq == std::string_view::npos ? "" : percent_decode(pair.substr(eq + 1), "url query");
    if (key == "region") {
      cfg.region = value;
    } else if (key == "profile") {
      cfg.profile = value;
    } else if (key == "tokenDurationSecs") {
      char* end = nullptr;
      const long long secs = std::strtoll(value.c_str(), &end, 10);
      if (value.empty() || *end != '\0') throw config_error("tokenDurationSecs", "must be a whole number of seconds");
      cfg.token_duration = std::chrono::seconds(secs);
    } else if (key == "sslmode") {
      cfg.sslmode = value;
    } else if (key == "sslrootcert") {
      cfg.sslrootcert = value;
    } else {
      cfg.pool.params[key] = value;  // libpq checks the keyword when the pool is built
    }
  }
  return cfg;
}

pool_config make_pool_config(const config& cfg, int libpq_version) {
  return detail::make_pool_config(cfg, libpq_version, {});
}

pool_config detail::make_pool_config(const config& cfg, int libpq_version,
                                     std::function<system_clock::time_point()> now) {
  if (libpq_version == 0) libpq_version = pqxx_adapter::libpq_version();
  if (cfg.host.empty()) throw config_error("host", "is required: the cluster endpoint or its 26-character id");
  if (!cfg.pool.conninfo.empty())
    throw config_error("pool.conninfo", "must be empty: dsql::config sets the connection parameters");
  if (cfg.token_duration < std::chrono::seconds(1) || cfg.token_duration > std::chrono::seconds(604800))
    throw config_error("token_duration", "must be 1 … 604800 s, got " + std::to_string(cfg.token_duration.count()));
  if (cfg.server_max_age.count() <= 0)
    throw config_error("server_max_age", "must be > 0 ms, got " + std::to_string(cfg.server_max_age.count()) + " ms");
  if (cfg.handout_margin.count() < 0)
    throw config_error("handout_margin", "must be >= 0 ms, got " + std::to_string(cfg.handout_margin.count()) +
                                             " ms (a negative margin would let connections outlive server_max_age)");
  if (cfg.pool.max_lifetime.count() == 0 || cfg.pool.max_lifetime + cfg.handout_margin > cfg.server_max_age)
    throw config_error("pool.max_lifetime",
                       "must be > 0 and leave handout_margin (" + std::to_string(cfg.handout_margin.count()) +
                           " ms) before server_max_age (" + std::to_string(cfg.server_max_age.count()) +
                           " ms): DSQL closes every connection at that age");
  if (cfg.user.empty()) throw config_error("user", "must not be empty");
  if (cfg.port == 0) throw config_error("port", "must be 1…65535, got 0");
  {
    static const char* const modes[] = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"};
    if (std::find_if(std::begin(modes), std::end(modes), [&](const char* m) { return cfg.sslmode == m; }) ==
        std::end(modes))
      throw config_error("sslmode", "must be one of disable, allow, prefer, require, verify-ca, verify-full "
                                    "(DSQL needs TLS: require or stronger), got \"" + cfg.sslmode + "\"");
  }
  if (!cfg.tunnel_address.empty()) {
    // libpq's hostaddr takes only a numeric address (it parses it with getaddrinfo and
    // AI_NUMERICHOST, as here: "127.1" and "fe80::1%eth0" pass); a name fails every connect.
    addrinfo hints{};
    hints.ai_flags = AI_NUMERICHOST;
    hints.ai_family = AF_UNSPEC;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(cfg.tunnel_address.c_str(), nullptr, &hints, &found);
    if (found != nullptr) ::freeaddrinfo(found);
    if (rc != 0)
      throw config_error("tunnel_address", "must be a numeric IPv4 or IPv6 address (it becomes libpq's hostaddr, "
                                           "which takes no names): for a tunnel on this machine use 127.0.0.1 or "
                                           "::1, got \"" + cfg.tunnel_address + "\"");
  }

  std::string host = cfg.host;
  std::transform(host.begin(), host.end(), host.begin(), [](unsigned char c) { return std::tolower(c); });
  const std::string region = resolve_region(cfg, host);
  if (is_cluster_id(host)) host += ".dsql." + region + ".on.aws";

  pool_config out = cfg.pool;
  // DSQL accepts 100 new connections per second per cluster; one pool never needs more.
  if (out.max_connect_rate == 0) out.max_connect_rate = 100;
  for (const char* key : {"host", "hostaddr", "port", "user", "dbname", "password", "sslmode", "sslrootcert"})
    if (out.params.count(key) != 0)
      throw config_error(std::string("pool.params[\"") + key + "\"]", "is set by dsql::config; use its field");
  out.params["host"] = host;
  if (!cfg.tunnel_address.empty()) out.params["hostaddr"] = cfg.tunnel_address;
  out.params["port"] = std::to_string(cfg.tunnel_port != 0 ? cfg.tunnel_port : cfg.port);
  out.params["user"] = cfg.user;
  out.params["dbname"] = cfg.database;
  out.params["sslmode"] = cfg.sslmode;
  // libpq < 16 does not know sslrootcert=system: hand it OpenSSL's default bundle file instead.
  out.params["sslrootcert"] =
      !cfg.sslrootcert.empty() ? cfg.sslrootcert : (libpq_version >= 160000 ? "system" : X509_get_default_cert_file());
  if (libpq_version >= 170000 && out.params.count("sslnegotiation") == 0) out.params["sslnegotiation"] = "direct";
  if (out.params.count("application_name") == 0) out.params["application_name"] = std::string("pqxxpool-dsql/") + version;

  auto tokens = std::make_shared<token_source>(token_request{host, region, cfg.user, cfg.token_duration},
                                               provider_for(cfg, region), cfg.token_cache, cfg.pool.logger,
                                               cfg.pool.name.empty() ? "default" : cfg.pool.name, std::move(now));
  out.before_connect = [user_hook = cfg.pool.before_connect, tokens](connect_params& p) {
    if (user_hook) user_hook(p);
    p.set("password", tokens->next());
  };
  // Hints with the facts a user needs to tell the causes apart.
  const bool admin = cfg.user == "admin";
  const std::optional<std::string> host_region = region_from_host(host);
  std::string facts = "; signing region " + region + (host_region && *host_region != region ? " but the endpoint is in " + *host_region : "") +
                      ", user " + cfg.user + " (action " + (admin ? "DbConnectAdmin" : "DbConnect") + "), token lifetime " +
                      std::to_string(cfg.token_duration.count()) + " s" + (cfg.token_cache ? " (token cache on)" : "");
  out.error_hint = [user_hint = cfg.pool.error_hint, facts, tokens](const std::string& message) {
    if (user_hint) {
      std::string h = user_hint(message);
      if (!h.empty()) return h;
    }
    std::string h = hint_for(message);
    if (!h.empty() && contains_nocase(message, "access denied")) h += facts + tokens->last_token_age();
    return h;
  };
  out.validate();
  return out;
}

std::unique_ptr<pqxxpool::pool> make_pool(const config& cfg) {
  return std::make_unique<pqxxpool::pool>(make_pool_config(cfg));
}

std::string hint_for(std::string_view message) {
  if (contains_word_nocase(message, "sni"))
    return "DSQL needs TLS SNI naming the cluster: set host to the endpoint (<id>.dsql.<region>.on.aws) and, "
           "through a tunnel or VPC endpoint, hostaddr (dsql::config::tunnel_address) to the tunnel; an IP "
           "address as host sends no SNI";
  if (contains_nocase(message, "access denied"))
    return "DSQL refused the IAM token: it may have expired (token lifetime, clock skew), its action may not "
           "match the user (admin needs DbConnectAdmin, other roles DbConnect and the dsql:DbConnect "
           "permission), it may be signed for another region than the endpoint's, or the identity's access was "
           "revoked";
  if (message.find("53300") != std::string_view::npos || contains_nocase(message, "too many open connections"))
    return "the cluster's connection limit is reached (10,000 by default): lower max_size across the fleet or "
           "raise the quota";
  if (message.find("53400") != std::string_view::npos || contains_nocase(message, "rate exceeded"))
    return "DSQL accepts 100 new connections per second (burst 1,000): the pool backs off; lower max_connecting "
           "or stagger restarts";
  if (contains_nocase(message, "does not match host name"))
    return "verify-full checks the certificate against host: set host to the cluster endpoint, not an IP or a "
           "tunnel name";
  return {};
}

}  // namespace pqxxpool::dsql
