#include "core/pool_core.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include <spdlog/logger.h>
#include <spdlog/spdlog.h>

namespace pqxxpool::core {
namespace {

// now + timeout, saturating: a timeout of milliseconds::max() (or anything beyond a century)
// means no deadline rather than an overflowed time point in the past.
time_point deadline_after(time_point now, std::chrono::milliseconds timeout) {
  if (timeout >= std::chrono::hours(24 * 365 * 100)) return time_point::max();
  return now + timeout;
}

// How long before a connection's expiry a replacement is opened (while total < max_size):
// a tenth of the lifetime, at most 30 s. 0 when lifetimes are unlimited. (It grows when connects
// are slow: see pool_core::note_connect_time_locked.)
duration expiry_lead_for(const pool_config& cfg) {
  if (cfg.max_lifetime.count() == 0) return duration::zero();
  return std::min<duration>(std::chrono::seconds(30), cfg.max_lifetime / 10);
}

// The exhaustion warning is written at most this often per pool; the lines in between are counted.
constexpr std::chrono::seconds exhaustion_report_interval{10};

// "850 µs", "12.3 ms", "4.2 s", "54 min 12 s": durations in log lines.
std::string human_us(double us) {
  char buf[48];
  if (us < 1000)
    std::snprintf(buf, sizeof buf, "%.0f \u00b5s", us);
  else if (us < 1e6)
    std::snprintf(buf, sizeof buf, "%.1f ms", us / 1e3);
  else if (us < 120e6)
    std::snprintf(buf, sizeof buf, "%.1f s", us / 1e6);
  else
    std::snprintf(buf, sizeof buf, "%lld min %lld s", static_cast<long long>(us / 60e6),
                  static_cast<long long>(us / 1e6) % 60);
  return buf;
}

std::string human(duration d) { return human_us(std::chrono::duration<double, std::micro>(d).count()); }

// A configured timeout may be milliseconds::max() ("wait for ever"): converted to the clock's
// nanoseconds it would overflow, so it is taken as a count of milliseconds.
std::string human(std::chrono::milliseconds d) {
  if (d == std::chrono::milliseconds::max()) return "unlimited";
  return human_us(static_cast<double>(d.count()) * 1e3);
}

// Where this thread last found a parked connection: it looks there first next time, so threads
// that cycle connections tend to keep to their own cells.
thread_local std::size_t t_cell_hint = 0;

// Does this thread come straight back for another connection after giving one back? Measured
// only while threads wait (the precise clock is read then anyway): when this thread last gave a
// connection back to `core`, and its credit as a quick returner there: each gap to its next
// acquire under quick_return_gap earns one (up to max_quick_credit), each longer gap costs
// quick_streak. A quick returner (credit of at least quick_streak: three short gaps in a row from
// nothing, so that a thread that runs two or three queries per request is not one) parks its
// connection even while others wait within their window: it will take it again, and no one is
// woken for it. Any other return wakes a waiter. The credit above quick_streak is there for the
// loaded machine: a thread preempted between its return and its next acquire (about 2 % of the
// returns of the 16-thread SELECT 1 benchmark on 2 CPUs) shows a long gap without having paused,
// and with a plain streak each such preemption made its next three returns wake a waiter that
// then found nothing to take (docs/benchmarks.md). One long gap now leaves a settled quick returner
// one; two in a row, or a pause in every request, do not.
struct return_habit {
  std::uint64_t core = 0;  // pool_core::m_instance of the pool the rest is about (0: none)
  duration::rep returned_at = 0;
  bool returned = false;   // returned_at is set and no acquire has measured the gap yet
  unsigned quick_credit = 0;  // see above: 0 to max_quick_credit
  // The CPU grace (see park()): when this thread last looked for a parked connection while
  // others waited (an upper bound on when it took the one it holds: the hold it implies is never
  // shorter than the real one), whether its last return parked within the grace (its next
  // acquire may take a parked connection though the oldest waiter is past its window), and
  // whether it has had its grace in this turn (cleared when it queues as a waiter).
  duration::rep looked_at = 0;
  bool grace_parked = false;
  bool grace_used = false;
};
constexpr unsigned quick_streak = 3;
constexpr unsigned max_quick_credit = 2 * quick_streak;
thread_local return_habit t_habit;
std::atomic<std::uint64_t> next_instance{1};  // pool_core::m_instance: unlike an address, never reused
constexpr duration quick_return_gap = std::chrono::microseconds(50);
// Quick parking strands a waiter for up to 1.5 windows when the returner does not come back
// after all: with a window above this (the default is 3 ms) every return wakes a waiter instead,
// and waiters sleep untimed, as before quick returners existed.
constexpr std::chrono::microseconds longest_quick_window = std::chrono::milliseconds(10);

constexpr std::size_t max_cells = 16;

std::shared_ptr<const log_context> make_log_context(const pool_config& cfg) {
  auto ctx = std::make_shared<log_context>();
  ctx->logger = cfg.logger ? cfg.logger : spdlog::default_logger();
  if (!ctx->logger) ctx->logger = std::make_shared<spdlog::logger>("pqxxpool");  // no sinks: silent
  ctx->pool = cfg.name.empty() ? "default" : cfg.name;
  return ctx;
}

}  // namespace

void retired::close_now() noexcept {
  try {
    if (m_log) {
      // Routine closes are debug; the ones that mean trouble are warnings.
      spdlog::level::level_enum level = spdlog::level::debug;
      const char* why = "";
      switch (m_why) {
        case close_reason::max_lifetime: why = "reached its max_lifetime after"; break;
        case close_reason::idle: why = "idle past idle_timeout, age"; break;
        case close_reason::broken:
          why = "broken (lost, or a rollback/reset failed) after";
          level = spdlog::level::warn;
          break;
        case close_reason::validation_failed:
          why = "failed its validation round trip after";
          level = spdlog::level::warn;
          break;
        case close_reason::discarded: why = "discarded by its lease after"; break;
        case close_reason::evicted: why = "evicted (evict_all) after"; break;
        case close_reason::closed: why = "pool closed, age"; break;
      }
      const std::string detail = m_why == close_reason::broken || m_why == close_reason::validation_failed
                                     ? m_conn->failure()
                                     : std::string{};
      m_log->logger->log(level, "pqxxpool[{}]: closing connection {} (backend pid {}): {} {}{}{}", m_log->pool, m_id,
                         m_conn->backend_pid(), why, human(m_age), detail.empty() ? "" : ": ", detail);
    }
  } catch (...) {
    // A failing sink must not keep the connection open or escape a destructor.
  }
  m_conn.reset();
}

pool_core::pool_core(pool_config cfg, std::unique_ptr<connector> conn, std::shared_ptr<clock> clk,
                     std::uint64_t seed)
    : m_cfg(std::move(cfg)),
      m_connector(std::move(conn)),
      m_clock(std::move(clk)),
      m_base_expiry_lead(expiry_lead_for(m_cfg)),
      m_max_connecting(std::min(m_cfg.max_connecting, m_cfg.max_size)),
      m_coarse_lag(m_clock->coarse_lag()),
      m_connect_spacing(m_cfg.max_connect_rate > 0
                            ? std::chrono::duration_cast<duration>(std::chrono::duration<double>(1.0 / m_cfg.max_connect_rate))
                            : duration::zero()),
      m_leak_threshold(m_cfg.leak_detection_threshold),
      m_log(make_log_context(m_cfg)),
      m_fast_enabled(m_leak_threshold == duration::zero() && !m_cfg.reset),
      m_instance(next_instance.fetch_add(1, std::memory_order_relaxed)),
      m_quick_parking(m_cfg.fairness_window <= longest_quick_window),
      m_cpu_grace(std::chrono::duration_cast<duration>(m_cfg.fairness_window).count() / 10),
      m_cell_count(std::min(m_cfg.max_size, max_cells)),
      m_cells(new cell[std::min(m_cfg.max_size, max_cells)]),
      m_rng(seed != 0 ? seed : std::random_device{}()) {
  m_expiry_lead = m_base_expiry_lead;
  // Reserved once so that the hot path (idle push/pop) and publishing never allocate.
  m_slots.reserve(m_cfg.max_size);
  m_idle.reserve(m_cfg.max_size);
  m_reset_queue.reserve(m_cfg.max_size);
  m_backoff = m_cfg.connect_backoff_initial;
  m_initial_spread_left = m_cfg.min_idle;
  m_stats.name = m_log->pool;
  m_stats.max_size = m_cfg.max_size;
  m_stats.min_idle = m_cfg.min_idle;
  {
    std::lock_guard<std::mutex> lk(m_mu);
    refresh_gate_locked();
  }
  m_log->logger->info("pqxxpool[{}]: starting: max_size {}, min_idle {}, max_lifetime {}, acquire_timeout {}",
                      m_log->pool, m_cfg.max_size, m_cfg.min_idle,
                      m_cfg.max_lifetime.count() > 0 ? human(m_cfg.max_lifetime) : std::string("unlimited"),
                      human(m_cfg.acquire_timeout));
  try {
    for (std::size_t i = 0; i < m_max_connecting; ++i) m_threads.emplace_back([this] { connect_loop(); });
    m_threads.emplace_back([this] { maintenance_loop(); });
  } catch (...) {
    close();
    throw;
  }
}

pool_core::~pool_core() { close(); }

pool_core::stop_signal::stop_signal() noexcept : fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

pool_core::stop_signal::~stop_signal() {
  if (fd >= 0) ::close(fd);
}

void pool_core::stop_signal::raise() noexcept {
  if (fd < 0) return;
  const std::uint64_t one = 1;
  // Level-triggered and never read: it stays readable for every connect from now on.
  [[maybe_unused]] const ssize_t n = ::write(fd, &one, sizeof one);
}

void pool_core::destroy_from_owner() noexcept {
  close();
  bool last = false;
  {
    std::lock_guard<std::mutex> lk(m_mu);
    last = m_in_use == 0 && m_inside == 0;
    if (!last) m_orphaned = true;
  }
  if (last) delete this;
}

void pool_core::leave_after_wait() noexcept {
  bool last = false;
  {
    std::lock_guard<std::mutex> lk(m_mu);
    --m_inside;
    last = m_orphaned && m_in_use == 0 && m_inside == 0;
  }
  if (last) delete this;
}

// ---------------------------------------------------------------------------------------------
// the fast path (no lock)

slot* pool_core::take_cell() noexcept {
  if ((m_gate.load(std::memory_order_seq_cst) & gate_blocked) != 0) return nullptr;
  if (m_waiters_pub.load(std::memory_order_seq_cst) > 0) {
    const duration::rep now = m_clock->now().time_since_epoch().count();
    bool grace_parked = false;
    if (t_habit.core == m_instance) {
      if (t_habit.returned) {
        if (now - t_habit.returned_at >= quick_return_gap.count())
          t_habit.quick_credit = t_habit.quick_credit > quick_streak ? t_habit.quick_credit - quick_streak : 0;
        else if (t_habit.quick_credit < max_quick_credit)
          ++t_habit.quick_credit;
        t_habit.returned = false;
      }
      t_habit.looked_at = now;
      grace_parked = std::exchange(t_habit.grace_parked, false);
    }
    // Fairness: once the oldest waiter is past its window, newcomers queue behind it (the locked
    // path also hands it what is parked) — except a thread that parked within its CPU grace
    // (see park()), until the grace ends.
    const duration::rep end = m_head_window_end.load(std::memory_order_seq_cst);
    if (now >= end && !(grace_parked && now < end + m_cpu_grace)) return nullptr;
  }
  const std::size_t n = m_cell_count;
  std::size_t j = t_cell_hint < n ? t_cell_hint : 0;
  for (std::size_t i = 0; i < n; ++i, j = (j + 1 == n ? 0 : j + 1)) {
    std::uintptr_t v = m_cells[j].parked.load(std::memory_order_relaxed);
    if (v == 0 || (v & parking_tag) != 0) continue;  // empty, or its parker is still deciding
    // seq_cst: pairs with the gate store of a thread that has just gone below max_size (see
    // acquire()); the CAS also acquires the parker's writes to the slot.
    if (m_cells[j].parked.compare_exchange_strong(v, 0, std::memory_order_seq_cst)) {
      t_cell_hint = j;
      auto* s = reinterpret_cast<slot*>(v);
      s->home = j;
      return s;
    }
  }
  return nullptr;
}

bool pool_core::cpu_grace_allowed(duration::rep now, duration::rep end, unsigned gate) noexcept {
  // The CPU grace. Handing a connection to a sleeping waiter costs two context switches; when
  // the waiter sleeps on another CPU than the returner, the wake-up crosses CPUs, and the
  // connection's backend (which ran beside the returner) ends up on the other CPU from its new
  // client, so the next round trips cross CPUs too until the scheduler migrates one of them. On a
  // 2-CPU VM that made a hand-off cost some 50 µs of CPU instead of about 10 (docs/benchmarks.md).
  // So a quick returner on another CPU than the oldest waiter (which is past its window) may
  // keep its connection a little longer, hoping a thread on the waiter's CPU gives one back
  // first: for at most m_cpu_grace after the window ended, once per turn (a thread on the CPU
  // with fewer threads would otherwise get longer turns than the rest), and only after a short
  // hold (the grace bounds when it decides, the hold how long the extra use lasts). It parks like
  // a quick returner within the window: the waiter looks at the cells by its look_at at the
  // latest (1.5 windows after it queued, later than the window plus the grace).
  if (!m_quick_parking || now >= end + m_cpu_grace || t_habit.grace_used ||
      t_habit.quick_credit < quick_streak || (gate & gate_below_max) != 0 || now - t_habit.looked_at >= m_cpu_grace)
    return false;
  // Relaxed: a hint; a stale value only moves this one hand-off within the same bounds.
  const int head_cpu = m_head_cpu.load(std::memory_order_relaxed);
  return head_cpu >= 0 && head_cpu != m_clock->cpu_of_caller();
}

bool pool_core::park(slot* s) noexcept {
  if ((m_gate.load(std::memory_order_seq_cst) & gate_blocked) != 0) return false;
  const std::size_t n = m_cell_count;
  const auto v = reinterpret_cast<std::uintptr_t>(s);
  std::size_t j = s->home < n ? s->home : 0;
  for (std::size_t i = 0; i < n; ++i, j = (j + 1 == n ? 0 : j + 1)) {
    if (m_cells[j].parked.load(std::memory_order_relaxed) != 0) continue;
    std::uintptr_t expected = 0;
    // Tagged while we decide: takers skip it, drains wait for the tag to go.
    if (!m_cells[j].parked.compare_exchange_strong(expected, v | parking_tag, std::memory_order_seq_cst)) continue;
    // Dekker with enqueue/close: they store the gate, then drain the cells. Either this load
    // sees their gate, or their drain (which waits out the tag) finds the connection parked.
    const unsigned gate = m_gate.load(std::memory_order_seq_cst);
    bool slow = (gate & gate_blocked) != 0;
    if (!slow && m_waiters_pub.load(std::memory_order_seq_cst) > 0) {
      // Someone waits. Past the oldest waiter's window: the locked path hands it the connection.
      // Within it, the connection may stay parked (barging) if
      // - a woken waiter is on its way to look at the cells (it drains them after it stops
      //   counting itself in m_awake: a Dekker pair with this load), or
      // - this thread returns quickly (it will likely take the connection again: waking a
      //   waiter for it would cost two context switches for nothing) and the pool is at its
      //   size (below it, a waiter would otherwise wait for a connect). Every waiter within its
      //   window sleeps at most until 1.5 windows after it queued and then looks at the cells,
      //   so no one is stranded beyond that (wait_for_slot).
      // Otherwise the locked path wakes one waiter to compete for it.
      const duration::rep now = m_clock->now().time_since_epoch().count();
      const duration::rep end = m_head_window_end.load(std::memory_order_seq_cst);
      if (t_habit.core != m_instance) {  // another pool's habits: start afresh for this one
        t_habit = return_habit{};
        t_habit.core = m_instance;
      }
      t_habit.returned_at = now;
      t_habit.returned = true;
      if (now >= end) {
        slow = !cpu_grace_allowed(now, end, gate);
        t_habit.grace_parked = !slow;
        t_habit.grace_used = t_habit.grace_used || !slow;
      } else if (m_awake.load(std::memory_order_seq_cst) == 0 &&
                 (!m_quick_parking || t_habit.quick_credit < quick_streak || (gate & gate_below_max) != 0)) {
        slow = true;
      }
    }
    if (slow) {
      // The pool closed, or a waiter needs this connection: the locked path hands it over or
      // closes it. Still counted in m_in_use, so an orphaned core cannot be deleted under us.
      m_cells[j].parked.store(0, std::memory_order_release);
      put_back_slow(s);
      return true;
    }
    // After this store the connection may be taken, drained, closed and the core deleted:
    // nothing below touches *this.
    m_cells[j].parked.store(v, std::memory_order_release);
    return true;
  }
  return false;
}

void pool_core::put_back_slow(slot* s) noexcept {
  retired doomed;
  bool last = false;
  {
    std::lock_guard<std::mutex> lk(m_mu);
    doomed = put_back_locked(s, m_clock->coarse_now());
    last = m_orphaned && m_in_use == 0 && m_inside == 0;
  }
  doomed.reset();
  if (last) delete this;
}

void pool_core::refresh_gate_locked() noexcept {
  unsigned g = 0;
  if (!m_fast_enabled || m_closed) g |= gate_blocked;
  if (total_locked() < m_cfg.max_size) g |= gate_below_max;
  if (m_gate.load(std::memory_order_relaxed) != g) m_gate.store(g, std::memory_order_seq_cst);
  if (m_waiters_pub.load(std::memory_order_relaxed) != m_waiting) m_waiters_pub.store(m_waiting, std::memory_order_seq_cst);
  const duration::rep end = m_wait_head != nullptr
                                ? (m_wait_head->enqueued_at + m_cfg.fairness_window).time_since_epoch().count()
                                : duration::max().count();
  if (m_head_window_end.load(std::memory_order_relaxed) != end) m_head_window_end.store(end, std::memory_order_seq_cst);
  const int head_cpu = m_wait_head != nullptr ? m_wait_head->cpu : -1;
  if (m_head_cpu.load(std::memory_order_relaxed) != head_cpu) m_head_cpu.store(head_cpu, std::memory_order_relaxed);
}

void pool_core::drain_cells_locked() noexcept {
  for (std::size_t j = 0; j < m_cell_count; ++j) {
    std::uintptr_t v = m_cells[j].parked.load(std::memory_order_seq_cst);
    while (v != 0) {
      if ((v & parking_tag) != 0) {
        // A parker between its CAS and its decision (a few instructions, unless preempted):
        // wait it out, as the Dekker argument in park() requires.
        std::this_thread::yield();
        v = m_cells[j].parked.load(std::memory_order_seq_cst);
        continue;
      }
      if (m_cells[j].parked.compare_exchange_weak(v, 0, std::memory_order_seq_cst)) {
        --m_in_use;
        m_idle.push_back(reinterpret_cast<slot*>(v));  // capacity max_size: no allocation
        break;
      }
      // v now holds the cell's new value (taken, or re-parked): look again.
    }
  }
}

void pool_core::serve_past_window_locked(time_point now, doomed_list& doomed) {
  drain_cells_locked();
  const time_point coarse_now = m_clock->coarse_now();
  while (m_wait_head != nullptr && now - m_wait_head->enqueued_at >= m_cfg.fairness_window && !m_idle.empty()) {
    slot* s = pop_usable_idle_locked(coarse_now, doomed);
    if (s == nullptr) break;
    waiter* h = m_wait_head;
    const bool was_woken = h->woken;
    dequeue_locked(*h);
    h->handed = s;
    h->cv.notify_one();
    if (was_woken) wake_idle_competitor_locked();  // its wake-up must not be lost
  }
}

std::size_t pool_core::parked_count() const noexcept {
  std::size_t n = 0;
  for (std::size_t j = 0; j < m_cell_count; ++j)
    if (m_cells[j].parked.load(std::memory_order_seq_cst) != 0) ++n;  // a tagged one, too
  return n;
}

slot* pool_core::adopt_locked(slot* s, time_point coarse_now, doomed_list& doomed) {
  if (m_closed) {
    doomed.push_back(remove_slot_locked(s, close_reason::closed));
    return nullptr;
  }
  if (is_retired_locked(*s, coarse_now) && !serve_on_until_replaced_locked(*s, coarse_now)) {
    const bool evicted = s->generation != generation();
    doomed.push_back(remove_slot_locked(s, evicted ? close_reason::evicted : close_reason::max_lifetime));
    return nullptr;
  }
  if (connect_needed_locked()) wake_connectors_locked();
  return s;  // counted by the caller once handed out (count_acquire_locked)
}

void pool_core::count_acquire_locked(const taken_note& n) noexcept {
  ++m_stats.acquires;
  if (n.from_connect) ++m_stats.waited_for_connect;
  m_stats.acquire_wait.record(n.waited);
}

// ---------------------------------------------------------------------------------------------
// helpers (m_mu held)

time_point pool_core::look_at(const waiter& w) const noexcept {
  return w.enqueued_at + m_cfg.fairness_window + m_cfg.fairness_window / 2;
}

bool pool_core::oldest_waiter_past_window_locked(time_point now) const noexcept {
  return m_wait_head != nullptr && now - m_wait_head->enqueued_at >= m_cfg.fairness_window;
}

bool pool_core::exhausted_locked() const noexcept {
  if (m_in_use < m_cfg.max_size) return false;  // the usual answer, without loading the cells
  // Parked and health-pinged connections are counted in m_in_use but are idle in all but name
  // (connect_needed_locked counts them as idle too).
  const std::size_t idle_in_use = std::min(parked_count() + m_pinging, m_in_use);
  return m_in_use - idle_in_use >= m_cfg.max_size;
}

void pool_core::ask_for_connect_locked() noexcept {
  if (m_closed || total_locked() >= m_cfg.max_size) return;
  if (m_demand < m_cfg.max_size) ++m_demand;
  if (connect_needed_locked()) wake_connectors_locked();
}

bool pool_core::connect_needed_locked() const noexcept {
  if (m_closed || total_locked() >= m_cfg.max_size || m_connecting >= m_max_connecting) return false;
  // Connections wanted: one per waiter and per caller that asked without waiting, the min_idle
  // deficit, and replacements for connections about to expire. Idle connections already cover
  // part of the first two.
  const std::size_t wanted = m_waiting + m_demand + m_cfg.min_idle;
  // Being pinged or parked: idle in all but name. Counting the cells with seq_cst loads pairs
  // with the fast path's take-then-check-gate (see acquire()).
  const std::size_t have = m_idle.size() + m_pinging + parked_count();
  const std::size_t need = (wanted > have ? wanted - have : 0) + m_replacements_wanted + m_early_retired;
  return need > m_connecting;
}

void pool_core::note_connect_time_locked(duration took) noexcept {
  // The early replacements of a full pool run one at a time; with a lead of a tenth of a short
  // lifetime (100 ms for 1 s) and connects that take about as long (TLS + SCRAM on a busy
  // machine), the next connection expired before its turn and a caller waited for a connect.
  // So the lead is at least three recent connect times (a moving average), at most a third of
  // the lifetime. With DSQL's 55 min lifetimes the 30 s lead is far above that and unchanged.
  if (m_base_expiry_lead == duration::zero()) return;  // unlimited lifetimes: no lead
  m_connect_time_avg = m_connect_time_avg == duration::zero() ? took : (3 * m_connect_time_avg + took) / 4;
  const duration cap = std::chrono::duration_cast<duration>(m_cfg.max_lifetime) / 3;
  m_expiry_lead = std::max(m_base_expiry_lead, std::min(cap, 3 * m_connect_time_avg));
}

bool pool_core::early_retire_allowed_locked() const noexcept {
  // A full pool has no room to open a replacement ahead of an expiry. Then a connection that
  // asked for a replacement may retire early (closed_max_lifetime), so that its replacement opens
  // while the others still serve: one at a time (nothing connecting), and only while nobody
  // waits (a waiter would rather have the connection than wait for a connect).
  return !m_closed && total_locked() >= m_cfg.max_size && m_connecting == 0 && m_wait_head == nullptr;
}

bool pool_core::serve_on_until_replaced_locked(slot& s, time_point coarse_now, bool in_idle) noexcept {
  // lifetime_jitter exists to spread expiries, and it leaves each connection up to a tenth of
  // max_lifetime (the first min_idle: up to initial_lifetime_spread) short of the limit the user
  // set. When a connection's jittered expiry comes while replacements are still connecting (a
  // slow connect in a full pool: the early replacements run one at a time) and no other
  // connection is idle or parked, closing it — on its return, or when an acquire takes it idle —
  // would make that acquire wait for the connect. So it serves on, into the jitter: its expiry
  // moves to the hard limit, created_at + max_lifetime, which nothing extends. It is still
  // marked for replacement, so it retires on its first return once nothing connects
  // (early_retire_allowed_locked), or from the idle list by the maintenance sweep.
  if (m_closed || m_cfg.max_lifetime.count() == 0 || s.generation != generation()) return false;
  if (!s.replacement_requested || m_connecting == 0 || m_idle.size() > (in_idle ? 1 : 0) || parked_count() != 0)
    return false;
  const time_point hard = s.created_at + std::chrono::duration_cast<duration>(m_cfg.max_lifetime);
  if (coarse_now < s.expires_at - m_coarse_lag || coarse_now >= hard - m_coarse_lag) return false;
  s.expires_at = hard;
  return true;
}

bool pool_core::next_to_retire_early_locked(const slot& s, time_point now) const noexcept {
  // The early replacements of a full pool run one at a time, so their order matters: retiring a
  // connection that expires later while an earlier one waits for its turn let the earlier one
  // run out (past its hard limit, too) while the later one's replacement connected, and an
  // acquire waited for a connect. So s goes only if no other connection that asked for a
  // replacement expires before it. One already past its expiry does not hold the queue: it
  // retires on its return anyway; nor can one held long block the rest for more than the lead.
  for (const auto& o : m_slots) {
    if (o.get() != &s && o->replacement_requested && !o->replacement_made && o->expires_at < s.expires_at &&
        now < o->expires_at - m_coarse_lag)
      return false;
  }
  return true;
}

void pool_core::wake_connectors_locked() noexcept {
  if (m_connectors_sleeping > 0) m_connect_cv.notify_one();
}

bool pool_core::is_retired_locked(const slot& s, time_point coarse_now) const noexcept {
  // coarse_now may lag real time by coarse_lag(): add it so a connection is never handed out
  // past its expiry.
  return s.generation != generation() || coarse_now >= s.expires_at - m_coarse_lag;
}

bool pool_core::needs_validation(const slot& s, time_point coarse_now) const noexcept {
  return m_cfg.validate_after_idle.count() == 0 || coarse_now - s.last_alive_at >= m_cfg.validate_after_idle;
}

retired pool_core::remove_slot_locked(slot* s, close_reason why) noexcept {
  switch (why) {
    case close_reason::max_lifetime: ++m_stats.closed_max_lifetime; break;
    case close_reason::idle: ++m_stats.closed_idle; break;
    case close_reason::broken: ++m_stats.closed_broken; break;
    case close_reason::validation_failed: ++m_stats.closed_validation_failed; break;
    case close_reason::discarded: ++m_stats.closed_discarded; break;
    case close_reason::evicted: ++m_stats.evicted; break;
    case close_reason::closed: break;
  }
  // Its fast-path statistics become the pool's (the remover owns the slot: no writer races).
  if (const std::uint64_t fast = s->fast_acquires.load(std::memory_order_relaxed); fast > 0) {
    m_stats.acquires += fast;
    m_stats.acquire_wait.buckets[0] += fast;
    m_stats.acquire_wait.count += fast;
  }
  s->fast_usage.add_to(m_stats.usage);
  if (s->replacement_requested && !s->replacement_made && m_replacements_wanted > 0) --m_replacements_wanted;
  // The precise clock, as created_at was read with it: the coarse one lags by up to a tick and
  // gave young connections a negative age ("age -5067 µs"). A removal is rare; 26 ns is nothing.
  retired conn(std::move(s->conn), why, s->id, m_clock->now() - s->created_at, m_log);
  // Swap-remove from m_slots; the slot object dies here (its connection lives on in `conn`
  // until the caller drops it outside the lock).
  const std::size_t i = s->index;
  if (i + 1 != m_slots.size()) {
    std::swap(m_slots[i], m_slots.back());
    m_slots[i]->index = i;
  }
  m_slots.pop_back();
  --m_in_use;
  refresh_gate_locked();  // total fell: perhaps below max_size
  wake_connectors_locked();
  return conn;
}

slot* pool_core::pop_usable_idle_locked(time_point coarse_now, doomed_list& doomed) {
  while (!m_idle.empty()) {
    slot* s = m_idle.back();
    m_idle.pop_back();
    ++m_in_use;
    if (!is_retired_locked(*s, coarse_now) || serve_on_until_replaced_locked(*s, coarse_now)) return s;
    const bool evicted = s->generation != generation();
    doomed.push_back(remove_slot_locked(s, evicted ? close_reason::evicted : close_reason::max_lifetime));
  }
  return nullptr;
}

void pool_core::enqueue_locked(waiter& w) noexcept {
  w.queued = true;
  w.prev = m_wait_tail;
  w.next = nullptr;
  if (m_wait_tail != nullptr)
    m_wait_tail->next = &w;
  else
    m_wait_head = &w;
  m_wait_tail = &w;
  ++m_waiting;
  // Publish the waiter before looking for parked connections (the waiter drains after this):
  // a parker that missed it is seen by the drain, and vice versa.
  refresh_gate_locked();
}

void pool_core::dequeue_locked(waiter& w) noexcept {
  if (w.prev != nullptr)
    w.prev->next = w.next;
  else
    m_wait_head = w.next;
  if (w.next != nullptr)
    w.next->prev = w.prev;
  else
    m_wait_tail = w.prev;
  w.prev = w.next = nullptr;
  w.queued = false;
  --m_waiting;
  if (w.woken) m_awake.fetch_sub(1, std::memory_order_seq_cst);  // w.woken stays set for the caller
  refresh_gate_locked();
}

void pool_core::wake_idle_competitor_locked() noexcept {
  // Wake the oldest waiter not already woken, so it can take the idle connection. One wake-up
  // per idle connection, never notify_all. Parked connections count: this often runs right
  // after a woken waiter was dequeued (m_awake fell), and a parker that saw that waiter left its
  // connection in a cell for it; the drain (after the decrement) is the other half of that pair.
  if (m_wait_head == nullptr) return;
  drain_cells_locked();
  if (m_idle.empty()) return;
  for (waiter* w = m_wait_head; w != nullptr; w = w->next) {
    if (!w->woken) {
      w->woken = true;
      m_awake.fetch_add(1, std::memory_order_seq_cst);
      w->cv.notify_one();
      return;
    }
  }
}

retired pool_core::put_back_locked(slot* s, time_point now) noexcept {
  // s is counted in m_in_use. One that retired meanwhile (expired, evicted, pool closed) is
  // removed and returned for the caller to close outside the lock.
  s->leased = false;
  if (m_closed) return remove_slot_locked(s, close_reason::closed);
  if (is_retired_locked(*s, now)) {
    const bool evicted = s->generation != generation();
    return remove_slot_locked(s, evicted ? close_reason::evicted : close_reason::max_lifetime);
  }
  // A fresh connection, or any connection while the oldest waiter has waited past the fairness
  // window, goes straight to the oldest waiter (it stays in use).
  if (m_wait_head != nullptr && (s->fresh || oldest_waiter_past_window_locked(m_clock->now()))) {
    waiter* w = m_wait_head;
    dequeue_locked(*w);
    w->handed = s;
    w->cv.notify_one();
    // It may have been woken to take an idle connection: that wake-up must not be lost.
    if (w->woken) wake_idle_competitor_locked();
    return {};
  }
  s->fresh = false;
  --m_in_use;
  m_idle.push_back(s);
  if (m_wait_head != nullptr) wake_idle_competitor_locked();
  // The maintenance thread sleeps until its next known deadline; an idle connection beyond
  // min_idle may bring idle reaping earlier. One comparison here, a wake-up only when needed.
  if (m_cfg.idle_timeout.count() > 0 && m_idle.size() > m_cfg.min_idle &&
      m_idle.front()->last_used_at + m_cfg.idle_timeout < m_maint_wake)
    m_maint_cv.notify_one();
  return {};
}

void pool_core::mark_leased_locked(slot* s, time_point at, const source_location& where) noexcept {
  s->leased = true;
  s->leased_at = at;
  if (m_leak_threshold == duration::zero()) return;  // leak detection off: nothing more
  s->leak_reported = false;
  s->leased_where = where;
  // The maintenance thread sleeps until its next known deadline; wake it only if this lease
  // could become a leak before then (usually once: later leases are due later).
  if (at + m_leak_threshold < m_maint_wake) m_maint_cv.notify_one();
}

std::optional<pool_core::exhaustion_note> pool_core::exhaustion_report_due_locked(time_point coarse_now,
                                                                                taken_note& taken) noexcept {
  if (!exhausted_locked() || coarse_now < m_next_exhaustion_report) return std::nullopt;
  m_next_exhaustion_report = coarse_now + exhaustion_report_interval;
  // The reporting acquire found the pool exhausted: it is counted now, once per acquire (when
  // it starts over after the report, wait_for_slot does not count it again), so the report
  // includes it exactly. Predicting its count instead went wrong when it then found a
  // connection idle and was never counted.
  if (!taken.counted_exhausted) ++m_stats.pool_exhausted_count;
  taken.counted_exhausted = true;
  exhaustion_note note{m_cfg.max_size, m_in_use, m_connecting, m_waiting,
                       m_stats.pool_exhausted_count - m_exhausted_at_last_report};
  m_exhausted_at_last_report = m_stats.pool_exhausted_count;
  return note;
}

pool_stats pool_core::timeout_snapshot_locked() const {
  // pool_stats::last_error keeps the most recent failure for monitoring, with its time; an
  // acquire_timeout_error carries it only while connects are failing (the latest attempt
  // failed), so that exhaustion long after an outage is not blamed on it.
  pool_stats s = snapshot_locked();
  if (m_connect_failures_in_row == 0) s.last_error = {};
  return s;
}

pool_stats pool_core::snapshot_locked() const {
  pool_stats st = m_stats;
  // Parked connections count as idle; their fast-path statistics are added here.
  const std::size_t parked = std::min(parked_count(), m_in_use);
  st.idle = m_idle.size() + parked;
  st.in_use = m_in_use - parked;
  for (const auto& s : m_slots) {
    const std::uint64_t fast = s->fast_acquires.load(std::memory_order_relaxed);
    st.acquires += fast;
    st.acquire_wait.buckets[0] += fast;
    st.acquire_wait.count += fast;
    s->fast_usage.add_to(st.usage);
  }
  st.connecting = m_connecting;
  st.total = total_locked();
  st.waiting = m_waiting;
  st.generation = generation();
  st.closed = m_closed;
  return st;
}

// ---------------------------------------------------------------------------------------------
// acquire

slot* pool_core::take_idle_locked(time_point coarse_now, doomed_list& doomed) {
  // The fast path: one critical section, no allocation, the precise clock read only when
  // someone waits (to apply the fairness window).
  if (m_closed) throw pool_closed(m_log->pool);
  if (m_wait_head != nullptr) {
    const time_point now = m_clock->now();
    if (oldest_waiter_past_window_locked(now)) {
      serve_past_window_locked(now, doomed);  // parked connections go to the waiters first
      return nullptr;                          // and this newcomer queues behind them
    }
  }
  drain_cells_locked();
  slot* s = pop_usable_idle_locked(coarse_now, doomed);
  if (s == nullptr) return nullptr;
  if (connect_needed_locked()) wake_connectors_locked();  // the min_idle deficit grew
  return s;  // counted by the caller once handed out (count_acquire_locked)
}

namespace {
// The note of an acquire_timeout_error whose time went on validation round trips.
constexpr const char* validation_took_the_time =
    "an idle connection's validation round trip failed or did not finish in time";
}  // namespace

lease pool_core::acquire(std::chrono::milliseconds timeout, source_location where) {
  // The fast path: a parked connection, no lock, no precise clock.
  slot* adopted = take_cell();
  if (adopted != nullptr) {
    const time_point coarse_now = m_clock->coarse_now();
    if (adopted->generation == generation() && coarse_now < adopted->expires_at - m_coarse_lag &&
        !needs_validation(*adopted, coarse_now)) {
      adopted->leased = true;
      adopted->leased_at = m_cfg.precise_usage_timing ? m_clock->now() : coarse_now;
      slot_histogram::bump(adopted->fast_acquires);
      lease out(this, adopted);  // first: should the lock below throw, the lease gives it back
      // seq_cst after the exchange in take_cell(): if a close or failure took the pool below
      // max_size, either its connect_needed check counted this connection as parked, or this
      // load sees gate_below_max and the check is repeated here.
      if ((m_gate.load(std::memory_order_seq_cst) & gate_below_max) != 0) {
        std::lock_guard<std::mutex> lk(m_mu);
        if (connect_needed_locked()) wake_connectors_locked();
      }
      return out;
    }
    // Retired or due for validation: finish under the lock like a connection popped from m_idle.
  }
  std::optional<time_point> deadline;  // read from the precise clock only off the fast path
  time_point started{};                // when deadline was set: the time an error reports
  bool validation_lost = false;        // a connection this acquire took failed its validation
  taken_note taken;                    // kept across passes: a wait before a failed validation counts
  // Declared before every lock of the loop below, so it runs last, with no lock held: a thread
  // woken by close() may be the last user of an orphaned core.
  const inside_guard leaving{this, &taken.inside};
  for (;;) {
    doomed_list doomed;  // declared before the lock: closed after unlock
    const time_point coarse_now = m_clock->coarse_now();
    slot* s = nullptr;
    bool validate = false;
    std::optional<exhaustion_note> exhausted;  // set when the (rate-limited) exhaustion warning is due
    {
      std::unique_lock<std::mutex> lk(m_mu);
      if (adopted != nullptr) s = adopt_locked(std::exchange(adopted, nullptr), coarse_now, doomed);
      if (s == nullptr) s = take_idle_locked(coarse_now, doomed);
      if (s != nullptr) {
        mark_leased_locked(s, m_cfg.precise_usage_timing ? m_clock->now() : coarse_now, where);
        validate = needs_validation(*s, coarse_now);
        if (!validate) count_acquire_locked(taken);
      } else if ((exhausted = exhaustion_report_due_locked(coarse_now, taken))) {
        // Counted there; logged outside the lock; then this acquire starts over.
      } else {
        if (!deadline) deadline = deadline_after(started = m_clock->now(), timeout);
        try {
          s = wait_for_slot(lk, *deadline, doomed, taken);
        } catch (const acquire_timeout_error& e) {
          if (!validation_lost) throw;
          // The time went on a round trip, not in the queue: say so, and count all of it.
          throw acquire_timeout_error(std::chrono::duration_cast<std::chrono::milliseconds>(m_clock->now() - started),
                                      e.snapshot(), validation_took_the_time);
        }
        mark_leased_locked(s, m_cfg.precise_usage_timing ? m_clock->now() : m_clock->coarse_now(), where);
        validate = needs_validation(*s, m_clock->coarse_now());  // time passed while waiting
        if (!validate) count_acquire_locked(taken);
      }
      // A connection to validate outside the lock: a failure or close() may remove it (m_in_use
      // goes down) while this thread still runs core code. A lease to return: m_in_use holds
      // the core from here, so the thread is uncounted without another lock on its way out.
      if (s != nullptr && validate) enter_locked(taken);
      if (s != nullptr && !validate) settle_locked(taken);
    }
    doomed.clear();
    if (exhausted) {
      m_log->logger->warn(
          "pqxxpool[{}]: pool exhausted: at max_size {} ({} in use, {} connecting), {} threads already waiting; "
          "exhausted acquires since the previous report, this one included: {} (reported at most every {} s)",
          m_log->pool, exhausted->max_size, exhausted->in_use, exhausted->connecting, exhausted->waiting,
          exhausted->since_last,
          exhaustion_report_interval.count());
      continue;
    }
    if (!validate) return lease(this, s);
    // The round trip counts against the caller's deadline; acquire(0) ("do not wait for a
    // connection to come free") still allows one validation round trip, like try_acquire().
    if (!deadline) deadline = deadline_after(started = m_clock->now(), timeout);
    bool kept = false;
    try {
      kept = validate_and_keep(s, timeout.count() > 0 ? deadline : std::nullopt, taken, &validation_lost);
    } catch (const acquire_timeout_error& e) {
      // No time left for the round trip (an earlier pass's validation or wait took it): report
      // the whole acquire, and why when a validation took the time, as wait_for_slot's does.
      throw acquire_timeout_error(std::chrono::duration_cast<std::chrono::milliseconds>(m_clock->now() - started),
                                  e.snapshot(), validation_lost ? validation_took_the_time : "");
    }
    if (kept) return lease(this, s);
    // The connection failed validation and was closed (or retired meanwhile): try again within
    // the same deadline.
  }
}

lease pool_core::try_acquire(source_location where) {
  slot* adopted = take_cell();  // the fast path, finished under the lock (try_acquire is rarer)
  taken_note taken;
  const inside_guard leaving{this, &taken.inside};  // as in acquire(): runs after every unlock
  for (;;) {
    doomed_list doomed;
    const time_point coarse_now = m_clock->coarse_now();
    slot* s = nullptr;
    bool validate = false;
    {
      std::lock_guard<std::mutex> lk(m_mu);
      if (adopted != nullptr) s = adopt_locked(std::exchange(adopted, nullptr), coarse_now, doomed);
      if (s == nullptr) s = take_idle_locked(coarse_now, doomed);
      if (s == nullptr) {
        if (exhausted_locked()) ++m_stats.pool_exhausted_count;
        ask_for_connect_locked();
        return lease{};
      }
      mark_leased_locked(s, m_cfg.precise_usage_timing ? m_clock->now() : coarse_now, where);
      validate = needs_validation(*s, coarse_now);
      if (validate) {
        enter_locked(taken);  // as in acquire()
      } else {
        count_acquire_locked(taken);
        settle_locked(taken);
      }
    }
    doomed.clear();
    if (!validate || validate_and_keep(s, std::nullopt, taken)) return lease(this, s);
  }
}

bool pool_core::validate_and_keep(slot* s, std::optional<time_point> deadline, taken_note& note,
                                  bool* failed) {
  // Runs on the caller's thread, outside the lock, within the caller's deadline.
  const time_point now = m_clock->now();
  retired doomed;
  if (deadline && *deadline <= now) {
    // No time left for a round trip: the connection is not known to be bad, so it goes back
    // untouched (the maintenance thread pings it later) and the caller times out.
    std::unique_lock<std::mutex> lk(m_mu);
    doomed = put_back_locked(s, m_clock->coarse_now());
    ++m_stats.acquire_timeouts;
    pool_stats snapshot = timeout_snapshot_locked();
    lk.unlock();
    doomed.reset();
    throw acquire_timeout_error(std::chrono::milliseconds(0), std::move(snapshot));
  }
  time_point vdeadline = now + m_cfg.validation_timeout;
  if (deadline) vdeadline = std::min(vdeadline, *deadline);
  const bool ok = s->conn->validate(vdeadline);
  std::lock_guard<std::mutex> lk(m_mu);  // declared after doomed: unlocked before it closes
  const time_point coarse_now = m_clock->coarse_now();
  if (ok && !m_closed && !is_retired_locked(*s, coarse_now)) {
    s->last_alive_at = coarse_now;
    count_acquire_locked(note);
    settle_locked(note);
    return true;
  }
  if (ok) {
    // close(), evict_all() or its expiry came while the round trip ran.
    doomed = put_back_locked(s, coarse_now);
    if (m_closed) throw pool_closed(m_log->pool);  // doomed closes after the lock is released
    return false;
  }
  if (m_closed) {  // close() ended the round trip (the stop fd): not the connection's fault
    doomed = remove_slot_locked(s, close_reason::closed);
    throw pool_closed(m_log->pool);
  }
  if (failed != nullptr) *failed = true;
  if (vdeadline < now + m_cfg.validation_timeout && s->conn->validation_in_flight()) {
    // The caller's deadline, shorter than validation_timeout, cut the round trip: the connection
    // is not known to be bad (a slow network, a server busy for a moment). The maintenance
    // thread finishes the round trip within validation_timeout and puts it back or closes it;
    // it counts as in use until then, like a connection being reset. The caller times out.
    s->leased = false;
    s->finish_validation = true;
    s->validation_until = now + m_cfg.validation_timeout;
    m_reset_queue.push_back(s);  // reserved for max_size: no allocation under the lock
    m_maint_cv.notify_one();
    return false;
  }
  doomed = remove_slot_locked(s, close_reason::validation_failed);
  return false;
}

slot* pool_core::wait_for_slot(std::unique_lock<std::mutex>& lk, time_point deadline,
                               doomed_list& doomed, taken_note& note) {
  const time_point start = m_clock->now();
  if (!note.counted_exhausted && exhausted_locked()) {  // whether it queues or not
    ++m_stats.pool_exhausted_count;
    note.counted_exhausted = true;
  }
  if (start >= deadline) {  // acquire(0): do not queue at all, so max_waiting does not apply
    ask_for_connect_locked();
    ++m_stats.acquire_timeouts;
    throw acquire_timeout_error(std::chrono::milliseconds(0), timeout_snapshot_locked());
  }
  if (m_cfg.max_waiting != 0 && m_waiting >= m_cfg.max_waiting) {
    ++m_stats.rejected_waiters;
    throw too_many_waiters(m_cfg.max_waiting, m_log->pool);
  }
  if (!note.counted_waiting) ++m_stats.waited_acquires;
  note.counted_waiting = true;
  enter_locked(note);  // from here the owner may be destroyed while this thread sleeps
  waiter w;
  w.enqueued_at = start;
  w.cpu = m_clock->cpu_of_caller();
  if (t_habit.core == m_instance) t_habit.grace_used = false;  // its turn has ended
  enqueue_locked(w);  // published: a connection parked after the drain below wakes a waiter
  drain_cells_locked();
  if (!m_idle.empty()) wake_idle_competitor_locked();  // parked after take_idle_locked looked
  // Whatever leaves this function by an exception (bad_alloc included) must not leave the node,
  // which lives on this stack, linked into the queue.
  struct unlink_on_unwind {
    pool_core& core;
    waiter& node;
    ~unlink_on_unwind() {
      if (node.queued) core.dequeue_locked(node);
      if (node.handed != nullptr) {
        // Handed a connection (by this thread's own look) and then failed (bad_alloc): it goes
        // back to the idle stack (reserved: no allocation), retired or not, for the next taker.
        --core.m_in_use;
        core.m_idle.push_back(node.handed);
        core.wake_idle_competitor_locked();
      }
    }
  } guard{*this, w};
  if (connect_needed_locked()) wake_connectors_locked();
  slot* s = nullptr;
  bool from_connect = false;
  for (;;) {
    if (w.handed != nullptr) {  // a hand-off dequeued us already
      s = std::exchange(w.handed, nullptr);  // ours now (the unwind guard must not give it back)
      if (m_closed) {  // handed just before close(): not handed out after it
        doomed.push_back(remove_slot_locked(s, close_reason::closed));
        throw pool_closed(m_log->pool);
      }
      from_connect = s->fresh;
      s->fresh = false;
      break;
    }
    if (m_closed) throw pool_closed(m_log->pool);  // the guard unlinks w
    if (w.woken) {
      w.woken = false;
      m_awake.fetch_sub(1, std::memory_order_seq_cst);  // then drain: the Dekker pair with park()
      drain_cells_locked();
      s = pop_usable_idle_locked(m_clock->coarse_now(), doomed);
      if (s != nullptr) {
        dequeue_locked(w);
        wake_idle_competitor_locked();  // more idle connections, more waiters: pass it on
        break;
      }
    }
    const time_point now = m_clock->now();
    if (now >= deadline) {
      // A last look: a quick returner may have left a connection parked for itself, which a
      // waiter about to fail is better served by (see park()). Waiters past their window come
      // first (this one may be among them); what is left then may be taken like any newcomer.
      serve_past_window_locked(now, doomed);
      if (w.handed != nullptr) continue;
      s = pop_usable_idle_locked(m_clock->coarse_now(), doomed);
      if (s != nullptr) {
        dequeue_locked(w);
        break;
      }
      dequeue_locked(w);  // before the snapshot, so it does not count itself as waiting
      ++m_stats.acquire_timeouts;
      if (connect_needed_locked()) wake_connectors_locked();
      throw acquire_timeout_error(std::chrono::duration_cast<std::chrono::milliseconds>(now - w.enqueued_at),
                                  timeout_snapshot_locked());
    }
    // Within its window (plus slack) a waiter sleeps no longer than that: a quick returner may
    // have parked a connection without waking anyone (see park()); by then this waiter is past
    // its window and takes it. Usually a hand-off comes first and the timer never fires.
    if (m_quick_parking && now < look_at(w)) {
      m_clock->wait_until(w.cv, lk, std::min(deadline, look_at(w)));
    } else {
      if (m_quick_parking && !w.looked) {  // once: serve the waiters past their window what is idle or parked
        w.looked = true;
        serve_past_window_locked(now, doomed);
        continue;
      }
      m_clock->wait_until(w.cv, lk, deadline);
    }
  }
  note.waited += m_clock->now() - w.enqueued_at;  // added to any wait before a failed validation
  note.from_connect = from_connect;
  return s;  // counted by the caller once handed out (count_acquire_locked)
}

// ---------------------------------------------------------------------------------------------
// return

void pool_core::give_back(slot* s, bool discard) noexcept {
  // libpq's status reads need no I/O; they run on the caller's thread, outside the lock.
  const return_state st = discard ? return_state::broken : s->conn->check_return();
  const time_point coarse_now = m_clock->coarse_now();
  const time_point usage_end = m_cfg.precise_usage_timing ? m_clock->now() : coarse_now;
  if (m_fast_enabled && st == return_state::clean && s->generation == generation() &&
      coarse_now < s->expires_at - m_coarse_lag && !s->replacement_requested.load(std::memory_order_relaxed)) {
    // The fast path: record into the slot, park it, no lock. park() fails when someone waits,
    // the pool is closed, or every cell is taken; the slot then goes back under the lock.
    s->fast_usage.record(usage_end - s->leased_at);
    s->leased = false;
    s->last_used_at = s->last_alive_at = coarse_now;
    if (park(s)) return;  // *this may be gone from here on
  }
  retired doomed;
  bool last = false;
  // A lease reported as a suspected leak: its return is logged too (copied under the lock,
  // logged after it, when *this may already be gone).
  std::shared_ptr<const log_context> leak_log;
  leak_note leak{};
  {
    std::lock_guard<std::mutex> lk(m_mu);
    if (s->leased) {
      m_stats.usage.record(usage_end - s->leased_at);
      s->leased = false;
      if (s->leak_reported) {
        leak_log = m_log;
        // The precise clock here (a rare path): the coarse one could say "after 0 µs".
        leak = {s->id, s->leased_where, m_clock->now() - s->leased_at};
      }
    }
    if (discard) {
      doomed = remove_slot_locked(s, close_reason::discarded);
    } else if (st == return_state::broken) {
      doomed = remove_slot_locked(s, close_reason::broken);
    } else if (!m_closed && !is_retired_locked(*s, coarse_now) &&
               (st == return_state::dirty || m_cfg.reset)) {
      // Rolled back (and reset) off the caller's thread; it stays "in use" until then.
      if (st == return_state::dirty) ++m_stats.rollbacks;
      s->last_used_at = s->last_alive_at = coarse_now;
      m_reset_queue.push_back(s);
      m_maint_cv.notify_one();
    } else if (s->replacement_requested && early_retire_allowed_locked() && next_to_retire_early_locked(*s, coarse_now)) {
      // Within its expiry lead in a full pool: retired now so its replacement opens ahead.
      if (!s->replacement_made) ++m_early_retired;  // before the removal wakes a connect worker
      doomed = remove_slot_locked(s, close_reason::max_lifetime);
    } else {
      s->last_used_at = s->last_alive_at = coarse_now;
      serve_on_until_replaced_locked(*s, coarse_now);
      doomed = put_back_locked(s, coarse_now);  // closes it instead if retired or pool closed
    }
    last = m_orphaned && m_in_use == 0 && m_inside == 0;
  }
  // Nothing below may touch *this unless `last`: another thread's return may delete it.
  doomed.reset();
  if (leak_log) {
    try {
      leak_log->logger->info("pqxxpool[{}]: connection {} leased at {}:{} came back after {} (was reported as a "
                             "suspected leak)", leak_log->pool, leak.id, leak.where.file, leak.where.line,
                             human(leak.held));
    } catch (...) {
      // give_back is noexcept: a failing sink loses the line, not the connection.
    }
  }
  if (last) delete this;
}

// ---------------------------------------------------------------------------------------------
// control

void pool_core::wait_ready(std::chrono::milliseconds timeout) {
  if (m_cfg.min_idle == 0) {
    // Nothing is opened ahead of demand: make one connection's worth of demand and give it back.
    try {
      lease l = acquire(timeout);
    } catch (const acquire_timeout_error& e) {
      if (!e.last_connect_error().empty())
        throw connect_error(e.last_connect_error().message, e.last_connect_error().sqlstate);
      throw;
    }
    return;
  }
  const time_point start = m_clock->now();
  const time_point deadline = deadline_after(start, timeout);
  bool inside = false;
  const inside_guard leaving{this, &inside};  // before the lock: runs after its unlock
  std::unique_lock<std::mutex> lk(m_mu);
  ++m_inside;
  inside = true;
  for (;;) {
    if (m_closed) throw pool_closed(m_log->pool);
    if (m_slots.size() >= m_cfg.min_idle) return;
    const time_point now = m_clock->now();
    if (now >= deadline) {
      // The stored error only while connects are failing: one that a later connect made good
      // would blame an old outage.
      const error_info& le = m_stats.last_error;
      if (!le.empty() && m_connect_failures_in_row > 0) throw connect_error(le.message, le.sqlstate);
      throw acquire_timeout_error(std::chrono::duration_cast<std::chrono::milliseconds>(now - start),
                                  timeout_snapshot_locked());
    }
    m_clock->wait_until(m_ready_cv, lk, deadline);
  }
}

pool_stats pool_core::stats() const {
  std::lock_guard<std::mutex> lk(m_mu);
  return snapshot_locked();
}

void pool_core::evict_all() {
  doomed_list doomed;
  std::uint64_t generation = 0;
  std::size_t leased = 0, connecting = 0;
  {
    std::lock_guard<std::mutex> lk(m_mu);
    if (m_closed) return;
    m_generation.fetch_add(1, std::memory_order_relaxed);
    drain_cells_locked();  // parked ones close too; one parked after this is retired on use
    m_initial_spread_left = m_cfg.min_idle;  // a new generation starts together, like a new pool
    m_early_retired = 0;                     // min_idle and demand decide for the new generation
    doomed.reserve(m_idle.size());
    while (!m_idle.empty()) {
      slot* s = m_idle.back();
      m_idle.pop_back();
      ++m_in_use;
      doomed.push_back(remove_slot_locked(s, close_reason::evicted));
    }
    if (connect_needed_locked()) wake_connectors_locked();
    generation = this->generation();
    leased = m_in_use;
    connecting = m_connecting;
  }
  m_log->logger->info("pqxxpool[{}]: evict_all: generation {}; closing {} idle connections, {} in use close on "
                      "return, {} connects in flight are discarded", m_log->pool, generation, doomed.size(), leased,
                      connecting);
}

void pool_core::close() {
  doomed_list doomed;
  bool closing_now = false;
  std::size_t leased = 0;
  {
    std::lock_guard<std::mutex> lk(m_mu);
    if (!m_closed) {
      m_closed = true;
      closing_now = true;
      refresh_gate_locked();  // before the drain: a parker that misses it sees the gate
      drain_cells_locked();
      doomed.reserve(m_idle.size());
      while (!m_idle.empty()) {
        slot* s = m_idle.back();
        m_idle.pop_back();
        ++m_in_use;
        doomed.push_back(remove_slot_locked(s, close_reason::closed));
      }
      for (waiter* w = m_wait_head; w != nullptr; w = w->next) w->cv.notify_one();
      m_connect_cv.notify_all();  // every worker must exit
      m_maint_cv.notify_all();
      m_ready_cv.notify_all();
      leased = m_in_use;
    }
  }
  if (closing_now) {  // after the unlock: syscalls, and no one needs them under m_mu
    m_stop.raise();
    m_connector->stop();  // hooks in flight (connector.hpp)
  }
  if (closing_now)
    m_log->logger->info("pqxxpool[{}]: closing: {} idle connections close now, {} in use close on return",
                        m_log->pool, doomed.size(), leased);
  doomed.clear();
  std::call_once(m_join_once, [this] {
    for (std::thread& t : m_threads)
      if (t.joinable()) t.join();
  });
}

time_point pool_core::expires_at(const lease& l) noexcept { return l.m_slot->expires_at; }
physical* pool_core::physical_of(const lease& l) noexcept { return l.m_slot->conn.get(); }

// ---------------------------------------------------------------------------------------------
// background threads

void pool_core::connect_loop() {
  std::unique_lock<std::mutex> lk(m_mu);
  while (!m_closed) {
    if (!connect_needed_locked()) {
      ++m_connectors_sleeping;
      m_clock->wait_until(m_connect_cv, lk, time_point::max());
      --m_connectors_sleeping;
      continue;
    }
    const time_point start = m_clock->now();
    const time_point allowed = std::max(m_next_connect_at, m_next_rate_at);
    if (start < allowed) {  // backing off after a failure, or keeping to max_connect_rate
      ++m_connectors_sleeping;
      m_clock->wait_until(m_connect_cv, lk, allowed);
      --m_connectors_sleeping;
      continue;
    }
    if (m_connect_spacing > duration::zero()) m_next_rate_at = start + m_connect_spacing;
    ++m_connecting;
    refresh_gate_locked();  // total rose: perhaps to max_size
    const std::uint64_t generation = this->generation();
    if (connect_needed_locked()) wake_connectors_locked();  // more wanted: another worker helps
    lk.unlock();

    std::unique_ptr<physical> conn;
    error_info failure;
    bool abandoned = false;  // the connector gave up because the pool is closing: no connect error
    bool says_so = false;    // ... and its message says so (connect_abandoned)
    try {
      conn = m_connector->connect({deadline_after(start, m_cfg.connect_timeout), time_point::max(), m_stop.fd});
    } catch (const connect_abandoned& e) {
      failure.message = e.what();
      abandoned = says_so = true;
    } catch (const connect_error& e) {
      failure.message = e.what();
      failure.sqlstate = e.sqlstate();
    } catch (const std::exception& e) {
      failure.message = e.what();
    } catch (...) {
      failure.message = "unknown exception while connecting";
    }
    if (!conn && failure.message.empty()) failure.message = "connector returned no connection";
    const time_point done = m_clock->now();
    const duration took = done - start;
    std::uint64_t id = 0;
    if (conn) {
      id = m_next_id.fetch_add(1, std::memory_order_relaxed);
      try {
        m_log->logger->debug("pqxxpool[{}]: connection {} opened in {} (backend pid {})", m_log->pool, id,
                             human(took), conn->backend_pid());
      } catch (...) {
        // A failing sink must not lose the connection.
      }
    }

    retired doomed;
    std::uint64_t failures_before = 0;  // consecutive failures this success ends
    duration retry_in{};                // after a failure: when the next attempt may start
    lk.lock();
    --m_connecting;
    // An attempt, made or failed, answers one caller that asked without waiting: such a caller
    // is not retried for (it asks again next time, as with pgxpool's TryAcquire).
    if (m_demand > 0 && !abandoned) --m_demand;
    // A connect that failed after close() began (one close() could not interrupt, such as a
    // DNS lookup) failed because nobody waits for it any more, or for a reason nobody needs:
    // treated as given up, not as a connect error worth a warning.
    if (!conn && m_closed) abandoned = true;
    if (conn) {
      ++m_stats.connections_created;
      m_stats.connect_time.record(took);
      note_connect_time_locked(took);
      failures_before = std::exchange(m_connect_failures_in_row, 0);
      m_backoff = m_cfg.connect_backoff_initial;
      m_next_connect_at = time_point{};
      if (m_closed || generation != this->generation()) {
        if (!m_closed) ++m_stats.evicted;
        doomed = retired(std::move(conn), m_closed ? close_reason::closed : close_reason::evicted, id, took, m_log);
      } else {
        auto s = std::make_unique<slot>();
        s->id = id;
        s->conn = std::move(conn);
        s->created_at = m_clock->now();  // read under the lock: the time it becomes available
        if (m_cfg.max_lifetime.count() > 0) {
          // The first min_idle connections of a generation spread their expiries over most of a
          // lifetime (initial_lifetime_spread), so pools started together do not expire together.
          double spread = m_cfg.lifetime_jitter;
          if (m_initial_spread_left > 0) {
            --m_initial_spread_left;
            spread = std::max(spread, m_cfg.initial_lifetime_spread);
          }
          const double jitter = std::uniform_real_distribution<double>(0.0, 1.0)(m_rng) * spread;
          s->expires_at = s->created_at + std::chrono::duration_cast<duration>(
                                              std::chrono::duration<double, std::nano>(m_cfg.max_lifetime) *
                                              (1.0 - jitter));
        }
        s->last_used_at = s->last_alive_at = m_clock->coarse_now();
        s->generation = generation;
        s->fresh = true;
        s->index = m_slots.size();
        slot* raw = s.get();
        m_slots.push_back(std::move(s));  // capacity reserved: no allocation
        ++m_in_use;
        if (m_early_retired > 0) {
          --m_early_retired;  // this connection replaces one retired early in a full pool
        } else if (m_replacements_wanted > 0) {
          // This connection replaces one that asked for a replacement ahead of its expiry.
          for (const auto& other : m_slots) {
            if (other->replacement_requested && !other->replacement_made) {
              other->replacement_made = true;
              --m_replacements_wanted;
              break;
            }
          }
        }
        doomed = put_back_locked(raw, raw->created_at);
        m_maint_cv.notify_one();  // its expiry may be the next deadline
      }
    } else if (abandoned) {
      // Given up because the pool is closing (stop_fd): not a connect error, no backoff.
    } else {
      ++m_stats.connect_errors;
      ++m_connect_failures_in_row;
      failure.time = std::chrono::system_clock::now();
      m_stats.last_error = failure;  // copied: `failure` is logged below, after unlocking
      if (done >= m_next_connect_at) {
        // The previous step's wait is over (or there was none): the next attempt waits one
        // step, and the step after it doubles.
        m_next_connect_at = done + m_backoff;
        m_backoff = std::min<duration>(m_backoff * 2, m_cfg.connect_backoff_max);
      }
      // Otherwise an attempt running alongside this one failed within the current step, which
      // already set the time of the next attempt: failing again inside it is the same outage,
      // and doubling again would make recovery wait longer than one step per wave (max_connecting
      // workers failing together). Attempts failing out of phase, each after the step the other
      // set, still double it every time.
      retry_in = m_next_connect_at - done;
    }
    refresh_gate_locked();  // a failed or discarded connect lowered total
    m_ready_cv.notify_all();
    const std::uint64_t failures_in_row = m_connect_failures_in_row;
    lk.unlock();
    // Logging and closing, outside the lock.
    doomed.reset();
    try {
      if (abandoned) {
        m_log->logger->debug(says_so ? "pqxxpool[{}]: {}" : "pqxxpool[{}]: connect given up as the pool closes: {}",
                             m_log->pool, failure.message);
      } else if (!failure.message.empty()) {
        m_log->logger->warn("pqxxpool[{}]: connect failed{}{} (failure {} in a row; next attempt in {} at the "
                            "earliest): {}", m_log->pool, failure.sqlstate.empty() ? "" : " with SQLSTATE ",
                            failure.sqlstate, failures_in_row, human(retry_in), failure.message);
      } else if (failures_before > 0) {
        m_log->logger->info("pqxxpool[{}]: connected again after {} failed attempts", m_log->pool,
                            failures_before);
      }
    } catch (...) {
      // A failing sink loses the line, not the connect worker.
    }
    lk.lock();
  }
}

time_point pool_core::maintenance_sweep_locked(time_point now, doomed_list& doomed, std::vector<slot*>& to_ping,
                                               std::vector<leak_note>& leaks) {
  time_point next = m_cfg.health_check_period.count() > 0 ? now + m_cfg.health_check_period : time_point::max();
  drain_cells_locked();  // parked connections are idle ones: expire, reap and ping them too
  // A connection parked after this sweep was used after `now`, so it cannot become reapable
  // before now + idle_timeout: waking then (while there are more than min_idle) finds it in time.
  if (m_cfg.idle_timeout.count() > 0 && total_locked() > m_cfg.min_idle)
    next = std::min(next, now + m_cfg.idle_timeout);
  auto take_idle_at = [this](std::size_t i) {
    slot* s = m_idle[i];
    m_idle.erase(m_idle.begin() + static_cast<std::ptrdiff_t>(i));
    ++m_in_use;
    return s;
  };
  // Retired idle connections (expired or of an old generation) close now.
  for (std::size_t i = 0; i < m_idle.size();) {
    if (is_retired_locked(*m_idle[i], now) && !serve_on_until_replaced_locked(*m_idle[i], now, true)) {
      const bool evicted = m_idle[i]->generation != generation();
      doomed.push_back(remove_slot_locked(take_idle_at(i), evicted ? close_reason::evicted : close_reason::max_lifetime));
    } else {
      ++i;
    }
  }
  // Idle reaping: the bottom of the stack is the least recently returned; never below min_idle.
  if (m_cfg.idle_timeout.count() > 0) {
    while (m_idle.size() > m_cfg.min_idle && now - m_idle.front()->last_used_at >= m_cfg.idle_timeout)
      doomed.push_back(remove_slot_locked(take_idle_at(0), close_reason::idle));
    if (m_idle.size() > m_cfg.min_idle) next = std::min(next, m_idle.front()->last_used_at + m_cfg.idle_timeout);
  }
  // Health pings for connections idle (not known alive) for a whole period.
  if (m_cfg.health_check_period.count() > 0) {
    for (std::size_t i = 0; i < m_idle.size();) {
      if (now - m_idle[i]->last_alive_at >= m_cfg.health_check_period) {
        to_ping.push_back(take_idle_at(i));
      } else {
        next = std::min(next, m_idle[i]->last_alive_at + m_cfg.health_check_period);
        ++i;
      }
    }
  }
  // Replacements ahead of expiry, and the next expiry to wake up for.
  if (m_cfg.max_lifetime.count() > 0) {
    for (const auto& s : m_slots) {
      const time_point replace_at = s->expires_at - m_expiry_lead;
      if (!s->replacement_requested && now >= replace_at) {
        s->replacement_requested = true;
        ++m_replacements_wanted;
      } else if (!s->replacement_requested) {
        next = std::min(next, replace_at);
      }
      if (s->expires_at > now) next = std::min(next, s->expires_at);
    }
    // A full pool: retire one idle connection that asked for a replacement now (see
    // early_retire_allowed_locked); an in-use one is retired on its return instead. When the
    // replacement is published, the maintenance thread is notified and may retire the next one.
    if (early_retire_allowed_locked()) {
      std::size_t first = m_idle.size();  // the idle one that asked and expires first
      for (std::size_t i = 0; i < m_idle.size(); ++i) {
        if (m_idle[i]->replacement_requested && (first == m_idle.size() || m_idle[i]->expires_at < m_idle[first]->expires_at))
          first = i;
      }
      if (first < m_idle.size() && next_to_retire_early_locked(*m_idle[first], now)) {
        if (!m_idle[first]->replacement_made) ++m_early_retired;
        doomed.push_back(remove_slot_locked(take_idle_at(first), close_reason::max_lifetime));
      }
    }
  }
  // Leak detection: each lease held past the threshold is reported once; otherwise wake up when
  // the oldest unreported lease could cross it (mark_leased_locked wakes us for earlier ones).
  if (m_leak_threshold > duration::zero()) {
    for (const auto& s : m_slots) {
      if (!s->leased || s->leak_reported) continue;
      const time_point due = s->leased_at + m_leak_threshold;
      if (now >= due) {
        s->leak_reported = true;
        ++m_stats.leaks_suspected;
        leaks.push_back({s->id, s->leased_where, now - s->leased_at});  // capacity reserved
      } else {
        next = std::min(next, due);
      }
    }
  }
  if (connect_needed_locked()) wake_connectors_locked();
  // Idle connections (drained from the cells) and waiters: wake one. Not before the oldest
  // waiter's own look (see look_at()): what was parked while it was within its window is a quick
  // returner's or a woken waiter's, and its own look takes what is left.
  if (!m_quick_parking || m_wait_head == nullptr || now >= look_at(*m_wait_head)) wake_idle_competitor_locked();
  return next;
}

void pool_core::maintenance_loop() {
  std::unique_lock<std::mutex> lk(m_mu);
  std::vector<slot*> resets;  // reserved once: m_reset_queue never holds more than max_size
  resets.reserve(m_cfg.max_size);
  std::vector<slot*> to_ping;
  to_ping.reserve(m_cfg.max_size);
  doomed_list doomed;
  doomed.reserve(m_cfg.max_size);
  std::vector<leak_note> leaks;  // never more than max_size: each slot is reported once per lease
  leaks.reserve(m_cfg.max_size);
  for (;;) {
    resets.assign(m_reset_queue.begin(), m_reset_queue.end());
    m_reset_queue.clear();  // keeps its capacity: give_back never allocates under the lock
    to_ping.clear();
    leaks.clear();
    if (m_closed) {
      for (slot* s : resets) doomed.push_back(remove_slot_locked(s, close_reason::closed));
      lk.unlock();
      return;  // doomed closes here
    }
    const time_point now = m_clock->now();
    const time_point next = maintenance_sweep_locked(now, doomed, to_ping, leaks);
    m_pinging = to_ping.size();
    if (doomed.empty() && resets.empty() && to_ping.empty() && leaks.empty()) {
      m_maint_wake = next;
      m_clock->wait_until(m_maint_cv, lk, next);
      m_maint_wake = time_point::min();  // awake: no one needs to notify
      continue;
    }
    lk.unlock();
    doomed.clear();
    for (const leak_note& leak : leaks) {
      try {
        m_log->logger->warn("pqxxpool[{}]: possible connection leak: connection {} leased at {}:{} has been held "
                            "for {} (leak_detection_threshold {})", m_log->pool, leak.id, leak.where.file,
                            leak.where.line, human(leak.held), human(m_leak_threshold));
      } catch (...) {
        // A failing sink loses the line, not the maintenance thread.
      }
    }
    // Pings first (those connections are idle ones callers may want), then rollbacks/resets,
    // one connection at a time, outside the lock. close() stops the batch between items.
    auto settle = [&](slot* s, bool ok, close_reason why, bool pinged) {
      retired gone;
      lk.lock();
      if (pinged) --m_pinging;
      if (ok) {
        s->last_alive_at = m_clock->coarse_now();
        gone = put_back_locked(s, s->last_alive_at);  // closes it instead if retired meanwhile
      } else {
        gone = remove_slot_locked(s, m_closed ? close_reason::closed : why);
      }
      lk.unlock();
    };
    auto closing = [&] {
      std::lock_guard<std::mutex> g(m_mu);
      return m_closed;
    };
    for (slot* s : to_ping) {
      const bool ok = !closing() && s->conn->validate(m_clock->now() + m_cfg.validation_timeout);
      settle(s, ok, close_reason::validation_failed, true);
    }
    for (slot* s : resets) {
      // finish_validation was set under m_mu before s was queued: the lock orders it before here.
      if (s->finish_validation) {
        s->finish_validation = false;
        const bool ok = !closing() && s->conn->finish_validation(s->validation_until);
        settle(s, ok, close_reason::validation_failed, false);
        continue;
      }
      const bool ok = !closing() && s->conn->reset(m_clock->now() + m_cfg.validation_timeout, m_cfg.reset);
      settle(s, ok, close_reason::broken, false);
    }
    lk.lock();
  }
}

}  // namespace pqxxpool::core
