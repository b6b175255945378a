// Unit tests of the pool core with a fake connector and a fake clock: lifetimes, idle reaping,
// backoff and timeouts are exercised in fake time, so nothing here sleeps.

#include <condition_variable>
#include <functional>
#include <future>
#include <set>
#include <thread>

#include <spdlog/sinks/ringbuffer_sink.h>

#include "fakes.hpp"

namespace pqxxpool::test {
namespace {

pool_config small_config(std::size_t max_size, std::size_t min_idle) {
  pool_config cfg;
  cfg.max_size = max_size;
  cfg.min_idle = min_idle;
  cfg.max_connecting = std::min<std::size_t>(2, max_size);
  return cfg;
}

TEST(pool_core, opens_min_idle_in_background_and_gauges_add_up) {
  fake_pool p(small_config(4, 2));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  lease l = p.core->acquire(1s);
  ASSERT_TRUE(l);
  const pool_stats s = p.stats();
  EXPECT_EQ(s.total, s.idle + s.in_use + s.connecting);
  EXPECT_EQ(s.in_use, 1u);
  EXPECT_EQ(s.acquires, 1u);
  EXPECT_LE(s.total, 4u);
  // min_idle counts idle connections: with one leased, the pool tops idle back up to 2.
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  EXPECT_EQ(p.stats().total, 3u);
}

TEST(pool_core, wait_ready_returns_once_min_idle_is_open) {
  fake_pool p(small_config(4, 3));
  p.core->wait_ready(10s);  // connects are instant; would throw if they failed
  EXPECT_GE(p.stats().idle + p.stats().in_use, 3u);
}

TEST(pool_core, wait_ready_throws_the_last_connect_error) {
  fake_pool p(small_config(2, 1), [](fake_connector& c) { c.set_failure(true); });
  const time_point start = p.clock->now();  // the fake clock stands still until advance()
  auto result = std::async(std::launch::async, [&]() -> std::string {
    try {
      p.core->wait_ready(50ms);
      return "no throw";
    } catch (const connect_error& e) {
      return e.sqlstate();
    }
  });
  ASSERT_TRUE(eventually([&] { return p.stats().connect_errors >= 1 && p.clock->has_waiter_until(start + 50ms); }));
  p.clock->advance(100ms);
  EXPECT_EQ(result.get(), "28P01");
}

TEST(pool_core, try_acquire_counts_exhaustion_at_max_size) {
  fake_pool p(small_config(1, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease a = p.core->try_acquire();
  ASSERT_TRUE(a);
  lease b = p.core->try_acquire();
  EXPECT_FALSE(b);
  EXPECT_EQ(p.stats().pool_exhausted_count, 1u);
  a.release();
  lease c = p.core->try_acquire();
  EXPECT_TRUE(c);
  EXPECT_EQ(p.stats().pool_exhausted_count, 1u);
}

TEST(pool_core, acquire_timeout_carries_waited_time_snapshot_and_last_connect_error) {
  fake_pool p(small_config(2, 0));
  p.connector->set_failure(true, "FATAL:  28P01: password authentication failed for user \"app\"", "28P01");
  auto result = std::async(std::launch::async, [&]() -> std::string {
    try {
      lease l = p.core->acquire(250ms);
      return "acquired";
    } catch (const acquire_timeout_error& e) {
      EXPECT_GE(e.waited(), 250ms);
      EXPECT_EQ(e.snapshot().waiting, 0u);  // it left the queue before the snapshot
      EXPECT_NE(std::string(e.what()).find("28P01"), std::string::npos);
      return e.last_connect_error().sqlstate;
    }
  });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1 && p.stats().connect_errors >= 1; }));
  p.clock->advance(300ms);
  EXPECT_EQ(result.get(), "28P01");
  EXPECT_EQ(p.stats().acquire_timeouts, 1u);
  EXPECT_EQ(p.stats().last_error.sqlstate, "28P01");
}

TEST(pool_core, zero_timeout_fails_at_once_when_nothing_is_idle) {
  fake_pool p(small_config(1, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease a = p.core->acquire(0ms);
  EXPECT_THROW((void)p.core->acquire(0ms), acquire_timeout_error);
  EXPECT_EQ(p.stats().pool_exhausted_count, 1u);
}

TEST(pool_core, a_huge_timeout_means_wait_without_deadline_not_overflow) {
  fake_pool p(small_config(1, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease held = p.core->acquire(1s);
  auto waiter = std::async(std::launch::async, [&] { return static_cast<bool>(p.core->acquire(std::chrono::milliseconds::max())); });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  p.clock->advance(std::chrono::hours(24 * 365));
  EXPECT_EQ(p.stats().acquire_timeouts, 0u);
  held.release();
  EXPECT_TRUE(waiter.get());
}

TEST(pool_core, waiters_are_served_first_come_first_served) {
  pool_config cfg = small_config(1, 1);
  cfg.fairness_window = std::chrono::microseconds(100);
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease held = p.core->acquire(1s);

  std::mutex order_mu;
  std::condition_variable order_cv;
  std::vector<int> order;
  bool let_go = false;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      lease l = p.core->acquire(1000s);
      std::unique_lock<std::mutex> g(order_mu);
      order.push_back(i);
      order_cv.wait(g, [&] { return let_go; });  // hold the connection until the main thread looked
    });
    // Thread i is queued before thread i+1 starts.
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == static_cast<std::size_t>(i + 1); }));
  }
  // Everyone has now waited past the window: a return goes straight to the oldest waiter (it
  // never becomes idle), so a newcomer cannot take it.
  p.clock->advance(1ms);
  held.release();
  EXPECT_EQ(p.stats().idle, 0u);
  EXPECT_EQ(p.stats().waiting, 3u);
  lease newcomer = p.core->try_acquire();
  EXPECT_FALSE(newcomer);
  {
    std::lock_guard<std::mutex> g(order_mu);
    let_go = true;
    order_cv.notify_all();
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
  EXPECT_EQ(p.stats().waited_acquires, 4u);
}

TEST(pool_core, max_waiting_rejects_at_once) {
  pool_config cfg = small_config(1, 1);
  cfg.max_waiting = 1;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease held = p.core->acquire(1s);
  auto first = std::async(std::launch::async, [&] { return static_cast<bool>(p.core->acquire(1000s)); });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  EXPECT_EQ(p.stats().pool_exhausted_count, 1u) << "the waiter found the only connection in use";
  EXPECT_THROW((void)p.core->acquire(1000s), too_many_waiters);
  EXPECT_EQ(p.stats().rejected_waiters, 1u);
  EXPECT_EQ(p.stats().pool_exhausted_count, 2u) << "a refused acquire found the pool exhausted too";
  // acquire(0) never queues, so the bound on waiters does not concern it: it simply times out.
  EXPECT_THROW((void)p.core->acquire(0ms), acquire_timeout_error);
  EXPECT_EQ(p.stats().rejected_waiters, 1u);
  EXPECT_EQ(p.stats().pool_exhausted_count, 3u);
  held.release();
  EXPECT_TRUE(first.get());
}

TEST(pool_core, an_acquire_timeout_does_not_blame_a_connect_error_made_good_since) {
  fake_pool p(small_config(1, 1), [](fake_connector& c) { c.set_failure(true); });
  ASSERT_TRUE(eventually([&] { return p.stats().connect_errors >= 1; }));
  try {
    (void)p.core->acquire(0ms);
    ADD_FAILURE() << "acquired while every connect fails";
  } catch (const acquire_timeout_error& e) {
    EXPECT_EQ(e.last_connect_error().sqlstate, "28P01") << "connects are failing: the error says why";
  }
  p.connector->set_failure(false);
  p.clock->advance(1h);  // past the connect backoff
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease held = p.core->acquire(1s);  // the pool is now merely exhausted
  try {
    (void)p.core->acquire(0ms);
    ADD_FAILURE() << "acquired from an exhausted pool";
  } catch (const acquire_timeout_error& e) {
    EXPECT_TRUE(e.last_connect_error().empty()) << e.what();
    EXPECT_EQ(std::string(e.what()).find("connect error"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(p.stats().last_error.empty()) << "the statistics keep the most recent failure";
}

TEST(pool_core, lifetime_is_shortened_by_jitter_drawn_per_connection) {
  pool_config cfg = small_config(8, 8);
  cfg.max_lifetime = 1000s;
  cfg.lifetime_jitter = 0.5;
  cfg.initial_lifetime_spread = 0;  // plain jitter for every connection
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 8; }));
  const time_point created = p.clock->now();  // the fake clock has not moved
  std::vector<lease> leases;
  std::set<time_point> expiries;
  for (int i = 0; i < 8; ++i) {
    leases.push_back(p.core->acquire(1s));
    const time_point e = core::pool_core::expires_at(leases.back());
    EXPECT_GT(e, created + 500s);
    EXPECT_LE(e, created + 1000s);
    expiries.insert(e);
  }
  EXPECT_GT(expiries.size(), 4u) << "jitter should spread expiries";
}

