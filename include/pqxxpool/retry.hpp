#pragma once
/// @file retry.hpp
/// Re-running whole transactions that failed on a serialization conflict: PostgreSQL's SQLSTATE
/// 40001 and Aurora DSQL's optimistic-concurrency conflicts (OC000, OC001).
///
/// ```cpp
/// int n = pqxxpool::retry_transaction(pool, [](pqxx::work& tx) {
///   return tx.exec("UPDATE counter SET n = n + 1 RETURNING n")[0][0].as<int>();
/// });
/// ```

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include <pqxx/result>
#include <pqxx/transaction>

#include "pqxxpool/pool.hpp"

namespace pqxxpool {

/// How retry_transaction retries. Defaults are those of the AWS DSQL connectors for Go, Java,
/// Ruby and .NET: 3 retries (up to 4 attempts), 100 ms, ×2, capped at 5 s, up to 25% jitter.
struct retry_policy {
  /// Retries after the first attempt. Default 3; 0 = a single attempt.
  unsigned max_retries = 3;
  /// Delay before the first retry. Default 100 ms; 0 = retry at once.
  std::chrono::milliseconds initial_backoff{100};
  /// Factor applied to the delay per retry. Default 2.0; must be ≥ 1.
  double multiplier = 2.0;
  /// Cap of the delay (before jitter). Default 5 s.
  std::chrono::milliseconds max_backoff{5000};
  /// Up to this fraction of the delay is added at random. Default 0.25; allowed 0…1.
  double jitter = 0.25;
  /// Whether the work may run twice: only then is a transaction retried whose COMMIT outcome is
  /// unknown (the connection broke during COMMIT). Default false.
  bool idempotent = false;
  /// How long each attempt waits for a connection; 0 = the pool's acquire_timeout. Default 0.
  std::chrono::milliseconds acquire_timeout{0};

  /// Throws config_error naming the first bad field.
  void validate() const;
};

namespace detail {
/// Runs `body` in a pqxx::work on a fresh lease per attempt and commits; retries as the policy
/// says. Rethrows the last error when retries run out or the error is not retryable. Each lease
/// is taken as if at `where` (the caller's line, for leak reports).
void run_with_retry(pool& p, const std::function<void(pqxx::work&)>& body, const retry_policy& policy,
                    source_location where);
}  // namespace detail

/// Runs fn(pqxx::work&) in a transaction (plain BEGIN, which DSQL accepts) and commits it; fn must
/// not commit itself. On a serialization conflict (SQLSTATE 40001; DSQL adds OC000/OC001 to its text)
/// the whole transaction is re-run on a fresh lease after a backoff, as after a broken connection
/// (which the pool closes as broken when it comes back); after OC001 (stale catalog) the old
/// connection is discarded (closed_discarded). A COMMIT whose outcome is unknown
/// (pqxx::in_doubt_error) is retried only when policy.idempotent. Any other error is rethrown at
/// once. Returns what fn returns, by value (a returned reference is copied). Blocks the caller
/// during backoff. Thread-safe (uses the pool). `where` is the caller's file and line, recorded
/// for each lease as acquire() records it (leak reports name it; leave the default).
template <typename F>
auto retry_transaction(pool& p, F&& fn, const retry_policy& policy = {},
                       source_location where = source_location::current()) {
  using result_type = std::decay_t<std::invoke_result_t<F&, pqxx::work&>>;
  if constexpr (std::is_void_v<result_type>) {
    detail::run_with_retry(p, [&fn](pqxx::work& tx) { fn(tx); }, policy, where);
  } else {
    std::optional<result_type> out;
    detail::run_with_retry(p, [&fn, &out](pqxx::work& tx) { out.emplace(fn(tx)); }, policy, where);
    return std::move(*out);
  }
}

/// The single-statement form: runs sql in a retried transaction and returns its result. `where`:
/// as for retry_transaction.
pqxx::result retry_exec(pool& p, const std::string& sql, const retry_policy& policy = {},
                        source_location where = source_location::current());

}  // namespace pqxxpool
