#pragma once
// The generic slot pool: no libpq, no I/O of its own. It hands out `physical` connections made by
// an injected `connector`, keeps time with an injected `clock`, and runs its background work on
// threads it owns (max_connecting connect workers and one maintenance thread).
//
// Locking: one mutex, m_mu, guards every member marked "guarded by m_mu". Work that calls libpq,
// a hook or the connector (connect, validate, reset, close) is moved out of the lock: reserve
// under the lock, act outside it, publish under it. Every condition variable here is notified
// while m_mu is held: a waiter's condition variable lives on the waiting thread's stack and may be
// destroyed as soon as that thread sees its slot, so a notify after unlocking could touch a dead
// object.
//
// Invariant (under m_mu): total = m_idle.size() + m_in_use + m_connecting <= max_size, and
// m_slots.size() == m_idle.size() + m_in_use.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "core/clock.hpp"
#include "core/connector.hpp"
#include "pqxxpool/config.hpp"
#include "pqxxpool/pool.hpp"
#include "pqxxpool/stats.hpp"

namespace pqxxpool::core {

/// Why the pool closed a connection: the counter it bumps and the log line it writes.
enum class close_reason { max_lifetime, idle, broken, validation_failed, discarded, evicted, closed };

/// What log lines need of their pool. Shared (not a pointer into the core) because a connection
/// closed by a returning thread is closed after the lock is released, when an orphaned core may
/// already have been deleted by another thread's return.
struct log_context {
  std::shared_ptr<spdlog::logger> logger;  // never null
  std::string pool;                        // pool_stats::name
};

/// A connection taken out of service under the lock. Its destructor (or reset()) logs why and
/// closes it: callers let it die after the lock is released, never while holding it.
class retired {
 public:
  retired() noexcept = default;
  retired(std::unique_ptr<physical> conn, close_reason why, std::uint64_t id, duration age,
          std::shared_ptr<const log_context> log) noexcept
      : m_conn(std::move(conn)), m_why(why), m_id(id), m_age(age), m_log(std::move(log)) {}
  retired(retired&& other) noexcept = default;
  retired& operator=(retired&& other) noexcept {
    if (this != &other) {
      reset();
      m_conn = std::move(other.m_conn);
      m_why = other.m_why;
      m_id = other.m_id;
      m_age = other.m_age;
      m_log = std::move(other.m_log);
    }
    return *this;
  }
  retired(const retired&) = delete;
  retired& operator=(const retired&) = delete;
  ~retired() { reset(); }
  /// Logs and closes now (no-op when empty: inline, since every return makes an empty one).
  /// Never throws.
  void reset() noexcept {
    if (m_conn) close_now();
  }
  explicit operator bool() const noexcept { return m_conn != nullptr; }

 private:
  void close_now() noexcept;  // logs why, then closes

  std::unique_ptr<physical> m_conn;
  close_reason m_why = close_reason::closed;
  std::uint64_t m_id = 0;
  duration m_age{};
  std::shared_ptr<const log_context> m_log;
};

/// One live physical connection and its bookkeeping. Fields other than `conn` are guarded by
/// m_mu; `conn` is used only by the thread that holds the slot (the lessee, or the pool thread
/// validating/resetting it) and outside the lock.
struct slot {
  std::unique_ptr<physical> conn;
  time_point created_at{};
  time_point expires_at{time_point::max()};
  time_point last_used_at{};   // last return by a user (coarse clock): drives idle_timeout
  time_point last_alive_at{};  // last return or successful round trip: drives validation and pings
  std::uint64_t generation = 0;
  std::size_t index = 0;           // position in pool_core::m_slots, for O(1) removal
  bool replacement_requested = false;  // within the expiry lead: a replacement was asked for
  bool replacement_made = false;       // ... and a new connection was published for it
  bool fresh = false;              // published by a connect and not yet handed out
  std::uint64_t id = 0;            // 1, 2, 3 … per pool, in connect order: names it in logs
  // The current lease (valid while `leased`): for the usage histogram and leak detection.
  bool leased = false;
  bool leak_reported = false;      // logged as a suspected leak during this lease
  time_point leased_at{};
  source_location leased_where{};  // recorded only when leak detection is on
};

/// A thread blocked in acquire(). Lives on that thread's stack; linked into the FIFO queue.
struct waiter {
  std::condition_variable cv;
  slot* handed = nullptr;      // set by a hand-off; the waiter owns the slot from then on
  time_point enqueued_at{};
  bool woken = false;          // woken to compete for an idle connection (within the window)
  bool queued = false;         // linked into the queue
  waiter* prev = nullptr;
  waiter* next = nullptr;
};

class pool_core {
 public:
  /// Starts the background threads. cfg must already be validated. seed fixes the lifetime
  /// jitter draws for tests (0 = random).
  pool_core(pool_config cfg, std::unique_ptr<connector> conn, std::shared_ptr<clock> clk,
            std::uint64_t seed = 0);
  ~pool_core();
  pool_core(const pool_core&) = delete;
  pool_core& operator=(const pool_core&) = delete;

  lease acquire(std::chrono::milliseconds timeout, source_location where = {});
  lease try_acquire(source_location where = {});
  void wait_ready(std::chrono::milliseconds timeout);
  pool_stats stats() const;
  void evict_all();
  void close();
  const pool_config& config() const noexcept { return m_cfg; }

