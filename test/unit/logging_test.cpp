// What the pool logs (spdlog), when, and that it never logs while holding its lock; leak
// detection; the usage and connect-time histograms. All in fake time with the fake connector.

#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <spdlog/sinks/base_sink.h>

#include "fakes.hpp"

namespace pqxxpool::test {
namespace {

/// Keeps every line, and on each one calls the pool's stats(): that takes the pool's lock, so a
/// line written while the pool holds it deadlocks (and ThreadSanitizer reports a double lock).
class capture_sink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  struct line {
    spdlog::level::level_enum level;
    std::string text;
  };
  std::atomic<core::pool_core*> probe{nullptr};  // set once the pool exists; cleared before it dies

  std::vector<line> lines() {
    std::lock_guard<std::mutex> g(mutex_);
    return m_lines;
  }
  /// Lines at `level` containing `needle`.
  std::size_t count(spdlog::level::level_enum level, const std::string& needle) {
    std::size_t n = 0;
    for (const line& l : lines())
      if (l.level == level && l.text.find(needle) != std::string::npos) ++n;
    return n;
  }
  std::string dump() {
    std::string out;
    for (const line& l : lines()) out += std::string(spdlog::level::to_string_view(l.level).data()) + ": " + l.text + "\n";
    return out;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (core::pool_core* core = probe.load()) (void)core->stats();
    m_lines.push_back({msg.level, std::string(msg.payload.data(), msg.payload.size())});
  }
  void flush_() override {}

 private:
  std::vector<line> m_lines;  // guarded by base_sink::mutex_
};

struct logged_pool {
  std::shared_ptr<capture_sink> sink = std::make_shared<capture_sink>();
  std::unique_ptr<fake_pool> pool;

  explicit logged_pool(pool_config cfg, const std::function<void(fake_connector&)>& setup = {}) {
    auto logger = std::make_shared<spdlog::logger>("test", sink);
    logger->set_level(spdlog::level::trace);
    cfg.logger = logger;
    pool = std::make_unique<fake_pool>(std::move(cfg), setup);
    sink->probe = pool->core;
  }
  ~logged_pool() {
    sink->probe = nullptr;  // close() still logs; the probe must not outlive the core
  }
  fake_pool& operator*() { return *pool; }
  fake_pool* operator->() { return pool.get(); }
};

pool_config config(std::size_t max_size, std::size_t min_idle) {
  pool_config cfg;
  cfg.name = "orders";
  cfg.max_size = max_size;
  cfg.min_idle = min_idle;
  cfg.max_connecting = 1;
  cfg.max_lifetime = 0ms;
  cfg.idle_timeout = 0ms;
  cfg.health_check_period = 0ms;
  cfg.validate_after_idle = 1h;
  return cfg;
}

TEST(logging, an_acquire_timeout_that_waits_for_ever_is_logged_as_unlimited) {
  // milliseconds::max() (documented: wait for ever) overflowed the clock's nanoseconds on its
  // way into the start line (undefined behaviour; "-1000 µs" in a release build).
  pool_config cfg = config(1, 0);
  cfg.acquire_timeout = std::chrono::milliseconds::max();
  logged_pool p(cfg);
  EXPECT_EQ(p.sink->count(spdlog::level::info, "max_lifetime unlimited, acquire_timeout unlimited"), 1u)
      << p.sink->dump();
}

TEST(logging, start_open_and_close_lines_name_the_pool_connection_and_reason) {
  pool_config cfg = config(1, 1);
  cfg.max_lifetime = 100s;
  cfg.lifetime_jitter = 0;
  logged_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  EXPECT_EQ(p.sink->count(spdlog::level::info, "pqxxpool[orders]: starting: max_size 1, min_idle 1"), 1u) << p.sink->dump();
  EXPECT_TRUE(eventually([&] { return p.sink->count(spdlog::level::debug, "connection 1 opened in") == 1; }))
      << p.sink->dump();
  EXPECT_EQ(p.sink->count(spdlog::level::debug, "(backend pid 1001)"), 1u) << p.sink->dump();
  p->clock->advance(101s);
  ASSERT_TRUE(eventually([&] { return p->stats().closed_max_lifetime == 1; }));
  EXPECT_TRUE(eventually([&] {
    return p.sink->count(spdlog::level::debug, "closing connection 1 (backend pid 1001): reached its max_lifetime") == 1;
  })) << p.sink->dump();
}

TEST(logging, broken_and_failed_validation_closes_are_warnings) {
  pool_config cfg = config(2, 0);
  cfg.validate_after_idle = 0ms;  // validate on every acquire
  logged_pool p(cfg);
  {
    lease a = p->core->acquire(1s);
    ASSERT_TRUE(a);
    state_of(a).broken = true;
  }
  EXPECT_EQ(p->stats().closed_broken, 1u);
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "closing connection 1 (backend pid 1001): broken"), 1u) << p.sink->dump();
  {
    lease b = p->core->acquire(1s);
    ASSERT_TRUE(b);
  }
  p->connector->made().back()->validate_ok = false;
  {
    lease c = p->core->acquire(1s);  // the idle one fails validation; a new one is opened
    ASSERT_TRUE(c);
  }
  EXPECT_EQ(p->stats().closed_validation_failed, 1u);
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "failed its validation round trip"), 1u) << p.sink->dump();
}

