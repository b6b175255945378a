#pragma once
// fleet_model.hpp — the fleet simulation's options and its discrete-event model.
//
// The model is a single-threaded re-statement of what src/core/pool_core.cpp does for a pool
// that keeps min_idle = max_size connections and lends none, with connects that complete
// instantly in fake time. Per pool:
//
//  * a connection created at c expires at c + max_lifetime × (1 − U·lifetime_jitter), U drawn
//    from the pool's own std::mt19937_64 (seeded as the core's m_rng is) through
//    std::uniform_real_distribution<double>(0, 1), one draw per successful connect, in connect
//    order: the same code as connect_loop, so the same seed gives the same lifetimes;
//  * the maintenance thread wakes at the earliest expiry and closes the connection then
//    (maintenance_sweep_locked). It also wakes at each connection's replace-at instant (expiry
//    minus the expiry lead, expiry_lead_for: a tenth of the lifetime, at most 30 s) and marks it;
//    a full pool (always, here) retires one marked connection early while nothing is connecting
//    (early_retire_allowed_locked; the one that expires first, next_to_retire_early_locked),
//    and after each connect that fills the pool again the next marked one follows. (A
//    connection whose replacement is late serves on into its jitter only when no other one is
//    idle: with nothing lent, a pool down to its last connection while a connect runs; the
//    model leaves that out);
//  * a connect is attempted while total < max_size, never before
//    max(m_next_connect_at, m_next_rate_at): each attempt moves m_next_rate_at to start + 1 /
//    max_connect_rate; a failure sets m_next_connect_at = now + backoff and doubles the backoff
//    (connect_backoff_initial … connect_backoff_max); a success resets both (connect_loop);
//  * a timed wait that ends at d is served at d rounded up to the clock step (the core engine's
//    clock steps the same way), so both engines see the same instants.
//
// The two options marked "model only" are proposals the core does not implement.
//
// Health pings, rollbacks, idle reaping and max_connecting have no effect on when connections
// are opened in this setting (no leases; connects take no fake time) and are left out. Attempts
// by different pools at the same instant are taken in a random order (in the core engine the
// thread scheduler decides). The model assumes max_lifetime < the server's 60 minutes.

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <queue>
#include <random>
#include <vector>

#include "fleet_cluster.hpp"