  /// Called by ~pool: close(), then delete this now, or let the last outstanding lease do it.
  void destroy_from_owner() noexcept;

  /// Called by lease. Never throws.
  void give_back(slot* s, bool discard) noexcept;

  /// Expiry time of a leased slot (for tests). Never throws.
  static time_point expires_at(const lease& l) noexcept;
  /// The physical connection behind a lease (for tests). Never throws.
  static physical* physical_of(const lease& l) noexcept;

 private:
  using doomed_list = std::vector<retired>;
  struct leak_note {  // a suspected leak found by the maintenance sweep, logged after unlocking
    std::uint64_t id;
    source_location where;
    duration held;
  };

  // --- helpers, all called with m_mu held -------------------------------------------------
  std::size_t total_locked() const noexcept { return m_idle.size() + m_in_use + m_connecting; }
  bool oldest_waiter_past_window_locked(time_point now) const noexcept;
  bool connect_needed_locked() const noexcept;
  void wake_connectors_locked() noexcept;
  slot* take_idle_locked(time_point coarse_now, doomed_list& doomed);
  slot* pop_usable_idle_locked(time_point coarse_now, doomed_list& doomed);
  bool is_retired_locked(const slot& s, time_point coarse_now) const noexcept;
  retired remove_slot_locked(slot* s, close_reason why) noexcept;
  [[nodiscard]] retired put_back_locked(slot* s, time_point now) noexcept;
  void mark_leased_locked(slot* s, time_point at, const source_location& where) noexcept;
  struct exhaustion_note {  // what the exhaustion warning says, taken under the lock
    std::size_t max_size, in_use, connecting, waiting;
    std::uint64_t since_last;  // exhaustion events since the previous warning
  };
  std::optional<exhaustion_note> exhaustion_report_due_locked(time_point coarse_now) noexcept;
  void wake_idle_competitor_locked() noexcept;
  void enqueue_locked(waiter& w) noexcept;
  void dequeue_locked(waiter& w) noexcept;
  pool_stats snapshot_locked() const;
  bool needs_validation(const slot& s, time_point coarse_now) const noexcept;

  // --- the acquire slow path ---------------------------------------------------------------
  slot* wait_for_slot(std::unique_lock<std::mutex>& lk, time_point deadline,
                      doomed_list& doomed);
  /// Validates a taken slot outside the lock; on failure closes it and returns false.
  bool validate_and_keep(slot* s, std::optional<time_point> deadline);

  // --- background threads ----------------------------------------------------------------
  void connect_loop();
  void maintenance_loop();
  time_point maintenance_sweep_locked(time_point now, doomed_list& doomed,
                                      std::vector<slot*>& to_ping, std::vector<leak_note>& leaks);

  const pool_config m_cfg;
  const std::unique_ptr<connector> m_connector;
  const std::shared_ptr<clock> m_clock;
  const duration m_expiry_lead;  // open a replacement this long before a connection expires
  const std::size_t m_max_connecting;  // min(max_connecting, max_size): one thread each
  const duration m_coarse_lag;         // m_clock->coarse_lag(), read once
  const duration m_connect_spacing;    // 1 / max_connect_rate, or zero
  const duration m_leak_threshold;     // leak_detection_threshold; zero = off
  const std::shared_ptr<const log_context> m_log;  // logger and pool name; used outside m_mu only
  std::atomic<std::uint64_t> m_next_id{1};         // connection ids, taken by connect workers

  mutable std::mutex m_mu;
  // guarded by m_mu:
  std::vector<std::unique_ptr<slot>> m_slots;  // every live connection (idle or in use)
  std::vector<slot*> m_idle;                   // stack; back() = most recently returned
  std::size_t m_in_use = 0;
  std::size_t m_connecting = 0;
  waiter* m_wait_head = nullptr;
  waiter* m_wait_tail = nullptr;
  std::size_t m_waiting = 0;
  std::uint64_t m_generation = 0;
  bool m_closed = false;
  bool m_orphaned = false;  // the pool object is gone; the last lease deletes this
  std::size_t m_replacements_wanted = 0;
  std::size_t m_pinging = 0;  // idle connections taken out for a health ping
  time_point m_next_connect_at{};  // backoff: no connect starts before this
  time_point m_next_rate_at{};     // max_connect_rate: no connect starts before this
  duration m_backoff{};
  std::mt19937_64 m_rng;
  std::vector<slot*> m_reset_queue;                      // in use; rolled back by maintenance
  pool_stats m_stats;  // counters, histogram, last error (gauges filled in by snapshot_locked)
  std::condition_variable m_connect_cv;  // connect workers wait here
  std::condition_variable m_maint_cv;    // the maintenance thread waits here
  std::condition_variable m_ready_cv;    // wait_ready() waits here (notify_all: any number)
  std::size_t m_connectors_sleeping = 0;
  time_point m_maint_wake = time_point::min();  // when the maintenance thread next wakes by itself
  time_point m_next_exhaustion_report = time_point::min();  // rate limit of the exhaustion warning
  std::uint64_t m_exhausted_at_last_report = 0;  // pool_exhausted_count when it was last reported
  std::uint64_t m_connect_failures_in_row = 0;
  std::size_t m_initial_spread_left = 0;  // connections still to get initial_lifetime_spread

  std::vector<std::thread> m_threads;  // touched only by the constructor and close()
  std::once_flag m_join_once;
};

}  // namespace pqxxpool::core
