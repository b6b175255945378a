// fleet_sim.cpp — a fleet of pools against one Aurora DSQL cluster, in fake time.
//
// N application instances, each with a pool of 10 (min_idle = max_size = 10, as a busy service
// keeps it), all against one cluster that accepts 100 new connections per second with a burst of
// 1,000 (a shared token bucket; beyond it a connect fails with SQLSTATE 53400 and the pool backs
// off), for hours of fake time. Every successful connect is recorded at its fake time; the
// program prints the peak and mean reconnects per second, the 53400 rejections, how long pools
// take to fill and how long a full pool stays short, and writes the per-second curve as CSV.
//
// Two engines (docs/benchmarks.md, "Fleet simulation"):
//   core   real pqxxpool::core::pool_core objects (their connect and maintenance threads, the
//          configuration dsql::make_pool_config builds) on one shared fake clock (fleet_clock.hpp)
//          that moves only when every pool thread is blocked with no wake-up pending;
//   model  the discrete-event re-statement of the same rules (fleet_model.hpp), single-threaded.
//
// Usage: pqxxpool_fleet_sim [--engine core|model] [--scenario a|b|c] [options] [--csv FILE]
//        pqxxpool_fleet_sim --smoke        (the ctest smoke test: small fleets, invariants only)
// Run with --help for the options. bench/fleet.sh runs the documented scenarios and the plot.

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <spdlog/logger.h>

#include "core/pool_core.hpp"
#include "fleet_clock.hpp"
#include "fleet_cluster.hpp"
#include "fleet_model.hpp"
#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/dsql_pool.hpp"
#include "pqxxpool/errors.hpp"

// ---------------------------------------------------------------------------------------------
// Wake-up tracking: std::condition_variable::notify_one/notify_all end in these two functions.
// Defined in the executable, they take precedence over glibc's (the dynamic linker binds
// libstdc++'s calls to the executable's definition); each reports the signal to the active fake
// clock first, then calls glibc's. With no active clock they only forward.

namespace {

std::atomic<pqxxpool::fleet::sim_clock*> g_clock{nullptr};

using cond_fn = int (*)(pthread_cond_t*);

cond_fn glibc_cond(const char* name) {
  // pthread_cond_* have two versions in glibc; the current one is GLIBC_2.3.2 on every 64-bit
  // architecture (plain dlsym may return the old one).
  void* sym = dlvsym(RTLD_NEXT, name, "GLIBC_2.3.2");
  if (sym == nullptr) sym = dlsym(RTLD_NEXT, name);
  if (sym == nullptr) {
    std::fprintf(stderr, "fleet_sim: cannot find glibc's %s\n", name);
    std::abort();
  }
  cond_fn f = nullptr;
  static_assert(sizeof f == sizeof sym);
  std::memcpy(&f, &sym, sizeof f);
  return f;
}

}  // namespace

extern "C" int pthread_cond_signal(pthread_cond_t* c) {
  static const cond_fn real = glibc_cond("pthread_cond_signal");
  if (pqxxpool::fleet::sim_clock* clk = g_clock.load(std::memory_order_acquire)) clk->note_signal(c, false);
  return real(c);
}

extern "C" int pthread_cond_broadcast(pthread_cond_t* c) {
  static const cond_fn real = glibc_cond("pthread_cond_broadcast");
  if (pqxxpool::fleet::sim_clock* clk = g_clock.load(std::memory_order_acquire)) clk->note_signal(c, true);
  return real(c);
}

