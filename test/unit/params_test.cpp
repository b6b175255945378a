// build_params: libpq's parser, the params overlay, pool defaults, and errors that never echo a
// password. Needs libpq but no server.

#include <gtest/gtest.h>

#include "pqxx/adapter.hpp"
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

TEST(sqlstate_from_message, reads_verbose_libpq_text) {
  EXPECT_EQ(pqxx_adapter::sqlstate_from_message(
                "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  28P01: password authentication failed"),
            "28P01");
  EXPECT_EQ(pqxx_adapter::sqlstate_from_message("ERROR:  40001: could not serialize access"), "40001");
  EXPECT_EQ(pqxx_adapter::sqlstate_from_message("could not connect to server: Connection refused"), "");
}

}  // namespace
}  // namespace pqxxpool::test
