#pragma once
/// @file config.hpp
/// pool_config (a plain struct, validated once when the pool is built), connect_params (the
/// keyword/value set handed to libpq for every physical connection) and the connection alias.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqxx/version>

namespace spdlog {
class logger;
}  // namespace spdlog

#if PQXX_VERSION_MAJOR >= 7
#include <pqxx/connection>
#else
#include <pqxx/connection_base>
#endif

namespace pqxxpool {

/// What a lease hands out. On libpqxx 6 this is pqxx::connection_base (the pool owns the libpq
/// handle through its own connection policy, which pqxx::connection cannot do); on libpqxx 7 it is
/// pqxx::connection. pqxx::work, pqxx::nontransaction etc. accept it as usual.
#if PQXX_VERSION_MAJOR >= 7
using connection = pqxx::connection;
#else
using connection = pqxx::connection_base;
#endif

/// The libpq connection keywords (host, port, dbname, user, password, sslmode, …) for one physical
/// connection, in insertion order. The pool gives before_connect a fresh copy for every connect, so
/// a hook may set a password or token without affecting other connects.
/// Values are never logged or shown in error messages.
/// Thread-safety: a plain value type; not synchronised.
class connect_params {
 public:
  /// Sets key to value, replacing an existing value. Throws std::bad_alloc only.
  void set(std::string key, std::string value);
  /// The value of key, or nullptr when unset. Never throws.
  [[nodiscard]] const std::string* get(std::string_view key) const noexcept;
  /// Removes key; returns whether it was set. Never throws.
  bool erase(std::string_view key) noexcept;
  /// Whether key is set. Never throws.
  [[nodiscard]] bool contains(std::string_view key) const noexcept { return get(key) != nullptr; }
  /// All keyword/value pairs in insertion order. Never throws.
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& items() const noexcept { return m_items; }

 private:
  std::vector<std::pair<std::string, std::string>> m_items;
};

/// Everything a pool needs. Every member has a usable default; the pool validates the whole struct
/// once at construction and throws config_error naming the first bad field.
/// Durations are std::chrono::milliseconds unless said otherwise.
struct pool_config {
  using milliseconds = std::chrono::milliseconds;

  /// Name of the pool, used to tell pools apart in log lines and statistics exports. Default ""
  /// (exported as "default"). Must be UTF-8 without control characters (config_error "name").
  std::string name;

  /// libpq connection string, key=value form or a postgresql:// URI. Parsed with PQconninfoParse
  /// at construction (a parse error is a config_error for "conninfo"). Default "" (libpq's
  /// defaults and PG* environment variables).
  std::string conninfo;

  /// libpq keyword → value pairs laid over what conninfo gives (a value here wins). Unknown
  /// keywords are a config_error naming params["key"]. Default empty.
  std::map<std::string, std::string> params;

  /// Runs for every physical connection, on a background thread, never under the pool's lock,
  /// with a fresh copy of the merged params: set a password or IAM token here. If it throws, that
  /// connect fails (counted in connect_errors) and the pool backs off. Default: none.
  std::function<void(connect_params&)> before_connect;

  /// Runs once on every new connection before it is first handed out (e.g. SET search_path), on
  /// a background thread, never under the pool's lock. If it throws, the connection is closed and
  /// the connect counts as failed. Default: none.
  std::function<void(connection&)> after_connect;

  /// Optional reset run on the pool's maintenance thread after every return (after a rollback if
  /// one was needed), before the connection is handed out again. If it throws, the connection is
  /// closed. Setting it moves every return off the hot path. Default: none (no reset beyond the
  /// rollback of an open transaction).
  std::function<void(connection&)> reset;

  /// Optional: maps a failed connect's message to a hint for the user ("" for none); the hint is
  /// appended to the connect_error message. Runs on a background thread, never under the pool's
  /// lock. dsql::make_pool installs one for DSQL's errors. Default: none.
  std::function<std::string(const std::string& message)> error_hint;

