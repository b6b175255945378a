#pragma once
/// @file metrics.hpp
/// Exports of pool_stats for monitoring: the Prometheus text format (version 0.0.4) and JSON.
///
/// ```cpp
/// std::string body = pqxxpool::to_prometheus(pool.stats());              // one pool
/// std::string all  = pqxxpool::to_prometheus({orders.stats(), audit.stats()});  // several
/// std::string json = pqxxpool::to_json(pool.stats());
/// ```
///
/// Metric families (each HELP/TYPE line once, pools told apart by the label pool="<name>"):
/// pqxxpool_connections{state="idle|in_use|connecting"} (gauge), pqxxpool_connections_max,
/// pqxxpool_connections_min_idle, pqxxpool_waiting_threads, pqxxpool_pool_closed (gauges);
/// pqxxpool_acquires_total, pqxxpool_pool_exhausted_total, pqxxpool_acquire_timeouts_total,
/// pqxxpool_waited_acquires_total, pqxxpool_waited_for_connect_total,
/// pqxxpool_rejected_waiters_total, pqxxpool_connections_created_total,
/// pqxxpool_connect_errors_total, pqxxpool_connections_closed_total{reason=…},
/// pqxxpool_rollbacks_total, pqxxpool_leaks_suspected_total (counters); pqxxpool_acquire_seconds, pqxxpool_usage_seconds,
/// pqxxpool_connect_seconds (histograms, le in seconds).
/// docs/metrics.md describes each.

#include <string>
#include <vector>

#include "pqxxpool/stats.hpp"

namespace pqxxpool {

/// The Prometheus text exposition of one pool's statistics. Never throws except std::bad_alloc.
[[nodiscard]] std::string to_prometheus(const pool_stats& stats);

/// The Prometheus text exposition of several pools, each metric family once with one sample per
/// pool. Throws config_error naming "name" when two pools share a name.
[[nodiscard]] std::string to_prometheus(const std::vector<pool_stats>& pools);

/// One pool's statistics as a JSON object: "name", "gauges" and "counters" (members named as the
/// pool_stats fields), "acquire_wait", "usage", "connect_time" (count, sum_seconds, p50_seconds,
/// p99_seconds, max_seconds, and non-cumulative "buckets" of {"le", "count"}), "last_error"
/// (null or {"message", "sqlstate", "time_unix_ms"}); docs/metrics.md shows one. Bytes that are not
/// UTF-8 become U+FFFD. Never throws except std::bad_alloc.
[[nodiscard]] std::string to_json(const pool_stats& stats);

}  // namespace pqxxpool
