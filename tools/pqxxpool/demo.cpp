// `pqxxpool demo`: puts a pool under load (more worker threads than connections, so threads wait
// and the pool runs out) and prints one line of live statistics per second, then a final summary.
//
// Exit codes: 0 every query succeeded, 1 a query failed or the pool never became ready,
// 2 bad command line or pool configuration.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <ctime>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <unistd.h>

#include <pqxx/nontransaction>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "commands.hpp"
#include "duration.hpp"
#include "pqxxpool/pqxxpool.hpp"

namespace pqxxpool_cli {

namespace {

using clock_type = std::chrono::steady_clock;
using std::chrono::milliseconds;

// --- signals -------------------------------------------------------------------------------------

// The handler only stores into a lock-free atomic (and re-arms the default action, which
// std::signal allows for the signal being handled), so it is async-signal-safe. The first
// SIGINT/SIGTERM stops the demo cleanly; a second one terminates the process as usual.
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs a lock-free atomic");
std::atomic<int> g_signal{0};

extern "C" void on_stop_signal(int sig) {
  g_signal.store(sig, std::memory_order_relaxed);
  std::signal(sig, SIG_DFL);
}

/// Installs the handlers for the lifetime of a demo run and restores the defaults afterwards.
class stop_signals {
 public:
  stop_signals() {
    g_signal.store(0, std::memory_order_relaxed);
    std::signal(SIGINT, on_stop_signal);
    std::signal(SIGTERM, on_stop_signal);
  }
  ~stop_signals() {
    std::signal(SIGINT, SIG_DFL);
    std::signal(SIGTERM, SIG_DFL);
  }
  stop_signals(const stop_signals&) = delete;
  stop_signals& operator=(const stop_signals&) = delete;
};

// --- options and shared counters -----------------------------------------------------------------

struct demo_options {
  std::string conninfo;
  std::string dsql_url;  // Aurora DSQL instead of conninfo: postgres://USER@ENDPOINT/DB?region=…
  std::string tunnel;    // HOST:PORT to connect to for DSQL (SNI and token keep the endpoint)
  milliseconds duration{0};
  std::size_t threads = 16;
  std::size_t max_size = 4;
  std::size_t min_idle = 2;
  std::string query = "SELECT pg_sleep(0.002)";
  milliseconds acquire_timeout{5'000};
  milliseconds max_lifetime = pqxxpool::pool_config{}.max_lifetime;
  std::string metrics_listen;  // HOST:PORT for the metrics endpoint; empty = none
  std::string log_level = "warn";  // the pool's log lines at this level and above go to stderr
  milliseconds leak_detection_threshold{0};
};

constexpr milliseconds ready_timeout{5'000};
constexpr milliseconds report_period{1'000};
/// Pause after a failed query, so that a failing pool (or acquire-timeout 0) is not hammered in a
/// tight loop by every worker at once.
constexpr milliseconds failure_pause{10};

/// What the worker threads report back to the main thread.
struct load_counters {
  std::atomic<std::uint64_t> ok{0};
  std::atomic<std::uint64_t> failed{0};

  std::mutex mu;  // guards the fields below; taken only on the failure path
  std::string first_error;
  std::string last_error;

  void note_failure(const char* what) {
    failed.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard<std::mutex> lk(mu);
    if (first_error.empty()) first_error = what;
    last_error = what;
  }
};

// --- formatting helpers --------------------------------------------------------------------------

double to_ms(double seconds) { return seconds * 1e3; }

double seconds_between(clock_type::time_point a, clock_type::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

/// libpq and libpqxx messages end in a newline and may span lines: trim the end and indent
/// continuation lines so they stay readable inside the summary.
std::string tidy_message(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  for (std::size_t i = 0; (i = s.find('\n', i)) != std::string::npos; i += 1) s.insert(i + 1, "    ");
  return s;
}

std::string utc_time(std::chrono::system_clock::time_point t) {
  const std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  if (gmtime_r(&tt, &tm) == nullptr) return "?";
  char buf[32];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return "?";
  return buf;
}

const char* or_dash(const char* s) { return s != nullptr && *s != '\0' ? s : "-"; }

// --- the demo ------------------------------------------------------------------------------------

void worker(pqxxpool::pool& pool, const std::string& query, const std::atomic<bool>& stop,
            load_counters& counters) {
  while (!stop.load(std::memory_order_relaxed)) {
    try {
      pqxxpool::lease conn = pool.acquire();
      pqxx::nontransaction tx(*conn);  // destroyed before the lease: declared after it
      tx.exec(query);
      counters.ok.fetch_add(1, std::memory_order_relaxed);
    } catch (const pqxxpool::pool_closed&) {
      return;
    } catch (const std::exception& e) {
      // acquire_timeout_error, too_many_waiters, pqxx::sql_error, pqxx::broken_connection, …
      // A broken connection is noticed and closed by the pool when the lease is returned.
      counters.note_failure(e.what());
      std::this_thread::sleep_for(failure_pause);
    }
  }
}

/// One line per report period, from the difference between two snapshots.
void print_live_line(bool tty, double elapsed_s, const pqxxpool::pool_stats& now,
                     const pqxxpool::pool_stats& before, std::uint64_t ok_delta, std::uint64_t failed_total,
                     double interval_s) {
  const double qps = interval_s > 0 ? static_cast<double>(ok_delta) / interval_s : 0.0;
  const double p99_ms = to_ms(now.acquire_wait.since(before.acquire_wait).p99());
  const std::uint64_t exhausted_delta = now.pool_exhausted_count - before.pool_exhausted_count;
  std::printf("%s[%6.1fs] in use %zu  idle %zu  waiting %zu  total %zu/%zu | %7.0f q/s | acquire p99 %8.2f ms"
              " | exhausted %" PRIu64 " (+%" PRIu64 ") | failed %" PRIu64 "%s",
              tty ? "\r" : "", elapsed_s, now.in_use, now.idle, now.waiting, now.total, now.max_size, qps, p99_ms,
              now.pool_exhausted_count, exhausted_delta, failed_total, tty ? "\033[K" : "\n");
  std::fflush(stdout);
}

void print_final(const pqxxpool::pool_stats& s, double elapsed_s, load_counters& counters) {
  const std::uint64_t ok = counters.ok.load();
  const std::uint64_t failed = counters.failed.load();
  const pqxxpool::histogram& w = s.acquire_wait;
  std::printf("\nfinal statistics after %.2f s\n", elapsed_s);
  std::printf("  gauges\n");
  std::printf("    total                     %zu\n", s.total);
  std::printf("    idle                      %zu\n", s.idle);
  std::printf("    in_use                    %zu\n", s.in_use);
  std::printf("    connecting                %zu\n", s.connecting);
  std::printf("    waiting                   %zu\n", s.waiting);
  std::printf("    max_size                  %zu\n", s.max_size);
  std::printf("    min_idle                  %zu\n", s.min_idle);
  std::printf("    generation                %" PRIu64 "\n", s.generation);
  std::printf("    closed                    %s\n", s.closed ? "yes" : "no");
  std::printf("  counters\n");
  std::printf("    acquires                  %" PRIu64 "\n", s.acquires);
  std::printf("    pool_exhausted_count      %" PRIu64 "\n", s.pool_exhausted_count);
  std::printf("    acquire_timeouts          %" PRIu64 "\n", s.acquire_timeouts);
  std::printf("    waited_acquires           %" PRIu64 "\n", s.waited_acquires);
  std::printf("    waited_for_connect        %" PRIu64 "\n", s.waited_for_connect);
  std::printf("    rejected_waiters          %" PRIu64 "\n", s.rejected_waiters);
  std::printf("    connections_created       %" PRIu64 "\n", s.connections_created);
  std::printf("    connect_errors            %" PRIu64 "\n", s.connect_errors);
  std::printf("    closed_max_lifetime       %" PRIu64 "\n", s.closed_max_lifetime);
  std::printf("    closed_idle               %" PRIu64 "\n", s.closed_idle);
  std::printf("    closed_broken             %" PRIu64 "\n", s.closed_broken);
  std::printf("    closed_validation_failed  %" PRIu64 "\n", s.closed_validation_failed);
  std::printf("    closed_discarded          %" PRIu64 "\n", s.closed_discarded);
  std::printf("    evicted                   %" PRIu64 "\n", s.evicted);
  std::printf("    rollbacks                 %" PRIu64 "\n", s.rollbacks);
  std::printf("  acquire wait\n");
  std::printf("    count                     %" PRIu64 "\n", w.count);
  std::printf("    p50                       %.2f ms\n", to_ms(w.p50()));
  std::printf("    p99                       %.2f ms\n", to_ms(w.p99()));
  std::printf("    max                       %.2f ms\n", to_ms(w.max_seconds));
  const auto print_histogram = [](const char* title, const pqxxpool::histogram& h) {
    std::printf("  %s\n", title);
    std::printf("    count                     %" PRIu64 "\n", h.count);
    std::printf("    mean                      %.2f ms\n", h.count > 0 ? to_ms(h.sum_seconds / static_cast<double>(h.count)) : 0.0);
    std::printf("    p50 / p99 / max           %.2f / %.2f / %.2f ms\n", to_ms(h.p50()), to_ms(h.p99()), to_ms(h.max_seconds));
  };
  print_histogram("usage (lease held; coarse clock)", s.usage);
  print_histogram("connect time", s.connect_time);
  std::printf("  leaks suspected             %" PRIu64 "\n", s.leaks_suspected);
  std::printf("  queries\n");
  std::printf("    ok                        %" PRIu64 "\n", ok);
  std::printf("    failed                    %" PRIu64 "\n", failed);
  std::printf("    per second                %.0f\n", elapsed_s > 0 ? static_cast<double>(ok) / elapsed_s : 0.0);
  if (s.last_error.empty()) {
    std::printf("  last connect error          none\n");
  } else {
    const pqxxpool::error_info& e = s.last_error;
    std::printf("  last connect error          %s%s%s(at %s)\n    %s\n", e.sqlstate.empty() ? "" : "[",
                e.sqlstate.c_str(), e.sqlstate.empty() ? "" : "] ", utc_time(e.time).c_str(),
                tidy_message(e.message).c_str());
  }
  std::lock_guard<std::mutex> lk(counters.mu);
  if (!counters.first_error.empty()) {
    std::printf("  first query error\n    %s\n", tidy_message(counters.first_error).c_str());
    if (counters.last_error != counters.first_error)
      std::printf("  last query error\n    %s\n", tidy_message(counters.last_error).c_str());
  }
  std::fflush(stdout);
}

/// The pool settings the demo's options give, for plain PostgreSQL or (with --dsql) Aurora DSQL.
pqxxpool::pool_config demo_config(const demo_options& opt) {
  pqxxpool::pool_config base;
  base.name = "demo";
  base.max_size = opt.max_size;
  base.min_idle = opt.min_idle;
  base.acquire_timeout = opt.acquire_timeout;
  base.max_lifetime = opt.max_lifetime;
  base.leak_detection_threshold = opt.leak_detection_threshold;
  // The pool's log goes to stderr, so it never mixes into the statistics on stdout.
  base.logger = std::make_shared<spdlog::logger>("pqxxpool", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  base.logger->set_level(spdlog::level::from_str(opt.log_level));
  base.logger->set_pattern("[%H:%M:%S.%e] [%l] %v");
  if (opt.dsql_url.empty()) {
    base.conninfo = opt.conninfo;
    return base;
  }
  pqxxpool::dsql::config d = pqxxpool::dsql::config_from_url(opt.dsql_url);
  const auto url_params = d.pool.params;
  d.pool = base;
  d.pool.params = url_params;
  if (!opt.tunnel.empty()) {
    const auto colon = opt.tunnel.rfind(':');
    char* end = nullptr;
    const long port = colon == std::string::npos ? 0 : std::strtol(opt.tunnel.c_str() + colon + 1, &end, 10);
    if (colon == std::string::npos || colon == 0 || end == nullptr || *end != '\0' || port < 1 || port > 65535)
      throw pqxxpool::config_error("--tunnel", "must be HOST:PORT, e.g. 127.0.0.1:15432");
    d.tunnel_address = opt.tunnel.substr(0, colon);
    d.tunnel_port = static_cast<std::uint16_t>(port);
  }
  return pqxxpool::dsql::make_pool_config(d);
}

#ifdef PQXXPOOL_WITH_HTTP
/// Splits --metrics-listen HOST:PORT ([V6ADDR]:PORT for IPv6; port 0 = any free port).
std::pair<std::string, std::uint16_t> parse_listen(const std::string& text) {
  const auto colon = text.rfind(':');
  char* end = nullptr;
  const char* port_text = colon == std::string::npos ? "" : text.c_str() + colon + 1;
  const long port = std::strtol(port_text, &end, 10);
  std::string host = colon == std::string::npos ? "" : text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (host.empty() || *port_text == '\0' || end == nullptr || *end != '\0' || port < 0 || port > 65535)
    throw pqxxpool::config_error("--metrics-listen", "must be HOST:PORT, e.g. 127.0.0.1:9187 (port 0 = any free port)");
  return {host, static_cast<std::uint16_t>(port)};
}
#endif

int run_demo(const demo_options& opt) {
  std::optional<pqxxpool::pool> pool;
#ifdef PQXXPOOL_WITH_HTTP
  std::optional<pqxxpool::metrics_server> metrics;  // declared after the pool: destroyed first
#endif
  try {
    pool.emplace(demo_config(opt));
#ifdef PQXXPOOL_WITH_HTTP
    if (!opt.metrics_listen.empty()) {
      const auto [host, port] = parse_listen(opt.metrics_listen);
      metrics.emplace(std::vector<const pqxxpool::pool*>{&*pool}, host, port);
      const bool v6 = host.find(':') != std::string::npos;
      std::printf("metrics: http://%s%s%s:%u/metrics\n", v6 ? "[" : "", host.c_str(), v6 ? "]" : "",
                  static_cast<unsigned>(metrics->port()));
      std::fflush(stdout);
    }
#endif
  } catch (const pqxxpool::config_error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return exit_usage;
  }

  const stop_signals signals;

  try {
    pool->wait_ready(ready_timeout);
  } catch (const pqxxpool::error& e) {
    std::fprintf(stderr, "error: the pool did not become ready within %s: %s\n",
                 format_duration(ready_timeout).c_str(), tidy_message(e.what()).c_str());
    return exit_failure;
  }

  // Say where we are connected, from the connection itself: never echo the conninfo (password).
  {
    pqxxpool::lease conn = pool->acquire();
    const int v = conn->server_version();
    std::printf("connected: host=%s port=%s dbname=%s user=%s (server %d.%d)\n", or_dash(conn->hostname()),
                or_dash(conn->port()), or_dash(conn->dbname()), or_dash(conn->username()), v / 10000, v % 10000);
  }
  std::printf("demo: %zu threads on max_size %zu (min_idle %zu), acquire_timeout %s, for %s; query: %s\n",
              opt.threads, opt.max_size, opt.min_idle, format_duration(opt.acquire_timeout).c_str(),
              format_duration(opt.duration).c_str(), opt.query.c_str());
  std::fflush(stdout);

  const bool tty = isatty(STDOUT_FILENO) != 0;
  load_counters counters;
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  workers.reserve(opt.threads);
  auto stop_workers = [&] {
    stop.store(true, std::memory_order_relaxed);
    for (std::thread& t : workers) t.join();
    workers.clear();
  };

  const clock_type::time_point start = clock_type::now();
  const clock_type::time_point end = start + opt.duration;
  pqxxpool::pool_stats previous = pool->stats();
  std::uint64_t previous_ok = 0;
  clock_type::time_point previous_time = start;

  try {
    for (std::size_t i = 0; i < opt.threads; ++i)
      workers.emplace_back(worker, std::ref(*pool), std::cref(opt.query), std::cref(stop), std::ref(counters));

    for (std::int64_t tick = 1;; ++tick) {
      const clock_type::time_point due = std::min(end, start + tick * report_period);
      // Sleep in short steps so that a signal is acted on promptly.
      for (clock_type::time_point now = clock_type::now(); now < due && g_signal.load() == 0;
           now = clock_type::now())
        std::this_thread::sleep_for(std::min<clock_type::duration>(due - now, milliseconds{50}));

      const clock_type::time_point now = clock_type::now();
      const pqxxpool::pool_stats current = pool->stats();
      const std::uint64_t ok = counters.ok.load(std::memory_order_relaxed);
      const double interval_s = seconds_between(previous_time, now);
      if (interval_s >= 0.05)  // skip a sliver of an interval cut short by a signal
        print_live_line(tty, seconds_between(start, now), current, previous, ok - previous_ok,
                        counters.failed.load(std::memory_order_relaxed), interval_s);
      previous = current;
      previous_ok = ok;
      previous_time = now;
      if (now >= end || g_signal.load() != 0) break;
    }
  } catch (...) {
    stop_workers();
    throw;
  }
  stop_workers();
  // Up to the last worker's end: the queries counted include those it finished after the stop,
  // and nothing after it (such as the metrics server's shutdown) dilutes the per-second figure.
  const double elapsed_s = seconds_between(start, clock_type::now());
#ifdef PQXXPOOL_WITH_HTTP
  if (metrics) metrics->stop();
#endif
  if (tty) std::printf("\n");

  if (const int sig = g_signal.load(); sig != 0)
    std::printf("stopped early by %s\n", sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal");
  print_final(pool->stats(), elapsed_s, counters);
  return counters.failed.load() == 0 ? exit_ok : exit_failure;
}

}  // namespace

command add_demo_command(CLI::App& app) {
  auto opt = std::make_shared<demo_options>();
  CLI::App* sub = app.add_subcommand(
      "demo", "Run a load of concurrent queries through a pool and print live pool statistics");

  CLI::Option* conninfo =
      sub->add_option("--conninfo", opt->conninfo, "libpq connection string (key=value or postgresql:// URI)");
  CLI::Option* dsql = sub->add_option(
      "--dsql", opt->dsql_url,
      "Aurora DSQL instead: postgres://USER@ENDPOINT/DATABASE?region=R[&sslrootcert=FILE] (IAM tokens from "
      "the AWS credential chain)");
  conninfo->excludes(dsql);
  sub->add_option("--tunnel", opt->tunnel, "With --dsql: HOST:PORT to connect to (SSH/SSM tunnel, VPC endpoint)")
      ->needs(dsql);
  sub->callback([conninfo, dsql] {
    if (conninfo->count() == 0 && dsql->count() == 0) throw CLI::RequiredError("--conninfo or --dsql");
  });
  add_duration_option(*sub, "--duration", opt->duration, "How long to run the load", /*allow_zero=*/false)
      ->required();
  sub->add_option("--threads", opt->threads, "Worker threads (more than --max-size, so threads wait)")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{1}, std::size_t{10'000}));
  // max-size / min-idle are range-checked only against nonsense (negative or absurd numbers);
  // the pool itself validates them and reports the field in error.
  sub->add_option("--max-size", opt->max_size, "Most connections in the pool")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, std::size_t{100'000}));
  sub->add_option("--min-idle", opt->min_idle, "Idle connections kept open")
      ->capture_default_str()
      ->check(CLI::Range(std::size_t{0}, std::size_t{100'000}));
  sub->add_option("--query", opt->query, "SQL run by every worker on each iteration")->capture_default_str();
  add_duration_option(*sub, "--acquire-timeout", opt->acquire_timeout,
                      "How long a worker waits for a connection (0 = fail at once)");
  add_duration_option(*sub, "--max-lifetime", opt->max_lifetime,
                      "Retire connections after this long (0 = never)");
  add_duration_option(*sub, "--leak-detection", opt->leak_detection_threshold,
                      "Log leases held longer than this as suspected leaks (0 = off)");
  sub->add_option("--log-level", opt->log_level, "The pool's log lines at this level and above go to stderr")
      ->capture_default_str()
      ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
#ifdef PQXXPOOL_WITH_HTTP
  sub->add_option("--metrics-listen", opt->metrics_listen,
                  "Serve /metrics (Prometheus), /stats (JSON) and /healthz on HOST:PORT while the demo runs "
                  "(e.g. 127.0.0.1:0 for any free port; the URL is printed)");
#endif

  return command{sub, [opt] { return run_demo(*opt); }};
}

}  // namespace pqxxpool_cli