  /// Most physical connections at once (idle + in use + connecting). Default 10; must be ≥ 1.
  std::size_t max_size = 10;

  /// Idle connections kept ready while total < max_size (HikariCP's minimumIdle); idle reaping
  /// never goes below it. Default 2; 0 means open connections only on demand; must be ≤ max_size.
  std::size_t min_idle = 2;

  /// How long acquire() waits for a connection. Default 30 s; 0 means do not wait (throw
  /// acquire_timeout_error at once if none is idle, and open one in the background while below
  /// max_size); milliseconds::max() waits for ever.
  milliseconds acquire_timeout{30'000};

  /// Deadline for one physical connect (TCP, TLS, authentication, after_connect excluded).
  /// With a list of hosts (host=a,b) it applies to each host in turn, as in libpq: a host that
  /// does not answer within it is skipped for the next one, so a connect may take up to this
  /// times the number of hosts (close() abandons a connect in flight at once). Default 10 s;
  /// must be > 0.
  /// A libpq connect_timeout in conninfo or params takes this one's place (libpq's reading:
  /// whole seconds, 1 counts as 2, 0 or less = no limit), as psql would apply it.
  milliseconds connect_timeout{10'000};

  /// A connection is retired at created + max_lifetime × (1 − jitter), and never later than
  /// created + max_lifetime: when its replacement is still connecting at the jittered expiry and
  /// no other connection is free, it serves on into its jitter rather than make a caller wait for
  /// that connect (docs/design.md). Default 55 min (Aurora DSQL closes every connection at 60);
  /// 0 means no limit; otherwise at least 100 ms (no connection is handed out within a tick of
  /// the coarse clock, a few ms, of its expiry).
  milliseconds max_lifetime{55 * 60 * 1000};

  /// Fraction of max_lifetime subtracted from each connection's lifetime, drawn uniformly from
  /// [0, lifetime_jitter) once per connection, so a pool's connections do not all expire together.
  /// Default 0.1; allowed 0 ≤ jitter < 1.
  double lifetime_jitter = 0.1;

  /// The pool's first min_idle connections — at start, and again after evict_all() — draw the
  /// fraction from [0, max(lifetime_jitter, initial_lifetime_spread)) instead, so that their
  /// expiries spread over most of a lifetime: instances deployed together (a fleet) then do not
  /// reconnect in waves every max_lifetime (docs/benchmarks.md, "Fleet simulation"). It costs
  /// about one early reconnect per connection, once. Default 0.9; 0 = off (plain jitter);
  /// allowed 0 ≤ spread < 1.
  double initial_lifetime_spread = 0.9;

  /// Idle connections beyond min_idle close after this long unused. Default 10 min; 0 = never.
  milliseconds idle_timeout{10 * 60 * 1000};

  /// A connection idle at least this long is checked with a round trip (an empty query) before it
  /// is handed out. Default 1 s; 0 = check on every acquire.
  milliseconds validate_after_idle{1'000};

  /// Bound on one validation round trip, and on the rollback of a connection returned inside a
  /// transaction. Default 5 s; must be > 0. An acquire's own (shorter) timeout may end its wait
  /// for a validation first: the caller then gets acquire_timeout_error, and the pool finishes that
  /// round trip in the background within this bound, keeping the connection if it answers.
  milliseconds validation_timeout{5'000};

  /// Period of the background sweep that pings connections idle that long and tops up min_idle.
  /// Default 1 min; 0 = no periodic pings (lifetimes and idle_timeout are still enforced).
  milliseconds health_check_period{60'000};

  /// Most connects in flight at once (each runs on its own background thread). Default 2;
  /// must be ≥ 1; values above max_size act as max_size.
  std::size_t max_connecting = 2;

  /// Most physical connects started per second (a minimum spacing of 1/rate between starts),
  /// e.g. to stay under Aurora DSQL's 100 new connections per second. Default 0 = unlimited;
  /// else at least one per 10 years (about 3.2e-9), so that the spacing fits the clock.
  double max_connect_rate = 0;

  /// Most threads waiting in acquire() at once; beyond it acquire() throws too_many_waiters at
  /// once. acquire(0), which never queues, gets acquire_timeout_error instead. Default 0 =
  /// unbounded.
  std::size_t max_waiting = 0;

  /// Where the pool logs (spdlog): connections opened and closed with the reason, failed
  /// validations, connect failures with the backoff, exhaustion (at most one line per 10 s per
  /// pool), suspected leaks, evict_all() and close(). Never called under the pool's lock; never
  /// given a password or token. Default: nullptr = spdlog's default logger as it is when the
  /// pool is built. Levels: debug for routine opens and closes, info for evict_all/close and
  /// returned leaks, warn for failures, exhaustion and leaks. See docs/logging.md.
  std::shared_ptr<spdlog::logger> logger;

  /// A lease held longer than this is logged once as a suspected leak (warn, with the file:line
  /// that acquired it) and counted in pool_stats::leaks_suspected; its return is logged (info).
  /// Checked by the maintenance thread, which wakes for the earliest lease that could cross it.
  /// Default 0 = off (then acquire() records nothing extra). Must be ≥ 0.
  milliseconds leak_detection_threshold{0};

  /// How pool_stats::usage (how long each lease was held) is timed. false (default): with the
  /// coarse clock already read on acquire and release (CLOCK_MONOTONIC_COARSE, a tick of 1–4 ms),
  /// so it costs nothing extra, but a lease shorter than a tick is recorded as 0 or one tick (the
  /// mean stays right over many leases). true: with the precise clock, two more clock reads
  /// (≈ 26 ns each here) per lease.
  bool precise_usage_timing = false;

  /// Fairness window. A newcomer may take a free connection while the oldest waiter has waited
  /// less than this; once it has waited longer, returned connections go straight to the oldest
  /// waiter and newcomers queue behind it. So no acquire waits longer than this behind newcomers.
  /// Within the window a return wakes one waiter to compete for the connection, unless the
  /// returning thread habitually comes straight back for another (then it is left for that
  /// thread, and a waiter that nobody served looks for it by itself 1.5 windows after it
  /// queued; only with a window of at most 10 ms). Such a thread on another CPU than the oldest
  /// waiter may also keep its connection up to a tenth of the window past that waiter's window,
  /// once per turn and after a hold shorter than that, so that a thread on the waiter's CPU hands
  /// it one (cheaper on small machines; docs/design.md "The CPU grace"). Default 3 ms (the throughput/fairness
  /// trade-off is measured in docs/benchmarks.md); 0 = strict FIFO hand-off; at most 1 min.
  std::chrono::microseconds fairness_window{3000};

  /// First delay after a failed connect; doubles on each further failure. Connects that were in
  /// flight together (up to max_connecting) and fail together count as one failure here. Default
  /// 100 ms; > 0.
  milliseconds connect_backoff_initial{100};

  /// Cap of the connect backoff; connects are retried at this pace forever while needed.
  /// Default 10 s; must be ≥ connect_backoff_initial.
  milliseconds connect_backoff_max{10'000};

  /// Throws config_error naming the first field that is out of range. Does not parse conninfo.
  /// Besides the ranges above, every duration the pool adds to a time point (max_lifetime,
  /// idle_timeout, validate_after_idle, validation_timeout, health_check_period,
  /// leak_detection_threshold, connect_backoff_max) must be at most 10 years, so that no sum
  /// overflows the clock; use 0 where "off" or "unlimited" is meant. acquire_timeout and
  /// connect_timeout may be anything ≥ 0 (milliseconds::max() waits for ever).
  void validate() const;
};

}  // namespace pqxxpool