namespace pqxxpool::fleet {
namespace {

using namespace std::chrono_literals;

// ---------------------------------------------------------------------------------------------
// Fake connections and connector over the shared cluster.

class sim_physical final : public core::physical {
 public:
  sim_physical(cluster& cl, sim_clock& clk, std::size_t pool, time_point created)
      : m_cluster(cl), m_clock(clk), m_pool(pool), m_created(created) {}
  ~sim_physical() override { m_cluster.closed(m_pool, m_created, m_clock.now()); }
  sim_physical(const sim_physical&) = delete;
  sim_physical& operator=(const sim_physical&) = delete;
  core::return_state check_return() noexcept override { return core::return_state::clean; }
  bool validate(time_point) noexcept override { return m_cluster.alive(m_created, m_clock.now()); }
  bool reset(time_point, const std::function<void(connection&)>&) noexcept override { return true; }
  connection* user_connection() noexcept override { return nullptr; }

 private:
  cluster& m_cluster;
  sim_clock& m_clock;
  std::size_t m_pool;
  time_point m_created;
};

/// Connects instantly in fake time, or fails as DSQL does when the cluster refuses.
class sim_connector final : public core::connector {
 public:
  sim_connector(cluster& cl, sim_clock& clk, std::size_t pool) : m_cluster(cl), m_clock(clk), m_pool(pool) {}
  std::unique_ptr<core::physical> connect(const core::connect_limits&) override {
    const time_point t = m_clock.now();
    switch (m_cluster.connect(m_pool, t)) {
      case cluster::verdict::ok:
        return std::make_unique<sim_physical>(m_cluster, m_clock, m_pool, t);
      case cluster::verdict::rate_exceeded:
        throw connect_error("FATAL:  53400: Unable to accept connection, rate exceeded.", "53400");
      case cluster::verdict::too_many_connections:
        break;
    }
    throw connect_error("FATAL:  53300: Unable to accept connection, too many open connections.", "53300");
  }

