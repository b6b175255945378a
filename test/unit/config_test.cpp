#include <cmath>
#include <functional>
#include <string>

#include <gtest/gtest.h>

#include "pqxxpool/config.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::test {
namespace {

using namespace std::chrono_literals;

std::string field_of(const std::function<void(pool_config&)>& change) {
  pool_config cfg;
  change(cfg);
  try {
    cfg.validate();
  } catch (const config_error& e) {
    EXPECT_NE(std::string(e.what()).find(e.field()), std::string::npos) << "what() names the field";
    return e.field();
  }
  return "";
}

TEST(pool_config, defaults_are_valid_and_documented_values) {
  pool_config cfg;
  EXPECT_NO_THROW(cfg.validate());
  EXPECT_EQ(cfg.max_size, 10u);
  EXPECT_EQ(cfg.min_idle, 2u);
  EXPECT_EQ(cfg.acquire_timeout, 30s);
  EXPECT_EQ(cfg.connect_timeout, 10s);
  EXPECT_EQ(cfg.max_lifetime, 55min);
  EXPECT_DOUBLE_EQ(cfg.lifetime_jitter, 0.1);
  EXPECT_DOUBLE_EQ(cfg.initial_lifetime_spread, 0.9);
  EXPECT_EQ(cfg.idle_timeout, 10min);
  EXPECT_EQ(cfg.validate_after_idle, 1s);
  EXPECT_EQ(cfg.validation_timeout, 5s);
  EXPECT_EQ(cfg.health_check_period, 1min);
  EXPECT_EQ(cfg.max_connecting, 2u);
  EXPECT_EQ(cfg.max_waiting, 0u);
}

TEST(pool_config, each_bad_field_is_named) {
  EXPECT_EQ(field_of([](pool_config& c) { c.max_size = 0; }), "max_size");
  EXPECT_EQ(field_of([](pool_config& c) { c.min_idle = 11; }), "min_idle");
  EXPECT_EQ(field_of([](pool_config& c) { c.max_connecting = 0; }), "max_connecting");
  EXPECT_EQ(field_of([](pool_config& c) {
              c.max_size = 1;
              c.min_idle = 1;
              c.max_connecting = 2;  // allowed: capped at max_size
            }),
            "");
  EXPECT_EQ(field_of([](pool_config& c) { c.lifetime_jitter = 1.0; }), "lifetime_jitter");
  EXPECT_EQ(field_of([](pool_config& c) { c.lifetime_jitter = -0.1; }), "lifetime_jitter");
  EXPECT_EQ(field_of([](pool_config& c) { c.initial_lifetime_spread = 1.0; }), "initial_lifetime_spread");
  EXPECT_EQ(field_of([](pool_config& c) { c.initial_lifetime_spread = -0.5; }), "initial_lifetime_spread");
  EXPECT_EQ(field_of([](pool_config& c) { c.lifetime_jitter = std::nan(""); }), "lifetime_jitter");
  EXPECT_EQ(field_of([](pool_config& c) { c.acquire_timeout = -1ms; }), "acquire_timeout");
  EXPECT_EQ(field_of([](pool_config& c) { c.connect_timeout = 0ms; }), "connect_timeout");
  EXPECT_EQ(field_of([](pool_config& c) { c.max_lifetime = -1ms; }), "max_lifetime");
  // Shorter than the coarse clock's tick plus a connect: every connection would count as expired.
  EXPECT_EQ(field_of([](pool_config& c) { c.max_lifetime = 2ms; }), "max_lifetime");
  EXPECT_EQ(field_of([](pool_config& c) { c.max_lifetime = 99ms; }), "max_lifetime");
  EXPECT_EQ(field_of([](pool_config& c) { c.max_lifetime = 100ms; }), "");
  EXPECT_EQ(field_of([](pool_config& c) { c.idle_timeout = -1ms; }), "idle_timeout");
  EXPECT_EQ(field_of([](pool_config& c) { c.validate_after_idle = -1ms; }), "validate_after_idle");
  EXPECT_EQ(field_of([](pool_config& c) { c.validation_timeout = 0ms; }), "validation_timeout");
  EXPECT_EQ(field_of([](pool_config& c) { c.health_check_period = -1ms; }), "health_check_period");
  EXPECT_EQ(field_of([](pool_config& c) { c.connect_backoff_initial = 0ms; }), "connect_backoff_initial");
  EXPECT_EQ(field_of([](pool_config& c) { c.connect_backoff_max = 1ms; }), "connect_backoff_max");
  EXPECT_EQ(field_of([](pool_config& c) { c.max_connect_rate = -1; }), "max_connect_rate");
  // Its spacing, 1/rate, would overflow the clock (the limit silently gone): over 10 years.
  EXPECT_EQ(field_of([](pool_config& c) { c.max_connect_rate = 1e-10; }), "max_connect_rate");
  EXPECT_EQ(field_of([](pool_config& c) { c.max_connect_rate = 1e-8; }), "");
  EXPECT_EQ(field_of([](pool_config& c) { c.fairness_window = std::chrono::microseconds(-1); }), "fairness_window");
  // The name ends up in JSON and Prometheus labels, which must be UTF-8 (a new-user trial's find).
  EXPECT_EQ(field_of([](pool_config& c) { c.name = "\xff\xfe"; }), "name");
  EXPECT_EQ(field_of([](pool_config& c) { c.name = "caf\xe9"; }), "name");       // Latin-1
  EXPECT_EQ(field_of([](pool_config& c) { c.name = "two\nlines"; }), "name");
  EXPECT_EQ(field_of([](pool_config& c) { c.name = "caf\xc3\xa9 \"quoted\""; }), "");  // UTF-8 é, quotes
}

// Durations the pool adds to a time point are bounded, so that no sum overflows the clock.
TEST(pool_config, durations_too_long_for_the_clock_name_their_field) {
  constexpr auto forever = std::chrono::milliseconds::max();
  EXPECT_EQ(field_of([&](pool_config& c) { c.max_lifetime = forever; }), "max_lifetime");
  EXPECT_EQ(field_of([&](pool_config& c) { c.idle_timeout = forever; }), "idle_timeout");
  EXPECT_EQ(field_of([&](pool_config& c) { c.validate_after_idle = forever; }), "validate_after_idle");
  EXPECT_EQ(field_of([&](pool_config& c) { c.validation_timeout = forever; }), "validation_timeout");
  EXPECT_EQ(field_of([&](pool_config& c) { c.health_check_period = forever; }), "health_check_period");
  EXPECT_EQ(field_of([&](pool_config& c) { c.leak_detection_threshold = forever; }), "leak_detection_threshold");
  EXPECT_EQ(field_of([&](pool_config& c) { c.connect_backoff_max = forever; }), "connect_backoff_max");
  EXPECT_EQ(field_of([](pool_config& c) { c.fairness_window = std::chrono::hours(1); }), "fairness_window");
  // The longest allowed values make a valid pool configuration; acquire_timeout may be "forever".
  pool_config c;
  c.max_lifetime = c.idle_timeout = c.validate_after_idle = c.health_check_period = std::chrono::hours(24 * 3653);
  c.validation_timeout = c.leak_detection_threshold = c.connect_backoff_max = std::chrono::hours(24 * 3653);
  c.fairness_window = std::chrono::minutes(1);
  c.acquire_timeout = forever;
  EXPECT_NO_THROW(c.validate());
}

TEST(connect_params, set_get_erase_keep_insertion_order) {
  connect_params p;
  p.set("host", "a");
  p.set("port", "5432");
  p.set("host", "b");
  ASSERT_NE(p.get("host"), nullptr);
  EXPECT_EQ(*p.get("host"), "b");
  EXPECT_EQ(p.items().front().first, "host");
  EXPECT_TRUE(p.erase("host"));
  EXPECT_FALSE(p.erase("host"));
  EXPECT_FALSE(p.contains("host"));
  EXPECT_EQ(p.items().size(), 1u);
}

}  // namespace
}  // namespace pqxxpool::test
