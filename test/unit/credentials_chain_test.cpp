// The default credentials chain and its sources, against local HTTP servers on 127.0.0.1 standing
// in for STS, the container endpoint and EC2 instance metadata (IMDSv2); credential_process with
// shell one-liners; caching_provider with an injected clock. No sleeps, no timing assertions.

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>

#include "aws/credential_sources.hpp"
#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/dsql_pool.hpp"
#include "pqxxpool/errors.hpp"
#include "scoped_env.hpp"

namespace pqxxpool::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::system_clock;

// --- helpers -------------------------------------------------------------------------------------

/// An HTTP server on 127.0.0.1 (an ephemeral port) with the routes given, serving on its own
/// thread until destroyed.
class local_server {
 public:
  explicit local_server(const std::function<void(httplib::Server&)>& routes) {
    routes(m_server);
    m_port = m_server.bind_to_any_port("127.0.0.1");
    if (m_port <= 0) throw std::runtime_error("cannot bind a test server on 127.0.0.1");
    m_thread = std::thread([this] { m_server.listen_after_bind(); });
    while (!m_server.is_running()) std::this_thread::yield();  // stop() is a no-op before this
  }
  ~local_server() {
    m_server.stop();
    m_thread.join();
  }
  local_server(const local_server&) = delete;
  local_server& operator=(const local_server&) = delete;

  [[nodiscard]] std::string url() const { return "http://127.0.0.1:" + std::to_string(m_port); }

 private:
  httplib::Server m_server;
  int m_port = 0;
  std::thread m_thread;
};

/// A 127.0.0.1 port that nothing listens on (bound, then closed): connecting is refused.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("cannot find a free port");
  ::close(fd);
  return ntohs(addr.sin_port);
}

system_clock::time_point utc(int y, int mo, int d, int h, int mi, int s) {
  std::tm tm{};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  return system_clock::from_time_t(::timegm(&tm));
}

/// Every secret the tests below use: none may ever appear in an error message.
const char* const secrets[] = {"SECRETenv",  "TOKENenv",   "SECRETfile", "SECRETweb",  "TOKENweb",
                               "JWTsecret",  "SECRETproc", "TOKENproc",  "SECRETbox",  "TOKENbox",
                               "AUTHsecret", "SECRETimds", "TOKENimds",  "IMDSsecret", "SECRETonly"};

void expect_no_secret(const std::string& what) {
  for (const char* s : secrets) EXPECT_EQ(what.find(s), std::string::npos) << "secret " << s << " in: " << what;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

/// Runs get() and returns the token_error's what() ("" if it did not throw).
std::string error_of(aws::credentials_provider& p) {
  try {
    (void)p.get();
  } catch (const token_error& e) {
    expect_no_secret(e.what());
    return e.what();
  }
  return "";
}

const char* const every_variable[] = {"AWS_ACCESS_KEY_ID",
                                      "AWS_SECRET_ACCESS_KEY",
                                      "AWS_SESSION_TOKEN",
                                      "AWS_SECURITY_TOKEN",
                                      "AWS_CREDENTIAL_EXPIRATION",
                                      "AWS_PROFILE",
                                      "AWS_DEFAULT_PROFILE",
                                      "AWS_SHARED_CREDENTIALS_FILE",
                                      "AWS_CONFIG_FILE",
                                      "AWS_REGION",
                                      "AWS_DEFAULT_REGION",
                                      "AWS_WEB_IDENTITY_TOKEN_FILE",
                                      "AWS_ROLE_ARN",
                                      "AWS_ROLE_SESSION_NAME",
                                      "AWS_ENDPOINT_URL",
                                      "AWS_ENDPOINT_URL_STS",
                                      "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
                                      "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                      "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                                      "AWS_CONTAINER_AUTHORIZATION_TOKEN",
                                      "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                                      "AWS_EC2_METADATA_DISABLED",
                                      "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                                      "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
                                      "AWS_EC2_METADATA_V1_DISABLED",
                                      "http_proxy",
                                      "https_proxy",
                                      "HTTP_PROXY",
                                      "HTTPS_PROXY",
                                      "all_proxy",
                                      "ALL_PROXY"};

/// A clean AWS environment: no variable of the chain set, the credential files in a scratch
/// directory (not yet written), instance metadata off unless a test turns it on.
class credentials_chain : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : every_variable) set(v, nullptr);
    char tmpl[] = "/tmp/pqxxpool-chain-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    m_dir = tmpl;
    m_credentials = path("credentials");
    m_config = path("config");
    set("AWS_SHARED_CREDENTIALS_FILE", m_credentials.c_str());
    set("AWS_CONFIG_FILE", m_config.c_str());
    set("AWS_EC2_METADATA_DISABLED", "true");
  }
  void TearDown() override {
    for (const std::string& f : m_files) std::remove(f.c_str());
    ::rmdir(m_dir.c_str());
    while (!m_env.empty()) m_env.pop_back();  // restores the environment, last change first
  }

  void set(const char* name, const char* value) { m_env.push_back(std::make_unique<scoped_env>(name, value)); }
  void set(const char* name, const std::string& value) { set(name, value.c_str()); }
  std::string path(const std::string& name) {
    m_files.push_back(m_dir + "/" + name);
    return m_files.back();
  }
  static void write(const std::string& file, const std::string& text) { std::ofstream(file) << text; }
  void write_credentials(const std::string& text) const { write(m_credentials, text); }
  void write_config(const std::string& text) const { write(m_config, text); }

  std::string m_dir, m_credentials, m_config;

 private:
  std::vector<std::string> m_files;
  std::vector<std::unique_ptr<scoped_env>> m_env;
};

