// Prometheus and JSON exports: format details a scraper depends on, and promtool's verdict.

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "pqxxpool/errors.hpp"
#include "pqxxpool/metrics.hpp"

namespace pqxxpool::test {
namespace {

using namespace std::chrono_literals;

pool_stats sample_stats(const std::string& name) {
  pool_stats s;
  s.name = name;
  s.total = 4;
  s.idle = 1;
  s.in_use = 2;
  s.connecting = 1;
  s.waiting = 3;
  s.max_size = 4;
  s.min_idle = 2;
  s.acquires = 100;
  s.pool_exhausted_count = 7;
  s.closed_max_lifetime = 5;
  s.acquire_wait.record(0ns);
  s.acquire_wait.record(3us);
  s.acquire_wait.record(2ms);
  s.usage.record(40ms);
  s.usage.record(3s);
  s.connect_time.record(12ms);
  s.leaks_suspected = 1;
  s.last_error.message = "FATAL:  28P01: password authentication failed";
  s.last_error.sqlstate = "28P01";
  s.last_error.time = std::chrono::system_clock::now();
  return s;
}

std::size_t count_of(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) ++n;
  return n;
}

TEST(prometheus, one_pool_has_gauges_counters_and_a_cumulative_histogram) {
  const std::string text = to_prometheus(sample_stats("orders"));
  EXPECT_NE(text.find("pqxxpool_connections{pool=\"orders\",state=\"in_use\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pqxxpool_pool_exhausted_total{pool=\"orders\"} 7\n"), std::string::npos);
  EXPECT_NE(text.find("pqxxpool_connections_closed_total{pool=\"orders\",reason=\"max_lifetime\"} 5\n"),
            std::string::npos);
  EXPECT_NE(text.find("pqxxpool_acquire_seconds_bucket{pool=\"orders\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("pqxxpool_acquire_seconds_bucket{pool=\"orders\",le=\"1e-06\"} 1\n"),
            std::string::npos)
      << "buckets are cumulative";
  EXPECT_NE(text.find("pqxxpool_acquire_seconds_count{pool=\"orders\"} 3\n"), std::string::npos);
  EXPECT_EQ(count_of(text, "# TYPE pqxxpool_acquire_seconds histogram\n"), 1u);
}

TEST(prometheus, usage_and_connect_time_histograms_and_the_leak_counter) {
  const std::string text = to_prometheus(sample_stats("orders"));
  EXPECT_EQ(count_of(text, "# TYPE pqxxpool_usage_seconds histogram\n"), 1u) << text;
  EXPECT_EQ(count_of(text, "# TYPE pqxxpool_connect_seconds histogram\n"), 1u) << text;
  EXPECT_NE(text.find("pqxxpool_usage_seconds_count{pool=\"orders\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pqxxpool_usage_seconds_sum{pool=\"orders\"} 3.04\n"), std::string::npos) << text;
  // 40 ms lies in (32.768 ms, 65.536 ms]: the bucket le=0.065536 holds it, le=0.032768 does not.
  EXPECT_NE(text.find("pqxxpool_usage_seconds_bucket{pool=\"orders\",le=\"0.032768\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("pqxxpool_usage_seconds_bucket{pool=\"orders\",le=\"0.065536\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("pqxxpool_connect_seconds_count{pool=\"orders\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("pqxxpool_leaks_suspected_total{pool=\"orders\"} 1\n"), std::string::npos) << text;
}

TEST(prometheus, several_pools_share_each_family_once_and_names_must_differ) {
  const std::string text = to_prometheus({sample_stats("a"), sample_stats("b\"quoted\\")});
  EXPECT_EQ(count_of(text, "# HELP pqxxpool_acquires_total "), 1u);
  EXPECT_EQ(count_of(text, "pqxxpool_acquires_total{"), 2u);
  EXPECT_NE(text.find("pool=\"b\\\"quoted\\\\\""), std::string::npos) << "label values are escaped";
  try {
    (void)to_prometheus({sample_stats("same"), sample_stats("same")});
    FAIL();
  } catch (const config_error& e) {
    EXPECT_EQ(e.field(), "name");
  }
}

TEST(prometheus, promtool_accepts_one_and_several_pools) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    GTEST_FAIL() << "promtool (Debian package prometheus) is required: scripts/deps.sh installs it";
  for (const std::string& text : {to_prometheus(sample_stats("one")),
                                  to_prometheus({sample_stats("one"), sample_stats("two"), sample_stats("three")})}) {
    const std::string path = ::testing::TempDir() + "pqxxpool_metrics.prom";
    std::ofstream(path) << text;
    EXPECT_EQ(std::system(("promtool check metrics < '" + path + "'").c_str()), 0) << text;
  }
}

TEST(json, carries_gauges_counters_histogram_and_last_error) {
  const nlohmann::json j = nlohmann::json::parse(to_json(sample_stats("orders")));
  EXPECT_EQ(j["name"], "orders");
  EXPECT_EQ(j["gauges"]["in_use"], 2);
  EXPECT_EQ(j["counters"]["pool_exhausted_count"], 7);
  EXPECT_EQ(j["acquire_wait"]["count"], 3);
  EXPECT_GT(j["acquire_wait"]["p99_seconds"].get<double>(), 1e-3);
  EXPECT_EQ(j["acquire_wait"]["buckets"].back()["le"], "+Inf");
  EXPECT_EQ(j["usage"]["count"], 2);
  EXPECT_DOUBLE_EQ(j["usage"]["max_seconds"].get<double>(), 3.0);
  EXPECT_EQ(j["connect_time"]["count"], 1);
  EXPECT_EQ(j["counters"]["leaks_suspected"], 1);
  EXPECT_EQ(j["last_error"]["sqlstate"], "28P01");
  pool_stats clean = sample_stats("x");
  clean.last_error = {};
  EXPECT_TRUE(nlohmann::json::parse(to_json(clean))["last_error"].is_null());
}

// A connect error naming a host in Latin-1 (or any server text in another encoding) must not
// make the exports throw or break their format: such bytes become U+FFFD.
TEST(exports, text_that_is_not_utf8_becomes_replacement_characters) {
  pool_stats s = sample_stats("caf\xe9");  // a name the pool would refuse, given to the exporter anyway
  s.last_error.message = "could not translate host name \"caf\xe9.invalid\" to address";
  std::string json_text;
  ASSERT_NO_THROW(json_text = to_json(s));
  const nlohmann::json j = nlohmann::json::parse(json_text);
  EXPECT_EQ(j["last_error"]["message"], "could not translate host name \"caf\xef\xbf\xbd.invalid\" to address");
  EXPECT_EQ(j["name"], "caf\xef\xbf\xbd");

  const std::string prom = to_prometheus(s);
  EXPECT_NE(prom.find("pool=\"caf\xef\xbf\xbd\""), std::string::npos);
  EXPECT_EQ(prom.find("\xe9\""), std::string::npos);
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    GTEST_FAIL() << "promtool (Debian package prometheus) is required: scripts/deps.sh installs it";
  const std::string path = ::testing::TempDir() + "pqxxpool_metrics_latin1.prom";
  std::ofstream(path) << prom;
  EXPECT_EQ(std::system(("promtool check metrics < '" + path + "'").c_str()), 0) << prom;
}

}  // namespace
}  // namespace pqxxpool::test