TEST(pool_core, the_first_min_idle_connections_spread_their_lifetimes_then_plain_jitter) {
  pool_config cfg = small_config(9, 8);
  cfg.max_lifetime = 1000s;
  cfg.lifetime_jitter = 0.1;  // default
  ASSERT_EQ(cfg.initial_lifetime_spread, 0.9);  // default
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 8; }));
  const time_point created = p.clock->now();  // the fake clock never moves in this test
  // Take all nine: the eight of the initial fill, and the ninth that min_idle then opens.
  std::vector<lease> leases;
  for (int i = 0; i < 9; ++i) leases.push_back(p.core->acquire(10s));
  time_point earliest = time_point::max();
  for (const lease& l : leases) {
    const time_point e = core::pool_core::expires_at(l);
    EXPECT_GT(e, created + 100s);  // never below a tenth of the lifetime
    EXPECT_LE(e, created + 1000s);
    if (state_of(l).id <= 8) earliest = std::min(earliest, e);
    // The connection opened after the initial fill gets plain jitter: within the last tenth.
    if (state_of(l).id == 9) {
      EXPECT_GT(e, created + 900s);
    }
  }
  // The initial fill spreads over most of a lifetime, not just the jitter's tenth (seeded draws).
  EXPECT_LT(earliest, created + 500s);
  // evict_all starts a new generation together: its first min_idle connections spread again.
  leases.clear();
  p.core->evict_all();
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 8; }));
  earliest = time_point::max();
  for (int i = 0; i < 8; ++i) {
    leases.push_back(p.core->acquire(1s));
    earliest = std::min(earliest, core::pool_core::expires_at(leases.back()));
  }
  EXPECT_LT(earliest, created + 500s);
}

TEST(pool_core, expired_connections_are_never_handed_out_and_retire_on_return) {
  pool_config cfg = small_config(2, 1);
  cfg.max_lifetime = 100s;
  cfg.lifetime_jitter = 0;
  cfg.health_check_period = 0ms;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease l = p.core->acquire(1s);
  const time_point first_expiry = core::pool_core::expires_at(l);
  const std::shared_ptr<fake_state> leased = p.connector->made().at(static_cast<std::size_t>(state_of(l).id - 1));
  p.clock->advance(101s);
  EXPECT_FALSE(leased->closed) << "a leased connection is never closed under its user";
  l.release();  // in use past its expiry: closed on return, by the returning thread
  EXPECT_TRUE(leased->closed);
  EXPECT_GE(p.stats().closed_max_lifetime, 1u);
  lease fresh = p.core->acquire(1s);
  ASSERT_TRUE(fresh);
  EXPECT_GT(core::pool_core::expires_at(fresh), p.clock->now());
  EXPECT_GT(core::pool_core::expires_at(fresh), first_expiry);
}

TEST(pool_core, replacement_is_opened_ahead_of_expiry_while_below_max) {
  pool_config cfg = small_config(3, 1);
  cfg.max_lifetime = 100s;  // lead = 10 s
  cfg.lifetime_jitter = 0;
  cfg.health_check_period = 0ms;
  cfg.idle_timeout = 0ms;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease busy = p.core->acquire(1s);  // in use: idle drops to 0, min_idle opens another
  ASSERT_TRUE(eventually([&] { return p.stats().total == 2; }));
  const auto created_before = p.stats().connections_created;
  p.clock->advance(91s);  // both within the 10 s lead of their expiry
  ASSERT_TRUE(eventually([&] { return p.stats().connections_created >= created_before + 1; }));
  EXPECT_LE(p.stats().total, 3u);
}

// The recycle scenario's failure: a 1 s lifetime (lead 100 ms) and connects of about 100 ms.
// Here: lifetime 100 s (base lead 10 s) and connects of 5 s: the lead becomes 15 s, so the
// replacement of a full pool's connection opens 14 s before its expiry.
TEST(pool_core, slow_connects_lengthen_the_expiry_lead) {
  pool_config cfg = small_config(1, 1);
  cfg.max_lifetime = 100s;
  cfg.lifetime_jitter = 0;
  cfg.initial_lifetime_spread = 0;
  cfg.health_check_period = 0ms;
  cfg.idle_timeout = 0ms;
  cfg.validate_after_idle = 1000s;
  fake_pool p(cfg, [](fake_connector& c) { c.takes = 5s; });
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  time_point expires{};
  {
    lease l = p.core->acquire(1s);
    expires = core::pool_core::expires_at(l);
  }
  p.clock->advance(expires - p.clock->now() - 14s);  // outside the base lead, inside 3 × 5 s
  ASSERT_TRUE(eventually([&] { return p.stats().connections_created == 2; }))
      << "no replacement 14 s before expiry although connects take 5 s";
  EXPECT_EQ(p.stats().closed_max_lifetime, 1u);  // the full pool retired its connection early
}

TEST(pool_core, a_full_pool_retires_early_within_the_lead_so_replacements_open_ahead) {
  pool_config cfg = small_config(2, 2);  // always full: no room to open a replacement alongside
  cfg.max_lifetime = 100s;                // lead = 10 s
  cfg.lifetime_jitter = 0;
  cfg.initial_lifetime_spread = 0;        // both expire at exactly 100 s
  cfg.health_check_period = 0ms;
  cfg.idle_timeout = 0ms;
  cfg.validate_after_idle = 1000s;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  lease busy = p.core->acquire(1s);
  const std::shared_ptr<fake_state> busy_state = p.connector->made().at(static_cast<std::size_t>(state_of(busy).id - 1));
  p.clock->advance(91s);  // both within the lead: the idle one retires now, its replacement opens
  ASSERT_TRUE(eventually([&] { return p.stats().connections_created == 3 && p.stats().idle == 1; }));
  EXPECT_EQ(p.stats().closed_max_lifetime, 1u);
  EXPECT_FALSE(busy_state->closed) << "a leased connection is never closed under its user";
  busy.release();  // in its lead, in a full pool: retired on return (not parked), replaced at once
  EXPECT_TRUE(busy_state->closed);
  ASSERT_TRUE(eventually([&] { return p.stats().connections_created == 4 && p.stats().idle == 2; }));
  EXPECT_EQ(p.stats().closed_max_lifetime, 2u);
  // Nobody had to wait for a connect, and nothing is left to expire at 100 s.
  lease a = p.core->acquire(0ms);
  lease b = p.core->acquire(0ms);
  EXPECT_TRUE(a && b);
  EXPECT_EQ(p.stats().waited_for_connect, 0u);
  EXPECT_GT(core::pool_core::expires_at(a), p.clock->now() + 90s);
  EXPECT_GT(core::pool_core::expires_at(b), p.clock->now() + 90s);
}

// The recycle_t3 failure that remained: in a full pool the early replacements run one at a time,
// and a connection's jittered expiry came while the previous replacement was still connecting
// (a 375 ms connect on a busy machine): closed on its return, or when an acquire found it idle,
// it left that acquire waiting for a connect. It now serves on into its jitter until the
// replacement is in, never past created_at + max_lifetime.
//
// The setting: a full pool of two with up to 50 % jitter; the connection that expires first
// retires early, and its replacement hangs at the connector's gate. `kept` is the other one,
// still leased, already marked for replacement, a second before its jittered expiry.
struct replacement_hangs {
  fake_pool p{config()};
  time_point hard{};  // kept's created_at + max_lifetime
  time_point kept_expires{};
  lease kept;
  std::shared_ptr<fake_state> kept_state;
  struct reopen {  // a failed assertion must not leave the pool's close waiting on the gate
    fake_connector* c;
    ~reopen() { c->open_gate(); }
  } reopen_at_exit{p.connector};