// --- parsers -------------------------------------------------------------------------------------

TEST(credential_parsers, iso8601) {
  using aws::detail::parse_iso8601;
  EXPECT_EQ(parse_iso8601("2030-01-02T03:04:05Z"), utc(2030, 1, 2, 3, 4, 5));
  EXPECT_EQ(parse_iso8601(" 2030-01-02t03:04:05z\n"), utc(2030, 1, 2, 3, 4, 5));
  EXPECT_EQ(parse_iso8601("2030-01-02 03:04:05"), utc(2030, 1, 2, 3, 4, 5));  // no zone: UTC
  EXPECT_EQ(parse_iso8601("2030-01-02T05:04:05+02:00"), utc(2030, 1, 2, 3, 4, 5));
  EXPECT_EQ(parse_iso8601("2030-01-01T22:34:05-0430"), utc(2030, 1, 2, 3, 4, 5));
  EXPECT_EQ(parse_iso8601("2030-01-02T03:04:05.250Z"), utc(2030, 1, 2, 3, 4, 5) + 250ms);
  EXPECT_EQ(parse_iso8601("2030-01-02T03:04:05.123456789Z"), utc(2030, 1, 2, 3, 4, 5) + 123456us);
  EXPECT_EQ(parse_iso8601("2024-02-29T00:00:00Z"), utc(2024, 2, 29, 0, 0, 0));
  EXPECT_EQ(parse_iso8601("9999-12-31T23:59:59Z"), system_clock::time_point::max());  // beyond the clock
  for (const char* bad :
       {"", "2030-01-02", "2030-01-02T03:04", "2030-13-01T00:00:00Z", "2023-02-29T00:00:00Z", "2030-01-02T24:00:00Z",
        "2030-01-02T03:04:05.Z", "2030-01-02T03:04:05+2", "2030-01-02T03:04:05ZZ", "20300102T030405Z", "tomorrow"})
    EXPECT_EQ(parse_iso8601(bad), std::nullopt) << bad;
}

TEST(credential_parsers, xml_element) {
  using aws::detail::xml_element;
  const std::string xml =
      "<?xml version=\"1.0\"?><r:Response xmlns:r=\"x\"><Result><r:Key a=\"1\">  AK&amp;&lt;&#65;&#x42;  </r:Key>"
      "<Empty/><Data><![CDATA[a<b>&amp;]]></Data></Result></r:Response>";
  EXPECT_EQ(xml_element(xml, "Key"), "AK&<AB");
  EXPECT_EQ(xml_element(xml, "Empty"), "");
  EXPECT_EQ(xml_element(xml, "Data"), "a<b>&amp;");
  EXPECT_EQ(xml_element(xml, "Missing"), std::nullopt);
  EXPECT_EQ(xml_element("<Key>unterminated", "Key"), std::nullopt);
  EXPECT_EQ(xml_element("<Keys>no</Keys><Key>yes</Key>", "Key"), "yes");
}

