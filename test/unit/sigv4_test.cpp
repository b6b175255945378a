// SigV4 presigning, Aurora DSQL and RDS IAM tokens, and the AWS credential providers.
//
// The vectors are the expected outputs published in the AWS SDKs' own unit tests (Java v2
// DefaultDsqlUtilitiesTest, botocore TestDSQLGenerateDBAuthToken and TestGenerateDBAuthToken,
// smithy-rs dsql_auth_token.rs, aws-dsql-auth); they are copied here so that a plain clone runs them.

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/aws/dsql.hpp"
#include "pqxxpool/aws/sigv4.hpp"
#include "pqxxpool/errors.hpp"
#include "scoped_env.hpp"

namespace pqxxpool::test {
namespace {

using namespace std::chrono_literals;
using std::chrono::system_clock;
using params = std::vector<std::pair<std::string, std::string>>;

system_clock::time_point at_epoch(std::int64_t seconds) {
  return system_clock::time_point{std::chrono::seconds{seconds}};
}

const system_clock::time_point t_2024_11_07 = at_epoch(1731001173);  // 2024-11-07T17:39:33Z
const system_clock::time_point t_2024_08_27 = at_epoch(1724716800);  // 2024-08-27T00:00:00Z
const system_clock::time_point t_2016_11_07 = at_epoch(1478540373);  // 2016-11-07T17:39:33Z

/// The parts of a token "<host>/?k=v&k=v…", values left encoded.
struct parsed_token {
  std::string host;
  params query;

