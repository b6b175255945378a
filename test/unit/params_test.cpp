// build_params: libpq's parser, the params overlay, pool defaults, and errors that never echo a
// password. Needs libpq but no server.

#include <gtest/gtest.h>

#include <map>
#include <optional>
#include <vector>

#include "pqxx/adapter.hpp"
#include "scoped_env.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::test {
namespace {

using namespace std::chrono_literals;

std::string value(const connect_params& p, const char* key) {
  const std::string* v = p.get(key);
  return v != nullptr ? *v : "<unset>";
}

TEST(build_params, uri_is_parsed_and_params_overlay_it) {
  pool_config cfg;
  cfg.conninfo = "postgresql://app:s3cret@db.example.com:6543/appdb?sslmode=verify-full";
  cfg.params["sslmode"] = "require";
  cfg.params["application_name"] = "mine";
  const connect_params p = pqxx_adapter::build_params(cfg);
  EXPECT_EQ(value(p, "host"), "db.example.com");
  EXPECT_EQ(value(p, "port"), "6543");
  EXPECT_EQ(value(p, "dbname"), "appdb");
  EXPECT_EQ(value(p, "user"), "app");
  EXPECT_EQ(value(p, "password"), "s3cret");
  EXPECT_EQ(value(p, "sslmode"), "require");
  EXPECT_EQ(value(p, "application_name"), "mine");
  EXPECT_EQ(value(p, "keepalives"), "1");
}

TEST(build_params, keyword_form_gets_pool_defaults) {
  pool_config cfg;
  cfg.conninfo = "host=localhost dbname=app";
  cfg.connect_timeout = 2500ms;
  const connect_params p = pqxx_adapter::build_params(cfg);
  EXPECT_EQ(value(p, "host"), "localhost");
  EXPECT_EQ(value(p, "connect_timeout"), "3");  // seconds, rounded up
  EXPECT_EQ(value(p, "application_name"), "pqxxpool");
  EXPECT_EQ(value(p, "keepalives_idle"), "30");
}

TEST(build_params, unknown_keyword_names_the_param) {
  pool_config cfg;
  cfg.params["sslmod"] = "require";
  try {
    (void)pqxx_adapter::build_params(cfg);
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "params[\"sslmod\"]");
  }
}

// libpq's rule for host lists: one hostaddr per host, one port for all or one per host.
TEST(build_params, host_lists_that_do_not_line_up_name_the_field) {
  pool_config cfg;
  cfg.conninfo = "host=a,b port=1,2,3";
  try {
    (void)pqxx_adapter::build_params(cfg);
    FAIL() << "three ports for two hosts accepted";
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "conninfo");
    EXPECT_NE(std::string(e.what()).find("3 ports for 2 hosts"), std::string::npos) << e.what();
  }
  cfg.conninfo = "host=a,b";
  cfg.params["hostaddr"] = "127.0.0.1,127.0.0.2,127.0.0.3";
  try {
    (void)pqxx_adapter::build_params(cfg);
    FAIL() << "three hostaddr entries for two hosts accepted";
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "params[\"hostaddr\"]");
  }
  cfg.conninfo = "host=a";
  cfg.params["hostaddr"] = "127.0.0.1,127.0.0.2";
  EXPECT_THROW((void)pqxx_adapter::build_params(cfg), config_error) << "two hostaddr entries for one host";
  for (const char* fine : {"host=a,b port=5432", "host=a,b port=1,2", "hostaddr=127.0.0.1,127.0.0.2 port=1,2",
                           "host=a,b hostaddr=127.0.0.1,127.0.0.2", "host=a port=1", "host=a hostaddr=127.0.0.1",
                           // the hosts come from PGHOST or a service file, which libpq pairs itself
                           "port=5432,5433", "service=db host=a,b,c port=1,2"}) {
    pool_config ok;
    ok.conninfo = fine;
    EXPECT_NO_THROW((void)pqxx_adapter::build_params(ok)) << fine;
  }
}

TEST(build_params, parse_errors_never_echo_the_password) {
  for (const char* bad : {"host=x password='hunter2secret", "password=hunter2secret host", "postgresql://u:hunter2%zzsecret@h/d"}) {
    pool_config cfg;
    cfg.conninfo = bad;
    try {
      (void)pqxx_adapter::build_params(cfg);
      ADD_FAILURE() << "parsed: " << bad;
    } catch (const config_error& e) {
      EXPECT_EQ(e.field(), "conninfo");
      EXPECT_EQ(std::string(e.what()).find("hunter2"), std::string::npos) << e.what();
    }
  }
}