TEST(logging, connect_failures_are_warnings_with_the_backoff_then_the_recovery_is_logged) {
  logged_pool p(config(1, 1), [](fake_connector& c) {
    c.set_failure(true, "FATAL:  28P01: password authentication failed for user \"app\"", "28P01");
  });
  ASSERT_TRUE(eventually([&] { return p->stats().connect_errors >= 1; }));
  ASSERT_TRUE(eventually([&] {
    return p.sink->count(spdlog::level::warn, "connect failed with SQLSTATE 28P01 (failure 1 in a row; next attempt in "
                                              "100.0 ms at the earliest): FATAL:  28P01: password authentication") == 1;
  })) << p.sink->dump();
  p->connector->set_failure(false);
  p->clock->advance(100ms);
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  EXPECT_TRUE(eventually([&] { return p.sink->count(spdlog::level::info, "connected again after 1 failed attempts") == 1; }))
      << p.sink->dump();
}

TEST(logging, exhaustion_is_a_warning_at_most_once_per_ten_seconds_with_the_count_in_between) {
  logged_pool p(config(1, 1));
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  lease held = p->core->acquire(1s);
  ASSERT_TRUE(held);
  for (int i = 0; i < 5; ++i) EXPECT_THROW((void)p->core->acquire(0ms), acquire_timeout_error);
  EXPECT_EQ(p->stats().pool_exhausted_count, 5u);
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "pool exhausted: at max_size 1 (1 in use, 0 connecting), 0 threads already waiting"), 1u)
      << p.sink->dump();
  p->clock->advance(10s);
  EXPECT_THROW((void)p->core->acquire(0ms), acquire_timeout_error);
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "pool exhausted"), 2u) << p.sink->dump();
  // The second line counts the four exhausted acquires the rate limit kept out of the log, and itself.
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "this one included: 1 (reported at most every 10 s)"), 1u)
      << p.sink->dump();
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "this one included: 5 (reported at most every 10 s)"), 1u)
      << p.sink->dump();
}

TEST(logging, evict_all_and_close_are_info_lines) {
  logged_pool p(config(2, 2));
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 2; }));
  lease held = p->core->acquire(1s);
  p->core->evict_all();
  EXPECT_EQ(p.sink->count(spdlog::level::info, "evict_all: generation 1; closing 1 idle connections, 1 in use close on return"),
            1u)
      << p.sink->dump();
  held.release();
  p->core->close();
  EXPECT_EQ(p.sink->count(spdlog::level::info, "closing: "), 1u) << p.sink->dump();
}

TEST(logging, a_failed_reset_says_why_in_the_close_line) {
  // A reset hook that throws on every return (found by a new-user trial: tx.exec0 on a query that
  // returns a row) closed connection after connection with no word of the hook's error.
  pool_config cfg = config(1, 1);
  cfg.reset = [](connection&) {};  // returns go through reset(); the fake decides how it ends
  logged_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  {
    lease l = p->core->acquire(1s);
    ASSERT_TRUE(l);
    state_of(l).reset_fails = true;
  }
  EXPECT_TRUE(eventually([&] {
    return p.sink->count(spdlog::level::warn, "closing connection 1 (backend pid 1001): broken") == 1 &&
           p.sink->count(spdlog::level::warn, ": the reset hook threw: boom") == 1;
  })) << p.sink->dump();
}

TEST(logging, a_connect_that_fails_after_close_is_given_up_not_a_connect_error) {
  // A connect close() cannot interrupt (a DNS lookup, say) that fails once the pool is closed:
  // nobody waits for it, so it is no connect error and no warning (found by a new-user trial).
  logged_pool p(config(1, 1), [](fake_connector& c) {
    c.close_gate();
    c.set_failure(true, "could not translate host name \"db.example\" to address");
  });
  ASSERT_TRUE(eventually([&] { return p->connector->in_flight() == 1; }));
  std::thread closer([&] { p->core->close(); });
  EXPECT_TRUE(eventually([&] { return p->stats().closed; }));
  p->connector->open_gate();  // whatever happened above: the thread must be joined
  closer.join();
  EXPECT_TRUE(eventually([&] { return p.sink->count(spdlog::level::debug, "connect given up as the pool closes") == 1; }))
      << p.sink->dump();
  EXPECT_EQ(p.sink->count(spdlog::level::warn, "connect failed"), 0u) << p.sink->dump();
  EXPECT_EQ(p->stats().connect_errors, 0u);
}