TEST(credential_parsers, json_credentials) {
  using aws::detail::credentials_from_json;
  const aws::credentials c = credentials_from_json(
      R"({"Version":1,"AccessKeyId":"AKID","SecretAccessKey":"SECRETproc","SessionToken":"TOKENproc",
          "Expiration":"2030-01-02T03:04:05Z"})",
      "SessionToken", true, "test");
  EXPECT_EQ(c.access_key_id, "AKID");
  EXPECT_EQ(c.secret_access_key, "SECRETproc");
  EXPECT_EQ(c.session_token, "TOKENproc");
  EXPECT_EQ(c.expiration, utc(2030, 1, 2, 3, 4, 5));
  auto error = [](const std::string& json, bool version_1) {
    try {
      (void)credentials_from_json(json, "Token", version_1, "test");
    } catch (const token_error& e) {
      expect_no_secret(e.what());
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_TRUE(contains(error(R"({"AccessKeyId":"A","SecretAccessKey":"SECRETproc"})", true), "\"Version\" must be 1"));
  EXPECT_TRUE(contains(error(R"({"Version":2,"AccessKeyId":"A","SecretAccessKey":"SECRETproc"})", true), "Version"));
  EXPECT_TRUE(contains(error(R"({"AccessKeyId":"A"})", false), "\"SecretAccessKey\" is missing"));
  EXPECT_TRUE(contains(error(R"({"AccessKeyId":1,"SecretAccessKey":"SECRETproc"})", false), "not a string"));
  EXPECT_TRUE(
      contains(error(R"({"AccessKeyId":"A","SecretAccessKey":"SECRETproc","Expiration":"soon"})", false), "ISO 8601"));
  EXPECT_TRUE(contains(error("SECRETproc not json", false), "not a JSON object"));
  EXPECT_TRUE(contains(error(R"(["SECRETproc"])", false), "not a JSON object"));
  EXPECT_EQ(credentials_from_json(R"({"AccessKeyId":"A","SecretAccessKey":"S","Token":null})", "Token", false, "t")
                .session_token,
            "");
}

TEST_F(credentials_chain, sts_endpoint_by_region_and_override) {
  using aws::detail::sts_endpoint;
  EXPECT_EQ(sts_endpoint(""), "https://sts.amazonaws.com");
  EXPECT_EQ(sts_endpoint("eu-west-1"), "https://sts.eu-west-1.amazonaws.com");
  EXPECT_EQ(sts_endpoint("cn-north-1"), "https://sts.cn-north-1.amazonaws.com.cn");
  EXPECT_THROW((void)sts_endpoint("evil.example.com/x"), token_error);
  set("AWS_ENDPOINT_URL", "http://127.0.0.1:1/all");
  EXPECT_EQ(sts_endpoint("eu-west-1"), "http://127.0.0.1:1/all");
  set("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:1/sts");
  EXPECT_EQ(sts_endpoint("eu-west-1"), "http://127.0.0.1:1/sts");
  set("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "TRUE");
  EXPECT_EQ(sts_endpoint("eu-west-1"), "https://sts.eu-west-1.amazonaws.com");
}

// --- chain order ---------------------------------------------------------------------------------

TEST_F(credentials_chain, given_provider_or_credentials_come_first) {
  set("AWS_ACCESS_KEY_ID", "AKIDenv");
  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  aws::chain_options with_credentials;
  with_credentials.explicit_credentials = aws::credentials{"AKIDcode", "SECRETfile", "", {}};
  EXPECT_EQ(aws::default_credentials_chain(with_credentials)->get().access_key_id, "AKIDcode");
  aws::chain_options with_provider;
  with_provider.provider =
      std::make_shared<aws::static_credentials>(aws::credentials{"AKIDprov", "SECRETfile", "", {}});
  with_provider.explicit_credentials = aws::credentials{"AKIDcode", "SECRETfile", "", {}};
  const auto chain = aws::default_credentials_chain(with_provider);
  EXPECT_EQ(chain, with_provider.provider);
  EXPECT_EQ(chain->get().access_key_id, "AKIDprov");
}

TEST_F(credentials_chain, environment_beats_the_files) {
  write_credentials("[default]\naws_access_key_id = AKIDfile\naws_secret_access_key = SECRETfile\n");
  set("AWS_ACCESS_KEY_ID", "AKIDenv");
  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  set("AWS_SESSION_TOKEN", "TOKENenv");
  set("AWS_CREDENTIAL_EXPIRATION", "2030-01-02T03:04:05Z");
  const auto chain = aws::default_credentials_chain();
  aws::credentials c = chain->get();
  EXPECT_EQ(c.access_key_id, "AKIDenv");
  EXPECT_EQ(c.session_token, "TOKENenv");
  EXPECT_EQ(c.expiration, utc(2030, 1, 2, 3, 4, 5));

  set("AWS_CREDENTIAL_EXPIRATION", "next tuesday");
  const std::string what = error_of(*chain);
  EXPECT_TRUE(contains(what, "environment: AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time")) << what;

  set("AWS_ACCESS_KEY_ID", nullptr);
  c = chain->get();
  EXPECT_EQ(c.access_key_id, "AKIDfile");
  EXPECT_EQ(c.secret_access_key, "SECRETfile");
  EXPECT_FALSE(c.expiration.has_value());
}

TEST_F(credentials_chain, expired_credentials_are_refused_naming_the_source_that_gave_them) {
  // No token can be signed with them; the error must say which link of the chain handed them out
  // (before: the signer's token_error said only "credentials").
  auto source_of_error = [](aws::credentials_provider& p) -> std::pair<std::string, std::string> {
    try {
      (void)p.get();
    } catch (const token_error& e) {
      return {e.source(), e.what()};
    }
    return {"(no error)", ""};
  };
  set("AWS_ACCESS_KEY_ID", "ASIAenv");
  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  set("AWS_SESSION_TOKEN", "TOKENenv");
  set("AWS_CREDENTIAL_EXPIRATION", "2020-01-02T03:04:05Z");
  const auto chain = aws::default_credentials_chain();
  auto [source, what] = source_of_error(*chain);
  EXPECT_EQ(source, "environment");
  EXPECT_TRUE(contains(what, "gave temporary credentials that expired at 20200102T030405Z")) << what;
  expect_no_secret(what);

  set("AWS_ACCESS_KEY_ID", nullptr);
  write_config(
      "[default]\n"
      "credential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"ASIAproc\", \"SecretAccessKey\": "
      "\"SECRETproc\", \"SessionToken\": \"TOKENproc\", \"Expiration\": \"2020-01-02T03:04:05Z\"}'\n");
  std::tie(source, what) = source_of_error(*chain);
  EXPECT_EQ(source, "credential_process (profile 'default')");
  EXPECT_TRUE(contains(what, "expired at 20200102T030405Z")) << what;
  expect_no_secret(what);
}

TEST_F(credentials_chain, incomplete_environment_keys_stop_the_chain) {
  write_credentials("[default]\naws_access_key_id = AKIDfile\naws_secret_access_key = SECRETfile\n");
  set("AWS_ACCESS_KEY_ID", "AKIDenv");  // claims the environment, as in botocore
  const auto chain = aws::default_credentials_chain();
  EXPECT_TRUE(contains(error_of(*chain), "AWS_SECRET_ACCESS_KEY is not set"));
}

TEST_F(credentials_chain, profile_in_code_drops_the_environment) {
  write_credentials(
      "[default]\naws_access_key_id = AKIDfile\naws_secret_access_key = SECRETfile\n"
      "[dev]\naws_access_key_id = AKIDdev\naws_secret_access_key = SECRETfile\n");
  set("AWS_ACCESS_KEY_ID", "AKIDenv");
  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  aws::chain_options options;
  options.profile = "dev";
  const auto chain = aws::default_credentials_chain(options);
  EXPECT_EQ(chain->get().access_key_id, "AKIDdev");
  EXPECT_EQ(chain->name(), "credentials chain (profile 'dev')");

  // The profile from the environment does not drop the environment keys.
  set("AWS_PROFILE", "dev");
  EXPECT_EQ(aws::default_credentials_chain()->get().access_key_id, "AKIDenv");

  // A profile asked for by name must exist.
  options.profile = "nosuch";
  const auto missing = aws::default_credentials_chain(options);
  const std::string what = error_of(*missing);
  EXPECT_TRUE(contains(what, "profile 'nosuch': not found in " + m_credentials)) << what;
}

TEST_F(credentials_chain, dsql_pool_profile_drops_the_environment) {
  write_credentials("[dev]\naws_access_key_id = AKIDdev\naws_secret_access_key = SECRETfile\n");
  set("AWS_ACCESS_KEY_ID", "AKIDenv");
  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  dsql::config cfg;
  cfg.host = "abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws";
  auto token_credential = [&] {
    const pool_config p = dsql::make_pool_config(cfg, 150000);
    connect_params params;
    p.before_connect(params);
    const std::string& token = *params.get("password");
    const std::size_t at = token.find("X-Amz-Credential=");
    return token.substr(at + 17, token.find("%2F", at) - at - 17);
  };
  EXPECT_EQ(token_credential(), "AKIDenv");
  cfg.profile = "dev";
  EXPECT_EQ(token_credential(), "AKIDdev");
}

TEST_F(credentials_chain, unsupported_profile_sources_are_named) {
  write_config(
      "[profile role]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = default\n"
      "[profile sso]\nsso_account_id = 123456789012\nsso_role_name = reader\n");
  aws::chain_options options;
  options.profile = "role";
  std::string what = error_of(*aws::default_credentials_chain(options));
  EXPECT_TRUE(contains(what, "profile 'role': uses assume-role")) << what;
  options.profile = "sso";
  what = error_of(*aws::default_credentials_chain(options));
  EXPECT_TRUE(contains(what, "profile 'sso': uses SSO")) << what;
}

// --- web identity --------------------------------------------------------------------------------

const char* const sts_response =
    "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n"
    "  <AssumeRoleWithWebIdentityResult>\n"
    "    <SubjectFromWebIdentityToken>system:serviceaccount:ns:app</SubjectFromWebIdentityToken>\n"
    "    <Credentials>\n"
    "      <AccessKeyId>ASIAWEB</AccessKeyId>\n"
    "      <SecretAccessKey>SECRETweb</SecretAccessKey>\n"
    "      <SessionToken>TOKENweb&amp;+/=</SessionToken>\n"
    "      <Expiration>2030-01-02T03:04:05Z</Expiration>\n"
    "    </Credentials>\n"
    "  </AssumeRoleWithWebIdentityResult>\n"
    "</AssumeRoleWithWebIdentityResponse>\n";

/// A stand-in for STS: records each request's form parameters; answers sts_response, or an
/// InvalidIdentityToken error for the token "JWTsecret-rejected".
struct fake_sts {
  std::mutex mu;
  std::vector<std::map<std::string, std::string>> requests;
  local_server server{[this](httplib::Server& s) {
    s.Post("/", [this](const httplib::Request& req, httplib::Response& res) {
      std::map<std::string, std::string> params;
      for (const auto& [k, v] : req.params) params[k] = v;
      params["content-type"] = req.get_header_value("Content-Type");
      {
        std::lock_guard<std::mutex> lk(mu);
        requests.push_back(params);
      }
      if (params["WebIdentityToken"] == "JWTsecret-rejected") {
        res.status = 400;
        res.set_content(
            "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidIdentityToken</Code>"
            "<Message>Incorrect token audience</Message></Error></ErrorResponse>",
            "text/xml");
        return;
      }
      std::string body = sts_response;
      if (params["WebIdentityToken"] == "JWTsecret-stale") {  // credentials that expired in 2020
        const std::size_t at = body.find("2030-01-02T03:04:05Z");
        if (at != std::string::npos) body.replace(at, 4, "2020");
      }
      res.set_content(body, "text/xml");
    });
  }};
  std::map<std::string, std::string> last() {
    std::lock_guard<std::mutex> lk(mu);
    return requests.empty() ? std::map<std::string, std::string>{} : requests.back();
  }
};

TEST_F(credentials_chain, web_identity_from_the_environment_through_a_local_sts) {
  fake_sts sts;
  const std::string token_file = path("token");
  write(token_file, "JWTsecret-header.payload.sig\n");
  write_credentials("[default]\naws_access_key_id = AKIDfile\naws_secret_access_key = SECRETfile\n");
  set("AWS_WEB_IDENTITY_TOKEN_FILE", token_file);
  set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/web");
  set("AWS_ENDPOINT_URL_STS", sts.server.url());

  const auto chain = aws::default_credentials_chain();
  const aws::credentials c = chain->get();  // web identity comes before the credentials file
  EXPECT_EQ(c.access_key_id, "ASIAWEB");
  EXPECT_EQ(c.secret_access_key, "SECRETweb");
  EXPECT_EQ(c.session_token, "TOKENweb&+/=");
  EXPECT_EQ(c.expiration, utc(2030, 1, 2, 3, 4, 5));
  std::map<std::string, std::string> r = sts.last();
  EXPECT_EQ(r["Action"], "AssumeRoleWithWebIdentity");
  EXPECT_EQ(r["Version"], "2011-06-15");
  EXPECT_EQ(r["RoleArn"], "arn:aws:iam::123456789012:role/web");
  EXPECT_EQ(r["WebIdentityToken"], "JWTsecret-header.payload.sig");
  EXPECT_EQ(r["RoleSessionName"].rfind("pqxxpool-session-", 0), 0u) << r["RoleSessionName"];
  EXPECT_TRUE(contains(r["content-type"], "application/x-www-form-urlencoded"));

  set("AWS_ROLE_SESSION_NAME", "my-session@app");
  (void)chain->get();
  EXPECT_EQ(sts.last()["RoleSessionName"], "my-session@app");

  // STS refusing: the error names STS's code and message, never the token.
  write(token_file, "JWTsecret-rejected");
  std::string what = error_of(*chain);
  EXPECT_TRUE(contains(what, "web identity: STS (" + sts.server.url() + ")")) << what;
  EXPECT_TRUE(contains(what, "HTTP 400 InvalidIdentityToken: Incorrect token audience")) << what;

  // STS handing out credentials that expired already: refused, naming web identity.
  write(token_file, "JWTsecret-stale");
  try {
    (void)chain->get();
    ADD_FAILURE() << "expired credentials from STS accepted";
  } catch (const token_error& e) {
    EXPECT_EQ(e.source(), "web identity");
    EXPECT_TRUE(contains(e.what(), "expired at 20200102T030405Z")) << e.what();
    expect_no_secret(e.what());
  }

  // A token file but no role.
  set("AWS_ROLE_ARN", nullptr);
  what = error_of(*chain);
  EXPECT_TRUE(contains(what, "web identity: ")) << what;
  EXPECT_TRUE(contains(what, "AWS_ROLE_ARN")) << what;

  // An unreadable token file.
  set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/web");
  set("AWS_WEB_IDENTITY_TOKEN_FILE", m_dir + "/no-such-token");
  what = error_of(*chain);
  EXPECT_TRUE(contains(what, "cannot read the token file " + m_dir + "/no-such-token")) << what;
}

TEST_F(credentials_chain, web_identity_from_a_profile) {
  fake_sts sts;
  const std::string token_file = path("token");
  write(token_file, "JWTsecret-profile");
  write_config("[profile web]\nrole_arn = arn:aws:iam::123456789012:role/p\nweb_identity_token_file = " + token_file +
               "\nrole_session_name = from-profile\nregion = eu-west-1\n");
  set("AWS_ENDPOINT_URL", sts.server.url());  // the general override, when there is no STS one
  aws::chain_options options;
  options.profile = "web";
  EXPECT_EQ(aws::default_credentials_chain(options)->get().access_key_id, "ASIAWEB");
  std::map<std::string, std::string> r = sts.last();
  EXPECT_EQ(r["RoleArn"], "arn:aws:iam::123456789012:role/p");
  EXPECT_EQ(r["RoleSessionName"], "from-profile");
  EXPECT_EQ(r["WebIdentityToken"], "JWTsecret-profile");

  // profile_credentials alone does the same.
  EXPECT_EQ(aws::profile_credentials("web").get().secret_access_key, "SECRETweb");
}

// --- credential_process --------------------------------------------------------------------------

TEST_F(credentials_chain, credential_process_prints_json) {
  write_config(
      "[default]\n"
      "credential_process = printf '{\"Version\": 1, \"AccessKeyId\": \"AKIDproc\", \"SecretAccessKey\": "
      "\"SECRETproc\", \"SessionToken\": \"TOKENproc\", \"Expiration\": \"2030-01-02T03:04:05Z\"}'\n"
      "aws_access_key_id = AKIDconfig\n"  // config-file keys come after credential_process
      "aws_secret_access_key = SECRETfile\n");
  const aws::credentials c = aws::default_credentials_chain()->get();
  EXPECT_EQ(c.access_key_id, "AKIDproc");
  EXPECT_EQ(c.secret_access_key, "SECRETproc");
  EXPECT_EQ(c.session_token, "TOKENproc");
  EXPECT_EQ(c.expiration, utc(2030, 1, 2, 3, 4, 5));
}

TEST_F(credentials_chain, failing_credential_process_is_an_error_without_its_output) {
  const auto chain = aws::default_credentials_chain();
  write_config("[default]\ncredential_process = echo '{\"SecretAccessKey\": \"SECRETproc\"}'; exit 3\n");
  std::string what = error_of(*chain);
  EXPECT_TRUE(contains(what, "credential_process (profile 'default'): the command exited with status 3")) << what;

  write_config("[default]\ncredential_process = echo 'SECRETproc is not JSON'\n");
  what = error_of(*chain);
  EXPECT_TRUE(contains(what, "credential_process (profile 'default'): the output is not a JSON object")) << what;

  write_config("[default]\ncredential_process = kill -9 $$\n");
  what = error_of(*chain);
  EXPECT_TRUE(contains(what, "killed by signal 9")) << what;

  // A command that never finishes is killed with its whole process group.
  try {
    (void)aws::detail::process_credentials("sleep 30 & sleep 30; echo SECRETproc", "credential_process (test)", 100ms);
    ADD_FAILURE() << "no timeout";
  } catch (const token_error& e) {
    EXPECT_TRUE(contains(e.what(), "did not finish within")) << e.what();
    expect_no_secret(e.what());
  }
}

// --- container endpoint --------------------------------------------------------------------------

TEST_F(credentials_chain, container_full_uri_with_an_authorization_token_file) {
  std::atomic<int> requests{0};
  local_server box([&](httplib::Server& s) {
    s.Get("/v2/credentials", [&](const httplib::Request& req, httplib::Response& res) {
      ++requests;
      const std::string auth = req.get_header_value("Authorization");
      if (auth != "Bearer AUTHsecret-1" && auth != "Bearer AUTHsecret-stale") {
        res.status = 401;
        return;
      }
      const std::string year = auth == "Bearer AUTHsecret-stale" ? "2020" : "2030";  // 2020: expired
      res.set_content(R"({"RoleArn":"arn:aws:iam::123456789012:role/task","AccessKeyId":"ASIABOX",)"
                      R"("SecretAccessKey":"SECRETbox","Token":"TOKENbox","Expiration":")" + year +
                          R"(-01-02T03:04:05Z"})",
                      "application/json");
    });
  });
  const std::string auth_file = path("auth");
  write(auth_file, "Bearer AUTHsecret-1\n");
  set("AWS_CONTAINER_CREDENTIALS_FULL_URI", box.url() + "/v2/credentials");
  set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", auth_file);
  set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer AUTHsecret-wrong");  // the file wins

  const auto chain = aws::default_credentials_chain();
  const aws::credentials c = chain->get();
  EXPECT_EQ(c.access_key_id, "ASIABOX");
  EXPECT_EQ(c.secret_access_key, "SECRETbox");
  EXPECT_EQ(c.session_token, "TOKENbox");
  EXPECT_EQ(c.expiration, utc(2030, 1, 2, 3, 4, 5));
  EXPECT_EQ(requests.load(), 1);

  // The variable when there is no file; a wrong token is refused, and the error does not show it.
  set("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", nullptr);
  std::string what = error_of(*chain);
  EXPECT_TRUE(contains(what, "container: GET " + box.url() + "/v2/credentials: HTTP 401")) << what;
  set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer AUTHsecret-1");
  EXPECT_EQ(chain->get().access_key_id, "ASIABOX");
  // Credentials that expired already are refused, naming the container endpoint.
  set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "Bearer AUTHsecret-stale");
  try {
    (void)chain->get();
    ADD_FAILURE() << "expired credentials from the container endpoint accepted";
  } catch (const token_error& e) {
    EXPECT_EQ(e.source(), "container (" + box.url() + "/v2/credentials)");
    EXPECT_TRUE(contains(e.what(), "expired at 20200102T030405Z")) << e.what();
    expect_no_secret(e.what());
  }

  // A full URI must be https or loopback.
  set("AWS_CONTAINER_CREDENTIALS_FULL_URI", "http://credentials.example.com/v2/credentials");
  what = error_of(*chain);
  EXPECT_TRUE(contains(what, "container: AWS_CONTAINER_CREDENTIALS_FULL_URI must use https")) << what;
  EXPECT_EQ(requests.load(), 4);
}

