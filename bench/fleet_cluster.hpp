#pragma once
// fleet_cluster.hpp — one simulated Aurora DSQL cluster for the fleet simulation: the
// cluster-wide token bucket for new connections (refill 100/s, capacity 1,000; beyond it a
// connect fails with SQLSTATE 53400), the connection limit (10,000; 53300), the server's
// 60-minute cap on a connection's age, and the bookkeeping the report needs (connects and
// rejections per second of fake time, how long pools take to fill, how long a full pool stays
// short of connections). Both engines of fleet_sim.cpp use it: the real pool cores (from their
// connect threads, concurrently: one mutex) and the discrete-event model (one thread).
//
// Thread-safety: every member may be called from any thread at once.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>
#include <vector>

#include "core/clock.hpp"

namespace pqxxpool::fleet {

using core::duration;
using core::time_point;

struct cluster_limits {
  double rate = 100;    // new connections per second (bucket refill)
  double burst = 1000;  // bucket capacity; the bucket starts full
  std::size_t max_connections = 10'000;
  bool enforce_max_connections = false;  // refuse with 53300 at the limit (see connect())
  duration server_max_age = std::chrono::minutes(60);
};

/// Everything a run measured. Times are seconds of fake time since the fleet started.
struct run_result {
  std::vector<std::uint32_t> ok;         // successful connects per second
  std::vector<std::uint32_t> rejected;   // 53400 rejections per second
  std::vector<double> admits;            // time of every successful connect
  std::uint64_t rejected_rate = 0;       // 53400
  std::uint64_t over_limit = 0;          // connects made with max_connections already open
  std::size_t max_open = 0;              // most connections open on the cluster at once
  double all_open_cold = -1;             // when pools × size were first all open (-1: never)
  double all_open_restart = -1;          // ... counted from the restart
  std::vector<double> fill_cold;         // per pool: start → first full (-1: never)
  std::vector<double> fill_restart;      // per pool: rebuild → first full (-1: never)
  double max_below = 0;                  // longest a full pool spent short of its size
  std::uint64_t drops = 0;               // times a full pool was short for > 0 s of fake time
  double max_age_closed = 0;             // oldest connection closed by its pool, s
  std::uint64_t past_server_age = 0;     // connections the server would have cut (≥ 60 min)
  double real_seconds = 0;               // wall-clock time of the run
  std::uint64_t steps = 0, wakeups = 0;  // core engine: clock steps and thread wake-ups
};

class cluster {
 public:
  enum class verdict { ok, rate_exceeded, too_many_connections };

  cluster(const cluster_limits& lim, std::size_t pools, std::size_t pool_size, time_point t0, duration length)
      : m_lim(lim),
        m_size(pool_size),
        m_t0(t0),
        m_token(static_cast<std::int64_t>(std::llround(1e9 / lim.rate))),
        m_cap(static_cast<std::int64_t>(std::llround(1e9 / lim.rate * lim.burst))),
        m_level(m_cap),
        m_last(t0),
        m_pools(pools) {
    const auto secs = static_cast<std::size_t>(std::chrono::duration_cast<std::chrono::seconds>(length).count()) + 1;
    m_res.ok.assign(secs, 0);
    m_res.rejected.assign(secs, 0);
    m_res.fill_cold.assign(pools, -1);
    m_res.fill_restart.assign(pools, -1);
  }

