// pool_bench.cpp — pqxxpool against the naive pool of naive_pool.hpp, side by side.
//
// Scenarios (each registered for both pools, one right after the other):
//   cycle    acquire + release of an idle connection, no query. Pool of 4, all 4 open up front;
//            1, 2, 4 and 16 threads.
//   select1  acquire, pqxx::nontransaction exec "SELECT 1", release. Pool of 4; 1, 4, 16 threads.
//   cycle/pqxxpool_precise_usage, cycle/pqxxpool_leak_detection  the 1-thread cycle of pools
//            with precise_usage_timing on, and with leak_detection_threshold 60 s: their cost.
//   cycle/pqxxpool_validation_skipped, cycle/pqxxpool_validation_every_acquire  the 1-thread
//            cycle with the default validate_after_idle (1 s: the connection was just used, so
//            the check is one comparison) and with validate_after_idle 0 (a round trip each time).
//   histogram/record  one histogram::record (an acquire+release records two values).
// Times are wall-clock (UseRealTime) per operation over all threads; items_per_second is the
// total throughput of all threads; vcsw/op and ivcsw/op are the benchmark threads' voluntary
// (blocked) and involuntary (preempted) context switches per operation.
//
// The server comes from PQXXPOOL_BENCH_CONNINFO, else PQXXPOOL_TEST_CONNINFO (bench/run.sh starts
// a throwaway PostgreSQL and sets the latter).

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include <benchmark/benchmark.h>
#include <libpq-fe.h>
#include <pqxx/nontransaction>
#include <pqxx/result>
#include <pqxx/version>

#include "naive_pool.hpp"
#include "pqxxpool/pqxxpool.hpp"