// Without these checks each value below made every connect fail, retried for ever.
TEST(build_params, values_libpq_would_refuse_name_their_field) {
  struct bad_case {
    const char* conninfo;
    std::map<std::string, std::string> params;
    const char* field;
    const char* says;
  };
  const std::vector<bad_case> cases = {
      {"postgresql://app:pw@localhost:abc/app", {}, "conninfo", "port \"abc\" is not a port number"},
      {"host=a,b port=5432,0", {}, "conninfo", "port \"0\""},
      {"host=a", {{"port", "70000"}}, "params[\"port\"]", "allowed: 1-65535"},
      {"host=a sslmode=verify-fool", {}, "conninfo", "sslmode \"verify-fool\" is not valid; allowed: disable, allow"},
      {"host=a connect_timeout=abc", {}, "conninfo", "connect_timeout \"abc\" is not an integer"},
      {"host=a", {{"keepalives_idle", "30s"}}, "params[\"keepalives_idle\"]", "is not an integer"},
      {"host=a target_session_attrs=readwrite", {}, "conninfo", "allowed: any, read-write"},
      {"host=a channel_binding=yes", {}, "conninfo", "channel_binding"},
  };
  for (const bad_case& c : cases) {
    pool_config cfg;
    cfg.conninfo = c.conninfo;
    cfg.params = c.params;
    try {
      (void)pqxx_adapter::build_params(cfg);
      ADD_FAILURE() << "accepted: " << c.conninfo;
    } catch (const config_error& e) {
      EXPECT_EQ(e.field(), c.field) << c.conninfo;
      EXPECT_NE(std::string(e.what()).find(c.says), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("pw"), std::string::npos) << e.what();
    }
  }
  {
    const scoped_env bad_mode("PGSSLMODE", "verify-fool");
    pool_config cfg;
    cfg.conninfo = "host=a";
    try {
      (void)pqxx_adapter::build_params(cfg);
      ADD_FAILURE() << "PGSSLMODE=verify-fool accepted";
    } catch (const config_error& e) {
      EXPECT_EQ(e.field(), "PGSSLMODE");
    }
    cfg.conninfo = "host=a sslmode=require";  // the conninfo's value wins, as in libpq
    EXPECT_NO_THROW((void)pqxx_adapter::build_params(cfg));
  }
  for (const char* fine : {"host=a port=5432 sslmode=verify-full connect_timeout=' 7 ' keepalives=0",
                           "host=a,b port=,6543 target_session_attrs=read-write gssencmode=disable",
                           "host=a channel_binding=require tcp_user_timeout=0"}) {
    pool_config ok;
    ok.conninfo = fine;
    EXPECT_NO_THROW((void)pqxx_adapter::build_params(ok)) << fine;
  }
}

// libpq's connect_timeout in conninfo or params replaces pool_config::connect_timeout, read as
// libpq reads it.
TEST(build_params, a_connect_timeout_in_the_conninfo_is_the_pools) {
  pool_config cfg;
  cfg.conninfo = "host=a";
  EXPECT_EQ(pqxx_adapter::user_connect_timeout(cfg), std::nullopt);
  cfg.conninfo = "host=a connect_timeout=7";
  EXPECT_EQ(pqxx_adapter::user_connect_timeout(cfg), std::chrono::milliseconds{7000});
  cfg.conninfo = "postgresql://h/d?connect_timeout=1";
  EXPECT_EQ(pqxx_adapter::user_connect_timeout(cfg), std::chrono::milliseconds{2000});  // libpq's minimum
  cfg.params["connect_timeout"] = "0";
  EXPECT_EQ(pqxx_adapter::user_connect_timeout(cfg), std::chrono::milliseconds::max());  // no limit
  const connect_params p = pqxx_adapter::build_params(cfg);
  EXPECT_EQ(value(p, "connect_timeout"), "0");  // left as the user gave it
}

