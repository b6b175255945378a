// `pqxxpool bench`: the scenario runner of the performance issue. Runs load scenarios against a
// real server through pqxxpool and through the naive pool of bench/naive_pool.hpp (the yardstick
// every performance goal is a ratio against), in the same process, interleaved run after run,
// and prints one JSON line per scenario case and pool (medians over the runs) and one summary
// line per case with the ratios pqxxpool/naive. docs/benchmarks.md ("Scenario runner") documents
// the scenarios, the fields, and how the numbers are taken.
//
// Cases (pool of 4 unless said):
//   cycle_t1, cycle_t16         acquire + release, no query; 1 and 16 threads
//   select1_t4, select1_t16     acquire, SELECT 1 (pqxx::nontransaction), release; 4 and 16 threads
//   contended_t16               16 threads each holding a connection for SELECT pg_sleep(0.001)
//   recycle_t8, recycle_off_t8  8 threads, SELECT 1, max_lifetime 1 s, and the same with no limit
//   recycle_t3                  3 threads on the pool of 4 with max_lifetime 1 s (waited_for_connect)
//   spike_t50                   50 threads arrive at once at an empty pool of max 50 whose connects
//                               take 150 ms more (a before_connect sleep); one pg_sleep(0.002) each
//
// Acquire latency: two steady_clock reads around every acquire, the same code for both pools,
// recorded into a per-thread latency_histogram (latency_histogram.hpp: every acquire counted,
// quantiles within 0.78 %, exact maximum), merged after the threads end.
//
// Exit codes: 0 every operation succeeded, 1 an operation or a pool failed, 2 bad command line,
// no server given, or an output file that cannot be written.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <sys/resource.h>

#include <libpq-fe.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>
#include <pqxx/connection>
#include <pqxx/nontransaction>
#include <pqxx/version>

#include "commands.hpp"
#include "duration.hpp"
#include "latency_histogram.hpp"
#include "naive_pool.hpp"
#include "pqxxpool/pqxxpool.hpp"