namespace pqxxpool::fleet {

struct fleet_options {
  std::size_t instances = 1000;
  std::size_t pool_size = 10;  // min_idle = max_size
  std::chrono::milliseconds length{3 * 60 * 60 * 1000};
  std::chrono::milliseconds max_lifetime{55 * 60 * 1000};
  double jitter = 0.1;
  double max_connect_rate = 100;  // per pool; dsql::make_pool_config's default
  std::size_t max_connecting = 2;
  std::chrono::milliseconds backoff_initial{100};
  std::chrono::milliseconds backoff_max{10'000};
  std::chrono::milliseconds health_check{60'000};
  cluster_limits limits;
  duration step = std::chrono::milliseconds(1);  // clock step (0 = exact deadlines)
  std::optional<std::chrono::milliseconds> restart_at;
  std::uint64_t seed = 1;
  // pool_config::initial_lifetime_spread (the library's default, 0.9): the first pool_size
  // connections a pool opens after it starts draw their jitter from [0, max(jitter, spread)).
  double first_lifetime_spread = 0.9;
  // Model only (a proposal): each backoff wait is multiplied by (1 − U·backoff_jitter), U uniform
  // in [0, 1), from a generator of its own (the lifetime draws stay those of the core).
  double backoff_jitter = 0;
};

/// The fake epoch: far from time_point{}, which the core uses as "no backoff".
inline time_point sim_epoch() { return time_point(std::chrono::hours(1000)); }

/// Seed of instance i's pool in its gen-th incarnation (0 = first start). Never 0 (the core
/// reads 0 as "random").
inline std::uint64_t pool_seed(const fleet_options& o, std::size_t i, std::uint64_t gen) {
  std::uint64_t z = o.seed * 0x9E3779B97F4A7C15ULL + static_cast<std::uint64_t>(i) * 0xBF58476D1CE4E5B9ULL +
                    gen * 0x94D049BB133111EBULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return z != 0 ? z : 1;
}

/// t rounded up to the clock step (counted from the epoch).
inline time_point quantize(time_point t, duration step) {
  if (step <= duration::zero()) return t;
  const auto since = (t - sim_epoch()).count();
  const auto k = (since + step.count() - 1) / step.count();
  return sim_epoch() + step * k;
}

/// The core's expiry rule (connect_loop): created + max_lifetime × (1 − U·jitter).
inline time_point draw_expiry(std::mt19937_64& rng, time_point created, std::chrono::milliseconds max_lifetime,
                              double jitter) {
  const double j = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * jitter;
  return created +
         std::chrono::duration_cast<duration>(std::chrono::duration<double, std::nano>(max_lifetime) * (1.0 - j));
}

inline duration connect_spacing(double rate) {
  return rate > 0 ? std::chrono::duration_cast<duration>(std::chrono::duration<double>(1.0 / rate)) : duration::zero();
}

inline run_result run_model(const fleet_options& o) {
  const auto wall = std::chrono::steady_clock::now();
  const time_point t0 = sim_epoch();
  const time_point end = t0 + o.length;
  cluster cl(o.limits, o.instances, o.pool_size, t0, o.length);
  const duration spacing = connect_spacing(o.max_connect_rate);

  struct conn {
    std::uint64_t id;
    time_point created;
    time_point expires;
    bool marked = false;  // replace-at passed: retires early when the pool is full
  };
  struct mpool {
    std::mt19937_64 rng;
    std::vector<conn> conns;
    std::uint64_t gen = 0;
    std::uint64_t next_id = 1;
    std::size_t opened = 0;  // connections opened in this incarnation
    time_point next_connect_at{};
    time_point next_rate_at{};
    duration backoff{};
    bool attempt_queued = false;
  };
  enum class kind { attempt, expire, replace };
  const duration lead = o.max_lifetime.count() > 0
                            ? std::min<duration>(std::chrono::seconds(30), std::chrono::duration_cast<duration>(o.max_lifetime) / 10)
                            : duration::zero();
  struct event {
    time_point t;
    std::uint64_t tie;
    std::size_t pool;
    kind k;
    std::uint64_t gen;
    std::uint64_t conn;
    bool operator>(const event& o2) const { return t != o2.t ? t > o2.t : tie > o2.tie; }
  };
  std::priority_queue<event, std::vector<event>, std::greater<event>> q;
  std::mt19937_64 tie_rng(o.seed ^ 0x5DEECE66DULL);
  std::mt19937_64 backoff_rng(o.seed ^ 0xB0FFB0FFULL);
  std::vector<mpool> pools(o.instances);
  auto push = [&](time_point t, std::size_t i, kind k, std::uint64_t id) {
    q.push(event{t, tie_rng(), i, k, pools[i].gen, id});
  };
  auto start = [&](std::size_t i, std::uint64_t gen, time_point t) {
    mpool& p = pools[i];
    p = mpool{};
    p.rng.seed(pool_seed(o, i, gen));
    p.gen = gen;
    p.backoff = o.backoff_initial;
    cl.pool_started(i, t, gen > 0);
    p.attempt_queued = true;
    push(t, i, kind::attempt, 0);
  };
  // A connect worker notices a shortfall at `now`: it connects now if allowed, else waits.
  auto want = [&](std::size_t i, time_point now) {
    mpool& p = pools[i];
    if (p.attempt_queued || p.conns.size() >= o.pool_size) return;
    const time_point allowed = std::max(p.next_connect_at, p.next_rate_at);
    p.attempt_queued = true;
    push(allowed <= now ? now : quantize(allowed, o.step), i, kind::attempt, 0);
  };

  // A full pool retires the marked connection that expires first (the core's sweep, or its
  // publish-then-sweep; next_to_retire_early_locked).
  auto retire_early = [&](std::size_t i, time_point now) {
    mpool& p = pools[i];
    if (p.conns.size() < o.pool_size) return;
    auto it = p.conns.end();
    for (auto c = p.conns.begin(); c != p.conns.end(); ++c)
      if (c->marked && (it == p.conns.end() || c->expires < it->expires)) it = c;
    if (it == p.conns.end()) return;
    cl.closed(i, it->created, now);
    p.conns.erase(it);
    want(i, now);
  };

  for (std::size_t i = 0; i < o.instances; ++i) start(i, 0, t0);
  bool restarted = false;
  while (!q.empty()) {
    const event e = q.top();
    if (o.restart_at && !restarted && e.t > t0 + *o.restart_at) {
      const time_point tr = t0 + *o.restart_at;
      cl.restarting(tr);
      for (std::size_t i = 0; i < o.instances; ++i) {
        cl.pool_stopping(i);
        for (const conn& c : pools[i].conns) cl.closed(i, c.created, tr);
        start(i, pools[i].gen + 1, tr);
      }
      restarted = true;
      continue;
    }
    if (e.t > end) break;
    q.pop();
    mpool& p = pools[e.pool];
    if (e.gen != p.gen) continue;  // scheduled by an incarnation the restart ended
    if (e.k == kind::replace) {
      auto it = std::find_if(p.conns.begin(), p.conns.end(), [&](const conn& c) { return c.id == e.conn; });
      if (it == p.conns.end()) continue;
      it->marked = true;
      retire_early(e.pool, e.t);
      continue;
    }
    if (e.k == kind::expire) {
      auto it = std::find_if(p.conns.begin(), p.conns.end(), [&](const conn& c) { return c.id == e.conn; });
      if (it == p.conns.end()) continue;
      cl.closed(e.pool, it->created, e.t);
      p.conns.erase(it);
      want(e.pool, e.t);
      continue;
    }
    p.attempt_queued = false;
    if (p.conns.size() >= o.pool_size) continue;
    if (spacing > duration::zero()) p.next_rate_at = e.t + spacing;
    if (cl.connect(e.pool, e.t) == cluster::verdict::ok) {
      const double j = p.opened < o.pool_size ? std::max(o.jitter, o.first_lifetime_spread) : o.jitter;
      ++p.opened;
      const time_point expires = draw_expiry(p.rng, e.t, o.max_lifetime, j);
      const std::uint64_t id = p.next_id++;
      p.conns.push_back({id, e.t, expires});
      push(quantize(expires, o.step), e.pool, kind::expire, id);
      if (lead > duration::zero()) push(quantize(expires - lead, o.step), e.pool, kind::replace, id);
      p.backoff = o.backoff_initial;
      p.next_connect_at = time_point{};
      retire_early(e.pool, e.t);  // the pool is full again: the next marked one may go
    } else {
      duration wait = p.backoff;
      if (o.backoff_jitter > 0)
        wait = std::chrono::duration_cast<duration>(
            p.backoff * (1.0 - std::uniform_real_distribution<double>(0.0, 1.0)(backoff_rng) * o.backoff_jitter));
      p.next_connect_at = e.t + wait;
      p.backoff = std::min<duration>(p.backoff * 2, o.backoff_max);
    }
    want(e.pool, e.t);
  }
  run_result r = cl.finish(end);
  r.real_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  return r;
}

}  // namespace pqxxpool::fleet