// --- instance metadata ---------------------------------------------------------------------------

/// A stand-in for IMDSv2: the token PUT is required, and every GET without the token gets 401.
struct fake_imds {
  std::atomic<int> puts{0}, gets{0};
  local_server server{[this](httplib::Server& s) {
    s.Put("/latest/api/token", [this](const httplib::Request& req, httplib::Response& res) {
      ++puts;
      if (req.get_header_value("X-aws-ec2-metadata-token-ttl-seconds").empty()) {
        res.status = 400;
        return;
      }
      res.set_content("IMDSsecret-token", "text/plain");
    });
    auto authorised = [this](const httplib::Request& req, httplib::Response& res) {
      ++gets;
      if (req.get_header_value("X-aws-ec2-metadata-token") == "IMDSsecret-token") return true;
      res.status = 401;
      return false;
    };
    s.Get("/latest/meta-data/iam/security-credentials/",
          [authorised](const httplib::Request& req, httplib::Response& res) {
            if (authorised(req, res)) res.set_content("instance-role\n", "text/plain");
          });
    s.Get("/latest/meta-data/iam/security-credentials/instance-role",
          [authorised](const httplib::Request& req, httplib::Response& res) {
            if (authorised(req, res))
              res.set_content(R"({"Code":"Success","LastUpdated":"2030-01-01T00:00:00Z","Type":"AWS-HMAC",)"
                              R"("AccessKeyId":"ASIAIMDS","SecretAccessKey":"SECRETimds","Token":"TOKENimds",)"
                              R"("Expiration":"2030-01-02T03:04:05Z"})",
                              "application/json");
          });
  }};
};