 private:
  cluster& m_cluster;
  sim_clock& m_clock;
  std::size_t m_pool;
};

/// The pool_config every instance uses: what dsql::make_pool_config builds for a DSQL cluster
/// (so max_connect_rate is its default, 100/s), with min_idle = max_size = pool_size and the
/// simulation's lifetime, jitter and connect settings laid over it.
pool_config base_config(const fleet_options& o) {
  dsql::config d;
  d.host = "abcdefghijklmnopqrstuvwxyz";  // a cluster id; never contacted
  d.region = "us-east-1";
  d.credentials = std::make_shared<aws::static_credentials>(aws::credentials{"AKIDFLEETSIM", "not-a-secret", "", {}});
  pool_config c = dsql::make_pool_config(d, 150000);
  if (o.max_connect_rate != c.max_connect_rate)
    std::fprintf(stderr, "fleet_sim: note: max_connect_rate %g instead of dsql::make_pool_config's %g\n",
                 o.max_connect_rate, c.max_connect_rate);
  c.max_size = o.pool_size;
  c.min_idle = o.pool_size;
  c.max_lifetime = o.max_lifetime;
  c.lifetime_jitter = o.jitter;
  c.initial_lifetime_spread = o.first_lifetime_spread;
  c.max_connecting = o.max_connecting;
  c.max_connect_rate = o.max_connect_rate;
  c.connect_backoff_initial = o.backoff_initial;
  c.connect_backoff_max = o.backoff_max;
  c.health_check_period = o.health_check;
  auto quiet = std::make_shared<spdlog::logger>("fleet");  // no sinks, and off: nothing formatted
  quiet->set_level(spdlog::level::off);
  c.logger = quiet;
  c.validate();
  return c;
}

run_result run_core(const fleet_options& o, bool progress) {
  if (o.backoff_jitter > 0)
    throw std::invalid_argument("--backoff-jitter is a proposal the core does not implement: model only");
  const auto wall = std::chrono::steady_clock::now();
  const time_point t0 = sim_epoch();
  const time_point end = t0 + o.length;
  auto clk = std::make_shared<sim_clock>(t0);
  g_clock.store(clk.get(), std::memory_order_release);
  cluster cl(o.limits, o.instances, o.pool_size, t0, o.length);
  const pool_config base = base_config(o);
  const std::size_t threads = std::min(o.max_connecting, o.pool_size) + 1;  // connect workers + maintenance
  std::vector<core::pool_core*> pools(o.instances, nullptr);
  std::vector<std::uint64_t> gens(o.instances, 0);

  auto start_pool = [&](std::size_t i) {
    pool_config c = base;
    c.name = "fleet-" + std::to_string(i);
    cl.pool_started(i, clk->now(), gens[i] > 0);
    clk->add_threads(threads);
    pools[i] =
        new core::pool_core(std::move(c), std::make_unique<sim_connector>(cl, *clk, i), clk, pool_seed(o, i, gens[i]));
  };
  auto stop_pool = [&](std::size_t i) {
    cl.pool_stopping(i);
    pools[i]->destroy_from_owner();  // close(), join its threads; no leases, so deleted now
    pools[i] = nullptr;
    clk->remove_threads(threads);
  };

  for (std::size_t i = 0; i < o.instances; ++i) start_pool(i);
  clk->wait_quiescent();
  bool restarted = false;
  auto next_report = t0 + 15min;
  for (;;) {
    const std::optional<time_point> due = clk->next_deadline();
    const time_point next = due ? quantize(*due, o.step) : time_point::max();
    if (o.restart_at && !restarted && next > t0 + *o.restart_at) {
      const time_point tr = t0 + *o.restart_at;
      clk->advance_to(tr);
      clk->wait_quiescent();
      cl.restarting(tr);
      for (std::size_t i = 0; i < o.instances; ++i) stop_pool(i);  // all closed at once …
      for (std::size_t i = 0; i < o.instances; ++i) {              // … then all rebuilt at once
        ++gens[i];
        start_pool(i);
      }
      clk->wait_quiescent();
      restarted = true;
      continue;
    }
    if (next > end) {
      clk->advance_to(end);
      clk->wait_quiescent();
      break;
    }
    clk->advance_to(next);
    clk->wait_quiescent();
    if (progress && next >= next_report) {
      const auto [steps, wakeups] = clk->counters();
      std::fprintf(stderr, "  fake %3.0f min  real %6.1f s  steps %llu  wake-ups %llu\n",
                   std::chrono::duration<double, std::ratio<60>>(next - t0).count(),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count(),
                   static_cast<unsigned long long>(steps), static_cast<unsigned long long>(wakeups));
      next_report += 15min;
    }
  }
  run_result r = cl.finish(end);
  const auto [steps, wakeups] = clk->counters();
  r.steps = steps;
  r.wakeups = wakeups;
  for (std::size_t i = 0; i < o.instances; ++i) stop_pool(i);
  g_clock.store(nullptr, std::memory_order_release);
  r.real_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall).count();
  return r;
}

// ---------------------------------------------------------------------------------------------
// The report.

struct window_stats {
  std::uint32_t peak = 0;
  std::size_t peak_at = 0;  // second
  double mean = 0;
  double max_minute_mean = 0;  // largest mean over an aligned whole minute
  std::size_t minutes = 0, zero_minutes = 0;
};

/// Connects per second over the seconds [from, to) that `keep` accepts.
template <class Keep>
window_stats stats_over(const std::vector<std::uint32_t>& bins, std::size_t from, std::size_t to, Keep keep) {
  window_stats w;
  std::uint64_t sum = 0;
  std::size_t n = 0;
  to = std::min(to, bins.size());
  for (std::size_t s = from; s < to; ++s) {
    if (!keep(s)) continue;
    sum += bins[s];
    ++n;
    if (bins[s] > w.peak) {
      w.peak = bins[s];
      w.peak_at = s;
    }
  }
  w.mean = n > 0 ? static_cast<double>(sum) / static_cast<double>(n) : 0;
  for (std::size_t m = from / 60; (m + 1) * 60 <= to; ++m) {
    if (m * 60 < from) continue;
    bool all = true;
    std::uint64_t msum = 0;
    for (std::size_t s = m * 60; s < (m + 1) * 60; ++s) {
      all = all && keep(s);
      msum += bins[s];
    }
    if (!all) continue;
    ++w.minutes;
    if (msum == 0) ++w.zero_minutes;
    w.max_minute_mean = std::max(w.max_minute_mean, static_cast<double>(msum) / 60.0);
  }
  return w;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return -1;
  std::sort(v.begin(), v.end());
  const auto i = static_cast<std::size_t>(std::ceil(p * static_cast<double>(v.size()))) - 1;
  return v[std::min(i, v.size() - 1)];
}

/// Largest excess of admitted connects over what the bucket allows in any window
/// [t_i, t_j]: count − (burst + rate·(t_j − t_i)). ≤ 0 means the bucket was never overdrawn.
/// Checked from the admit times alone, independently of the bucket's own arithmetic.
double bucket_excess(const std::vector<double>& admits, const cluster_limits& lim) {
  double worst = -lim.burst;
  double min_f = 0;  // min over i of (i − rate·t_i), i counted from 0
  for (std::size_t j = 0; j < admits.size(); ++j) {
    const double fj = static_cast<double>(j) - lim.rate * admits[j];
    min_f = j == 0 ? fj : std::min(min_f, fj);
    worst = std::max(worst, fj - min_f + 1 - lim.burst);
  }
  return worst;
}

std::string fmt_g(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

void print_report(const std::string& label, const std::string& engine, const fleet_options& o, const run_result& r) {
  const std::size_t len = r.ok.size() - 1;  // whole seconds of the run
  const std::size_t steady_from = 600;      // 10 min: after the cold start
  const std::optional<std::size_t> rs =
      o.restart_at ? std::optional<std::size_t>(static_cast<std::size_t>(o.restart_at->count() / 1000)) : std::nullopt;
  auto not_restart = [&](std::size_t s) { return !rs || s < *rs || s >= *rs + 600; };
  const window_stats all = stats_over(r.ok, 0, len, [](std::size_t) { return true; });
  const window_stats steady = stats_over(r.ok, steady_from, len, not_restart);
  std::uint64_t total = 0;
  for (std::uint32_t v : r.ok) total += v;
  const double cold_end = r.all_open_cold >= 0 ? r.all_open_cold : static_cast<double>(len);
  std::uint64_t cold_rej = 0, cold_peak_attempts = 0;
  for (std::size_t s = 0; s <= static_cast<std::size_t>(cold_end) && s < r.ok.size(); ++s) {
    cold_rej += r.rejected[s];
    cold_peak_attempts = std::max<std::uint64_t>(cold_peak_attempts, r.ok[s] + r.rejected[s]);
  }
  std::vector<double> filled;
  std::size_t never = 0;
  for (double f : r.fill_cold) {
    if (f >= 0)
      filled.push_back(f);
    else
      ++never;
  }
  const double long_run = static_cast<double>(o.instances * o.pool_size) /
                          (std::chrono::duration<double>(o.max_lifetime).count() * (1 - o.jitter / 2));
  const double excess = bucket_excess(r.admits, o.limits);

  std::printf("== %s (engine %s): %zu instances x %zu, %.0f min, max_lifetime %.1f min, jitter %g%s%s%s\n",
              label.c_str(), engine.c_str(), o.instances, o.pool_size, static_cast<double>(o.length.count()) / 60000.0,
              static_cast<double>(o.max_lifetime.count()) / 60000.0, o.jitter,
              o.restart_at ? (", restart at " + std::to_string(o.restart_at->count() / 60000) + " min").c_str() : "",
              o.first_lifetime_spread > 0 ? (", first lifetimes spread " + fmt_g(o.first_lifetime_spread)).c_str() : "",
              o.backoff_jitter > 0 ? (", backoff jitter " + fmt_g(o.backoff_jitter)).c_str() : "");
  std::printf("connects total                 %llu\n", static_cast<unsigned long long>(total));
  std::printf("peak connects/s (whole run)    %u at %zu s\n", all.peak, all.peak_at);
  std::printf("peak connects/s (steady)       %u at %zu s   [steady = 600 s .. end%s]\n", steady.peak, steady.peak_at,
              rs ? ", without the 600 s after the restart" : "");
  std::printf("mean connects/s (steady)       %.2f   (long-run expectation %.2f)\n", steady.mean, long_run);
  std::printf("largest 1-minute mean (steady) %.2f/s\n", steady.max_minute_mean);
  std::printf("minutes with no connect        %zu of %zu (steady)\n", steady.zero_minutes, steady.minutes);
  std::printf("53400 rejections               %llu   (cold start %llu)\n",
              static_cast<unsigned long long>(r.rejected_rate), static_cast<unsigned long long>(cold_rej));
  std::printf("cold start: all open after     %.2f s\n", r.all_open_cold);
  std::printf("cold start: pool full after    p50 %.2f s  p99 %.2f s  max %.2f s  (never: %zu)\n",
              percentile(filled, 0.5), percentile(filled, 0.99),
              filled.empty() ? -1 : *std::max_element(filled.begin(), filled.end()), never);
  std::printf("cold start: peak attempts/s    %llu (connects + 53400)\n",
              static_cast<unsigned long long>(cold_peak_attempts));
  if (rs) {
    const window_stats after = stats_over(r.ok, *rs, *rs + 600, [](std::size_t) { return true; });
    std::uint64_t rej = 0;
    for (std::size_t s = *rs; s < std::min(*rs + 600, r.rejected.size()); ++s) rej += r.rejected[s];
    std::vector<double> rf;
    for (double f : r.fill_restart)
      if (f >= 0) rf.push_back(f);
    std::printf("restart: peak connects/s       %u at %zu s\n", after.peak, after.peak_at);
    std::printf("restart: all open after        %.2f s\n", r.all_open_restart);
    std::printf("restart: pool full after       p50 %.2f s  max %.2f s  (never: %zu)\n", percentile(rf, 0.5),
                rf.empty() ? -1 : *std::max_element(rf.begin(), rf.end()), o.instances - rf.size());
    std::printf("restart: 53400 in next 600 s   %llu\n", static_cast<unsigned long long>(rej));
  }
  std::printf("max time a full pool was short %.3f s   (%llu shortfalls longer than 0 s)\n", r.max_below,
              static_cast<unsigned long long>(r.drops));
  std::printf("max connections open           %zu (limit %zu%s; connects at the limit: %llu)\n", r.max_open,
              o.limits.max_connections, o.limits.enforce_max_connections ? ", enforced" : ", not enforced",
              static_cast<unsigned long long>(r.over_limit));
  std::printf("oldest connection closed       %.2f min; past the server's 60 min: %llu\n", r.max_age_closed / 60,
              static_cast<unsigned long long>(r.past_server_age));
  std::printf("bucket overdrawn               %s (worst window excess %.3f)\n", excess > 1e-6 ? "YES" : "no", excess);
  std::printf("runtime                        %.1f s real", r.real_seconds);
  if (engine == "core")
    std::printf(", %llu clock steps, %llu thread wake-ups", static_cast<unsigned long long>(r.steps),
                static_cast<unsigned long long>(r.wakeups));
  std::printf("\n");
  std::fflush(stdout);
}

void write_csv(const std::string& path, const run_result& r) {
  std::FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) throw std::runtime_error("cannot write " + path);
  std::fprintf(f, "second,connects,rejected_53400\n");
  for (std::size_t s = 0; s + 1 < r.ok.size(); ++s) std::fprintf(f, "%zu,%u,%u\n", s, r.ok[s], r.rejected[s]);
  if (std::fclose(f) != 0) throw std::runtime_error("cannot write " + path);
}

// ---------------------------------------------------------------------------------------------
// The smoke test (ctest, label unit): small fleets, invariants only, no timing.

int smoke() {
  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
    if (!ok) ++failures;
  };
  {
    // Contention: 10 pools of 10 against a bucket of 10/s with a burst of 20, short lifetimes,
    // a fleet-wide restart at 5 min. Exercises 53400, the backoff, expiries and rebuilding.
    fleet_options o;
    o.instances = 10;
    o.length = 10min;
    o.max_lifetime = 3min;
    o.limits.rate = 10;
    o.limits.burst = 20;
    o.limits.max_connections = 100;
    o.restart_at = 5min;
    const run_result r = run_core(o, false);
    print_report("smoke: contention", "core", o, r);
    check(bucket_excess(r.admits, o.limits) <= 1e-6, "the bucket is never overdrawn");
    check(std::all_of(r.fill_cold.begin(), r.fill_cold.end(), [](double f) { return f >= 0; }),
          "every pool reaches 10 connections after the cold start");
    check(std::all_of(r.fill_restart.begin(), r.fill_restart.end(), [](double f) { return f >= 0; }),
          "every pool reaches 10 connections after the restart");
    check(r.rejected_rate > 0, "some connects were refused with 53400 (and retried)");
    check(r.max_open <= o.instances * (o.pool_size + 1),
          "never more than one connection per pool beyond 10 open (a replacement and its predecessor's close)");
    check(r.past_server_age == 0 && r.max_age_closed <= 180.0 + 1e-9, "no connection outlives max_lifetime");
    check(r.admits.size() > 2 * o.instances * o.pool_size,
          "connections expired and were replaced (" + std::to_string(r.admits.size()) + " connects)");
  }
  {
    // No contention: the real cores and the model must open the very same connections at the
    // very same fake instants (same seeds, so the same lifetimes).
    fleet_options o;
    o.instances = 10;
    o.length = 10min;
    o.max_lifetime = 2min;
    o.jitter = 0.3;
    const run_result a = run_core(o, false);
    const run_result b = run_model(o);
    check(a.admits.size() > 200,
          "connections expired and were replaced (" + std::to_string(a.admits.size()) + " connects)");
    std::vector<double> x = a.admits, y = b.admits;
    std::sort(x.begin(), x.end());
    std::sort(y.begin(), y.end());
    check(x == y, "core and model open connections at the same fake instants (" + std::to_string(x.size()) + " vs " +
                      std::to_string(y.size()) + ")");
    check(a.rejected_rate == 0 && b.rejected_rate == 0, "no 53400 without contention");
  }
  std::printf("%s\n", failures == 0 ? "smoke: all checks passed" : "smoke: FAILED");
  return failures == 0 ? 0 : 1;
}