  static pool_config config() {
    pool_config cfg = small_config(2, 2);  // always full: replacements open one at a time
    cfg.max_lifetime = 100s;                // lead = 10 s
    cfg.lifetime_jitter = 0.5;              // expiries in (50 s, 100 s]
    cfg.initial_lifetime_spread = 0;
    cfg.health_check_period = 0ms;
    cfg.idle_timeout = 0ms;
    cfg.validate_after_idle = 1000s;
    return cfg;
  }
  void set_up() {
    ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
    hard = p.clock->now() + 100s;  // both opened at the start: connects take no time
    lease other = p.core->acquire(1s);
    kept = p.core->acquire(1s);
    if (core::pool_core::expires_at(kept) < core::pool_core::expires_at(other)) std::swap(other, kept);
    kept_expires = core::pool_core::expires_at(kept);
    ASSERT_LT(kept_expires + 2s, hard) << "seed 42 should draw jitter for both";
    kept_state = p.connector->made().at(static_cast<std::size_t>(state_of(kept).id - 1));
    other.release();  // idle
    p.connector->close_gate();
    p.clock->advance_waking_due(kept_expires - 1s - p.clock->now());  // both within their lead
    // The sweep retires the idle one early (a full pool, nothing connecting), its replacement
    // starts connecting, and `kept` is marked for replacement too.
    ASSERT_TRUE(eventually([&] { return p.stats().closed_max_lifetime == 1 && p.connector->in_flight() == 1; }));
  }
  // After `kept` came back past its jittered expiry: the next acquire gets it at once, and it
  // lives on to the hard limit, where it closes on return although the replacement still hangs.
  void check_it_serves_on_to_max_lifetime() {
    EXPECT_FALSE(kept_state->closed) << "closed at its jittered expiry although its replacement is not in yet";
    lease again = p.core->acquire(0ms);
    ASSERT_TRUE(again) << "the next acquire had to wait for a connect";
    EXPECT_EQ(state_of(again).id, kept_state->id);
    EXPECT_EQ(p.stats().waited_for_connect, 0u);
    EXPECT_EQ(core::pool_core::expires_at(again), hard);
    p.clock->advance_waking_due(hard - p.clock->now() + 1s);
    again.release();
    EXPECT_TRUE(kept_state->closed);
    EXPECT_EQ(p.stats().closed_max_lifetime, 2u);
    p.connector->open_gate();
    ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
    EXPECT_EQ(p.stats().waited_for_connect, 0u);
  }
};

TEST(pool_core, a_connection_returned_past_its_jittered_expiry_serves_on_while_its_replacement_connects) {
  replacement_hangs t;
  ASSERT_NO_FATAL_FAILURE(t.set_up());
  t.p.clock->advance_waking_due(2s);  // its jittered expiry passes while it is in use
  t.kept.release();
  t.check_it_serves_on_to_max_lifetime();
}

TEST(pool_core, an_idle_connection_past_its_jittered_expiry_serves_on_while_its_replacement_connects) {
  replacement_hangs t;
  ASSERT_NO_FATAL_FAILURE(t.set_up());
  t.kept.release();  // idle: a replacement connects, so it is not retired early
  t.p.clock->advance_waking_due(2s);  // its jittered expiry passes while it is idle
  // The maintenance sweep, woken at that expiry, keeps it and then sleeps until the hard limit.
  ASSERT_TRUE(eventually([&] { return t.p.clock->has_waiter_until(t.hard); }));
  t.check_it_serves_on_to_max_lifetime();
}

TEST(pool_core, a_full_pool_retires_early_in_expiry_order) {
  pool_config cfg = small_config(3, 3);
  cfg.max_lifetime = 100s;    // lead = 10 s
  cfg.lifetime_jitter = 0.05;  // expiries in (95 s, 100 s]: all within one lead of each other
  cfg.initial_lifetime_spread = 0;
  cfg.health_check_period = 0ms;
  cfg.idle_timeout = 0ms;
  cfg.validate_after_idle = 1000s;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 3; }));
  std::vector<lease> leases;
  for (int i = 0; i < 3; ++i) leases.push_back(p.core->acquire(1s));
  std::sort(leases.begin(), leases.end(), [](const lease& x, const lease& y) {
    return core::pool_core::expires_at(x) < core::pool_core::expires_at(y);
  });
  const time_point first_expiry = core::pool_core::expires_at(leases[0]);
  ASSERT_LT(first_expiry, core::pool_core::expires_at(leases[1]));
  const std::shared_ptr<fake_state> first = p.connector->made().at(static_cast<std::size_t>(state_of(leases[0]).id - 1));
  const std::shared_ptr<fake_state> later = p.connector->made().at(static_cast<std::size_t>(state_of(leases[1]).id - 1));
  p.clock->advance_waking_due(first_expiry - 1s - p.clock->now());  // all three within their lead
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(first_expiry); }));  // the sweep ran
  leases[1].release();  // asked for a replacement, but one that expires sooner waits for its turn
  EXPECT_FALSE(later->closed) << "retired ahead of a connection that expires before it";
  leases[0].release();  // the first to expire: retired now, its replacement opens
  EXPECT_TRUE(first->closed);
  // Its replacement opens; once it is in, the later one may go early in its turn.
  ASSERT_TRUE(eventually([&] { return p.stats().connections_created >= 4; }));
}

TEST(pool_core, idle_reaping_never_goes_below_min_idle) {
  pool_config cfg = small_config(5, 2);
  cfg.idle_timeout = 60s;
  cfg.health_check_period = 0ms;
  cfg.max_lifetime = 0ms;
  fake_pool p(cfg);
  {
    std::vector<lease> leases;
    for (int i = 0; i < 5; ++i) leases.push_back(p.core->acquire(1000s));
  }
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 5; }));
  // The returns woke the maintenance thread: it now sleeps until exactly the first idle deadline.
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(p.clock->now() + 60s); }));
  p.clock->advance(61s);
  ASSERT_TRUE(eventually([&] { return p.stats().closed_idle == 3; }));
  EXPECT_EQ(p.stats().idle, 2u);
  // One sweep reaps under one hold of the lock, so seeing 3 closed means it stopped at min_idle.
  EXPECT_EQ(p.stats().total, 2u);
}

TEST(pool_core, failed_connects_back_off_exponentially_up_to_the_cap) {
  pool_config cfg = small_config(1, 1);
  cfg.max_connecting = 1;
  cfg.connect_backoff_initial = 100ms;
  cfg.connect_backoff_max = 800ms;
  fake_pool p(cfg, [](fake_connector& c) { c.set_failure(true); });
  const int base = 0;
  std::vector<std::chrono::milliseconds> expected{100ms, 200ms, 400ms, 800ms, 800ms, 800ms};
  for (std::size_t k = 0; k < expected.size(); ++k) {
    ASSERT_TRUE(eventually([&] { return p.connector->attempts.load() >= base + static_cast<int>(k) + 1; }));
    const time_point last = p.connector->attempts_so_far().back();
    // The worker sleeps until exactly last + backoff: not earlier, not later.
    ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(last + expected[k]); })) << "step " << k;
    if (k + 1 == expected.size()) p.connector->set_failure(false);  // the next attempt succeeds
    p.clock->advance(expected[k]);
  }
  EXPECT_GE(p.stats().connect_errors, expected.size());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
}

/// Two connections wanted, two connect workers, a backoff starting at `initial`.
pool_config two_connect_workers_backing_off_from(std::chrono::milliseconds initial) {
  pool_config cfg = small_config(2, 2);
  cfg.max_connecting = 2;
  cfg.connect_backoff_initial = initial;
  cfg.connect_backoff_max = 10s;
  return cfg;
}

/// Every connect fails, and each attempt waits at the connector's gate until let through.
void fail_at_the_gate(fake_connector& c) {
  c.set_failure(true);
  c.close_gate();
}

TEST(pool_core, connects_failing_together_double_the_backoff_once) {
  // Two connect workers fail against the same outage at the same moment: one wave, one step.
  fake_pool p(two_connect_workers_backing_off_from(100ms), fail_at_the_gate);
  ASSERT_TRUE(eventually([&] { return p.connector->in_flight() == 2; }));
  const time_point failed_at = p.clock->now();
  p.connector->open_gate();  // both fail now, at the same fake time
  ASSERT_TRUE(eventually([&] { return p.stats().connect_errors == 2; }));
  // The next attempt comes one initial step later (not two doublings, 200 ms) ...
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(failed_at + 100ms); }));
  p.connector->close_gate();
  p.clock->advance(100ms);
  ASSERT_TRUE(eventually([&] { return p.connector->in_flight() == 2; }));
  p.connector->open_gate();
  ASSERT_TRUE(eventually([&] { return p.stats().connect_errors == 4; }));
  // ... and the wave after it waits 200 ms (not 800 ms).
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(failed_at + 100ms + 200ms); }));
  p.connector->set_failure(false);
  p.clock->advance(200ms);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
}

TEST(pool_core, connects_failing_out_of_phase_still_back_off) {
  // Two attempts that overlap but fail at different times, each after the step the other set:
  // the backoff must keep growing (a review found a rule under which it fell to zero).
  fake_pool p(two_connect_workers_backing_off_from(100ms), fail_at_the_gate);
  ASSERT_TRUE(eventually([&] { return p.connector->in_flight() == 2; }));  // attempts 0 and 1
  const time_point t0 = p.clock->now();
  p.connector->release(0);  // fails at t0: the next attempt at t0 + 100 ms
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(t0 + 100ms); }));
  p.clock->advance(150ms);  // its worker tries again (attempt 2), attempt 1 still runs
  ASSERT_TRUE(eventually([&] { return p.connector->attempts.load() == 3 && p.connector->in_flight() == 2; }));
  p.connector->release(1);  // fails at t0 + 150 ms, after the first step: doubles to 200 ms
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(t0 + 150ms + 200ms); }));
  EXPECT_EQ(p.connector->attempts.load(), 3) << "a failure retried at once, without a backoff";
  p.connector->set_failure(false);
  p.connector->open_gate();
  p.clock->advance(1s);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
}