namespace pqxxpool_cli {

namespace {

using clock_type = std::chrono::steady_clock;
using json = nlohmann::ordered_json;
using std::chrono::milliseconds;

constexpr milliseconds acquire_timeout{30'000};
constexpr milliseconds ready_timeout{30'000};
/// pqxxpool's default max_lifetime; the naive pool gets the same, so both read a clock on return.
constexpr milliseconds long_lifetime{55 * 60 * 1000};
constexpr milliseconds recycle_lifetime{1'000};
constexpr milliseconds spike_connect_delay{150};
/// No validation round trip and no background ping during a run (as in bench/pool_bench.cpp).
constexpr milliseconds no_checks{3'600'000};
/// How long a spike run waits for pqxxpool's connects still in flight after the last thread ends.
constexpr milliseconds settle_timeout{2'000};
constexpr milliseconds failure_pause{10};

const std::vector<std::string> scenario_names = {"cycle", "select1", "contended", "recycle", "spike"};

struct bench_options {
  std::string conninfo;
  std::vector<std::string> scenarios;
  milliseconds duration{3'000};
  std::size_t runs = 3;
  std::string pools = "both";
  std::string out;
  std::string latencies_out;
  std::string log_level = "error";
};

/// One measured configuration of a scenario; every case runs once per pool per run.
struct case_def {
  std::string id;  // e.g. "select1_t16": scenario and thread count, unique
  std::string scenario;
  std::size_t threads = 1;
  std::size_t pool_size = 4;
  std::string query;                          // "" = acquire and release only
  milliseconds max_lifetime = long_lifetime;  // 0 = no limit
  bool spike = false;                         // cold pool (min_idle 0), slow connects, one operation per thread
};

std::vector<case_def> cases_of(const std::string& scenario) {
  const std::string select1 = "SELECT 1";
  if (scenario == "cycle")
    return {{"cycle_t1", "cycle", 1, 4, "", long_lifetime, false},
            {"cycle_t16", "cycle", 16, 4, "", long_lifetime, false}};
  if (scenario == "select1")
    return {{"select1_t4", "select1", 4, 4, select1, long_lifetime, false},
            {"select1_t16", "select1", 16, 4, select1, long_lifetime, false}};
  if (scenario == "contended")
    return {{"contended_t16", "contended", 16, 4, "SELECT pg_sleep(0.001)", long_lifetime, false}};
  if (scenario == "recycle")
    return {{"recycle_t8", "recycle", 8, 4, select1, recycle_lifetime, false},
            {"recycle_off_t8", "recycle", 8, 4, select1, milliseconds{0}, false},
            {"recycle_t3", "recycle", 3, 4, select1, recycle_lifetime, false}};
  if (scenario == "spike") return {{"spike_t50", "spike", 50, 50, "SELECT pg_sleep(0.002)", long_lifetime, true}};
  return {};
}

// --- the two pools behind one interface ----------------------------------------------------------

/// Counters read before and after the measured phase of a run.
struct pool_counters {
  std::uint64_t connections_opened = 0;
  std::optional<std::uint64_t> waited_acquires;     // pqxxpool only
  std::optional<std::uint64_t> waited_for_connect;  // pqxxpool only
};

class pqxxpool_variant {
 public:
  static constexpr const char* name = "pqxxpool";

  pqxxpool_variant(const case_def& c, const std::string& conninfo, std::shared_ptr<spdlog::logger> logger)
      : m_pool(make_config(c, conninfo, std::move(logger))), m_spike(c.spike) {}

  /// Opens the pool's min_idle connections (all of them; none for the spike).
  void prepare() {
    if (!m_spike) m_pool.wait_ready(ready_timeout);
  }
  pqxxpool::lease acquire() { return m_pool.acquire(); }
  /// Spike: lets connects that were in flight when the last thread ended finish, so they count.
  void settle() {
    if (!m_spike) return;
    const clock_type::time_point deadline = clock_type::now() + settle_timeout;
    while (m_pool.stats().connecting > 0 && clock_type::now() < deadline) std::this_thread::sleep_for(milliseconds{5});
  }
  [[nodiscard]] pool_counters counters() const {
    const pqxxpool::pool_stats s = m_pool.stats();
    return {s.connections_created, s.waited_acquires, s.waited_for_connect};
  }

 private:
  static pqxxpool::pool_config make_config(const case_def& c, const std::string& conninfo,
                                           std::shared_ptr<spdlog::logger> logger) {
    pqxxpool::pool_config cfg;
    cfg.name = "bench";
    cfg.conninfo = conninfo;
    cfg.max_size = c.pool_size;
    cfg.min_idle = c.spike ? 0 : c.pool_size;
    cfg.acquire_timeout = acquire_timeout;
    cfg.max_lifetime = c.max_lifetime;
    cfg.validate_after_idle = no_checks;
    cfg.health_check_period = no_checks;
    cfg.logger = std::move(logger);
    // For experiments (docs/benchmarks.md): PQXXPOOL_BENCH_FAIRNESS_US overrides the window.
    if (const char* w = std::getenv("PQXXPOOL_BENCH_FAIRNESS_US"); w != nullptr && *w != '\0')
      cfg.fairness_window = std::chrono::microseconds(std::atoll(w));
    if (c.spike)
      cfg.before_connect = [](pqxxpool::connect_params&) { std::this_thread::sleep_for(spike_connect_delay); };
    return cfg;
  }

  pqxxpool::pool m_pool;
  bool m_spike;
};

class naive_variant {
 public:
  static constexpr const char* name = "naive";

  naive_variant(const case_def& c, const std::string& conninfo, const std::shared_ptr<spdlog::logger>&)
      : m_pool(conninfo, c.pool_size, c.max_lifetime,
               c.spike ? std::function<void()>(sleep_before_connect) : std::function<void()>()),
        m_prepare_count(c.spike ? 0 : c.pool_size) {}

  /// Opens all pool_size connections up front, like min_idle does for pqxxpool (none for the spike).
  void prepare() {
    std::vector<naive::handle> open;
    open.reserve(m_prepare_count);
    for (std::size_t i = 0; i < m_prepare_count; ++i) open.push_back(m_pool.acquire(ready_timeout));
  }
  naive::handle acquire() { return m_pool.acquire(acquire_timeout); }
  void settle() {}  // connects on the caller's thread: none can be in flight after the threads end
  [[nodiscard]] pool_counters counters() const { return {m_pool.connections_opened(), {}, {}}; }

 private:
  static void sleep_before_connect() { std::this_thread::sleep_for(spike_connect_delay); }

  naive::pool m_pool;
  std::size_t m_prepare_count;
};

// --- one run ------------------------------------------------------------------------------------

/// Holds the worker threads until all have arrived, then lets them go at once.
class start_gate {
 public:
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lk(m_mu);
    ++m_arrived;
    m_arrivals.notify_one();  // only the main thread waits for arrivals
    m_start.wait(lk, [this] { return m_open; });
  }
  void wait_for_arrivals(std::size_t n) {
    std::unique_lock<std::mutex> lk(m_mu);
    m_arrivals.wait(lk, [&] { return m_arrived >= n; });
  }
  /// Every waiting thread must start: notify_all is the point here.
  void open() {
    {
      std::lock_guard<std::mutex> lk(m_mu);
      m_open = true;
    }
    m_start.notify_all();
  }

 private:
  std::mutex m_mu;
  std::condition_variable m_arrivals;
  std::condition_variable m_start;
  std::size_t m_arrived = 0;  // guarded by m_mu
  bool m_open = false;        // guarded by m_mu
};

/// What one worker thread measured. Aligned so that the counters of two threads never share a
/// cache line.
struct alignas(64) thread_result {
  std::uint64_t ops = 0;
  std::uint64_t errors = 0;
  latency_histogram acquire_latency;
  std::string first_error;
};

/// The scalars of one run of one case with one pool.
struct run_result {
  double wall_s = 0;
  std::uint64_t ops = 0;
  std::uint64_t errors = 0;
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
  std::uint64_t thread_ops_min = 0;
  std::uint64_t thread_ops_max = 0;
  std::uint64_t connections_opened = 0;
  double cpu_s = 0;
  double vcsw = 0;
  std::optional<std::uint64_t> waited_acquires;
  std::optional<std::uint64_t> waited_for_connect;
  double loadavg_1m = 0;
  std::string first_error;

  [[nodiscard]] double ops_per_s() const { return wall_s > 0 ? static_cast<double>(ops) / wall_s : 0; }
  [[nodiscard]] double thread_ratio() const {
    return thread_ops_max > 0 ? static_cast<double>(thread_ops_min) / static_cast<double>(thread_ops_max) : 0;
  }
};

struct process_usage {
  double cpu_s = 0;  // user + system, all threads of the process
  long voluntary_switches = 0;
  static process_usage now() noexcept {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    const auto seconds = [](const timeval& tv) {
      return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) * 1e-6;
    };
    return {seconds(ru.ru_utime) + seconds(ru.ru_stime), ru.ru_nvcsw};
  }
};

double loadavg_1m() {
  double l[1] = {0};
  return ::getloadavg(l, 1) == 1 ? l[0] : -1;
}

double ns_to_ms(std::uint64_t ns) { return static_cast<double>(ns) * 1e-6; }
double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

template <class Variant>
void worker(Variant& pool, const case_def& c, start_gate& gate, const std::atomic<bool>& stop, thread_result& r) {
  gate.arrive_and_wait();
  do {
    // The measured interval: exactly acquire(), between two steady_clock reads.
    const clock_type::time_point t0 = clock_type::now();
    try {
      auto lease = pool.acquire();
      const clock_type::time_point t1 = clock_type::now();
      r.acquire_latency.record(t1 - t0);
      if (!c.query.empty()) {
        pqxx::nontransaction tx(*lease);  // ends before the lease: declared after it
        tx.exec(c.query);
      }
      ++r.ops;
    } catch (const std::exception& e) {
      ++r.errors;
      if (r.first_error.empty()) r.first_error = e.what();
      std::this_thread::sleep_for(failure_pause);
    }
  } while (!c.spike && !stop.load(std::memory_order_relaxed));
}

/// Builds the pool, opens its connections, runs the threads for the duration (the spike: until
/// each thread has done its one operation), and reads the results. merged_latency collects every
/// acquire of the run (for the CDF files).
template <class Variant>
run_result run_once(const case_def& c, const bench_options& opt, const std::shared_ptr<spdlog::logger>& logger,
                    latency_histogram& merged_latency) {
  Variant pool(c, opt.conninfo, logger);
  pool.prepare();
  const pool_counters before = pool.counters();

  std::vector<thread_result> results(c.threads);
  start_gate gate;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  threads.reserve(c.threads);
  run_result out;
  try {
    for (std::size_t i = 0; i < c.threads; ++i)
      threads.emplace_back(worker<Variant>, std::ref(pool), std::cref(c), std::ref(gate), std::cref(stop),
                           std::ref(results[i]));
  } catch (...) {
    stop.store(true);
    gate.open();
    for (std::thread& t : threads) t.join();
    throw;
  }
  gate.wait_for_arrivals(c.threads);

  out.loadavg_1m = loadavg_1m();
  const process_usage u0 = process_usage::now();
  const clock_type::time_point start = clock_type::now();
  gate.open();
  if (!c.spike) {
    std::this_thread::sleep_for(opt.duration);
    stop.store(true, std::memory_order_relaxed);
  }
  for (std::thread& t : threads) t.join();
  const clock_type::time_point end = clock_type::now();
  const process_usage u1 = process_usage::now();
  pool.settle();
  const pool_counters after = pool.counters();

  latency_histogram run_latency;
  out.thread_ops_min = results.front().ops;
  for (const thread_result& r : results) {
    out.ops += r.ops;
    out.errors += r.errors;
    out.thread_ops_min = std::min(out.thread_ops_min, r.ops);
    out.thread_ops_max = std::max(out.thread_ops_max, r.ops);
    if (out.first_error.empty()) out.first_error = r.first_error;
    run_latency.merge(r.acquire_latency);
  }
  merged_latency.merge(run_latency);
  out.wall_s = seconds_between(start, end);
  out.p50_ms = ns_to_ms(run_latency.quantile_ns(0.50));
  out.p99_ms = ns_to_ms(run_latency.quantile_ns(0.99));
  out.max_ms = ns_to_ms(run_latency.max_ns());
  out.connections_opened = after.connections_opened - before.connections_opened;
  out.cpu_s = u1.cpu_s - u0.cpu_s;
  out.vcsw = static_cast<double>(u1.voluntary_switches - u0.voluntary_switches);
  if (before.waited_acquires && after.waited_acquires)
    out.waited_acquires = *after.waited_acquires - *before.waited_acquires;
  if (before.waited_for_connect && after.waited_for_connect)
    out.waited_for_connect = *after.waited_for_connect - *before.waited_for_connect;
  return out;
}

// --- aggregation and output -----------------------------------------------------------------------

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/// Rounds to `digits` significant digits, so the JSON stays readable.
double round_sig(double x, int digits = 5) {
  if (x == 0 || !std::isfinite(x)) return x;
  const double scale = std::pow(10.0, digits - 1 - static_cast<int>(std::floor(std::log10(std::fabs(x)))));
  return std::round(x * scale) / scale;
}

/// A JSON number: x rounded to `digits` significant digits, written as an integer when it is one
/// (counts; 5221200 rather than 5221200.0).
json number(double x, int digits = 5) {  // digits 15: an exact count
  const double r = round_sig(x, digits);
  if (std::isfinite(r) && r == std::floor(r) && std::fabs(r) < 9e15) return static_cast<std::int64_t>(r);
  return r;
}

/// All runs of one case with one pool.
struct case_results {
  std::vector<run_result> runs;
  latency_histogram latency;  // every acquire of every run
  std::string latency_file;   // written CDF, "" if none

  template <class F>
  [[nodiscard]] double median_of(F f) const {
    std::vector<double> v;
    v.reserve(runs.size());
    for (const run_result& r : runs) v.push_back(static_cast<double>(f(r)));
    return median(v);
  }
  template <class F>
  [[nodiscard]] json each(F f) const {
    json a = json::array();
    for (const run_result& r : runs) a.push_back(number(static_cast<double>(f(r))));
    return a;
  }
  [[nodiscard]] std::uint64_t errors() const {
    std::uint64_t n = 0;
    for (const run_result& r : runs) n += r.errors;
    return n;
  }
  [[nodiscard]] double ops_per_s() const {
    return median_of([](const run_result& r) { return r.ops_per_s(); });
  }
  [[nodiscard]] double p50_ms() const {
    return median_of([](const run_result& r) { return r.p50_ms; });
  }
  [[nodiscard]] double p99_ms() const {
    return median_of([](const run_result& r) { return r.p99_ms; });
  }
  [[nodiscard]] double max_ms() const {
    return median_of([](const run_result& r) { return r.max_ms; });
  }
  [[nodiscard]] double thread_ratio() const {
    return median_of([](const run_result& r) { return r.thread_ratio(); });
  }
};

/// Writes the CDF of every acquire of a case and pool: one line per non-empty bucket with its
/// upper bound in ms, the fraction of acquires at or below it, and its count.
std::string write_cdf(const std::string& dir, const case_def& c, const char* pool, const latency_histogram& h,
                      std::size_t runs) {
  const std::filesystem::path path = std::filesystem::path(dir) / (c.id + "-" + pool + ".cdf");
  std::ofstream f(path);
  if (!f) throw std::runtime_error("cannot write " + path.string());
  f << "# pqxxpool bench: acquire latency CDF; case " << c.id << ", pool " << pool << ", " << runs << " run(s) merged, "
    << h.count() << " acquires, max " << ns_to_ms(h.max_ns()) << " ms\n"
    << "# latency_ms (bucket upper bound, at most 0.78 % above the values in it)  fraction_at_or_below  count\n";
  std::uint64_t seen = 0;
  char line[96];
  for (std::size_t i = 0; i < latency_histogram::bucket_count; ++i) {
    const std::uint64_t n = h.count_at(i);
    if (n == 0) continue;
    seen += n;
    const std::uint64_t ub = std::min(latency_histogram::upper_bound_of(i), h.max_ns());
    std::snprintf(line, sizeof line, "%.9g %.9g %llu\n", ns_to_ms(std::max<std::uint64_t>(ub, 1)),
                  static_cast<double>(seen) / static_cast<double>(h.count()), static_cast<unsigned long long>(n));
    f << line;
  }
  if (!f) throw std::runtime_error("cannot write " + path.string());
  return path.string();
}

json optional_count(const std::vector<run_result>& runs, std::optional<std::uint64_t> run_result::*field,
                    bool use_max) {
  std::vector<double> v;
  for (const run_result& r : runs) {
    if (!(r.*field)) return nullptr;
    v.push_back(static_cast<double>(*(r.*field)));
  }
  if (v.empty()) return nullptr;
  return number(use_max ? *std::max_element(v.begin(), v.end()) : median(v), 15);
}

json result_line(const case_def& c, const char* pool, const case_results& r, const case_results* no_recycle) {
  json j;
  j["type"] = "result";
  j["case"] = c.id;
  j["scenario"] = c.scenario;
  j["pool"] = pool;
  j["threads"] = c.threads;
  j["pool_size"] = c.pool_size;
  j["query"] = c.query;
  j["max_lifetime_ms"] = c.max_lifetime.count();
  j["runs"] = r.runs.size();
  j["duration_s"] = number(r.median_of([](const run_result& x) { return x.wall_s; }));
  j["ops"] = number(r.median_of([](const run_result& x) { return x.ops; }), 15);
  j["ops_per_s"] = number(r.ops_per_s());
  j["acquire_p50_ms"] = number(r.p50_ms());
  j["acquire_p99_ms"] = number(r.p99_ms());
  j["acquire_max_ms"] = number(r.max_ms());
  j["per_thread_ops_min"] = number(r.median_of([](const run_result& x) { return x.thread_ops_min; }), 15);
  j["per_thread_ops_max"] = number(r.median_of([](const run_result& x) { return x.thread_ops_max; }), 15);
  j["per_thread_ops_ratio"] = number(r.thread_ratio(), 4);
  j["connections_opened"] = number(r.median_of([](const run_result& x) { return x.connections_opened; }), 15);
  j["cpu_s"] = number(r.median_of([](const run_result& x) { return x.cpu_s; }), 4);
  j["cpu_us_per_op"] = number(
      r.median_of([](const run_result& x) { return x.ops > 0 ? x.cpu_s * 1e6 / static_cast<double>(x.ops) : 0.0; }), 4);
  j["vcsw_per_op"] =
      number(r.median_of([](const run_result& x) { return x.ops > 0 ? x.vcsw / static_cast<double>(x.ops) : 0.0; }), 4);
  j["waited_acquires"] = optional_count(r.runs, &run_result::waited_acquires, false);
  // The recycle goal is "stays 0": report the worst run, not the median.
  j["waited_for_connect"] = optional_count(r.runs, &run_result::waited_for_connect, true);
  if (c.scenario == "contended") {
    j["p99_over_p50"] =
        number(r.median_of([](const run_result& x) { return x.p50_ms > 0 ? x.p99_ms / x.p50_ms : 0; }), 4);
    j["max_over_p50"] =
        number(r.median_of([](const run_result& x) { return x.p50_ms > 0 ? x.max_ms / x.p50_ms : 0; }), 4);
  }
  if (no_recycle != nullptr) {
    j["no_recycle_acquire_p99_ms"] = number(no_recycle->p99_ms());
    j["p99_ratio_vs_no_recycle"] =
        no_recycle->p99_ms() > 0 ? json(number(r.p99_ms() / no_recycle->p99_ms(), 4)) : json(nullptr);
  }
  j["errors"] = r.errors();
  j["loadavg_1m"] = number(r.median_of([](const run_result& x) { return x.loadavg_1m; }), 3);
  j["ops_per_s_runs"] = r.each([](const run_result& x) { return x.ops_per_s(); });
  j["acquire_p50_ms_runs"] = r.each([](const run_result& x) { return x.p50_ms; });
  j["acquire_p99_ms_runs"] = r.each([](const run_result& x) { return x.p99_ms; });
  j["acquire_max_ms_runs"] = r.each([](const run_result& x) { return x.max_ms; });
  j["connections_opened_runs"] = r.each([](const run_result& x) { return x.connections_opened; });
  if (!r.latency_file.empty()) j["latency_cdf"] = r.latency_file;
  for (const run_result& x : r.runs)
    if (!x.first_error.empty()) {
      j["first_error"] = x.first_error;
      break;
    }
  return j;
}

/// The goals for a case, evaluated on the medians; empty when the case has none.
json goals_of(const case_def& c, const case_results& px, const case_results& nv, const case_results* px_no_recycle) {
  json goals = json::array();
  const auto add = [&goals](const char* what, double value, bool met) {
    goals.push_back(json{{"goal", what}, {"value", number(value, 4)}, {"met", met}});
  };
  const double ratio = nv.ops_per_s() > 0 ? px.ops_per_s() / nv.ops_per_s() : 0;
  if (c.id == "cycle_t1") add("ops_per_s_ratio >= 0.95", ratio, ratio >= 0.95);
  if (c.id == "cycle_t16") add("ops_per_s_ratio >= 1.0", ratio, ratio >= 1.0);
  if (c.id == "select1_t4") add("ops_per_s_ratio >= 1.1", ratio, ratio >= 1.1);
  if (c.id == "select1_t16") {
    add("ops_per_s_ratio >= 1.8", ratio, ratio >= 1.8);
    add("pqxxpool per_thread_ops_ratio >= 0.8", px.thread_ratio(), px.thread_ratio() >= 0.8);
  }
  if (c.id == "contended_t16") {
    const double p99_p50 = px.median_of([](const run_result& x) { return x.p50_ms > 0 ? x.p99_ms / x.p50_ms : 0; });
    const double max_p50 = px.median_of([](const run_result& x) { return x.p50_ms > 0 ? x.max_ms / x.p50_ms : 0; });
    add("pqxxpool p99_over_p50 <= 1.5", p99_p50, p99_p50 <= 1.5);
    add("pqxxpool max_over_p50 <= 3", max_p50, max_p50 <= 3.0);
    add("pqxxpool per_thread_ops_ratio >= 0.9", px.thread_ratio(), px.thread_ratio() >= 0.9);
    add("ops_per_s_ratio >= 0.97", ratio, ratio >= 0.97);
  }
  if (c.id == "recycle_t8" && px_no_recycle != nullptr && px_no_recycle->p99_ms() > 0) {
    const double v = px.p99_ms() / px_no_recycle->p99_ms();
    add("pqxxpool p99_ratio_vs_no_recycle <= 1.5", v, v <= 1.5);
  }
  if (c.id == "recycle_t3") {
    const json w = optional_count(px.runs, &run_result::waited_for_connect, true);
    const double v = w.is_number() ? w.get<double>() : -1;
    add("pqxxpool waited_for_connect == 0 (every run)", v, v == 0);
  }
  return goals;
}

json summary_line(const case_def& c, const case_results& px, const case_results& nv, const case_results* px_no_recycle,
                  const case_results* nv_no_recycle) {
  json j;
  j["type"] = "summary";
  j["case"] = c.id;
  j["scenario"] = c.scenario;
  j["threads"] = c.threads;
  j["pool_size"] = c.pool_size;
  j["ops_per_s_ratio"] = nv.ops_per_s() > 0 ? json(number(px.ops_per_s() / nv.ops_per_s(), 4)) : json(nullptr);
  j["acquire_p50_ratio"] = nv.p50_ms() > 0 ? json(number(px.p50_ms() / nv.p50_ms(), 4)) : json(nullptr);
  j["acquire_p99_ratio"] = nv.p99_ms() > 0 ? json(number(px.p99_ms() / nv.p99_ms(), 4)) : json(nullptr);
  j["acquire_max_ratio"] = nv.max_ms() > 0 ? json(number(px.max_ms() / nv.max_ms(), 4)) : json(nullptr);
  j["per_thread_ops_ratio"] = json{{"pqxxpool", number(px.thread_ratio(), 4)}, {"naive", number(nv.thread_ratio(), 4)}};
  j["connections_opened"] =
      json{{"pqxxpool", number(px.median_of([](const run_result& x) { return x.connections_opened; }), 15)},
           {"naive", number(nv.median_of([](const run_result& x) { return x.connections_opened; }), 15)}};
  if (px_no_recycle != nullptr && nv_no_recycle != nullptr) {
    const auto ratio = [](const case_results& on, const case_results& off) {
      return off.p99_ms() > 0 ? json(number(on.p99_ms() / off.p99_ms(), 4)) : json(nullptr);
    };
    j["p99_ratio_vs_no_recycle"] = json{{"pqxxpool", ratio(px, *px_no_recycle)}, {"naive", ratio(nv, *nv_no_recycle)}};
  }
  json goals = goals_of(c, px, nv, px_no_recycle);
  bool all_met = true;
  for (const json& g : goals) all_met = all_met && g["met"].get<bool>();
  j["goals_met"] = goals.empty() ? json(nullptr) : json(all_met);
  j["goals"] = std::move(goals);
  return j;
}

/// Prints each line on stdout and appends it to --out.
class line_writer {
 public:
  explicit line_writer(const std::string& path) {
    if (path.empty()) return;
    m_file.open(path, std::ios::trunc);
    if (!m_file) throw std::runtime_error("cannot write " + path);
  }
  void write(const json& j) {
    const std::string s = j.dump();
    std::cout << s << '\n' << std::flush;
    if (m_file.is_open()) m_file << s << '\n' << std::flush;
  }

 private:
  std::ofstream m_file;
};

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  char buf[32] = "?";
  if (gmtime_r(&t, &tm) != nullptr) std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string libpq_version() {
  const int v = PQlibVersion();  // e.g. 150018 for 15.18
  return std::to_string(v / 10000) + "." + std::to_string(v % 100);
}

/// The first line: what ran, where, and how it was measured.
json meta_line(const bench_options& opt, const std::string& server_version, bool tls) {
  double load[3] = {-1, -1, -1};
  if (::getloadavg(load, 3) != 3) load[0] = load[1] = load[2] = -1;
  json j;
  j["type"] = "meta";
  j["started_at"] = utc_now();
  j["pqxxpool_version"] = pqxxpool::version;
  j["libpqxx_version"] = PQXX_VERSION;
  j["libpq_version"] = libpq_version();
  j["server_version"] = server_version;
  // TLS costs both pools the same per query, which narrows their ratios (docs/benchmarks.md).
  j["transport"] = tls ? "tls" : "plain";
  j["hardware_concurrency"] = std::thread::hardware_concurrency();
  j["loadavg"] = json::array({number(load[0], 3), number(load[1], 3), number(load[2], 3)});
  j["scenarios"] = opt.scenarios;
  j["pools"] = opt.pools;
  j["runs"] = opt.runs;
  j["duration_s"] = std::chrono::duration<double>(opt.duration).count();
  j["acquire_latency"] = "steady_clock read before and after each acquire (two reads per operation), both pools alike";
  j["quantiles"] = "nearest rank over a log-linear histogram: at most 0.78 % high; max exact; medians over runs";
  return j;
}

/// A latency for people: "46 ns", "12.3 us", "2.21 ms".
std::string human_latency(double ms) {
  char buf[32];
  if (ms < 0.001)
    std::snprintf(buf, sizeof buf, "%.0f ns", ms * 1e6);
  else if (ms < 1)
    std::snprintf(buf, sizeof buf, "%.3g us", ms * 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.4g ms", ms);
  return buf;
}

void print_progress(const case_def& c, std::size_t run, std::size_t runs, const char* pool, const run_result& r) {
  std::fprintf(stderr,
               "bench: %-14s run %zu/%zu %-8s %10.0f ops/s  acquire p50 %9s p99 %9s max %9s  threads min/max %.2f  "
               "conns %llu  cpu %.2f s  load %.2f%s%s\n",
               c.id.c_str(), run, runs, pool, r.ops_per_s(), human_latency(r.p50_ms).c_str(),
               human_latency(r.p99_ms).c_str(), human_latency(r.max_ms).c_str(), r.thread_ratio(),
               static_cast<unsigned long long>(r.connections_opened), r.cpu_s, r.loadavg_1m,
               r.errors > 0 ? "  ERRORS: " : "", r.errors > 0 ? r.first_error.c_str() : "");
}

struct server_info {
  std::string version;
  bool tls = false;  // whether a connection made with the benchmark's conninfo uses TLS
};

server_info server_info_of(const std::string& conninfo) {
  pqxx::connection c(conninfo);
  const int v = c.server_version();
  pqxx::nontransaction tx(c);
  const pqxx::result r = tx.exec("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
  return {std::to_string(v / 10000) + "." + std::to_string(v % 100), !r.empty() && r[0][0].as<bool>(false)};
}

int run_bench(bench_options opt) {
  if (opt.conninfo.empty()) {
    for (const char* var : {"PQXXPOOL_BENCH_CONNINFO", "PQXXPOOL_TEST_CONNINFO"}) {
      const char* v = std::getenv(var);
      if (v != nullptr && *v != '\0') {
        opt.conninfo = v;
        break;
      }
    }
  }
  if (opt.conninfo.empty()) {
    std::fprintf(stderr,
                 "error: no server: pass --conninfo, or set PQXXPOOL_BENCH_CONNINFO or PQXXPOOL_TEST_CONNINFO\n"
                 "(bash bench/scenarios.sh starts a throwaway PostgreSQL and runs this command)\n");
    return exit_usage;
  }
  if (opt.scenarios.empty()) opt.scenarios = scenario_names;
  // Run in the canonical order, each scenario once, whatever the order on the command line.
  std::vector<std::string> ordered;
  for (const std::string& s : scenario_names)
    if (std::find(opt.scenarios.begin(), opt.scenarios.end(), s) != opt.scenarios.end()) ordered.push_back(s);
  opt.scenarios = ordered;
  const bool use_px = opt.pools != "naive";
  const bool use_nv = opt.pools != "pqxxpool";

  std::optional<line_writer> writer;
  try {
    writer.emplace(opt.out);
    if (!opt.latencies_out.empty()) std::filesystem::create_directories(opt.latencies_out);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return exit_usage;
  }

  server_info server;
  try {
    server = server_info_of(opt.conninfo);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: cannot connect to the server: %s\n", e.what());
    return exit_failure;
  }

  // The pools' own log lines go to stderr, never into the JSON on stdout.
  auto logger = std::make_shared<spdlog::logger>("pqxxpool", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  logger->set_level(spdlog::level::from_str(opt.log_level));
  logger->set_pattern("[%H:%M:%S.%e] [%l] %v");

  writer->write(meta_line(opt, server.version, server.tls));
  bool failed = false;
  for (const std::string& scenario : opt.scenarios) {
    const std::vector<case_def> cases = cases_of(scenario);
    std::vector<case_results> px(cases.size());
    std::vector<case_results> nv(cases.size());
    // Interleaved: every case of the scenario in each run, the pools alternating which goes first.
    for (std::size_t run = 0; run < opt.runs; ++run) {
      for (std::size_t i = 0; i < cases.size(); ++i) {
        const case_def& c = cases[i];
        for (int k = 0; k < 2; ++k) {
          const bool px_turn = (k == 0) == (run % 2 == 0);
          if (px_turn && use_px) {
            px[i].runs.push_back(run_once<pqxxpool_variant>(c, opt, logger, px[i].latency));
            print_progress(c, run + 1, opt.runs, pqxxpool_variant::name, px[i].runs.back());
          } else if (!px_turn && use_nv) {
            nv[i].runs.push_back(run_once<naive_variant>(c, opt, logger, nv[i].latency));
            print_progress(c, run + 1, opt.runs, naive_variant::name, nv[i].runs.back());
          }
        }
      }
    }
    // The recycle cases with a lifetime compare their p99 with recycle_off_t8 (same thread count).
    std::optional<std::size_t> off;
    for (std::size_t i = 0; i < cases.size(); ++i)
      if (cases[i].scenario == "recycle" && cases[i].max_lifetime.count() == 0) off = i;
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const case_def& c = cases[i];
      const bool compare = off && i != *off && cases[*off].threads == c.threads;
      if (!opt.latencies_out.empty()) {
        if (use_px)
          px[i].latency_file =
              write_cdf(opt.latencies_out, c, pqxxpool_variant::name, px[i].latency, px[i].runs.size());
        if (use_nv)
          nv[i].latency_file = write_cdf(opt.latencies_out, c, naive_variant::name, nv[i].latency, nv[i].runs.size());
      }
      if (use_px) {
        writer->write(result_line(c, pqxxpool_variant::name, px[i], compare ? &px[*off] : nullptr));
        failed = failed || px[i].errors() > 0;
      }
      if (use_nv) {
        writer->write(result_line(c, naive_variant::name, nv[i], compare ? &nv[*off] : nullptr));
        failed = failed || nv[i].errors() > 0;
      }
      if (use_px && use_nv)
        writer->write(summary_line(c, px[i], nv[i], compare ? &px[*off] : nullptr, compare ? &nv[*off] : nullptr));
    }
  }
  return failed ? exit_failure : exit_ok;
}

}  // namespace

command add_bench_command(CLI::App& app) {
  auto opt = std::make_shared<bench_options>();
  CLI::App* sub = app.add_subcommand(
      "bench",
      "Run the performance scenarios against a server with pqxxpool and the naive pool; one JSON line per "
      "scenario case and pool (see docs/benchmarks.md)");
  CLI::Option* conninfo =
      sub->add_option("--conninfo", opt->conninfo,
                      "libpq connection string (default: $PQXXPOOL_BENCH_CONNINFO, else $PQXXPOOL_TEST_CONNINFO)");
  std::string names;
  for (const std::string& s : scenario_names) names += (names.empty() ? "" : ", ") + s;
  sub->add_option("--scenario", opt->scenarios, "Scenario to run, repeatable: " + names + " (default: all)")
      ->check(CLI::IsMember(scenario_names))
      ->type_name("NAME");
  // Scalar options: the last occurrence wins, so a wrapper's defaults can be overridden after it.
  const auto last_wins = CLI::MultiOptionPolicy::TakeLast;
  add_duration_option(*sub, "--duration", opt->duration,
                      "Length of each run of each case (the spike runs until its 50 threads are done)",
                      /*allow_zero=*/false)
      ->multi_option_policy(last_wins);
  sub->add_option("--runs", opt->runs, "Runs per case and pool, interleaved; the lines report medians")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{100}))
      ->multi_option_policy(last_wins);
  CLI::Option* pool = sub->add_option("--pool", opt->pools, "Which pools to run")
                          ->capture_default_str()
                          ->check(CLI::IsMember({"pqxxpool", "naive", "both"}));
  CLI::Option* out =
      sub->add_option("--out", opt->out, "Also write the JSON lines to FILE (truncated)")->type_name("FILE");
  CLI::Option* latencies = sub->add_option(
      "--latencies-out", opt->latencies_out,
      "Write the acquire-latency CDF of every case and pool to DIR/<case>-<pool>.cdf (for bench/plot.sh)");
  latencies->type_name("DIR");
  CLI::Option* log_level =
      sub->add_option("--log-level", opt->log_level, "The pools' log lines at this level and above go to stderr")
          ->capture_default_str()
          ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
  for (CLI::Option* o : {conninfo, pool, out, latencies, log_level}) o->multi_option_policy(last_wins);
  return command{sub, [opt] { return run_bench(*opt); }};
}

}  // namespace pqxxpool_cli