// ---------------------------------------------------------------------------------------------

void usage(int code) {
  std::printf(
      "Usage: pqxxpool_fleet_sim [options]\n"
      "  --engine core|model       real pool cores on a shared fake clock (default), or the model\n"
      "  --scenario a|b|c          a: jitter 0.1; b: jitter 0; c: jitter 0.1 + restart at 90 min\n"
      "  --label NAME              name in the report (default: the scenario)\n"
      "  --instances N             application instances, one pool each (1000)\n"
      "  --pool-size N             min_idle = max_size (10)\n"
      "  --minutes M               fake time to simulate (180)\n"
      "  --lifetime-min M          max_lifetime in minutes (55)\n"
      "  --jitter J                lifetime_jitter (0.1)\n"
      "  --restart-at-min M        close and rebuild every pool at M minutes (none)\n"
      "  --max-connecting N        connect threads per pool (2)\n"
      "  --max-connect-rate R      per-pool connects per second (100, dsql::make_pool_config's)\n"
      "  --health-check-s S        health_check_period (60)\n"
      "  --bucket-rate R           cluster: new connections per second (100)\n"
      "  --bucket-burst B          cluster: burst (1000)\n"
      "  --cluster-limit N         cluster: most open connections (10000; counted, not enforced)\n"
      "  --enforce-limit           refuse connects beyond --cluster-limit with 53300\n"
      "  --step-ms S               clock step: deadlines are served rounded up to it (1; 0 = exact)\n"
      "  --seed N                  seeds of the pools' lifetime draws (1)\n"
      "  --first-lifetime-spread F pool_config::initial_lifetime_spread: a pool's first pool-size\n"
      "                            connections draw their jitter from [0, max(jitter, F)) (0.9;\n"
      "                            0 = the behaviour before it existed)\n"
      "  --backoff-jitter F        model only (a proposal): each connect backoff wait is\n"
      "                            multiplied by (1 - U*F), U uniform in [0, 1)\n"
      "  --csv FILE                per-second connects and 53400 rejections\n"
      "  --smoke                   run the smoke test (small fleets, invariants) and exit\n");
  std::exit(code);
}