  [[nodiscard]] std::vector<std::string> keys() const {
    std::vector<std::string> k;
    for (const auto& p : query) k.push_back(p.first);
    return k;
  }
  [[nodiscard]] std::string get(const std::string& key) const {
    for (const auto& p : query)
      if (p.first == key) return p.second;
    return "<absent>";
  }
};

parsed_token parse_token(const std::string& token) {
  parsed_token t;
  const std::size_t sep = token.find("/?");
  EXPECT_NE(sep, std::string::npos) << token;
  if (sep == std::string::npos) return t;
  t.host = token.substr(0, sep);
  std::string rest = token.substr(sep + 2);
  while (!rest.empty()) {
    const std::size_t amp = rest.find('&');
    const std::string pair = rest.substr(0, amp);
    const std::size_t eq = pair.find('=');
    t.query.emplace_back(pair.substr(0, eq), eq == std::string::npos ? "" : pair.substr(eq + 1));
    rest = amp == std::string::npos ? "" : rest.substr(amp + 1);
  }
  return t;
}

const std::vector<std::string> botocore_order = {"Action",         "X-Amz-Algorithm", "X-Amz-Credential",
                                                 "X-Amz-Date",     "X-Amz-Expires",   "X-Amz-SignedHeaders",
                                                 "X-Amz-Signature"};
const std::vector<std::string> botocore_order_with_token = {
    "Action",        "X-Amz-Algorithm",     "X-Amz-Credential",     "X-Amz-Date",
    "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Security-Token", "X-Amz-Signature"};

// --- the published vectors -----------------------------------------------------------------------

struct dsql_vector {
  const char* name;
  const char* access_key;
  const char* secret_key;
  const char* session_token;  // "" for none
  system_clock::time_point time;
  const char* host;
  const char* action;  // DbConnect or DbConnectAdmin
  int expires;
  const char* signature;
  const char* full_token;  // nullptr where the source gives none
  bool check_order;        // D's source (aws-c-auth) orders parameters its own way: compare the set
};

const dsql_vector dsql_vectors[] = {
    // A. AWS SDK for Java v2, DefaultDsqlUtilitiesTest (no session token)
    {"A1", "access_key", "secret_key", "", t_2024_11_07, "test.dsql.us-east-1.on.aws", "DbConnect", 900,
     "e319d85380261f643d78a558f76257f05aacea758a6ccd42a2510e2ae0854a47",
     "test.dsql.us-east-1.on.aws/?Action=DbConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=access_key%"
     "2F20241107%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20241107T173933Z&X-Amz-Expires=900&X-Amz-"
     "SignedHeaders=host&X-Amz-Signature=e319d85380261f643d78a558f76257f05aacea758a6ccd42a2510e2ae0854a47",
     true},
    {"A2", "access_key", "secret_key", "", t_2024_11_07, "test.dsql.us-east-1.on.aws", "DbConnectAdmin", 900,
     "a08adc4c84a490014ce374b90c98ba9ed015b77b451c0d9f9fb3f8ca8c6f9c36", nullptr, true},
    {"A3", "access_key", "secret_key", "", t_2024_11_07, "test.dsql.us-east-1.on.aws", "DbConnect", 3600,
     "63987ab6908fe81bfcaa5a5120444a8d012751992bcdfec351522db555232c51", nullptr, true},
    {"A4", "access_key", "secret_key", "", t_2024_11_07, "test.dsql.us-east-1.on.aws", "DbConnectAdmin", 3600,
     "46e02dfc8d6d07289b9e5910ccd9a50f1c3b798e48ccd92153255df508bd0b82", nullptr, true},
    // B. botocore, TestDSQLGenerateDBAuthToken (with session token)
    {"B1", "ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", t_2024_11_07, "test.dsql.us-east-1.on.aws", "DbConnect", 900,
     "57fe03e060348aaa21405c239bf02572bbc911076e94dcd65c12ae569dd8fcf4",
     "test.dsql.us-east-1.on.aws/?Action=DbConnect&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ACCESS_KEY%"
     "2F20241107%2Fus-east-1%2Fdsql%2Faws4_request&X-Amz-Date=20241107T173933Z&X-Amz-Expires=900&X-Amz-"
     "SignedHeaders=host&X-Amz-Security-Token=SESSION_TOKEN&X-Amz-Signature="
     "57fe03e060348aaa21405c239bf02572bbc911076e94dcd65c12ae569dd8fcf4",
     true},
    {"B2", "ACCESS_KEY", "SECRET_KEY", "SESSION_TOKEN", t_2024_11_07, "test.dsql.us-east-1.on.aws", "DbConnectAdmin",
     900, "5ac084bc7cabccc19a52a5d1b5c24b50d3ce143f43b659bd484c91aaf555e190", nullptr, true},
    // C. smithy-rs (AWS SDK for Rust) dsql_auth_token.rs (no session token)
    {"C1", "akid", "secret", "", t_2024_08_27, "peccy.dsql.us-east-1.on.aws", "DbConnect", 450,
     "f5f2ad764ca5df44045d4ab6ccecba0eef941b0007e5765885a0b6ed3702a3f8", nullptr, true},
    {"C2", "akid", "secret", "", t_2024_08_27, "peccy.dsql.us-east-1.on.aws", "DbConnectAdmin", 450,
     "267cf8d04d84444f7a62d5bdb40c44bfc6cb13dd6c64fa7f772df6bbaa90fff1", nullptr, true},
    // D. aws-dsql-auth (C, on aws-c-auth): as C plus a session token
    {"D1", "akid", "secret", "token", t_2024_08_27, "peccy.dsql.us-east-1.on.aws", "DbConnect", 450,
     "9fdb9de7ca6822832943d5a4e1b02411d302a2b8204bd7e8193aa4875fbd5a58", nullptr, false},
    {"D2", "akid", "secret", "token", t_2024_08_27, "peccy.dsql.us-east-1.on.aws", "DbConnectAdmin", 450,
     "dd5373133b347f82a6e8a710e5fbd367f5e1d84824dc148b96d5f45089cb47f0", nullptr, false},
};

aws::credentials make_credentials(const std::string& akid, const std::string& secret, const std::string& token = "") {
  aws::credentials c;
  c.access_key_id = akid;
  c.secret_access_key = secret;
  c.session_token = token;
  return c;
}

std::string user_for(const std::string& action) { return action == "DbConnectAdmin" ? "admin" : "app_user"; }

TEST(dsql_token, every_published_vector) {
  for (const dsql_vector& v : dsql_vectors) {
    SCOPED_TRACE(v.name);
    dsql::token_request r;
    r.host = v.host;
    r.region = "us-east-1";
    r.user = user_for(v.action);
    r.expires = std::chrono::seconds{v.expires};
    const std::string token =
        dsql::generate_token(r, make_credentials(v.access_key, v.secret_key, v.session_token), v.time);
    const parsed_token t = parse_token(token);

    EXPECT_EQ(t.get("X-Amz-Signature"), v.signature);
    if (v.full_token != nullptr) {
      EXPECT_EQ(token, v.full_token);
    }
    const bool has_token = *v.session_token != '\0';
    if (v.check_order) {
      EXPECT_EQ(t.keys(), has_token ? botocore_order_with_token : botocore_order);
    }

    // The whole parameter set, order aside.
    const std::string date = std::string(v.time == t_2024_11_07 ? "20241107" : "20240827");
    std::map<std::string, std::string> expected = {
        {"Action", v.action},
        {"X-Amz-Algorithm", "AWS4-HMAC-SHA256"},
        {"X-Amz-Credential", std::string(v.access_key) + "%2F" + date + "%2Fus-east-1%2Fdsql%2Faws4_request"},
        {"X-Amz-Date", date + (v.time == t_2024_11_07 ? "T173933Z" : "T000000Z")},
        {"X-Amz-Expires", std::to_string(v.expires)},
        {"X-Amz-SignedHeaders", "host"},
        {"X-Amz-Signature", v.signature}};
    if (has_token) expected["X-Amz-Security-Token"] = v.session_token;
    const std::map<std::string, std::string> actual(t.query.begin(), t.query.end());
    EXPECT_EQ(actual, expected);
    EXPECT_EQ(t.query.size(), expected.size()) << "no parameter twice";
    EXPECT_EQ(t.host, v.host);
  }
}

TEST(rds_token, published_vector_e) {
  const std::string token = rds::generate_token("prod-instance.us-east-1.rds.amazonaws.com", 3306, "us-east-1",
                                                "someusername", make_credentials("akid", "skid"), t_2016_11_07);
  const parsed_token t = parse_token(token);
  EXPECT_EQ(t.get("X-Amz-Signature"), "d1138cdbc0ca63eec012ec0fc6c2267e03642168f5884a7795320d4c18374c61");
  EXPECT_EQ(t.host, "prod-instance.us-east-1.rds.amazonaws.com:3306");
  EXPECT_EQ(t.keys(), (std::vector<std::string>{"Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date",
                                                "X-Amz-Expires", "X-Amz-SignedHeaders", "X-Amz-Signature"}));
  EXPECT_EQ(t.get("Action"), "connect");
  EXPECT_EQ(t.get("DBUser"), "someusername");
  EXPECT_EQ(t.get("X-Amz-Credential"), "akid%2F20161107%2Fus-east-1%2Frds-db%2Faws4_request");
  EXPECT_EQ(t.get("X-Amz-Expires"), "900");
  // What botocore 1.43.11's generate_db_auth_token returns for E with its clock fixed (the vector
  // publishes only the signature).
  EXPECT_EQ(token,
            "prod-instance.us-east-1.rds.amazonaws.com:3306/?Action=connect&DBUser=someusername&X-Amz-Algorithm=AWS4-"
            "HMAC-SHA256&X-Amz-Credential=akid%2F20161107%2Fus-east-1%2Frds-db%2Faws4_request&X-Amz-Date="
            "20161107T173933Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature="
            "d1138cdbc0ca63eec012ec0fc6c2267e03642168f5884a7795320d4c18374c61");
}

TEST(rds_token, rejects_bad_arguments) {
  const aws::credentials c = make_credentials("akid", "skid");
  auto field = [&](std::string_view host, std::uint16_t port, std::string_view region, std::string_view user) {
    try {
      (void)rds::generate_token(host, port, region, user, c, t_2016_11_07);
    } catch (const config_error& e) {
      return e.field();
    }
    return std::string();
  };
  EXPECT_EQ(field("", 5432, "us-east-1", "u"), "host");
  EXPECT_EQ(field("h", 0, "us-east-1", "u"), "port");
  EXPECT_EQ(field("h", 5432, "", "u"), "region");
  EXPECT_EQ(field("h", 5432, "us-east-1", ""), "user");
  // A user name with characters outside the unreserved set is percent-encoded before signing
  // (signature as botocore 1.43.11 computes it).
  const parsed_token t = parse_token(
      rds::generate_token("PROD-instance.us-east-1.rds.amazonaws.com", 5432, "us-east-1", "a b+c@d", c, t_2016_11_07));
  EXPECT_EQ(t.get("DBUser"), "a%20b%2Bc%40d");
  EXPECT_EQ(t.host, "prod-instance.us-east-1.rds.amazonaws.com:5432");
  EXPECT_EQ(t.get("X-Amz-Signature"), "ac8fc77d307986f287dc80a5dcf46deabfc35dcdedb4349ca10ebb97d9cc7665");
}

// --- SigV4 building blocks -----------------------------------------------------------------------

TEST(sigv4, percent_encode_keeps_only_the_unreserved_set) {
  EXPECT_EQ(aws::percent_encode("AZaz09-_.~"), "AZaz09-_.~");
  EXPECT_EQ(aws::percent_encode("a b/c=d&e+f*g%h:i"), "a%20b%2Fc%3Dd%26e%2Bf%2Ag%25h%3Ai");
  EXPECT_EQ(aws::percent_encode("\xC3\xA9"), "%C3%A9");  // UTF-8 bytes, uppercase hex
  EXPECT_EQ(aws::percent_encode(std::string("\0\x7f\xff", 3)), "%00%7F%FF");
  EXPECT_EQ(aws::percent_encode(""), "");
}

TEST(sigv4, amz_date_is_utc_and_truncated_to_seconds) {
  EXPECT_EQ(aws::amz_date(t_2024_11_07), "20241107T173933Z");
  EXPECT_EQ(aws::amz_date(t_2024_11_07 + 999ms), "20241107T173933Z");
  EXPECT_EQ(aws::amz_date(at_epoch(0)), "19700101T000000Z");
}

TEST(sigv4, presign_url_returns_the_signature_it_writes) {
  aws::presign_request r;
  r.host = "test.dsql.us-east-1.on.aws";
  r.region = "us-east-1";
  r.service = "dsql";
  r.params = {{"Action", "DbConnect"}};
  const aws::presigned_url u = aws::presign_url(r, make_credentials("access_key", "secret_key"), t_2024_11_07);
  EXPECT_EQ(u.signature, dsql_vectors[0].signature);
  EXPECT_EQ(u.url, dsql_vectors[0].full_token);
}

TEST(sigv4, presign_url_rejects_incomplete_requests_and_credentials) {
  aws::presign_request good;
  good.host = "h";
  good.region = "r";
  good.service = "s";
  const aws::credentials creds = make_credentials("a", "s");
  auto field = [&](const aws::presign_request& r) {
    try {
      (void)aws::presign_url(r, creds, t_2024_11_07);
    } catch (const config_error& e) {
      return e.field();
    }
    return std::string();
  };
  EXPECT_EQ(field(good), "");
  aws::presign_request r = good;
  r.host = "";
  EXPECT_EQ(field(r), "host");
  r.host = "Upper.example";
  EXPECT_EQ(field(r), "host");
  r.host = "h/evil";
  EXPECT_EQ(field(r), "host");
  r = good;
  r.region = "";
  EXPECT_EQ(field(r), "region");
  r = good;
  r.service = "";
  EXPECT_EQ(field(r), "service");
  r = good;
  r.expires = 0s;
  EXPECT_EQ(field(r), "expires");
  EXPECT_THROW((void)aws::presign_url(good, make_credentials("", "s"), t_2024_11_07), token_error);
  EXPECT_THROW((void)aws::presign_url(good, make_credentials("a", ""), t_2024_11_07), token_error);
}

// --- DSQL token options --------------------------------------------------------------------------

dsql::token_request vector_a_request() {
  dsql::token_request r;
  r.host = "test.dsql.us-east-1.on.aws";
  r.region = "us-east-1";
  return r;
}

std::string expires_field_of(std::chrono::seconds expires, const aws::credentials& creds) {
  dsql::token_request r = vector_a_request();
  r.expires = expires;
  try {
    (void)dsql::generate_token(r, creds, t_2024_11_07);
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find("expires"), std::string::npos);
    return e.field();
  }
  return "";
}

TEST(dsql_token, expires_out_of_range_is_a_config_error) {
  const aws::credentials c = make_credentials("access_key", "secret_key");
  EXPECT_EQ(expires_field_of(0s, c), "expires");
  EXPECT_EQ(expires_field_of(-1s, c), "expires");
  EXPECT_EQ(expires_field_of(604801s, c), "expires");
  EXPECT_EQ(expires_field_of(1s, c), "");
  EXPECT_EQ(expires_field_of(604800s, c), "");
  // Checked before temporary credentials shorten it.
  aws::credentials temp = make_credentials("ASIA", "secret", "session");
  temp.expiration = t_2024_11_07 + 300s;
  EXPECT_EQ(expires_field_of(604801s, temp), "expires");
}

TEST(dsql_token, default_request_values) {
  const dsql::token_request r;
  EXPECT_EQ(r.user, "admin");
  EXPECT_EQ(r.expires, 900s);
  EXPECT_EQ(r.region, "");
}

TEST(dsql_token, temporary_credentials_shorten_the_expiry) {
  aws::credentials c = make_credentials("ASIAEXAMPLE", "secret", "session");
  c.expiration = t_2024_11_07 + 300s;
  parsed_token t = parse_token(dsql::generate_token(vector_a_request(), c, t_2024_11_07));
  EXPECT_EQ(t.get("X-Amz-Expires"), "300");

  c.expiration = t_2024_11_07 + 300s + 999ms;  // whole seconds, rounded down
  t = parse_token(dsql::generate_token(vector_a_request(), c, t_2024_11_07));
  EXPECT_EQ(t.get("X-Amz-Expires"), "300");

  c.expiration = t_2024_11_07 + 1h;  // longer-lived than the token: no change
  t = parse_token(dsql::generate_token(vector_a_request(), c, t_2024_11_07));
  EXPECT_EQ(t.get("X-Amz-Expires"), "900");

  c.expiration = t_2024_11_07 - 1s;
  try {
    (void)dsql::generate_token(vector_a_request(), c, t_2024_11_07);
    ADD_FAILURE() << "expired credentials accepted";
  } catch (const token_error& e) {
    EXPECT_NE(std::string(e.what()).find("expired"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("secret"), std::string::npos) << e.what();
  }

  c.expiration = t_2024_11_07 + 500ms;  // not expired yet, but too close to sign a token
  try {
    (void)dsql::generate_token(vector_a_request(), c, t_2024_11_07);
    ADD_FAILURE() << "credentials with 0.5 s left accepted";
  } catch (const token_error& e) {
    EXPECT_NE(std::string(e.what()).find("less than 1 s from now"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("expired"), std::string::npos) << e.what();
  }
}

TEST(dsql_token, admin_action_only_for_exactly_admin) {
  const aws::credentials c = make_credentials("access_key", "secret_key");
  auto action = [&](const std::string& user) {
    dsql::token_request r = vector_a_request();
    r.user = user;
    return parse_token(dsql::generate_token(r, c, t_2024_11_07)).get("Action");
  };
  EXPECT_EQ(action("admin"), "DbConnectAdmin");
  EXPECT_EQ(action("app"), "DbConnect");
  EXPECT_EQ(action("Admin"), "DbConnect");
  EXPECT_EQ(action("admin "), "DbConnect");
  EXPECT_EQ(action("administrator"), "DbConnect");

  dsql::token_request r = vector_a_request();
  r.user = "";
  EXPECT_THROW((void)dsql::generate_token(r, c, t_2024_11_07), config_error);
}

TEST(dsql_token, host_is_lowercased_and_region_defaults_to_the_hosts) {
  const aws::credentials c = make_credentials("access_key", "secret_key");
  dsql::token_request r;
  r.host = "TEST.DSQL.US-EAST-1.ON.AWS";
  r.user = "app";
  EXPECT_EQ(dsql::generate_token(r, c, t_2024_11_07), dsql_vectors[0].full_token);

  r.host = "db.example.com";
  try {
    (void)dsql::generate_token(r, c, t_2024_11_07);
    ADD_FAILURE() << "no region";
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "region");
  }
  r.host = "";
  r.region = "us-east-1";
  EXPECT_THROW((void)dsql::generate_token(r, c, t_2024_11_07), config_error);
}

TEST(dsql_token, region_from_host) {
  EXPECT_EQ(dsql::region_from_host("abcdefghijklmnopqrstuvwxyz.dsql.us-east-1.on.aws"), "us-east-1");
  EXPECT_EQ(dsql::region_from_host("iiabcdefghijklmnopqrstuvwx.dsql.ap-northeast-1.on.aws"), "ap-northeast-1");
  EXPECT_EQ(dsql::region_from_host("abc.dsql-fips.us-gov-west-1.on.aws"), "us-gov-west-1");
  EXPECT_EQ(dsql::region_from_host("ABC.DSQL.EU-WEST-2.ON.AWS"), "eu-west-2");
  EXPECT_EQ(dsql::region_from_host("mydb.cluster-abc.us-east-1.rds.amazonaws.com"), std::nullopt);
  EXPECT_EQ(dsql::region_from_host("localhost"), std::nullopt);
  EXPECT_EQ(dsql::region_from_host("x.dsql.us-east-1.on.aws.example.com"), std::nullopt);
  EXPECT_EQ(dsql::region_from_host("x.dsql..on.aws"), std::nullopt);
  EXPECT_EQ(dsql::region_from_host(""), std::nullopt);
}

// --- credential providers ------------------------------------------------------------------------

const char* const every_aws_variable[] = {"AWS_ACCESS_KEY_ID",           "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                          "AWS_SECURITY_TOKEN",          "AWS_PROFILE",           "AWS_DEFAULT_PROFILE",
                                          "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"};

/// Every secret the tests below use: none may ever appear in an error message.
const char* const secrets[] = {"SECRETdefault", "SECRETdev",     "SECRETcfg",    "SECRETenv",     "TOKENenv",
                               "TOKENdev",      "SECRETpartial", "SECRETnested", "SECRETdefaults"};

void expect_no_secret(const std::string& what) {
  for (const char* s : secrets) EXPECT_EQ(what.find(s), std::string::npos) << "secret " << s << " in: " << what;
}

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

class aws_credentials : public ::testing::Test {
 protected:
  void SetUp() override {
    for (const char* v : every_aws_variable) m_env.push_back(std::make_unique<scoped_env>(v, nullptr));
    char tmpl[] = "/tmp/pqxxpool-credentials-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    m_dir = tmpl;
    m_credentials = m_dir + "/credentials";
    m_config = m_dir + "/config";
    set("AWS_SHARED_CREDENTIALS_FILE", m_credentials.c_str());
    set("AWS_CONFIG_FILE", m_config.c_str());
  }
  void TearDown() override {
    std::remove(m_credentials.c_str());
    std::remove(m_config.c_str());
    ::rmdir(m_dir.c_str());
    while (!m_env.empty()) m_env.pop_back();  // restores the environment, last change first
  }

  void set(const char* name, const char* value) { m_env.push_back(std::make_unique<scoped_env>(name, value)); }
  static void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }
  void write_credentials(const std::string& text) const { write(m_credentials, text); }
  void write_config(const std::string& text) const { write(m_config, text); }

  std::string m_dir, m_credentials, m_config;

 private:
  std::vector<std::unique_ptr<scoped_env>> m_env;
};

TEST_F(aws_credentials, static_provider) {
  aws::static_credentials p(make_credentials("AKID", "SECRETdefault", "TOKENenv"));
  const aws::credentials c = p.get();
  EXPECT_EQ(c.access_key_id, "AKID");
  EXPECT_EQ(c.secret_access_key, "SECRETdefault");
  EXPECT_EQ(c.session_token, "TOKENenv");
  aws::static_credentials empty(make_credentials("AKID", ""));
  EXPECT_NE(error_of(empty).find("secret_access_key is empty"), std::string::npos);
}

TEST_F(aws_credentials, environment_without_and_with_session_token) {
  aws::environment_credentials p;
  EXPECT_EQ(p.name(), "environment");
  EXPECT_FALSE(aws::environment_credentials::present());

  set("AWS_ACCESS_KEY_ID", "AKIDenv");
  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  EXPECT_TRUE(aws::environment_credentials::present());
  aws::credentials c = p.get();
  EXPECT_EQ(c.access_key_id, "AKIDenv");
  EXPECT_EQ(c.secret_access_key, "SECRETenv");
  EXPECT_EQ(c.session_token, "");
  EXPECT_FALSE(c.expiration.has_value());

  set("AWS_SECURITY_TOKEN", "TOKENold");  // the older name, used when AWS_SESSION_TOKEN is unset
  EXPECT_EQ(p.get().session_token, "TOKENold");
  set("AWS_SESSION_TOKEN", "TOKENenv");
  EXPECT_EQ(p.get().session_token, "TOKENenv");
}

TEST_F(aws_credentials, missing_environment_names_the_variables) {
  aws::environment_credentials p;
  std::string what = error_of(p);
  EXPECT_NE(what.find("environment"), std::string::npos) << what;
  EXPECT_NE(what.find("AWS_ACCESS_KEY_ID"), std::string::npos) << what;
  EXPECT_NE(what.find("AWS_SECRET_ACCESS_KEY"), std::string::npos) << what;

  set("AWS_SECRET_ACCESS_KEY", "SECRETenv");
  what = error_of(p);
  EXPECT_NE(what.find("AWS_ACCESS_KEY_ID is not set"), std::string::npos) << what;

  set("AWS_SECRET_ACCESS_KEY", nullptr);
  set("AWS_ACCESS_KEY_ID", "AKIDenv");
  what = error_of(p);
  EXPECT_NE(what.find("AWS_SECRET_ACCESS_KEY is not set"), std::string::npos) << what;
  try {
    (void)p.get();
  } catch (const token_error& e) {
    EXPECT_EQ(e.source(), "environment");
  }
}

const char* const two_profiles =
    "# comment\n"
    "; another comment\n"
    "[default]\n"
    "aws_access_key_id = AKIDdefault\n"
    "aws_secret_access_key=SECRETdefault\n"
    "\n"
    "[dev]  \n"  // (indented, it would continue the value above, as in configparser)
    "\taws_access_key_id   =   AKIDdev   \n"
    "aws_secret_access_key: SECRETdev\n"
    "aws_session_token = TOKENdev\n";

TEST_F(aws_credentials, profile_from_the_credentials_file) {
  write_credentials(two_profiles);
  aws::profile_credentials p;
  EXPECT_EQ(p.name(), "profile 'default'");
  aws::credentials c = p.get();
  EXPECT_EQ(c.access_key_id, "AKIDdefault");
  EXPECT_EQ(c.secret_access_key, "SECRETdefault");
  EXPECT_EQ(c.session_token, "");

  c = aws::profile_credentials("dev").get();
  EXPECT_EQ(c.access_key_id, "AKIDdev");
  EXPECT_EQ(c.secret_access_key, "SECRETdev");
  EXPECT_EQ(c.session_token, "TOKENdev");
}

TEST_F(aws_credentials, profile_name_from_the_environment) {
  write_credentials(two_profiles);
  set("AWS_PROFILE", "dev");
  aws::profile_credentials p;
  EXPECT_EQ(p.name(), "profile 'dev'");
  EXPECT_EQ(p.get().access_key_id, "AKIDdev");

  set("AWS_DEFAULT_PROFILE", "default");  // wins over AWS_PROFILE, as in botocore
  EXPECT_EQ(p.get().access_key_id, "AKIDdefault");

  set("AWS_DEFAULT_PROFILE", "dev");
  EXPECT_EQ(aws::profile_credentials("default").get().access_key_id, "AKIDdefault");  // argument wins
}

TEST_F(aws_credentials, profile_from_the_config_file) {
  write_config(
      "[default]\n"
      "region = us-east-1\n"
      "aws_access_key_id = AKIDdefaultcfg\n"
      "aws_secret_access_key = SECRETdefault\n"
      "[profile cfg]\n"
      "s3 =\n"
      "  aws_access_key_id = nested\n"  // a nested value, not a key of the profile
      "  aws_secret_access_key = SECRETnested\n"
      "AWS_ACCESS_KEY_ID = AKIDcfg\n"  // key names are case-insensitive (configparser)
      "aws_secret_access_key = SECRETcfg\n"
      "[cfg]\n"  // not a profile in the config file
      "aws_access_key_id = wrong\n"
      "aws_secret_access_key = wrong\n");
  EXPECT_EQ(aws::profile_credentials().get().access_key_id, "AKIDdefaultcfg");
  const aws::credentials c = aws::profile_credentials("cfg").get();
  EXPECT_EQ(c.access_key_id, "AKIDcfg");
  EXPECT_EQ(c.secret_access_key, "SECRETcfg");

  // The credentials file wins over the config file.
  write_credentials(two_profiles);
  EXPECT_EQ(aws::profile_credentials().get().access_key_id, "AKIDdefault");
}

TEST_F(aws_credentials, configparser_default_section_fills_in) {
  write_credentials(
      "[DEFAULT]\n"
      "aws_secret_access_key = SECRETdefaults\n"
      "[p]\n"
      "aws_access_key_id = AKIDp\n");
  const aws::credentials c = aws::profile_credentials("p").get();
  EXPECT_EQ(c.access_key_id, "AKIDp");
  EXPECT_EQ(c.secret_access_key, "SECRETdefaults");
  aws::profile_credentials defaults_section("DEFAULT");  // not a profile
  EXPECT_NE(error_of(defaults_section).find("not found"), std::string::npos);
}

TEST_F(aws_credentials, unsupported_sources_are_named) {
  write_config(
      "[profile sso]\n"
      "sso_start_url = https://example.awsapps.com/start\n"
      "sso_region = us-east-1\n"
      "sso_account_id = 123456789012\n"
      "sso_role_name = reader\n"
      "[profile ssostart]\n"
      "sso_start_url = https://example.awsapps.com/start\n"
      "[profile role]\n"
      "role_arn = arn:aws:iam::123456789012:role/r\n"
      "source_profile = default\n"
      "[profile process]\n"
      "credential_process = /bin/echo\n"
      "[profile web]\n"
      "role_arn = arn:aws:iam::123456789012:role/r\n"
      "web_identity_token_file = /nonexistent/pqxxpool-test/token\n");
  aws::profile_credentials sso("sso");
  std::string what = error_of(sso);
  EXPECT_NE(what.find("SSO"), std::string::npos) << what;
  EXPECT_NE(what.find("profile 'sso'"), std::string::npos) << what;
  aws::profile_credentials ssostart("ssostart");
  what = error_of(ssostart);
  EXPECT_NE(what.find("SSO (sso_start_url)"), std::string::npos) << what;
  aws::profile_credentials role("role");
  what = error_of(role);
  EXPECT_NE(what.find("assume-role"), std::string::npos) << what;
  aws::profile_credentials process("process");
  what = error_of(process);
  EXPECT_NE(what.find("credential_process"), std::string::npos) << what;
  aws::profile_credentials web("web");
  what = error_of(web);
  EXPECT_NE(what.find("web identity"), std::string::npos) << what;

  // botocore's order: keys in the credentials file come before credential_process...
  write_credentials("[process]\naws_access_key_id = AKIDp\naws_secret_access_key = SECRETdev\n");
  EXPECT_EQ(aws::profile_credentials("process").get().access_key_id, "AKIDp");
  // ...but after SSO, which botocore uses when sso_account_id or sso_role_name is set.
  write_credentials(
      "[sso]\naws_access_key_id = AKIDs\naws_secret_access_key = SECRETdev\n"
      "[ssostart]\naws_access_key_id = AKIDs\naws_secret_access_key = SECRETdev\n");
  EXPECT_NE(error_of(sso).find("SSO"), std::string::npos);
  EXPECT_EQ(aws::profile_credentials("ssostart").get().access_key_id, "AKIDs");
}

TEST_F(aws_credentials, missing_and_malformed_profiles) {
  aws::profile_credentials none("nosuch");
  std::string what = error_of(none);  // neither file exists
  EXPECT_NE(what.find("profile 'nosuch'"), std::string::npos) << what;
  EXPECT_NE(what.find("not found"), std::string::npos) << what;
  EXPECT_NE(what.find(m_credentials), std::string::npos) << what;
  EXPECT_NE(what.find(m_config), std::string::npos) << what;

  write_credentials("[partial]\naws_access_key_id = AKIDpartial\n[dev]\naws_secret_access_key = SECRETpartial\n");
  aws::profile_credentials partial("partial");
  what = error_of(partial);
  EXPECT_NE(what.find("aws_secret_access_key is missing"), std::string::npos) << what;
  aws::profile_credentials dev("dev");
  what = error_of(dev);
  EXPECT_NE(what.find("has no aws_access_key_id"), std::string::npos) << what;

  write_credentials("[default]\naws_access_key_id = AKID\nSECRETdefault\n");  // a line with no '='
  aws::profile_credentials def;
  what = error_of(def);
  EXPECT_NE(what.find(m_credentials + " line 3"), std::string::npos) << what;

  write_credentials("aws_secret_access_key = SECRETdefault\n[default]\n");
  what = error_of(def);
  EXPECT_NE(what.find("line 1"), std::string::npos) << what;

  write_credentials("[default]\naws_secret_access_key = SECRETdefault\naws_secret_access_key = SECRETdev\n");
  what = error_of(def);
  EXPECT_NE(what.find("line 3"), std::string::npos) << what;
  EXPECT_NE(what.find("twice"), std::string::npos) << what;

  write_credentials("[default]\n[default]\n");
  EXPECT_NE(error_of(def).find("twice"), std::string::npos);
}

}  // namespace
}  // namespace pqxxpool::test
