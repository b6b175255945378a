// `pqxxpool check`'s target resolution (tools/pqxxpool/check_target.cpp): --conninfo, else
// DATABASE_URL, else libpq's PG* variables, with HOSTNAME as the host only next to PGHOSTADDR and
// without PGHOST.

#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "check_target.hpp"
#include "scoped_env.hpp"

namespace pqxxpool::test {
namespace {

using pqxxpool_cli::check_target;
using pqxxpool_cli::resolve_check_target;

/// Every variable the resolution looks at, unset for the test's lifetime unless set again.
class check_target_test : public ::testing::Test {
 protected:
  scoped_env m_url{"DATABASE_URL", nullptr};
  scoped_env m_host{"PGHOST", nullptr};
  scoped_env m_hostaddr{"PGHOSTADDR", nullptr};
  scoped_env m_hostname{"HOSTNAME", nullptr};
};

TEST_F(check_target_test, database_url_wins_over_the_pg_variables_and_hostname) {
  scoped_env url("DATABASE_URL", "postgresql://app@db.example.com/app");
  scoped_env hostaddr("PGHOSTADDR", "127.0.0.1");
  scoped_env hostname("HOSTNAME", "endpoint.example.com");
  const check_target t = resolve_check_target(std::nullopt);
  EXPECT_EQ(t.conninfo, "postgresql://app@db.example.com/app");
  EXPECT_EQ(t.source, "DATABASE_URL");
  EXPECT_TRUE(t.params.empty());
  EXPECT_FALSE(t.host_from_hostname);
}

TEST_F(check_target_test, conninfo_option_wins_over_database_url) {
  scoped_env url("DATABASE_URL", "postgresql://app@db.example.com/app");
  scoped_env hostaddr("PGHOSTADDR", "127.0.0.1");
  scoped_env hostname("HOSTNAME", "endpoint.example.com");
  const check_target t = resolve_check_target(std::string{"host=other.example.com"});
  EXPECT_EQ(t.conninfo, "host=other.example.com");
  EXPECT_EQ(t.source, "--conninfo");
  EXPECT_TRUE(t.params.empty());
}

TEST_F(check_target_test, an_empty_conninfo_option_still_overrides_the_environment) {
  scoped_env url("DATABASE_URL", "postgresql://app@db.example.com/app");
  const check_target t = resolve_check_target(std::string{});
  EXPECT_EQ(t.conninfo, "");
  EXPECT_EQ(t.source, "--conninfo");
}

TEST_F(check_target_test, without_database_url_libpq_reads_the_pg_variables) {
  const check_target t = resolve_check_target(std::nullopt);
  EXPECT_EQ(t.conninfo, "");
  EXPECT_EQ(t.source, "PG* variables");
  EXPECT_TRUE(t.params.empty());
}

TEST_F(check_target_test, an_empty_database_url_counts_as_unset) {
  scoped_env url("DATABASE_URL", "");
  EXPECT_EQ(resolve_check_target(std::nullopt).source, "PG* variables");
}

TEST_F(check_target_test, hostname_is_the_host_with_pghostaddr_and_without_pghost) {
  scoped_env hostaddr("PGHOSTADDR", "127.0.0.1");
  scoped_env hostname("HOSTNAME", "endpoint.example.com");
  const check_target t = resolve_check_target(std::nullopt);
  ASSERT_EQ(t.params.count("host"), 1u);
  EXPECT_EQ(t.params.at("host"), "endpoint.example.com");
  EXPECT_TRUE(t.host_from_hostname);
  EXPECT_EQ(t.conninfo, "");  // PGHOSTADDR and the rest: libpq reads them itself
}

TEST_F(check_target_test, hostname_is_ignored_when_pghost_is_set) {
  scoped_env host("PGHOST", "db.example.com");
  scoped_env hostaddr("PGHOSTADDR", "127.0.0.1");
  scoped_env hostname("HOSTNAME", "my-laptop");
  const check_target t = resolve_check_target(std::nullopt);
  EXPECT_TRUE(t.params.empty());
  EXPECT_FALSE(t.host_from_hostname);
}

TEST_F(check_target_test, hostname_alone_is_the_machines_name_and_ignored) {
  scoped_env hostname("HOSTNAME", "my-laptop");
  const check_target t = resolve_check_target(std::nullopt);
  EXPECT_TRUE(t.params.empty());
  EXPECT_FALSE(t.host_from_hostname);
}

TEST_F(check_target_test, empty_variables_count_as_unset) {
  {
    scoped_env hostaddr("PGHOSTADDR", "");
    scoped_env hostname("HOSTNAME", "endpoint.example.com");
    EXPECT_TRUE(resolve_check_target(std::nullopt).params.empty()) << "empty PGHOSTADDR";
  }
  {
    scoped_env host("PGHOST", "");
    scoped_env hostaddr("PGHOSTADDR", "127.0.0.1");
    scoped_env hostname("HOSTNAME", "endpoint.example.com");
    EXPECT_EQ(resolve_check_target(std::nullopt).params.count("host"), 1u) << "empty PGHOST";
  }
  {
    scoped_env hostaddr("PGHOSTADDR", "127.0.0.1");
    scoped_env hostname("HOSTNAME", "");
    EXPECT_TRUE(resolve_check_target(std::nullopt).params.empty()) << "empty HOSTNAME";
  }
}

}  // namespace
}  // namespace pqxxpool::test