TEST(logging, a_young_connection_is_never_logged_with_a_negative_age) {
  // The coarse clock lags the precise one by up to a tick: an age taken as coarse now minus a
  // precise creation time came out negative ("age -5067 µs", found by a new-user trial).
  logged_pool p(config(1, 1));
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  p->clock->set_coarse_lag(4ms);
  p->core->close();
  EXPECT_TRUE(eventually([&] { return p.sink->count(spdlog::level::debug, "closing connection 1") == 1; }))
      << p.sink->dump();
  EXPECT_EQ(p.sink->count(spdlog::level::debug, "age -"), 0u) << p.sink->dump();
}

TEST(leak_detection, a_lease_held_past_the_threshold_is_reported_once_with_its_call_site) {
  pool_config cfg = config(2, 1);
  cfg.leak_detection_threshold = 5s;
  logged_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  const time_point leased_at = p->clock->now();
  const source_location here = source_location::current();
  lease l = p->core->acquire(1s, here);
  ASSERT_TRUE(l);
  // The acquire woke the maintenance thread, which now sleeps until the lease could be a leak.
  ASSERT_TRUE(eventually([&] { return p->clock->has_waiter_until(leased_at + 5s); }));
  EXPECT_EQ(p->stats().leaks_suspected, 0u);
  p->clock->advance(6s);
  ASSERT_TRUE(eventually([&] { return p->stats().leaks_suspected == 1; }));
  const std::string site = std::string(here.file) + ":" + std::to_string(here.line);
  EXPECT_NE(site.find("logging_test.cpp:"), std::string::npos);
  EXPECT_TRUE(eventually([&] {
    return p.sink->count(spdlog::level::warn, "possible connection leak: connection 1 leased at " + site +
                                                  " has been held for 6.0 s (leak_detection_threshold 5.0 s)") == 1;
  })) << p.sink->dump();
  // Reported once: with nothing else due, the maintenance thread sleeps without a deadline.
  ASSERT_TRUE(eventually([&] { return p->clock->has_waiter_until(time_point::max()); }));
  p->clock->advance(60s);
  ASSERT_TRUE(eventually([&] { return p->clock->has_waiter_until(time_point::max()); }));
  EXPECT_EQ(p->stats().leaks_suspected, 1u);
  l.release();
  EXPECT_EQ(p.sink->count(spdlog::level::info, "connection 1 leased at " + site + " came back after 66.0 s"), 1u)
      << p.sink->dump();
}

TEST(leak_detection, off_by_default_and_short_leases_are_not_reported) {
  pool_config cfg = config(2, 1);
  cfg.leak_detection_threshold = 5s;
  logged_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  {
    lease l = p->core->acquire(1s);
    p->clock->advance(4s);
  }
  p->clock->advance(10s);
  ASSERT_TRUE(eventually([&] { return p->clock->has_waiter_until(time_point::max()); }));
  EXPECT_EQ(p->stats().leaks_suspected, 0u);

  logged_pool off(config(2, 1));  // leak_detection_threshold 0
  ASSERT_TRUE(eventually([&] { return off->stats().idle == 1; }));
  lease held = off->core->acquire(1s);
  off->clock->advance(std::chrono::hours(5));
  ASSERT_TRUE(eventually([&] { return off->clock->has_waiter_until(time_point::max()); }));
  EXPECT_EQ(off->stats().leaks_suspected, 0u);
  EXPECT_EQ(off.sink->count(spdlog::level::warn, "leak"), 0u) << off.sink->dump();
}

TEST(histograms, usage_records_how_long_each_lease_was_held) {
  fake_pool p(config(2, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  {
    lease l = p.core->acquire(1s);
    p.clock->advance(3ms);
  }
  {
    lease l = p.core->try_acquire();
    ASSERT_TRUE(l);
    p.clock->advance(250ms);
  }
  const histogram u = p.stats().usage;
  EXPECT_EQ(u.count, 2u);
  EXPECT_DOUBLE_EQ(u.sum_seconds, 0.253);
  EXPECT_DOUBLE_EQ(u.max_seconds, 0.25);
  EXPECT_EQ(u.buckets[12], 1u);  // 3 ms in (2.048 ms, 4.096 ms]
  EXPECT_EQ(u.buckets[18], 1u);  // 250 ms in (131 ms, 262 ms]
}

TEST(histograms, connect_time_records_each_successful_connect) {
  fake_pool p(config(2, 0));
  p.connector->close_gate();
  std::thread t([&] {
    lease l = p.core->acquire(10s);
    EXPECT_TRUE(l);
  });
  ASSERT_TRUE(eventually([&] { return p.connector->in_flight() == 1; }));
  p.clock->advance(150ms);  // the connect takes 150 ms of (fake) time
  p.connector->open_gate();
  t.join();
  const pool_stats s = p.stats();
  EXPECT_EQ(s.connect_time.count, 1u);
  EXPECT_EQ(s.connect_time.count, s.connections_created);
  EXPECT_DOUBLE_EQ(s.connect_time.sum_seconds, 0.15);
}

}  // namespace
}  // namespace pqxxpool::test