TEST(pool_core, max_connect_rate_spaces_connect_starts) {
  pool_config cfg = small_config(4, 4);
  cfg.max_connect_rate = 10;  // one start per 100 ms
  fake_pool p(cfg);
  for (int k = 1; k <= 3; ++k) {
    ASSERT_TRUE(eventually([&] { return p.connector->attempts.load() >= k; }));
    const time_point last = p.connector->attempts_so_far().back();
    // The next worker sleeps until exactly 100 ms after the last start, not earlier.
    ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(last + 100ms); })) << "step " << k;
    EXPECT_EQ(p.connector->attempts.load(), k);
    p.clock->advance(100ms);
  }
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 4; }));
}

TEST(pool_core, at_most_max_connecting_connects_in_flight) {
  pool_config cfg = small_config(10, 0);
  cfg.max_connecting = 2;
  fake_pool p(cfg);
  p.connector->close_gate();
  std::vector<std::future<bool>> acquirers;
  for (int i = 0; i < 5; ++i)
    acquirers.push_back(std::async(std::launch::async, [&] {
      lease l = p.core->acquire(1000s);
      return static_cast<bool>(l);
    }));
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 5 && p.connector->in_flight() == 2; }));
  EXPECT_EQ(p.stats().connecting, 2u);
  p.connector->open_gate();
  for (auto& a : acquirers) EXPECT_TRUE(a.get());
  // Connect threads may still be finishing (more connects than waiters): read under the lock.
  EXPECT_EQ(p.connector->max_in_flight_so_far(), 2);
  EXPECT_LE(p.stats().total, 5u);
}

TEST(pool_core, dirty_return_is_rolled_back_off_the_callers_thread) {
  fake_pool p(small_config(1, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease l = p.core->acquire(1s);
  fake_state& st = state_of(l);
  st.dirty = true;
  l.release();
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  EXPECT_EQ(st.resets.load(), 1);
  EXPECT_EQ(p.stats().rollbacks, 1u);
  lease again = p.core->acquire(1s);
  EXPECT_FALSE(state_of(again).dirty);
}

TEST(pool_core, broken_and_discarded_connections_are_closed) {
  fake_pool p(small_config(2, 2));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  lease a = p.core->acquire(1s);
  lease b = p.core->acquire(1s);
  state_of(a).broken = true;
  a.release();
  b.discard();
  const pool_stats s = p.stats();
  EXPECT_EQ(s.closed_broken, 1u);
  EXPECT_EQ(s.closed_discarded, 1u);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2 && p.connector->live.load() == 2; }));
}

/// One connection, validated when idle for 1 s or more, no background pings: each test below
/// makes it stale with clock->advance(2s) and decides how its validation goes.
pool_config one_validated_connection() {
  pool_config cfg = small_config(1, 1);
  cfg.validate_after_idle = 1s;
  cfg.health_check_period = 0ms;
  return cfg;
}

/// The state of the pool's only connection (taken and given back once, so no longer fresh).
std::shared_ptr<fake_state> its_connection(fake_pool& p) {
  lease l = p.core->acquire(1s);
  return p.connector->made()[0];
}

TEST(pool_core, stale_idle_connection_is_validated_and_replaced_when_dead) {
  fake_pool p(one_validated_connection());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  {
    lease l = p.core->acquire(1s);
    EXPECT_EQ(state_of(l).validations.load(), 0) << "fresh connection needs no round trip";
    state_of(l).validate_ok = false;  // it will die while idle
  }
  p.clock->advance(2s);
  lease l = p.core->acquire(1000s);
  ASSERT_TRUE(l);
  EXPECT_TRUE(state_of(l).validate_ok) << "the dead connection must not be handed out";
  EXPECT_EQ(p.stats().closed_validation_failed, 1u);
}

TEST(pool_core, acquire_zero_still_validates_a_stale_connection_instead_of_dropping_it) {
  fake_pool p(one_validated_connection());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  p.clock->advance(2s);
  lease l = p.core->acquire(0ms);
  ASSERT_TRUE(l);
  EXPECT_EQ(state_of(l).validations.load(), 1);
  EXPECT_EQ(p.stats().closed_validation_failed, 0u);
}

TEST(pool_core, a_validation_cut_by_a_short_acquire_timeout_is_finished_not_counted_as_failed) {
  // acquire(100ms) with validation_timeout 5 s: a round trip still in flight at the caller's
  // deadline says nothing against the connection. It is finished in the background and kept.
  fake_pool p(one_validated_connection());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  const std::shared_ptr<fake_state> st = its_connection(p);
  st->validate_in_flight = true;  // its next validation is slow
  p.clock->advance(2s);
  lease l = p.core->acquire(100ms);  // handed the same connection once its round trip is in
  ASSERT_TRUE(l);
  EXPECT_EQ(&state_of(l), st.get());
  EXPECT_EQ(st->finishes.load(), 1);
  EXPECT_FALSE(st->closed.load());
  EXPECT_EQ(p.stats().closed_validation_failed, 0u);
  EXPECT_EQ(p.stats().connections_created, 1u);
}

TEST(pool_core, an_acquire_that_lost_its_time_to_a_failed_validation_says_so) {
  fake_pool p(one_validated_connection());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  its_connection(p)->validate_ok = false;  // dies while idle
  p.connector->close_gate();  // its replacement does not come in time
  p.clock->advance(2s);
  auto result = std::async(std::launch::async, [&]() -> std::pair<std::string, std::chrono::milliseconds> {
    try {
      (void)p.core->acquire(100ms);
      return {"acquired", 0ms};
    } catch (const acquire_timeout_error& e) {
      return {e.what(), e.waited()};
    }
  });
  const bool queued = eventually([&] { return p.stats().waiting == 1; });
  p.clock->advance(200ms);  // before any ASSERT: the acquire must end for the test to end
  ASSERT_TRUE(queued);
  const auto [what, waited] = result.get();
  EXPECT_NE(what.find("validation round trip failed or did not finish in time"), std::string::npos) << what;
  EXPECT_EQ(waited, 200ms) << "counted from the acquire's start, the round trip included";
  p.connector->open_gate();
}

TEST(pool_core, an_acquire_whose_time_went_on_one_validation_says_so_when_the_next_connection_has_none_left) {
  // Two idle connections due for validation: the first round trip takes the whole deadline and
  // fails, so the second connection cannot be validated at all. The error must still say what
  // took the time, and waited() must count from the acquire's start (not 0).
  pool_config cfg = small_config(2, 2);
  cfg.validate_after_idle = 1s;
  cfg.health_check_period = 0ms;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  p.connector->close_gate();  // no replacement arrives meanwhile
  for (const std::shared_ptr<fake_state>& st : p.connector->made()) {
    st->validate_ok = false;
    st->on_validate = [&p] { p.clock->advance(100ms); };  // a round trip that takes the deadline
  }
  p.clock->advance(2s);
  std::string what;
  std::chrono::milliseconds waited{-1};
  try {
    (void)p.core->acquire(100ms);
  } catch (const acquire_timeout_error& e) {
    what = e.what();
    waited = e.waited();
  }
  p.connector->open_gate();
  EXPECT_EQ(p.stats().closed_validation_failed, 1u) << "one round trip ran; the other had no time left";
  EXPECT_NE(what.find("validation round trip failed or did not finish in time"), std::string::npos) << what;
  EXPECT_EQ(waited, 100ms);
}

TEST(pool_core, a_cut_validation_that_then_fails_closes_the_connection) {
  fake_pool p(one_validated_connection());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  const std::shared_ptr<fake_state> st = its_connection(p);
  st->validate_in_flight = true;
  st->finish_ok = false;  // the server never answers
  p.clock->advance(2s);
  lease l = p.core->acquire(100ms);  // a replacement opens meanwhile and is handed over
  ASSERT_TRUE(l);
  EXPECT_NE(&state_of(l), st.get()) << "the connection whose round trip never finished was handed out";
  // The maintenance thread finishes the round trip and closes the connection on its own time:
  // the replacement may be handed over before or after that.
  EXPECT_TRUE(eventually([&] { return st->closed.load(); })) << "the connection was never closed";
  EXPECT_EQ(st->finishes.load(), 1);
  EXPECT_TRUE(eventually([&] { return p.stats().closed_validation_failed == 1; }));
}

TEST(pool_core, an_acquire_is_counted_once_handed_out_not_while_its_connection_is_validated) {
  // acquires is a counter (Prometheus: pqxxpool_acquires_total): it must never go down, and
  // acquire_wait has one value per acquire. Before, both were counted when a stale connection was
  // taken, and acquires was taken back when its validation failed.
  fake_pool p(one_validated_connection());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  const std::shared_ptr<fake_state> st = its_connection(p);
  ASSERT_EQ(p.stats().acquires, 1u);
  std::uint64_t acquires_mid_round_trip = 0;
  st->on_validate = [&] { acquires_mid_round_trip = p.stats().acquires; };
  st->validate_ok = false;  // died while idle
  p.clock->advance(2s);
  lease l = p.core->acquire(1000s);  // its replacement is handed out instead
  ASSERT_TRUE(l);
  EXPECT_NE(&state_of(l), st.get());
  EXPECT_EQ(acquires_mid_round_trip, 1u) << "counted before the connection was known to be good";
  const pool_stats s = p.stats();
  EXPECT_EQ(s.acquires, 2u);
  EXPECT_EQ(s.acquire_wait.count, s.acquires) << "the failed attempt recorded a wait of its own";
  EXPECT_EQ(s.closed_validation_failed, 1u);
}

