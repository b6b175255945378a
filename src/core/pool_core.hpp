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
//
// The fast path (docs/design.md, "The lock-free fast path"): a clean connection given back is
// parked in one of a few atomic cells instead of m_idle, and acquire() takes it from there, so an
// uncontended acquire+release takes no lock. A parked connection is idle in every sense but is
// counted in m_in_use until a locked path drains the cells into m_idle. What the locked side
// decided is published for the lock-free side in atomics written under m_mu: m_gate
// (gate_blocked: the pool is closed or the configuration needs the lock on every lease;
// gate_below_max: taking an idle connection may require opening one), m_waiters_pub,
// m_head_window_end and m_awake (while a waiter is past its window, or waiters wait, none is on
// its way to look at the cells and the returning thread is not a quick returner, returns go
// through the lock; a waiter within its window looks at the cells by itself at look_at()). Every ordering that matters is
// a Dekker pair of seq_cst operations: e.g. a parker CASes its cell, then loads the waiter count;
// a new waiter publishes itself, then drains the cells.

#include <array>
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

/// A histogram recorded by one thread at a time and read by others: the fast path records a
/// lease's usage into its slot without the pool lock; stats() adds these up under the lock.
/// Single writer (whoever holds the slot), so relaxed load+store replaces read-modify-write.
struct slot_histogram {
  std::array<std::atomic<std::uint64_t>, histogram::bucket_count + 1> buckets{};
  std::atomic<std::uint64_t> count{0};
  std::atomic<std::int64_t> sum_ns{0};
  std::atomic<std::int64_t> max_ns{0};

