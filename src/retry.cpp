#include "pqxxpool/retry.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <thread>

#include <pqxx/except>

#include "pqxxpool/errors.hpp"

namespace pqxxpool {

void retry_policy::validate() const {
  if (initial_backoff.count() < 0) throw config_error("initial_backoff", "must be >= 0 ms");
  if (!(multiplier >= 1.0)) throw config_error("multiplier", "must be >= 1");
  if (max_backoff < initial_backoff) throw config_error("max_backoff", "must be >= initial_backoff");
  if (!(jitter >= 0.0 && jitter <= 1.0)) throw config_error("jitter", "must be in [0, 1]");
  if (acquire_timeout.count() < 0) throw config_error("acquire_timeout", "must be >= 0 ms");
}

namespace {

enum class verdict { rethrow, retry, retry_and_discard, retry_lost };

bool mentions(const char* text, const char* code) { return std::string_view(text).find(code) != std::string_view::npos; }

// What to do about an attempt's exception. libpqxx 6 maps SQLSTATE 40001 to
// serialization_failure (not an sql_error, so no sqlstate() there); libpqxx 7 keeps sqlstate().
// DSQL reports its OCC conflicts as 40001 with OC000 (data) or OC001 (stale catalog: this
// connection's cached schema is stale, so it must not be reused) in the message.
verdict classify(const std::exception_ptr& error, bool idempotent) {
  try {
    std::rethrow_exception(error);
  } catch (const pqxx::in_doubt_error&) {
    // The connection broke during COMMIT. Lost: see retry_lost below.
    return idempotent ? verdict::retry_lost : verdict::rethrow;
  } catch (const pqxx::broken_connection&) {
    return verdict::retry_lost;  // not committed: the whole transaction runs again
  } catch (const pqxx::serialization_failure& e) {
    return mentions(e.what(), "OC001") ? verdict::retry_and_discard : verdict::retry;
  } catch (const pqxx::sql_error& e) {
    // Only a serialization failure is retried; the OC codes are read from its message, never
    // from other errors (whose DETAIL may quote data such as a key "OC001").
    if (e.sqlstate() != "40001") return verdict::rethrow;
    return mentions(e.what(), "OC001") ? verdict::retry_and_discard : verdict::retry;
  } catch (...) {
    return verdict::rethrow;
  }
}

std::chrono::milliseconds backoff_for(const retry_policy& policy, unsigned retry) {
  // 0 × pow(…) could be 0 × inf = NaN after a thousand retries: no backoff is no backoff.
  if (policy.initial_backoff.count() == 0) return std::chrono::milliseconds{0};
  thread_local std::mt19937_64 rng{std::random_device{}()};
  const double base = static_cast<double>(policy.initial_backoff.count()) * std::pow(policy.multiplier, retry);
  const double capped = std::min(base, static_cast<double>(policy.max_backoff.count()));
  const double jittered = capped * (1.0 + std::uniform_real_distribution<double>(0.0, policy.jitter)(rng));
  // Up to twice max_backoff: kept below 2^63 ms (about 292 million years) before the conversion,
  // which would be undefined beyond it (max_backoff = milliseconds::max(), say).
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(std::min(jittered, 9.0e18)));
}

}  // namespace

namespace detail {

void run_with_retry(pool& p, const std::function<void(pqxx::work&)>& body, const retry_policy& policy,
                    source_location where) {
  policy.validate();
  for (unsigned attempt = 0;; ++attempt) {
    // The caller's location, not this line: a leak report must name the code that ran the work.
    lease c = policy.acquire_timeout.count() > 0 ? p.acquire(policy.acquire_timeout, where) : p.acquire(where);
    std::exception_ptr error;
    try {
      pqxx::work tx{*c};
      body(tx);
      tx.commit();
      return;
    } catch (...) {
      error = std::current_exception();
    }
    const verdict v = classify(error, policy.idempotent);
    // A lost connection is given back, not discarded: the pool sees it is gone and closes it as
    // broken (closed_broken, where a monitor looks for lost connections). One that libpq still
    // calls open after a broken_connection (libpqxx 7's protocol_violation derives from it) is
    // out of step with the server and is discarded instead.
    if (v == verdict::retry_and_discard || (v == verdict::retry_lost && c->is_open())) c.discard();
    c.release();
    if (v == verdict::rethrow || attempt >= policy.max_retries) std::rethrow_exception(error);
    std::this_thread::sleep_for(backoff_for(policy, attempt));
  }
}

}  // namespace detail

pqxx::result retry_exec(pool& p, const std::string& sql, const retry_policy& policy, source_location where) {
  return retry_transaction(p, [&sql](pqxx::work& tx) { return tx.exec(sql); }, policy, where);
}

}  // namespace pqxxpool