/// Two connections, validated on every acquire, both leased (a, b), and a third acquire that
/// has waited 5 s of fake time for one of them (waiter). Its members' ASSERTs live in start().
struct two_leased_and_a_waiter {
  static pool_config config() {
    pool_config cfg = small_config(2, 2);
    cfg.validate_after_idle = 0ms;  // every acquire validates
    cfg.health_check_period = 0ms;
    cfg.idle_timeout = 0ms;
    cfg.max_lifetime = 0ms;
    return cfg;
  }
  fake_pool p{config()};
  lease a, b;
  std::future<bool> waiter;
  void start() {
    ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
    a = p.core->acquire(1s);
    b = p.core->acquire(1s);
    ASSERT_TRUE(a && b);
    waiter = std::async(std::launch::async, [this] { return static_cast<bool>(p.core->acquire(1000s)); });
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));  // a and b in use: exhausted
    p.clock->advance(5s);
  }
};

TEST(pool_core, a_wait_before_a_failed_validation_still_counts_in_acquire_wait) {
  // A waiter is handed a connection after 5 s, its validation fails, and the next connection is
  // had at once: the acquire waited 5 s, and acquire_wait must say so (not 0).
  two_leased_and_a_waiter t;
  ASSERT_NO_FATAL_FAILURE(t.start());
  // a fails its validation in the waiter's hands; b comes free meanwhile and is taken at once.
  state_of(t.a).validate_ok = false;
  state_of(t.a).on_validate = [&t] { t.b.release(); };
  t.a.release();
  EXPECT_TRUE(t.waiter.get());
  const pool_stats s = t.p.stats();
  EXPECT_EQ(s.closed_validation_failed, 1u);
  EXPECT_EQ(s.acquires, 3u);
  EXPECT_GE(s.acquire_wait.max_seconds, 5.0) << "the 5 s queued before the failed validation were lost";
}

TEST(pool_core, an_acquire_that_queues_again_after_a_failed_validation_is_counted_once) {
  two_leased_and_a_waiter t;
  ASSERT_NO_FATAL_FAILURE(t.start());
  state_of(t.a).validate_ok = false;
  t.p.connector->close_gate();  // a's replacement is held: the waiter must queue a second time
  t.a.release();
  ASSERT_TRUE(eventually([&] { return t.p.stats().closed_validation_failed == 1 && t.p.stats().waiting == 1; }));
  t.p.connector->open_gate();
  EXPECT_TRUE(t.waiter.get());
  const pool_stats s = t.p.stats();
  EXPECT_EQ(s.waited_acquires, 1u) << "one acquire, queued twice, is one waited acquire";
  EXPECT_EQ(s.pool_exhausted_count, 1u);
  EXPECT_EQ(s.acquires, 3u);
}

TEST(pool_core, try_acquire_and_acquire_zero_ask_for_a_connection_when_there_is_room) {
  // min_idle 0 opens connections only on demand; callers that never wait are demand too, else
  // such a pool never connects (pgxpool's TryAcquire starts a background connect likewise).
  pool_config cfg = small_config(2, 0);
  fake_pool p(cfg);
  EXPECT_FALSE(p.core->try_acquire());
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  EXPECT_TRUE(p.core->try_acquire());
  EXPECT_EQ(p.stats().pool_exhausted_count, 0u) << "nothing was in use: not exhausted";

  fake_pool q(cfg);
  EXPECT_THROW((void)q.core->acquire(0ms), acquire_timeout_error);
  ASSERT_TRUE(eventually([&] { return q.stats().idle == 1; }));
  EXPECT_TRUE(q.core->acquire(0ms));

  // Many misses open no more than max_size, and none once the pool is full.
  fake_pool r(cfg);
  r.connector->close_gate();
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(r.core->try_acquire());
  ASSERT_TRUE(eventually([&] { return r.connector->in_flight() == 2; }));
  r.connector->open_gate();
  ASSERT_TRUE(eventually([&] { return r.stats().idle == 2; }));
  lease a = r.core->try_acquire();
  lease b = r.core->try_acquire();
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(r.core->try_acquire());
  EXPECT_EQ(r.stats().pool_exhausted_count, 1u) << "both in use: this miss is exhaustion";
  EXPECT_EQ(r.connector->attempts.load(), 2);
}

TEST(pool_core, a_connection_out_for_a_health_ping_is_not_exhaustion) {
  pool_config cfg = small_config(1, 1);
  cfg.health_check_period = 60s;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  const std::shared_ptr<fake_state> st = p.connector->made()[0];
  std::promise<void> pinging, answer;
  std::shared_future<void> answered = answer.get_future().share();
  st->on_validate = [&, answered] {
    pinging.set_value();
    answered.wait();  // the ping's round trip takes until the test answers it
  };
  p.clock->advance(61s);
  pinging.get_future().wait();  // the maintenance thread holds the connection for its ping
  EXPECT_FALSE(p.core->try_acquire());
  EXPECT_EQ(p.stats().pool_exhausted_count, 0u) << "a connection being pinged is idle, not in use";
  answer.set_value();
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  st->on_validate = nullptr;
}

TEST(pool_core, a_failed_background_connect_for_a_caller_that_did_not_wait_is_not_retried) {
  // The caller asked once and got its answer (nothing); it asks again when it wants to. Retrying
  // for it with the backoff, forever, would be a pool with min_idle 1 in disguise.
  fake_pool p(small_config(2, 0), [](fake_connector& c) { c.set_failure(true); });
  EXPECT_FALSE(p.core->try_acquire());
  ASSERT_TRUE(eventually([&] { return p.stats().connect_errors == 1; }));
  // Both connect workers wait for work again with no deadline (not until a backoff step ends).
  ASSERT_TRUE(eventually([&] { return p.clock->waiters_until(time_point::max()) == 2; }));
  EXPECT_EQ(p.connector->attempts.load(), 1);
}

TEST(pool_core, connections_still_opening_are_not_exhaustion) {
  // A pool at max_size whose connections are still connecting (its start, a replacement) is
  // not exhausted: nothing is in use, and no warning says so.
  pool_config cfg = small_config(2, 2);
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(16);
  cfg.logger = std::make_shared<spdlog::logger>("exhaustion", sink);
  cfg.logger->set_level(spdlog::level::warn);
  fake_pool p(cfg, [](fake_connector& c) { c.close_gate(); });
  ASSERT_TRUE(eventually([&] { return p.connector->in_flight() == 2; }));
  auto waiter = std::async(std::launch::async, [&] { return static_cast<bool>(p.core->acquire(1000s)); });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  p.connector->open_gate();
  EXPECT_TRUE(waiter.get());
  EXPECT_EQ(p.stats().pool_exhausted_count, 0u);
  EXPECT_TRUE(sink->last_formatted().empty()) << sink->last_formatted().front();
}

TEST(pool_core, health_pings_do_not_open_extra_connections) {
  pool_config cfg = small_config(4, 2);
  cfg.health_check_period = 60s;
  cfg.idle_timeout = 0ms;
  cfg.max_lifetime = 0ms;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  p.clock->advance(61s);
  // Both idle connections get pinged and come back.
  ASSERT_TRUE(eventually([&] {
    const auto made = p.connector->made();
    return made.size() >= 2 && made[0]->validations.load() >= 1 && made[1]->validations.load() >= 1 &&
           p.stats().idle >= 2;
  }));
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(p.clock->now() + 60s); }));
  EXPECT_EQ(p.stats().connections_created, 2u) << "pinged connections are not an idle deficit";
  EXPECT_EQ(p.stats().total, 2u);
}

// --- the lock-free fast path: a returned connection parks in a cell, the next acquire takes it ---