TEST_F(credentials_chain, instance_metadata_v2) {
  fake_imds imds;
  set("AWS_EC2_METADATA_DISABLED", nullptr);
  set("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.server.url() + "/");
  const auto chain = aws::default_credentials_chain();
  const aws::credentials c = chain->get();
  EXPECT_EQ(c.access_key_id, "ASIAIMDS");
  EXPECT_EQ(c.secret_access_key, "SECRETimds");
  EXPECT_EQ(c.session_token, "TOKENimds");
  EXPECT_EQ(c.expiration, utc(2030, 1, 2, 3, 4, 5));
  EXPECT_EQ(imds.puts.load(), 1);
  EXPECT_EQ(imds.gets.load(), 2);

  set("AWS_EC2_METADATA_DISABLED", "true");
  const std::string what = error_of(*chain);
  EXPECT_TRUE(contains(what, "instance metadata: AWS_EC2_METADATA_DISABLED is true")) << what;
  EXPECT_EQ(imds.puts.load(), 1) << "disabled means not asked";
}

TEST_F(credentials_chain, a_bad_instance_metadata_endpoint_mode_is_reported_not_guessed) {
  set("AWS_EC2_METADATA_DISABLED", nullptr);
  set("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "ipv5");
  const std::string what = error_of(*aws::default_credentials_chain());
  EXPECT_TRUE(contains(what, "instance metadata: AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE must be IPv4 or IPv6, got "
                             "\"ipv5\""))
      << what;
}

TEST_F(credentials_chain, instance_metadata_v1_fallback_unless_disabled) {
  std::atomic<int> gets{0};
  local_server imds([&](httplib::Server& s) {  // no token route: the PUT gets 404
    s.Get("/latest/meta-data/iam/security-credentials/", [&](const httplib::Request&, httplib::Response& res) {
      ++gets;
      res.set_content("old-role", "text/plain");
    });
    s.Get("/latest/meta-data/iam/security-credentials/old-role", [&](const httplib::Request& req,
                                                                     httplib::Response& res) {
      ++gets;
      if (req.has_header("X-aws-ec2-metadata-token")) res.status = 400;
      res.set_content(R"({"Code":"Success","AccessKeyId":"ASIAV1","SecretAccessKey":"SECRETimds","Token":"TOKENimds"})",
                      "application/json");
    });
  });
  set("AWS_EC2_METADATA_DISABLED", "false");
  set("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url());
  const auto chain = aws::default_credentials_chain();
  EXPECT_EQ(chain->get().access_key_id, "ASIAV1");
  EXPECT_EQ(gets.load(), 2);
  set("AWS_EC2_METADATA_V1_DISABLED", "true");
  const std::string what = error_of(*chain);
  EXPECT_TRUE(contains(what, "instance metadata (" + imds.url() + "): PUT /latest/api/token: HTTP 404")) << what;
  EXPECT_EQ(gets.load(), 2);
}

// --- nothing works -------------------------------------------------------------------------------

TEST_F(credentials_chain, when_everything_fails_every_source_is_listed_without_secrets) {
  // Secrets lying around that must not leak into the message.
  set("AWS_SECRET_ACCESS_KEY", "SECRETonly");
  set("AWS_SESSION_TOKEN", "TOKENenv");
  set("AWS_CONTAINER_AUTHORIZATION_TOKEN", "AUTHsecret");
  set("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/unused");
  write_credentials("[other]\naws_access_key_id = AKIDfile\naws_secret_access_key = SECRETfile\n");
  set("AWS_EC2_METADATA_DISABLED", nullptr);
  const std::string imds = "http://127.0.0.1:" + std::to_string(closed_port());
  set("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds);

  const auto chain = aws::default_credentials_chain();
  std::string what;
  try {
    (void)chain->get();
    FAIL() << "credentials from nowhere";
  } catch (const token_error& e) {
    what = e.what();
    EXPECT_EQ(e.source(), "credentials chain");
  }
  expect_no_secret(what);
  for (const std::string& part :
       {std::string("credentials chain: no credentials found; tried environment: AWS_ACCESS_KEY_ID is not set"),
        std::string("; web identity: AWS_WEB_IDENTITY_TOKEN_FILE is not set and profile 'default' has no "
                    "web_identity_token_file"),
        "; shared credentials file " + m_credentials + ": no profile 'default'",
        std::string("; credential_process: profile 'default' has none"), "; config file " + m_config + ": no such file",
        std::string("; container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI "
                    "are not set"),
        "; instance metadata (" + imds + "): PUT /latest/api/token: "})
    EXPECT_TRUE(contains(what, part)) << "missing \"" << part << "\" in: " << what;
  EXPECT_TRUE(contains(what, "Connection refused")) << what;
}

// --- caching_provider ----------------------------------------------------------------------------

/// A provider that hands out numbered credentials expiring `lifetime` after the fake now, or
/// throws while failing is set.
class counting_provider final : public aws::credentials_provider {
 public:
  explicit counting_provider(const system_clock::time_point& now) : m_now(now) {}
  aws::credentials get() override {
    const int n = ++calls;
    if (failing) throw token_error("counting", "refresh failed");
    aws::credentials c{"AKID" + std::to_string(n), "SECRETfile", "", {}};
    if (lifetime) c.expiration = m_now + *lifetime;
    return c;
  }
  std::string name() const override { return "counting"; }

  std::atomic<int> calls{0};
  std::atomic<bool> failing{false};
  std::optional<system_clock::duration> lifetime = std::chrono::hours(1);

 private:
  const system_clock::time_point& m_now;
};

TEST(caching_provider, refreshes_five_minutes_before_expiry) {
  system_clock::time_point now = utc(2030, 1, 1, 0, 0, 0);
  const system_clock::time_point t0 = now;
  auto inner = std::make_shared<counting_provider>(now);
  aws::caching_provider cache(inner, std::chrono::minutes(5), [&] { return now; });
  EXPECT_EQ(cache.name(), "counting");

  EXPECT_EQ(cache.get().access_key_id, "AKID1");
  now = t0 + 54min + 59s;
  EXPECT_EQ(cache.get().access_key_id, "AKID1");
  EXPECT_EQ(inner->calls.load(), 1);
  now = t0 + 55min;  // 5 minutes before the 1-hour expiry
  EXPECT_EQ(cache.get().access_key_id, "AKID2");
  EXPECT_EQ(inner->calls.load(), 2);
  now += 54min;
  EXPECT_EQ(cache.get().access_key_id, "AKID2");
  EXPECT_EQ(inner->calls.load(), 2);
}

TEST(caching_provider, keeps_serving_valid_credentials_when_a_refresh_fails) {
  system_clock::time_point now = utc(2030, 1, 1, 0, 0, 0);
  const system_clock::time_point t0 = now;
  auto inner = std::make_shared<counting_provider>(now);
  aws::caching_provider cache(inner, std::chrono::minutes(5), [&] { return now; });
  EXPECT_EQ(cache.get().access_key_id, "AKID1");  // expires at t0 + 60 min

  inner->failing = true;
  now = t0 + 56min;
  EXPECT_EQ(cache.get().access_key_id, "AKID1") << "a failed refresh must not surface yet";
  EXPECT_EQ(inner->calls.load(), 2);
  now += aws::caching_provider::retry_interval - 1s;
  EXPECT_EQ(cache.get().access_key_id, "AKID1");
  EXPECT_EQ(inner->calls.load(), 2) << "retried only after retry_interval";
  now += 1s;
  EXPECT_EQ(cache.get().access_key_id, "AKID1");
  EXPECT_EQ(inner->calls.load(), 3);

  now = t0 + 60min;  // expired: the error surfaces
  try {
    (void)cache.get();
    ADD_FAILURE() << "expired credentials served";
  } catch (const token_error& e) {
    EXPECT_EQ(e.source(), "counting");
  }
  EXPECT_THROW((void)cache.get(), token_error);  // and every call tries again

  inner->failing = false;  // the source recovers
  EXPECT_EQ(cache.get().access_key_id, "AKID6");
}

TEST(caching_provider, refresh_window_and_credentials_without_expiry) {
  system_clock::time_point now = utc(2030, 1, 1, 0, 0, 0);
  const system_clock::time_point t0 = now;
  auto inner = std::make_shared<counting_provider>(now);
  aws::caching_provider cache(inner, std::chrono::minutes(1), [&] { return now; });
  EXPECT_EQ(cache.get().access_key_id, "AKID1");
  now = t0 + 58min;
  EXPECT_EQ(cache.get().access_key_id, "AKID1");
  now = t0 + 59min;
  EXPECT_EQ(cache.get().access_key_id, "AKID2");

  inner->lifetime.reset();  // long-term keys: re-read every 5 minutes, kept when that fails
  aws::caching_provider keys(inner, std::chrono::minutes(5), [&] { return now; });
  EXPECT_EQ(keys.get().access_key_id, "AKID3");
  now += aws::caching_provider::ttl_without_expiration - 1s;
  EXPECT_EQ(keys.get().access_key_id, "AKID3");
  now += 1s;
  EXPECT_EQ(keys.get().access_key_id, "AKID4");
  inner->failing = true;
  now += aws::caching_provider::ttl_without_expiration;
  EXPECT_EQ(keys.get().access_key_id, "AKID4");

  // Credentials that arrive already inside the window are used, and asked for again later.
  inner->failing = false;
  inner->lifetime = 2min;
  aws::caching_provider short_lived(inner, std::chrono::minutes(5), [&] { return now; });
  EXPECT_EQ(short_lived.get().access_key_id, "AKID6");
  EXPECT_EQ(short_lived.get().access_key_id, "AKID6");
  now += aws::caching_provider::retry_interval;
  EXPECT_EQ(short_lived.get().access_key_id, "AKID7");

  EXPECT_THROW(aws::caching_provider(nullptr), std::invalid_argument);
}

TEST(caching_provider, concurrent_callers_share_one_fetch) {
  system_clock::time_point now = utc(2030, 1, 1, 0, 0, 0);
  auto inner = std::make_shared<counting_provider>(now);
  aws::caching_provider cache(inner, std::chrono::minutes(5), [&] { return now; });
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i)
        if (cache.get().access_key_id != "AKID1") ++wrong;
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(inner->calls.load(), 1);
}

}  // namespace
}  // namespace pqxxpool::test