// libpq's messages quote the words they could not place; those may be pieces of a password, so
// only a keyword or a near miss of one is repeated.
TEST(build_params, parse_errors_name_a_mistyped_keyword) {
  const auto message_for = [](const char* conninfo) {
    pool_config cfg;
    cfg.conninfo = conninfo;
    try {
      (void)pqxx_adapter::build_params(cfg);
    } catch (const config_error& e) {
      EXPECT_EQ(e.field(), "conninfo");
      return std::string{e.what()};
    }
    ADD_FAILURE() << "parsed: " << conninfo;
    return std::string{};
  };
  std::string m = message_for("hots=localhost");
  EXPECT_NE(m.find("invalid connection option \"hots\" (did you mean \"host\"?)"), std::string::npos) << m;
  m = message_for("host=localhost sslmod=require");
  EXPECT_NE(m.find("did you mean \"sslmode\""), std::string::npos) << m;
  m = message_for("host=localhost port");
  EXPECT_NE(m.find("missing \"=\" after \"port\""), std::string::npos) << m;
  // A password with an unquoted space: its pieces are not repeated.
  m = message_for("host=localhost password=my secret");
  EXPECT_EQ(m.find("secret"), std::string::npos) << m;
  EXPECT_NE(m.find("single quotes"), std::string::npos) << m;
  m = message_for("host=localhost password=my zecretword=x");
  EXPECT_EQ(m.find("zecretword"), std::string::npos) << m;
  m = message_for("host=localhost password=my se=x");
  EXPECT_EQ(m.find("\"se\""), std::string::npos) << m;
}

TEST(sqlstate_from_message, reads_verbose_libpq_text) {
  EXPECT_EQ(pqxx_adapter::sqlstate_from_message(
                "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  28P01: password authentication failed"),
            "28P01");
  EXPECT_EQ(pqxx_adapter::sqlstate_from_message("ERROR:  40001: could not serialize access"), "40001");
  EXPECT_EQ(pqxx_adapter::sqlstate_from_message("could not connect to server: Connection refused"), "");
}

// What the pool's "closing connection …: the connection was lost: …" line shows of libpq's text.
TEST(loss_text, joins_lines_and_keeps_what_libpq_and_the_server_said) {
  EXPECT_EQ(pqxx_adapter::loss_text("server closed the connection unexpectedly\n\tThis probably means the server "
                                    "terminated abnormally\n\tbefore or while processing the request.\n"),
            "server closed the connection unexpectedly This probably means the server terminated abnormally before "
            "or while processing the request.");
  // PgBouncer's reason, then libpq's own when the socket closed (as the PgBouncer test logs it).
  EXPECT_EQ(pqxx_adapter::loss_text("FATAL:  query_wait_timeout\nSSL connection has been closed unexpectedly\n"),
            "FATAL: query_wait_timeout SSL connection has been closed unexpectedly");
  EXPECT_EQ(pqxx_adapter::loss_text(""), "");
}

TEST(loss_text, leaves_out_the_parts_that_can_quote_user_data) {
  // A verbose server error: the key's value (DETAIL), the query (LINE and its caret, STATEMENT,
  // QUERY, CONTEXT) must not reach a warning; the primary message and SQLSTATE stay.
  const std::string said = pqxx_adapter::loss_text(
      "FATAL:  57P01: terminating connection due to administrator command\n"
      "DETAIL:  Key (email)=(alice@example.com) already exists.\n"
      "HINT:  secret-hint\n"
      "CONTEXT:  SQL function \"f\" statement 1 with card 4111111111111111\n"
      "QUERY:  SELECT 'query-text'\n"
      "LINE 1: SELECT 'line-text'\n"
      "               ^\n"
      "STATEMENT:  SELECT 'statement-text'\n"
      "LOCATION:  ProcessInterrupts, postgres.c:3200\n"
      "server closed the connection unexpectedly\n"
      "\tThis probably means the server terminated abnormally\n");
  EXPECT_EQ(said,
            "FATAL: 57P01: terminating connection due to administrator command server closed the connection "
            "unexpectedly This probably means the server terminated abnormally");
  for (const char* quoted : {"alice@example.com", "secret-hint", "4111111111111111", "query-text", "line-text",
                             "statement-text", "^", "postgres.c"}) {
    EXPECT_EQ(said.find(quoted), std::string::npos) << quoted;
  }
}

}  // namespace
}  // namespace pqxxpool::test