TEST(pool_core, uncontended_cycles_are_counted_like_any_other_acquire) {
  pool_config cfg = small_config(3, 3);
  cfg.validate_after_idle = 1000s;  // no validation round trips: every cycle can stay lock-free
  fake_pool p(cfg);
  p.core->wait_ready(10s);
  constexpr std::uint64_t cycles = 1000;
  for (std::uint64_t i = 0; i < cycles; ++i) {
    lease l = p.core->acquire(1s);
    ASSERT_TRUE(l);
    p.clock->advance(1ms);  // each lease held 1 ms (fake time)
  }
  lease a = p.core->acquire(1s);  // held while we look: one in use
  const pool_stats s = p.stats();
  EXPECT_EQ(s.acquires, cycles + 1);
  EXPECT_EQ(s.acquire_wait.count, cycles + 1);
  EXPECT_EQ(s.acquire_wait.buckets[0], cycles + 1) << "zero-wait acquires land in the lowest bucket";
  EXPECT_EQ(s.usage.count, cycles);
  EXPECT_NEAR(s.usage.sum_seconds, 1.0, 1e-6) << "1000 leases of 1 ms";
  EXPECT_EQ(s.in_use, 1u);
  EXPECT_EQ(s.idle, 2u) << "a parked connection is idle";
  EXPECT_EQ(s.total, 3u);
  EXPECT_EQ(s.waited_acquires, 0u);
  EXPECT_EQ(p.stats().connections_created, 3u);
}

TEST(pool_core, counts_of_a_closed_connection_stay_in_the_totals) {
  pool_config cfg = small_config(1, 1);
  cfg.validate_after_idle = 1000s;
  fake_pool p(cfg);
  p.core->wait_ready(10s);
  for (int i = 0; i < 10; ++i) lease l = p.core->acquire(1s);
  p.core->evict_all();  // the parked connection closes; its fast-path counts move to the pool
  ASSERT_TRUE(eventually([&] { return p.stats().evicted == 1; }));
  const pool_stats s = p.stats();
  EXPECT_EQ(s.acquires, 10u);
  EXPECT_EQ(s.usage.count, 10u);
  EXPECT_EQ(s.acquire_wait.count, 10u);
}

TEST(pool_core, taking_a_parked_connection_still_tops_up_min_idle) {
  pool_config cfg = small_config(2, 1);
  cfg.validate_after_idle = 1000s;
  fake_pool p(cfg);
  p.core->wait_ready(10s);
  {
    lease a = p.core->acquire(1s);  // idle 0: a second connection opens
    ASSERT_TRUE(eventually([&] { return p.stats().idle == 1 && p.stats().connecting == 0; }));
    lease b = p.core->acquire(1s);  // at max_size
  }  // both come back and are parked
  lease c = p.core->acquire(1s);
  const int waits = p.clock->blocking_waits();
  c.discard();  // below max_size again, one idle (parked): min_idle is met, nothing opens
  ASSERT_TRUE(eventually([&] { return p.stats().total == 1 && p.stats().idle == 1; }));
  // The discard woke a connect worker: let it look (and go back to sleep) before the next take.
  ASSERT_TRUE(eventually([&] { return p.clock->blocking_waits() > waits; }));
  const std::uint64_t created = p.stats().connections_created;
  lease d = p.core->acquire(1s);  // takes the parked one: idle 0 < min_idle
  ASSERT_TRUE(d);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; })) << "min_idle not restored after a lock-free take";
  EXPECT_EQ(p.stats().connections_created, created + 1);
  EXPECT_EQ(p.stats().total, 2u);
}

TEST(pool_core, parked_connections_close_with_the_pool_and_expire_unused) {
  pool_config cfg = small_config(2, 2);
  cfg.validate_after_idle = 1000s;
  cfg.max_lifetime = 100s;
  cfg.lifetime_jitter = 0;
  cfg.initial_lifetime_spread = 0;
  cfg.health_check_period = 0ms;
  fake_pool p(cfg);
  p.core->wait_ready(10s);
  std::shared_ptr<fake_state> first;
  {
    lease l = p.core->acquire(1s);
    first = p.connector->made().at(static_cast<std::size_t>(state_of(l).id - 1));
  }  // parked
  p.clock->advance(101s);  // expires while parked: the maintenance sweep closes it
  ASSERT_TRUE(eventually([&] { return first->closed.load(); }));
  ASSERT_TRUE(eventually([&] { return p.stats().closed_max_lifetime == 2 && p.stats().idle == 2; }));
  std::shared_ptr<fake_state> second;
  {
    lease l = p.core->acquire(1s);
    EXPECT_GT(state_of(l).id, 2) << "an expired connection was handed out";
    second = p.connector->made().at(static_cast<std::size_t>(state_of(l).id - 1));
  }  // parked again
  p.core->close();
  EXPECT_TRUE(second->closed) << "close() must find parked connections";
  EXPECT_EQ(p.connector->live.load(), 0);
}

// Point 1 of the fast path's memory-ordering argument (docs/design.md), with the window at 0
// (the return must hand over) and at its default (the waiter, within its window in fake time
// for ever, must be woken by the return: a connection left parked would strand it).
void waiter_gets_connection_returned_on_another_thread(std::chrono::microseconds window) {
  pool_config cfg = small_config(1, 1);
  cfg.validate_after_idle = 1000s;
  cfg.fairness_window = window;
  fake_pool p(cfg);
  p.core->wait_ready(10s);
  for (int round = 0; round < 200; ++round) {
    lease held = p.core->acquire(1s);
    auto waiter = std::async(std::launch::async, [&] { return static_cast<bool>(p.core->acquire(1000s)); });
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
    held.release();  // parks or hands over: either way the waiter must get it
    if (waiter.wait_for(20s) != std::future_status::ready) {
      p.core->close();  // frees the waiter (it throws pool_closed), so the test ends
      FAIL() << "waiter stranded in round " << round;
    }
    ASSERT_TRUE(waiter.get());
  }
  EXPECT_EQ(p.stats().acquire_timeouts, 0u);
}

TEST(pool_core, a_waiter_gets_a_connection_returned_on_another_thread) {
  waiter_gets_connection_returned_on_another_thread(std::chrono::microseconds(0));
  waiter_gets_connection_returned_on_another_thread(std::chrono::microseconds(100));
}

// The start of the quick-return cases: a pool of four (validation off, the given window), full;
// the main thread holds all four connections and three helper threads queue for them, in order.
pool_config quick_return_config(duration window, std::size_t size = 4) {
  pool_config cfg = small_config(size, size);
  cfg.validate_after_idle = 1000s;
  cfg.fairness_window = std::chrono::duration_cast<std::chrono::microseconds>(window);
  return cfg;
}

struct four_held {
  std::vector<lease> held;
  std::vector<std::future<lease>> helpers;  // they keep what they get
};

void hold_four_with_three_queued(fake_pool& p, four_held& q) {
  p.core->wait_ready(10s);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 4; }));
  for (int i = 0; i < 4; ++i) q.held.push_back(p.core->acquire(1s));
  for (std::size_t i = 0; i < 3; ++i) {
    q.helpers.push_back(std::async(std::launch::async, [&p] { return p.core->acquire(1000s); }));
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == i + 1; }));
  }
}

// A thread that comes straight back for another connection while others wait within their
// window keeps its connection parked, waking no one; a waiter it strands gets it at the latest
// 1.5 windows after it queued (or at its deadline, if that is sooner), not when it times out.
// In fake time every gap is 0 µs: the main thread becomes a quick returner by giving a
// connection back and looking for one again, with someone waiting, three times in a row.
// Subjects (acquire timeouts, in queue order) wait behind three helpers; after the quick
// return, time moves (as on a real clock: only due deadlines wake) to `until` after they queued;
// nobody may be served before it, and `served` says who must be then.
// With a window above 10 ms (`large_window`) nobody parks quickly: the return wakes the waiter.
void quick_return_case(const std::vector<std::chrono::milliseconds>& timeouts, duration until,
                       const std::vector<bool>& served, bool large_window = false) {
  fake_pool p(quick_return_config(large_window ? 1000ms : 10ms));  // look_at: 15 ms after queueing
  four_held q;
  hold_four_with_three_queued(p, q);
  if (::testing::Test::HasFatalFailure()) return;
  std::vector<lease>& held = q.held;
  std::vector<std::future<lease>>& helpers = q.helpers;
  const time_point queued_at = p.clock->now();
  std::vector<std::future<bool>> subjects;
  for (std::size_t i = 0; i < timeouts.size(); ++i) {
    subjects.push_back(std::async(std::launch::async, [&p, timeout = timeouts[i]] {
      try {
        return static_cast<bool>(p.core->acquire(timeout));
      } catch (const acquire_timeout_error&) {
        return false;
      }
    }));
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == 4 + i; }));
  }
  std::vector<lease> kept;
  for (std::size_t i = 0; i < 3; ++i) {
    held[i].release();  // not (yet) a quick returner: the oldest waiter is woken and takes it
    kept.push_back(helpers[i].get());
    ASSERT_TRUE(kept.back());
    EXPECT_FALSE(p.core->try_acquire());  // a short gap, measured because someone waits
  }
  if (large_window) {
    held[3].release();  // the oldest waiter is woken and takes it, though time stands still
    ASSERT_EQ(subjects[0].wait_for(20s), std::future_status::ready) << "waiter left asleep by a return";
    EXPECT_TRUE(subjects[0].get());
    p.core->close();  // frees the others
    return;
  }
  for (const auto timeout : timeouts)  // each sleeps until its look_at or its deadline
    ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(queued_at + std::min<duration>(timeout, 15ms)); }));
  held[3].release();  // parked for the main thread: no waiter is woken for it
  EXPECT_EQ(p.stats().waiting, timeouts.size());
  EXPECT_EQ(p.stats().idle, 1u);
  p.clock->advance_waking_due(until - 1ns);  // the main thread never comes back
  for (auto& s : subjects) EXPECT_EQ(s.wait_for(0s), std::future_status::timeout);
  EXPECT_EQ(p.stats().waiting, timeouts.size());
  p.clock->advance_waking_due(1ns);
  for (std::size_t i = 0; i < subjects.size(); ++i) {
    if (served[i] && subjects[i].wait_for(20s) != std::future_status::ready) {
      p.core->close();  // frees the waiters (they throw pool_closed), so the test ends
      FAIL() << "waiter " << i << " stranded by a parked connection";
    }
  }
  for (std::size_t i = 0; i < subjects.size(); ++i) {
    if (served[i]) {
      EXPECT_TRUE(subjects[i].get()) << "waiter " << i;
    } else {
      ASSERT_EQ(subjects[i].wait_for(20s), std::future_status::ready) << "waiter " << i;
      EXPECT_FALSE(subjects[i].get()) << "waiter " << i << " was served ahead of an older one";
    }
  }
}