  /// A connect attempt at t by pool p: takes a token (integer nanoseconds of refill, so exact)
  /// and counts the connection as open, or says why the server refuses it.
  verdict connect(std::size_t p, time_point t) {
    std::lock_guard<std::mutex> g(m_mu);
    m_level = std::min(m_cap, m_level + (t - m_last).count());
    m_last = t;
    // Counted, not refused: a pool opens the replacement of an expired connection in the same
    // fake instant as it closes the old one (the close runs just after the pool's lock is
    // released), so a fleet sized exactly at the limit would see 53300 only from that race,
    // which a real connect (a TLS handshake later) rarely loses. Refused only when enforced.
    if (m_open >= m_lim.max_connections) {
      ++m_res.over_limit;
      if (m_lim.enforce_max_connections) return verdict::too_many_connections;
    }
    if (m_level < m_token) {
      ++m_res.rejected_rate;
      ++m_res.rejected[bin(t)];
      return verdict::rate_exceeded;
    }
    m_level -= m_token;
    ++m_res.ok[bin(t)];
    m_res.admits.push_back(secs(t));
    m_res.max_open = std::max(m_res.max_open, ++m_open);
    pool_track& pt = m_pools[p];
    if (++pt.open == m_size) {
      if (!pt.filled) {
        pt.filled = true;
        (pt.restarted ? m_res.fill_restart : m_res.fill_cold)[p] = secs(t) - secs(pt.started);
      } else if (pt.below) {
        const double short_for = secs(t) - secs(pt.below_since);
        m_res.max_below = std::max(m_res.max_below, short_for);
        if (short_for > 0) ++m_res.drops;
      }
      pt.below = false;
    }
    if (m_open == m_pools.size() * m_size && !m_all_open_seen) {
      m_all_open_seen = true;
      if (m_restart_at)
        m_res.all_open_restart = secs(t) - *m_restart_at;
      else
        m_res.all_open_cold = secs(t);
    }
    return verdict::ok;
  }

  /// Pool p closed a connection created at `created`, at t.
  void closed(std::size_t p, time_point created, time_point t) {
    std::lock_guard<std::mutex> g(m_mu);
    --m_open;
    m_res.max_age_closed = std::max(m_res.max_age_closed, std::chrono::duration<double>(t - created).count());
    if (t - created >= m_lim.server_max_age) ++m_res.past_server_age;
    pool_track& pt = m_pools[p];
    if (!pt.stopping && pt.filled && pt.open == m_size) {
      pt.below = true;
      pt.below_since = t;
    }
    --pt.open;
  }

  /// Whether the server still serves a connection created at `created` (it cuts them at 60 min).
  bool alive(time_point created, time_point t) {
    if (t - created < m_lim.server_max_age) return true;
    std::lock_guard<std::mutex> g(m_mu);
    ++m_res.past_server_age;
    return false;
  }

  /// Pool p starts (restart = rebuilt after a fleet-wide restart) at t.
  void pool_started(std::size_t p, time_point t, bool restart) {
    std::lock_guard<std::mutex> g(m_mu);
    pool_track& pt = m_pools[p];
    pt = pool_track{};
    pt.started = t;
    pt.restarted = restart;
  }
  /// Pool p is about to close: its closes are not shortfalls.
  void pool_stopping(std::size_t p) {
    std::lock_guard<std::mutex> g(m_mu);
    m_pools[p].stopping = true;
  }
  /// The fleet restarts at t: "all open" is measured again from here.
  void restarting(time_point t) {
    std::lock_guard<std::mutex> g(m_mu);
    m_restart_at = secs(t);
    m_all_open_seen = false;
  }

  /// The result, with shortfalls still open at `end` counted up to it.
  run_result finish(time_point end) {
    std::lock_guard<std::mutex> g(m_mu);
    for (const pool_track& pt : m_pools)
      if (pt.below) {
        m_res.max_below = std::max(m_res.max_below, secs(end) - secs(pt.below_since));
        ++m_res.drops;
      }
    return m_res;
  }

 private:
  struct pool_track {
    std::size_t open = 0;
    bool filled = false;  // reached its size since it started
    bool restarted = false;
    bool stopping = false;
    bool below = false;  // full once, short now
    time_point started{}, below_since{};
  };
  double secs(time_point t) const { return std::chrono::duration<double>(t - m_t0).count(); }
  std::size_t bin(time_point t) const {
    const auto s = static_cast<std::size_t>(std::chrono::duration_cast<std::chrono::seconds>(t - m_t0).count());
    return std::min(s, m_res.ok.size() - 1);
  }

  const cluster_limits m_lim;
  const std::size_t m_size;
  const time_point m_t0;
  const std::int64_t m_token;  // nanoseconds of refill per token
  const std::int64_t m_cap;    // bucket capacity in nanoseconds of refill
  std::mutex m_mu;
  // guarded by m_mu:
  std::int64_t m_level;
  time_point m_last;
  std::size_t m_open = 0;
  bool m_all_open_seen = false;
  std::optional<double> m_restart_at;
  std::vector<pool_track> m_pools;
  run_result m_res;
};

}  // namespace pqxxpool::fleet