int run(int argc, char** argv) {
  fleet_options o;
  std::string engine = "core", label, csv;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    auto num = [&]() { return std::stod(val()); };
    auto count = [&]() { return static_cast<std::size_t>(std::stoull(val())); };
    auto ms = [&](double unit_ms) { return std::chrono::milliseconds(std::llround(num() * unit_ms)); };
    if (a == "--help" || a == "-h")
      usage(0);
    else if (a == "--smoke")
      return smoke();
    else if (a == "--engine")
      engine = val();
    else if (a == "--label")
      label = val();
    else if (a == "--csv")
      csv = val();
    else if (a == "--scenario") {
      const std::string s = val();
      if (s == "a") {
        o.jitter = 0.1;
      } else if (s == "b") {
        o.jitter = 0;
      } else if (s == "c") {
        o.jitter = 0.1;
        o.restart_at = 90min;
      } else {
        usage(2);
      }
      if (label.empty()) label = s;
    } else if (a == "--instances")
      o.instances = count();
    else if (a == "--pool-size")
      o.pool_size = count();
    else if (a == "--minutes")
      o.length = ms(60'000);
    else if (a == "--lifetime-min")
      o.max_lifetime = ms(60'000);
    else if (a == "--jitter")
      o.jitter = num();
    else if (a == "--restart-at-min")
      o.restart_at = ms(60'000);
    else if (a == "--max-connecting")
      o.max_connecting = count();
    else if (a == "--max-connect-rate")
      o.max_connect_rate = num();
    else if (a == "--health-check-s")
      o.health_check = ms(1000);
    else if (a == "--bucket-rate")
      o.limits.rate = num();
    else if (a == "--bucket-burst")
      o.limits.burst = num();
    else if (a == "--cluster-limit")
      o.limits.max_connections = count();
    else if (a == "--enforce-limit")
      o.limits.enforce_max_connections = true;
    else if (a == "--step-ms")
      o.step = std::chrono::duration_cast<duration>(std::chrono::duration<double, std::milli>(num()));
    else if (a == "--seed")
      o.seed = std::stoull(val());
    else if (a == "--first-lifetime-spread")
      o.first_lifetime_spread = num();
    else if (a == "--backoff-jitter")
      o.backoff_jitter = num();
    else
      usage(2);
  }
  if (label.empty()) label = "custom";
  if (engine != "core" && engine != "model") usage(2);
  if (o.restart_at && *o.restart_at >= o.length)
    throw std::invalid_argument("--restart-at-min must be within --minutes");
  const run_result r = engine == "core" ? run_core(o, true) : run_model(o);
  print_report(label, engine, o, r);
  if (!csv.empty()) write_csv(csv, r);
  return 0;
}

}  // namespace
}  // namespace pqxxpool::fleet

int main(int argc, char** argv) {
  try {
    return pqxxpool::fleet::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fleet_sim: %s\n", e.what());
    return 1;
  }
}