  static void bump(std::atomic<std::uint64_t>& a, std::uint64_t by = 1) noexcept {
    a.store(a.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
  }
  void record(duration d) noexcept {  // single writer only
    const std::int64_t ns = d.count() > 0 ? static_cast<std::int64_t>(std::chrono::nanoseconds(d).count()) : 0;
    bump(buckets[histogram::bucket_index(ns)]);
    bump(count);
    sum_ns.store(sum_ns.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
    if (ns > max_ns.load(std::memory_order_relaxed)) max_ns.store(ns, std::memory_order_relaxed);
  }
  void add_to(histogram& h) const noexcept {  // any thread
    for (std::size_t i = 0; i < buckets.size(); ++i) h.buckets[i] += buckets[i].load(std::memory_order_relaxed);
    h.count += count.load(std::memory_order_relaxed);
    h.sum_seconds += static_cast<double>(sum_ns.load(std::memory_order_relaxed)) * 1e-9;
    const double mx = static_cast<double>(max_ns.load(std::memory_order_relaxed)) * 1e-9;
    if (mx > h.max_seconds) h.max_seconds = mx;
  }
};

/// One live physical connection and its bookkeeping. Fields other than `conn` are guarded by
/// m_mu unless marked "owner"; `conn` and the owner fields are used only by the thread that holds
/// the slot (the lessee, the fast path that parks or takes it, or the pool thread validating /
/// resetting it). Ownership passes through m_mu or through a cell's seq_cst exchange, both of
/// which order the previous owner's writes before the next owner's reads.
struct slot {
  std::unique_ptr<physical> conn;
  time_point created_at{};
  time_point expires_at{time_point::max()};
  time_point last_used_at{};   // owner; last return by a user (coarse clock): drives idle_timeout
  time_point last_alive_at{};  // owner; last return or successful round trip: validation, pings
  std::uint64_t generation = 0;
  std::size_t index = 0;           // position in pool_core::m_slots, for O(1) removal
  // Within the expiry lead: a replacement was asked for. Written under m_mu; atomic because the
  // owner's lock-free return reads it (such a connection goes back through the lock).
  std::atomic<bool> replacement_requested{false};
  bool replacement_made = false;       // ... and a new connection was published for it
  bool fresh = false;              // published by a connect and not yet handed out
  std::uint64_t id = 0;            // 1, 2, 3 … per pool, in connect order: names it in logs
  // The current lease (valid while `leased`): for the usage histogram and leak detection.
  // `leased` and `leased_at` are owner fields; the leak sweep reads them under m_mu, which is
  // safe because leak detection turns the fast path off (every lease then goes through m_mu).
  bool leased = false;
  bool leak_reported = false;      // logged as a suspected leak during this lease
  time_point leased_at{};
  source_location leased_where{};  // recorded only when leak detection is on
  // Fast-path statistics (owner writes, stats() reads; folded into pool_stats when it closes).
  std::atomic<std::uint64_t> fast_acquires{0};  // zero-wait acquires taken from a cell
  slot_histogram fast_usage;                     // usage of leases given back to a cell
  std::size_t home = 0;                          // owner; the cell it was last taken from
  // Set (under m_mu) when a validation cut by a caller's short deadline is left for the
  // maintenance thread to finish by validation_until, in m_reset_queue; read and cleared there.
  bool finish_validation = false;
  time_point validation_until{};
};

/// A thread blocked in acquire(). Lives on that thread's stack; linked into the FIFO queue.
struct waiter {
  std::condition_variable cv;
  slot* handed = nullptr;      // set by a hand-off; the waiter owns the slot from then on
  time_point enqueued_at{};
  bool woken = false;          // woken to compete for an idle connection (within the window)
  bool queued = false;         // linked into the queue
  bool looked = false;         // looked for idle connections once its window (plus slack) ended
  int cpu = -1;                // where it queued (clock::cpu_of_caller()): see the CPU grace in park()
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

  // --- the fast path (no lock) --------------------------------------------------------------
  static constexpr unsigned gate_blocked = 1;    // no parking, no taking: use the locked path
  static constexpr unsigned gate_below_max = 2;  // a take may need a connect: check under m_mu
  /// Takes a parked connection, or nullptr. The caller owns it (counted in m_in_use).
  slot* take_cell() noexcept;
  /// Parks a clean, unexpired connection just given back. False if no cell was free or the gate
  /// is blocked (the caller then takes the locked path).
  bool park(slot* s) noexcept;
  /// park() with the oldest waiter past its window (which ended at `end`): may this quick
  /// returner keep its connection parked for itself a little longer (the CPU grace)?
  bool cpu_grace_allowed(duration::rep now, duration::rep end, unsigned gate) noexcept;
  /// Gives back an idle, unleased slot through m_mu (a parked one reclaimed from its cell).
  void put_back_slow(slot* s) noexcept;
  /// Recomputes m_gate and the published waiter state (m_mu held); stores only what changed.
  void refresh_gate_locked() noexcept;
  /// Moves every parked connection into m_idle (m_mu held).
  void drain_cells_locked() noexcept;
  /// The oldest waiter is past its window (m_mu held): drain the cells and hand what is idle to
  /// the waiters past their window, oldest first.
  void serve_past_window_locked(time_point now, doomed_list& doomed);
  /// When a waiter within its window looks at the cells by itself if no one has served it: 1.5
  /// fairness windows after it queued. A connection parked by a quick returner while the waiter
  /// was within its window reaches it then at the latest (see park()).
  time_point look_at(const waiter& w) const noexcept;
  /// Parked connections right now (m_mu held; a racing fast path may change it at once).
  std::size_t parked_count() const noexcept;
  /// A connection taken from a cell that cannot be handed out lock-free (retired, needs
  /// validation): account for it under the lock like a slot popped from m_idle, or close it.
  slot* adopt_locked(slot* s, time_point coarse_now, doomed_list& doomed);
  /// How a slot was taken, counted (acquires, acquire_wait, waited_for_connect) only once it is
  /// handed out: a connection that then fails validation is no acquire, and a counter that
  /// went up and down again would read as a reset to Prometheus.
  struct taken_note {
    duration waited{};          // time queued as a waiter, all passes of one acquire (zero when taken at once)
    bool from_connect = false;  // handed a freshly opened connection
    // Set once counted, so that an acquire that queues again after a failed validation counts
    // in pool_exhausted_count and waited_acquires once.
    bool counted_exhausted = false;
    bool counted_waiting = false;
    // Counted in m_inside: it queued, or holds a connection it is validating outside the lock
    // (which a failed validation or close() may remove, taking m_in_use down under it).
    bool inside = false;
  };
  /// Counts the calling thread in m_inside (once per acquire): from now until it holds a lease
  /// that m_in_use counts, or has left, the core must not be deleted under it.
  void enter_locked(taken_note& n) noexcept {
    if (!n.inside) ++m_inside;
    n.inside = true;
  }
  /// Uncounts it once the lease it is about to return is counted in m_in_use (no extra lock on
  /// the way out of a successful acquire: the lease keeps the core alive from here).
  void settle_locked(taken_note& n) noexcept {
    if (n.inside) --m_inside;
    n.inside = false;
  }
  /// Undoes one ++m_inside, and deletes this if the pool object is gone and nothing else uses
  /// the core. Called without the lock, as the last thing a thread does with this object (on an
  /// exception or after a failed attempt; a successful one settles under its lock instead).
  void leave_after_wait() noexcept;
  /// Calls leave_after_wait() on destruction when `*flag` is set (a thread counted in m_inside).
  struct inside_guard {
    pool_core* core;
    const bool* flag;
    inside_guard(const inside_guard&) = delete;
    inside_guard& operator=(const inside_guard&) = delete;
    ~inside_guard() {
      if (*flag) core->leave_after_wait();
    }
  };
  void count_acquire_locked(const taken_note& n) noexcept;

  // --- helpers, all called with m_mu held -------------------------------------------------
  std::size_t total_locked() const noexcept { return m_idle.size() + m_in_use + m_connecting; }
  /// Every one of max_size connections is in use (leased, or being reset or validated): what
  /// pool_exhausted_count counts and the exhaustion warning reports. Connections still being
  /// opened do not count: one of them is on its way to this caller.
  bool exhausted_locked() const noexcept;
  /// A caller that will not wait found nothing idle: ask for one connection in the background
  /// while there is room (pgxpool's TryAcquire does the same), so that such callers are not left
  /// with a pool that never connects (min_idle 0).
  void ask_for_connect_locked() noexcept;
  std::uint64_t generation() const noexcept { return m_generation.load(std::memory_order_relaxed); }
  bool oldest_waiter_past_window_locked(time_point now) const noexcept;
  bool connect_needed_locked() const noexcept;
  bool early_retire_allowed_locked() const noexcept;
  /// No other connection waiting for its early replacement expires before s (m_mu held).
  bool next_to_retire_early_locked(const slot& s, time_point now) const noexcept;
  /// s, returned or idle past its jittered expiry, serves on (at most to created_at +
  /// max_lifetime) because replacements are still connecting and nothing else is idle (m_mu
  /// held). in_idle: s is in m_idle (the maintenance sweep), so it does not count as another.
  bool serve_on_until_replaced_locked(slot& s, time_point coarse_now, bool in_idle = false) noexcept;
  /// A connect succeeded after `took` (m_mu held): the expiry lead follows slow connects.
  void note_connect_time_locked(duration took) noexcept;
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
  std::optional<exhaustion_note> exhaustion_report_due_locked(time_point coarse_now, taken_note& note) noexcept;
  void wake_idle_competitor_locked() noexcept;
  void enqueue_locked(waiter& w) noexcept;
  void dequeue_locked(waiter& w) noexcept;
  pool_stats snapshot_locked() const;
  /// snapshot_locked() for an acquire_timeout_error: last_error only while connects are failing.
  pool_stats timeout_snapshot_locked() const;
  bool needs_validation(const slot& s, time_point coarse_now) const noexcept;

  // --- the acquire slow path ---------------------------------------------------------------
  slot* wait_for_slot(std::unique_lock<std::mutex>& lk, time_point deadline,
                      doomed_list& doomed, taken_note& note);
  /// Validates a taken slot outside the lock; on success counts the acquire (note), on failure
  /// closes it and returns false. *failed (when given) is set if false came from a failed or
  /// unfinished round trip rather than from the connection retiring meanwhile.
  bool validate_and_keep(slot* s, std::optional<time_point> deadline, taken_note& note,
                         bool* failed = nullptr);

  // --- background threads ----------------------------------------------------------------
  void connect_loop();
  void maintenance_loop();
  time_point maintenance_sweep_locked(time_point now, doomed_list& doomed,
                                      std::vector<slot*>& to_ping, std::vector<leak_note>& leaks);

  const pool_config m_cfg;
  const std::unique_ptr<connector> m_connector;
  const std::shared_ptr<clock> m_clock;
  const duration m_base_expiry_lead;  // a tenth of max_lifetime, at most 30 s (0: no lifetimes)
  const std::size_t m_max_connecting;  // min(max_connecting, max_size): one thread each
  const duration m_coarse_lag;         // m_clock->coarse_lag(), read once
  const duration m_connect_spacing;    // 1 / max_connect_rate, or zero
  const duration m_leak_threshold;     // leak_detection_threshold; zero = off
  const std::shared_ptr<const log_context> m_log;  // logger and pool name; used outside m_mu only
  std::atomic<std::uint64_t> m_next_id{1};         // connection ids, taken by connect workers
  // Readable once close() has begun: connects in flight give up at once (connect_limits::stop_fd)
  // instead of keeping close() waiting for up to connect_timeout per host.
  struct stop_signal {
    int fd;     // an eventfd; -1 if none could be made (connects then run to their deadline)
    stop_signal() noexcept;
    ~stop_signal();
    stop_signal(const stop_signal&) = delete;
    stop_signal& operator=(const stop_signal&) = delete;
    void raise() noexcept;
  } m_stop;
  const bool m_fast_enabled;  // no leak detection, no reset hook: leases may bypass m_mu
  const std::uint64_t m_instance;  // unique per core: keys what a thread learnt of its returns here
  const bool m_quick_parking;      // fairness_window <= 10 ms: quick returners park (see park())
  const duration::rep m_cpu_grace;  // fairness_window / 10 (see cpu_grace_allowed())
  struct alignas(64) cell {   // one per cache line: two CPUs cycling two cells do not collide
    std::atomic<std::uintptr_t> parked{0};  // a slot*, | parking_tag while its parker decides
  };
  static constexpr std::uintptr_t parking_tag = 1;  // slots are aligned: bit 0 is free
  const std::size_t m_cell_count;          // min(max_size, 16)
  const std::unique_ptr<cell[]> m_cells;   // lock-free; see the file comment
  alignas(64) std::atomic<unsigned> m_gate{0};  // written under m_mu, read lock-free
  // Published under m_mu for the lock-free side (seq_cst stores; see docs/design.md):
  std::atomic<std::size_t> m_waiters_pub{0};   // = m_waiting
  std::atomic<duration::rep> m_head_window_end{duration::max().count()};  // oldest waiter's, or max
  std::atomic<int> m_head_cpu{-1};  // the oldest waiter's cpu, or -1 (relaxed: a hint, see park())
  std::atomic<std::size_t> m_awake{0};  // waiters woken to compete that have not looked yet

  mutable std::mutex m_mu;
  // guarded by m_mu:
  std::vector<std::unique_ptr<slot>> m_slots;  // every live connection (idle or in use)
  std::vector<slot*> m_idle;                   // stack; back() = most recently returned
  std::size_t m_in_use = 0;
  std::size_t m_connecting = 0;
  waiter* m_wait_head = nullptr;
  waiter* m_wait_tail = nullptr;
  std::size_t m_waiting = 0;
  // Connects asked for by a try_acquire() or acquire(0) that found nothing idle below max_size
  // (they do not wait, so m_waiting does not count them): each finished attempt consumes one.
  std::size_t m_demand = 0;
  std::atomic<std::uint64_t> m_generation{0};  // written under m_mu; the fast path reads it
  bool m_closed = false;
  bool m_orphaned = false;  // the pool object is gone; the last lease or waiter out deletes this
  // Threads that blocked in acquire() or wait_ready() and have not left it yet. close() (also run
  // by ~pool) wakes them, but they still run code of this object on their way out, so an orphaned
  // core is deleted only when this is 0 as well as m_in_use (see leave_after_wait).
  std::size_t m_inside = 0;
  std::size_t m_replacements_wanted = 0;
  std::size_t m_early_retired = 0;  // retired early in a full pool, replacement not yet open
  std::size_t m_pinging = 0;  // idle connections taken out for a health ping
  duration m_expiry_lead;       // open a replacement this long before expiry: base, or more if connects are slow
  duration m_connect_time_avg{};  // moving average of successful connects' durations
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