// On threads of their own: what a thread has learnt about its return habits stays with it.
TEST(pool_core, a_quick_returner_parks_its_connection_and_a_waiter_gets_it_after_its_window) {
  std::thread([] { quick_return_case({1000s}, 15ms, {true}); }).join();
}

TEST(pool_core, a_waiter_whose_deadline_comes_first_takes_a_parked_connection_instead_of_timing_out) {
  std::thread([] { quick_return_case({4ms}, 4ms, {true}); }).join();
}

TEST(pool_core, with_a_window_above_10_ms_a_quick_returner_still_wakes_a_waiter) {
  std::thread([] { quick_return_case({1000s}, 0s, {true}, true); }).join();
}

// The younger waiter's deadline (12 ms) falls after the older one's window (10 ms) and before its
// look_at (15 ms): at that last look the older waiter, past its window, is served first.
TEST(pool_core, a_waiter_at_its_deadline_does_not_take_a_parked_connection_ahead_of_an_older_one) {
  std::thread([] { quick_return_case({1000s, 12ms}, 12ms, {true, false}); }).join();
}

// The CPU grace (pool_core::park()): once the oldest waiter is past its window, a quick
// returner on another CPU may keep its connection parked for itself a tenth of a window longer,
// once per turn and only after a short hold, so that a thread on the waiter's CPU can hand it
// one first. In fake time (window 10 ms, so a grace of 1 ms): the main thread, on CPU
// `returner_cpu`, becomes a quick returner as in quick_return_case, parks its last connection
// and takes it back at once `taken_at` after the subject (on CPU 0) queued, and gives it back
// when the window ends. `grace` says whether that return keeps it parked; if so,
// the main thread looks for it again `retake_after` later and must get it only within the grace,
// and its next return then hands it over.
void cpu_grace_case(int returner_cpu, duration taken_at, bool grace, duration retake_after = 0ns) {
  fake_clock::set_cpu_of_this_thread(returner_cpu);
  fake_pool p(quick_return_config(10ms));
  four_held q;
  hold_four_with_three_queued(p, q);
  if (::testing::Test::HasFatalFailure()) return;
  std::vector<lease>& held = q.held;
  const time_point queued_at = p.clock->now();
  auto subject = std::async(std::launch::async, [&] { return static_cast<bool>(p.core->acquire(1000s)); });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 4; }));
  std::vector<lease> kept;
  for (std::size_t i = 0; i < 3; ++i) {
    held[i].release();
    kept.push_back(q.helpers[i].get());
    EXPECT_FALSE(p.core->try_acquire());  // a short gap: a quick returner after three
  }
  ASSERT_TRUE(eventually([&] { return p.clock->has_waiter_until(queued_at + 15ms); }));  // its look_at
  p.clock->advance_waking_due(taken_at);
  held[3].release();  // within the window: parked for the main thread
  ASSERT_EQ(p.stats().waiting, 1u);
  lease mine = p.core->try_acquire();
  ASSERT_TRUE(mine) << "a quick returner takes back what it parked within the window";
  p.clock->advance_waking_due(10ms - taken_at);  // the subject's window has ended
  mine.release();
  EXPECT_EQ(p.stats().waiting, grace ? 1u : 0u) << (grace ? "handed over within the grace" : "kept past the window");
  if (grace) {
    p.clock->advance_waking_due(retake_after);
    mine = p.core->try_acquire();
    if (retake_after < 1ms) {
      ASSERT_TRUE(mine) << "not taken back within the grace";
      EXPECT_EQ(p.stats().waiting, 1u);
      mine.release();  // a second grace in the same turn: none
    } else {
      EXPECT_FALSE(mine) << "taken back after the grace";
    }
    EXPECT_EQ(p.stats().waiting, 0u) << "kept beyond the grace";
  }
  if (subject.wait_for(20s) != std::future_status::ready) {
    p.core->close();  // frees the subject (it throws pool_closed), so the test ends
    FAIL() << "the oldest waiter was not served";
  }
  EXPECT_TRUE(subject.get());
}

TEST(pool_core, a_quick_returner_on_another_cpu_keeps_its_connection_briefly_past_the_oldest_waiters_window_once) {
  std::thread([] { cpu_grace_case(1, 9500us, true); }).join();
}

TEST(pool_core, a_quick_returner_on_the_oldest_waiters_cpu_hands_over_when_its_window_ends) {
  std::thread([] { cpu_grace_case(0, 9500us, false); }).join();
}

TEST(pool_core, after_a_hold_as_long_as_the_grace_a_returner_on_another_cpu_hands_over_at_once) {
  std::thread([] { cpu_grace_case(1, 9ms, false); }).join();
}

TEST(pool_core, the_cpu_grace_ends_a_tenth_of_a_window_after_the_window) {
  std::thread([] { cpu_grace_case(1, 9500us, true, 1ms); }).join();
}

// The quick-return credit (pool_core.cpp, return_habit): each short gap between a thread's
// return and its next look for a connection earns one credit (up to six), each long gap (here
// 100 µs) costs three, and three or more make a quick returner. Observed through the CPU grace,
// which only a quick returner gets and which is decided on the spot: a pool of `size` (window
// 10 ms, so a grace of 1 ms), all of it held by the main thread (CPU 1), size − 1 helpers queued,
// then the subject (CPU 0). 9.1 ms into the window the main thread gives the helpers their
// connections, each return followed by a look with the gap `helper_gaps` says (true: long);
// then it cycles its last connection with `own_gaps` (each of those returns must park: it is a
// quick returner there); and as the subject's window ends it gives that connection back.
// `quick`: it keeps it parked (the grace), or hands it over at once.
void quick_credit_case(std::size_t size, const std::vector<bool>& helper_gaps, const std::vector<bool>& own_gaps,
                       bool quick) {
  ASSERT_EQ(helper_gaps.size(), size - 1);
  fake_clock::set_cpu_of_this_thread(1);
  fake_pool p(quick_return_config(10ms, size));
  p.core->wait_ready(10s);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == size; }));
  std::vector<lease> held;
  for (std::size_t i = 0; i < size; ++i) held.push_back(p.core->acquire(1s));
  std::vector<std::future<lease>> helpers;
  for (std::size_t i = 0; i + 1 < size; ++i) {
    helpers.push_back(std::async(std::launch::async, [&p] { return p.core->acquire(1000s); }));
    ASSERT_TRUE(eventually([&] { return p.stats().waiting == i + 1; }));
  }
  const time_point queued_at = p.clock->now();
  auto subject = std::async(std::launch::async, [&] { return static_cast<bool>(p.core->acquire(1000s)); });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == size; }));
  const auto gap = [&](bool long_gap) {
    if (long_gap) p.clock->advance_waking_due(100us);
  };
  p.clock->advance_waking_due(9100us);
  std::vector<lease> kept;
  for (std::size_t i = 0; i + 1 < size; ++i) {
    held[i].release();  // not a quick returner: the oldest waiter is woken and takes it
    if (helpers[i].wait_for(20s) != std::future_status::ready) {
      p.core->close();  // frees the waiters (they throw pool_closed), so the test ends
      FAIL() << "return " << i << " parked: counted as a quick returner";
    }
    kept.push_back(helpers[i].get());
    gap(helper_gaps[i]);
    EXPECT_FALSE(p.core->try_acquire());  // the gap is measured: someone waits
  }
  lease mine = std::move(held[size - 1]);
  for (const bool long_gap : own_gaps) {
    mine.release();
    ASSERT_EQ(p.stats().waiting, 1u) << "a quick returner's return woke the subject";
    gap(long_gap);
    mine = p.core->try_acquire();
    ASSERT_TRUE(mine) << "a quick returner takes back what it parked within the window";
  }
  p.clock->advance_waking_due(queued_at + 10ms - p.clock->now());  // the subject's window ends
  mine.release();
  EXPECT_EQ(p.stats().waiting, quick ? 1u : 0u)
      << (quick ? "handed over: not a quick returner (no CPU grace)" : "kept parked: counted as a quick returner");
  p.clock->advance_waking_due(5ms);  // the subject's look_at, if it is still waiting
  if (subject.wait_for(20s) != std::future_status::ready) {
    p.core->close();
    FAIL() << "the subject was not served";
  }
  EXPECT_TRUE(subject.get());
}