namespace {

using std::chrono::milliseconds;

constexpr std::size_t pool_size = 4;
constexpr milliseconds acquire_timeout{30'000};
// pqxxpool's default max_lifetime; the naive pool gets the same so both enforce a lifetime.
constexpr milliseconds max_lifetime{55 * 60 * 1000};

// Created in main() before any benchmark runs, destroyed after the last one: every benchmark
// thread shares them, and no benchmark pays for connecting.
pqxxpool::pool* g_pqxxpool = nullptr;
pqxxpool::pool* g_precise = nullptr;  // precise_usage_timing = true
pqxxpool::pool* g_leaks = nullptr;    // leak_detection_threshold = 60 s
pqxxpool::pool* g_validate_skip = nullptr;   // validate_after_idle = 1 s (the default)
pqxxpool::pool* g_validate_every = nullptr;  // validate_after_idle = 0: a round trip per acquire
naive::pool* g_naive = nullptr;

struct use_pqxxpool {
  static pqxxpool::lease acquire() { return g_pqxxpool->acquire(acquire_timeout); }
};
struct use_precise {
  static pqxxpool::lease acquire() { return g_precise->acquire(acquire_timeout); }
};
struct use_leak_detection {
  static pqxxpool::lease acquire() { return g_leaks->acquire(acquire_timeout); }
};
struct use_validate_skip {
  static pqxxpool::lease acquire() { return g_validate_skip->acquire(acquire_timeout); }
};
struct use_validate_every {
  static pqxxpool::lease acquire() { return g_validate_every->acquire(acquire_timeout); }
};

// The cost of recording one value (the pool records acquire_wait and usage per cycle).
void bm_histogram_record(benchmark::State& state) {
  pqxxpool::histogram h;
  std::int64_t ns = 0;
  for (auto _ : state) {
    ns = (ns * 7 + 12'345) % 50'000'000;  // spread over ~25 buckets, cheap to compute
    h.record(std::chrono::nanoseconds(ns));
    benchmark::DoNotOptimize(h);
  }
  state.SetItemsProcessed(state.iterations());
}
struct use_naive {
  static naive::handle acquire() { return g_naive->acquire(acquire_timeout); }
};

// Context switches of the calling thread (voluntary: it blocked; involuntary: preempted).
struct ctx_switches {
  long voluntary = 0;
  long involuntary = 0;
  static ctx_switches now() noexcept {
    rusage ru{};
    ::getrusage(RUSAGE_THREAD, &ru);
    return {ru.ru_nvcsw, ru.ru_nivcsw};
  }
};

// Adds this thread's context switches during the benchmark loop to counters that Google
// Benchmark sums over threads and divides by the total number of iterations.
void report_switches(benchmark::State& state, const ctx_switches& before) {
  const ctx_switches after = ctx_switches::now();
  state.counters["vcsw/op"] = benchmark::Counter(static_cast<double>(after.voluntary - before.voluntary),
                                                 benchmark::Counter::kAvgIterations);
  state.counters["ivcsw/op"] = benchmark::Counter(static_cast<double>(after.involuntary - before.involuntary),
                                                  benchmark::Counter::kAvgIterations);
}

template <class Pool>
void bm_cycle(benchmark::State& state) {
  const ctx_switches before = ctx_switches::now();
  try {
    for (auto _ : state) {
      auto lease = Pool::acquire();
      bool held = static_cast<bool>(lease);
      benchmark::DoNotOptimize(held);
    }  // released here
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  state.SetItemsProcessed(state.iterations());
  report_switches(state, before);
}

template <class Pool>
void bm_select1(benchmark::State& state) {
  const ctx_switches before = ctx_switches::now();
  try {
    for (auto _ : state) {
      auto lease = Pool::acquire();
      pqxx::nontransaction tx(*lease);
      const pqxx::result r = tx.exec("SELECT 1");
      benchmark::DoNotOptimize(r.size());
    }  // tx ends, then the lease is released
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
  state.SetItemsProcessed(state.iterations());
  report_switches(state, before);
}

void register_benchmarks() {
  // pqxxpool and naive registered alternately, so that even without
  // --benchmark_enable_random_interleaving each pair runs back to back.
  for (const int threads : {1, 2, 4, 16}) {
    benchmark::RegisterBenchmark("cycle/pqxxpool", bm_cycle<use_pqxxpool>)->Threads(threads)->UseRealTime();
    benchmark::RegisterBenchmark("cycle/naive", bm_cycle<use_naive>)->Threads(threads)->UseRealTime();
  }
  benchmark::RegisterBenchmark("cycle/pqxxpool_precise_usage", bm_cycle<use_precise>)->Threads(1)->UseRealTime();
  benchmark::RegisterBenchmark("cycle/pqxxpool_leak_detection", bm_cycle<use_leak_detection>)->Threads(1)->UseRealTime();
  benchmark::RegisterBenchmark("cycle/pqxxpool_validation_skipped", bm_cycle<use_validate_skip>)->Threads(1)->UseRealTime();
  benchmark::RegisterBenchmark("cycle/pqxxpool_validation_every_acquire", bm_cycle<use_validate_every>)
      ->Threads(1)
      ->UseRealTime();
  benchmark::RegisterBenchmark("histogram/record", bm_histogram_record);
  for (const int threads : {1, 4, 16}) {
    benchmark::RegisterBenchmark("select1/pqxxpool", bm_select1<use_pqxxpool>)->Threads(threads)->UseRealTime();
    benchmark::RegisterBenchmark("select1/naive", bm_select1<use_naive>)->Threads(threads)->UseRealTime();
  }
}

std::string libpq_version() {
  const int v = PQlibVersion();  // e.g. 150018 for 15.18
  return std::to_string(v / 10000) + "." + std::to_string(v % 100);
}

std::string server_version(const pqxx::connection_base& c) {
  const int v = c.server_version();
  return std::to_string(v / 10000) + "." + std::to_string(v % 100);
}

void print_stats(const pqxxpool::pool_stats& st) {
  std::fprintf(stderr,
               "pqxxpool stats after the run: acquires=%llu waited_acquires=%llu connections_created=%llu "
               "connect_errors=%llu closed(max_lifetime=%llu broken=%llu validation_failed=%llu) "
               "acquire_wait p50=%.1f us p99=%.1f us max=%.1f us\n",
               static_cast<unsigned long long>(st.acquires), static_cast<unsigned long long>(st.waited_acquires),
               static_cast<unsigned long long>(st.connections_created),
               static_cast<unsigned long long>(st.connect_errors),
               static_cast<unsigned long long>(st.closed_max_lifetime),
               static_cast<unsigned long long>(st.closed_broken),
               static_cast<unsigned long long>(st.closed_validation_failed), st.acquire_wait.p50() * 1e6,
               st.acquire_wait.p99() * 1e6, st.acquire_wait.max_seconds * 1e6);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  const char* conninfo = std::getenv("PQXXPOOL_BENCH_CONNINFO");
  if (conninfo == nullptr || *conninfo == '\0') conninfo = std::getenv("PQXXPOOL_TEST_CONNINFO");
  if (conninfo == nullptr || *conninfo == '\0') {
    std::fprintf(stderr,
                 "pqxxpool_bench: no server to benchmark against.\n"
                 "Set PQXXPOOL_BENCH_CONNINFO (or PQXXPOOL_TEST_CONNINFO) to a libpq connection string,\n"
                 "or run bash bench/run.sh, which starts a throwaway PostgreSQL and runs this program.\n");
    return 2;
  }

  try {
    pqxxpool::pool_config cfg;
    cfg.name = "bench";
    cfg.conninfo = conninfo;
    cfg.max_size = pool_size;
    cfg.min_idle = pool_size;                         // all 4 opened up front
    cfg.acquire_timeout = acquire_timeout;
    cfg.max_lifetime = max_lifetime;
    cfg.validate_after_idle = milliseconds{3'600'000};  // no validation round trip during the run
    cfg.health_check_period = milliseconds{3'600'000};  // no background pings during the run
    // For experiments: PQXXPOOL_BENCH_FAIRNESS_US overrides the fairness window (microseconds).
    if (const char* w = std::getenv("PQXXPOOL_BENCH_FAIRNESS_US"); w != nullptr && *w != '\0')
      cfg.fairness_window = std::chrono::microseconds(std::atoll(w));
    auto px = std::make_unique<pqxxpool::pool>(cfg);
    px->wait_ready(milliseconds{30'000});
    // Two more small pools for the cost of the optional timing and of leak detection.
    cfg.max_size = cfg.min_idle = 1;
    cfg.name = "bench_precise";
    cfg.precise_usage_timing = true;
    auto precise = std::make_unique<pqxxpool::pool>(cfg);
    cfg.name = "bench_leaks";
    cfg.precise_usage_timing = false;
    cfg.leak_detection_threshold = milliseconds{60'000};
    auto leaks = std::make_unique<pqxxpool::pool>(cfg);
    cfg.leak_detection_threshold = milliseconds{0};
    cfg.name = "bench_validate_skip";
    cfg.validate_after_idle = milliseconds{1'000};
    auto validate_skip = std::make_unique<pqxxpool::pool>(cfg);
    cfg.name = "bench_validate_every";
    cfg.validate_after_idle = milliseconds{0};
    auto validate_every = std::make_unique<pqxxpool::pool>(cfg);
    precise->wait_ready(milliseconds{30'000});
    leaks->wait_ready(milliseconds{30'000});
    validate_skip->wait_ready(milliseconds{30'000});
    validate_every->wait_ready(milliseconds{30'000});

    auto nv = std::make_unique<naive::pool>(conninfo, pool_size, max_lifetime);
    std::string server;
    {
      std::vector<naive::handle> open;  // opens all 4 up front, like min_idle does for pqxxpool
      for (std::size_t i = 0; i < pool_size; ++i) open.push_back(nv->acquire(acquire_timeout));
      server = server_version(*open.front());
    }

    std::fprintf(stderr, "pqxxpool %s, libpqxx %s, libpq %s, PostgreSQL server %s, %u CPUs\n", pqxxpool::version,
                 PQXX_VERSION, libpq_version().c_str(), server.c_str(), std::thread::hardware_concurrency());
    benchmark::AddCustomContext("pqxxpool_version", pqxxpool::version);
    benchmark::AddCustomContext("libpqxx_version", PQXX_VERSION);
    benchmark::AddCustomContext("libpq_version", libpq_version());
    benchmark::AddCustomContext("server_version", server);
    benchmark::AddCustomContext("hardware_concurrency", std::to_string(std::thread::hardware_concurrency()));

    g_pqxxpool = px.get();
    g_precise = precise.get();
    g_leaks = leaks.get();
    g_validate_skip = validate_skip.get();
    g_validate_every = validate_every.get();
    g_naive = nv.get();
    register_benchmarks();
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    print_stats(px->stats());
    g_pqxxpool = g_precise = g_leaks = g_validate_skip = g_validate_every = nullptr;
    g_naive = nullptr;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pqxxpool_bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