TEST(pool_core, a_settled_quick_returner_stays_one_after_one_long_gap) {
  std::thread([] { quick_credit_case(4, {false, false, false}, {false, false, false, true}, true); }).join();
}

TEST(pool_core, two_long_gaps_in_a_row_end_a_quick_returners_habit) {
  std::thread([] { quick_credit_case(4, {false, false, false}, {false, false, false, true, true}, false); }).join();
}

TEST(pool_core, a_thread_that_pauses_after_every_three_queries_is_not_a_quick_returner) {
  std::thread([] {
    quick_credit_case(10, {false, false, true, false, false, true, false, false, true}, {}, false);
  }).join();
}

TEST(pool_core, evict_all_retires_every_generation) {
  fake_pool p(small_config(3, 2));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 2; }));
  lease held = p.core->acquire(1s);
  const std::shared_ptr<fake_state> held_state = p.connector->made().at(static_cast<std::size_t>(state_of(held).id - 1));
  p.core->evict_all();
  EXPECT_EQ(p.stats().generation, 1u);
  EXPECT_FALSE(held_state->closed) << "a leased connection stays usable until it comes back";
  held.release();  // old generation: closed on return
  EXPECT_TRUE(held_state->closed);
  ASSERT_TRUE(eventually([&] { return p.stats().evicted >= 2 && p.stats().idle == 2; }));
  lease fresh = p.core->acquire(1s);
  ASSERT_TRUE(fresh);
  EXPECT_GT(state_of(fresh).id, 2) << "handed out a connection of the old generation";
}

TEST(pool_core, close_wakes_waiters_and_is_idempotent) {
  fake_pool p(small_config(1, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease held = p.core->acquire(1s);
  auto waiter = std::async(std::launch::async, [&] {
    try {
      lease l = p.core->acquire(1000s);
      return std::string("acquired");
    } catch (const pool_closed&) {
      return std::string("closed");
    }
  });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  p.core->close();
  p.core->close();
  EXPECT_EQ(waiter.get(), "closed");
  EXPECT_THROW((void)p.core->acquire(1s), pool_closed);
  EXPECT_THROW((void)p.core->try_acquire(), pool_closed);
  EXPECT_TRUE(p.stats().closed);
  held.release();  // closes on return
  EXPECT_EQ(p.stats().total, 0u);
  EXPECT_EQ(p.connector->live.load(), 0);
}

TEST(pool_core, lease_may_outlive_the_pool) {
  auto p = std::make_unique<fake_pool>(small_config(2, 1));
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  lease l = p->core->acquire(1s);
  fake_connector* conn = p->connector;
  (void)conn;
  p.reset();  // the pool object goes; the core stays until the lease returns
  EXPECT_TRUE(l);
  l.release();  // deletes the core; ASan reports any use after free
  EXPECT_FALSE(l);
}

// ~pool runs close(), which wakes every waiter with pool_closed; the woken threads still run
// code of the core on their way out of acquire() or wait_ready(). The core must outlive them,
// whether a lease is still out (the race with its return) or not. Under ASan (the CI runs the
// unit tests there) a core deleted too early is a reported use after free.
TEST(pool_core, threads_waiting_when_the_pool_is_destroyed_get_pool_closed_and_the_core_outlives_them) {
  // The race is narrow: with the core deleted too early, ASan saw it in about 2 % of rounds.
  for (int round = 0; round < 200; ++round) {
    // Even rounds: the only connection is leased, and its return races with the waiters' exit.
    // Odd rounds: no connect succeeds and nothing is leased, so ~pool deletes the core at once.
    const bool lease_out = round % 2 == 0;
    auto p = std::make_unique<fake_pool>(small_config(1, lease_out ? 1 : 0),
                                          [lease_out](fake_connector& c) { c.set_failure(!lease_out); });
    lease held;
    if (lease_out) {
      ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
      held = p->core->acquire(1s);  // every acquire below waits for it
    }
    core::pool_core* core = p->core;
    std::atomic<int> closed{0};
    std::vector<std::thread> waiters;
    for (int i = 0; i < 4; ++i) {
      waiters.emplace_back([core, &closed] {
        try {
          (void)core->acquire(1000s);
        } catch (const pool_closed&) {
          ++closed;
        }
      });
    }
    ASSERT_TRUE(eventually([&] { return p->stats().waiting == 4; }));
    p.reset();       // close() wakes the waiters
    held.release();  // even rounds: races with the woken waiters on their way out
    for (std::thread& t : waiters) t.join();
    EXPECT_EQ(closed.load(), 4) << "round " << round;
  }
}

TEST(pool_core, a_pool_destroyed_while_an_acquire_validates_is_freed_when_that_acquire_ends) {
  // The acquiring thread holds the connection it validates (m_in_use); ~pool orphans the core;
  // the round trip ends, the connection is put back and closed (the pool is closed), and the
  // thread leaves with pool_closed. It is then the last user, so it must delete the core: before,
  // nothing did (a leak), as nothing counted it once its connection was gone.
  auto gone = std::make_shared<std::atomic<bool>>(false);
  auto p = std::make_unique<fake_pool>(one_validated_connection(), [gone](fake_connector& c) { c.gone = gone; });
  ASSERT_TRUE(eventually([&] { return p->stats().idle == 1; }));
  const std::shared_ptr<fake_state> st = its_connection(*p);
  std::promise<void> entered, destroyed;
  std::shared_future<void> destroyed_f = destroyed.get_future().share();
  st->on_validate = [&entered, destroyed_f] {
    entered.set_value();
    destroyed_f.wait();
  };
  p->clock->advance(2s);
  core::pool_core* core = p->core;
  auto acquirer = std::async(std::launch::async, [core]() -> std::string {
    try {
      (void)core->acquire(1000s);
      return "acquired";
    } catch (const pool_closed&) {
      return "pool_closed";
    }
  });
  entered.get_future().wait();  // the round trip is under way
  p.reset();                    // ~pool: the core is orphaned, the acquirer still in it
  EXPECT_FALSE(gone->load()) << "deleted while a thread was still validating in it";
  destroyed.set_value();
  EXPECT_EQ(acquirer.get(), "pool_closed");
  EXPECT_TRUE(gone->load()) << "the core was never freed";
}

TEST(pool_core, errors_name_the_pool) {
  // With several pools in one process, an exception must say which one (HikariCP prefixes its
  // pool name too); the name is "default" when none was set, as in the log and the metrics.
  pool_config cfg = small_config(1, 1);
  cfg.name = "orders";
  cfg.max_waiting = 1;
  fake_pool p(cfg);
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease held = p.core->acquire(1s);
  const auto what_of = [](const std::function<void()>& f) -> std::string {
    try {
      f();
    } catch (const error& e) {
      return e.what();
    }
    return "no exception";
  };
  EXPECT_EQ(what_of([&] { (void)p.core->acquire(0ms); }).rfind("pqxxpool[orders]: no connection available", 0), 0u);
  auto waiter = std::async(std::launch::async, [&] { return what_of([&] { (void)p.core->acquire(1000s); }); });
  ASSERT_TRUE(eventually([&] { return p.stats().waiting == 1; }));
  EXPECT_EQ(what_of([&] { (void)p.core->acquire(1000s); }),
            "pqxxpool[orders]: too many threads waiting for a connection (max_waiting = 1)");
  p.core->close();
  EXPECT_EQ(waiter.get(), "pqxxpool[orders]: the pool is closed");

  fake_pool unnamed(small_config(1, 0));
  unnamed.core->close();
  EXPECT_EQ(what_of([&] { (void)unnamed.core->try_acquire(); }), "pqxxpool[default]: the pool is closed");
}

TEST(pool_core, moved_lease_returns_once) {
  fake_pool p(small_config(1, 1));
  ASSERT_TRUE(eventually([&] { return p.stats().idle == 1; }));
  lease a = p.core->acquire(1s);
  lease b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_TRUE(b);
  lease c;
  c = std::move(b);
  c.release();
  c.release();
  EXPECT_EQ(p.stats().idle, 1u);
  EXPECT_EQ(p.stats().in_use, 0u);
}

TEST(pool_core, empty_lease_dereference_throws) {
  lease empty;
  EXPECT_FALSE(empty);
  EXPECT_THROW((void)*empty, pqxxpool::error);
}

}  // namespace
}  // namespace pqxxpool::test
