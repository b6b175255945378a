#pragma once
/// @file stats.hpp
/// pool_stats: a point-in-time snapshot of one pool's gauges, counters and histograms.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

namespace pqxxpool {

/// A cumulative histogram of durations with fixed log-scale buckets (powers of two of a
/// microsecond: 1 µs, 2 µs, 4 µs … 2^27 µs ≈ 134 s, then +Inf). Counts only grow, like a
/// Prometheus histogram. Recording is O(1) and allocation-free.
/// Thread-safety: none of its own; the pool records and copies it under its lock.
struct histogram {
  /// Number of finite buckets; buckets[bucket_count] counts values above the last bound.
  static constexpr std::size_t bucket_count = 28;

  /// Non-cumulative count per bucket: buckets[i] counts values v with
  /// upper_bound(i-1) < v <= upper_bound(i).
  std::array<std::uint64_t, bucket_count + 1> buckets{};
  std::uint64_t count = 0;   ///< number of recorded values
  double sum_seconds = 0;    ///< sum of recorded values, in seconds
  double max_seconds = 0;    ///< largest recorded value, in seconds (0 if none)

  /// Upper bound of bucket i in seconds (2^i µs); +infinity for i == bucket_count. Never throws.
  [[nodiscard]] static double upper_bound_seconds(std::size_t i) noexcept;

  /// The bucket (0 … bucket_count) that a value of `ns` nanoseconds (≥ 0) falls in. Never throws.
  [[nodiscard]] static std::size_t bucket_index(std::int64_t ns) noexcept {
    // Bucket i holds (2^(i-1) µs, 2^i µs]: i is the bit width of ceil(µs) - 1.
    const auto us_ceil = static_cast<std::uint64_t>((ns + 999) / 1000);
    const std::size_t i = us_ceil > 1 ? static_cast<std::size_t>(64 - __builtin_clzll(us_ceil - 1)) : 0;
    return i < bucket_count ? i : bucket_count;
  }

  /// Records one value (negative values count as 0). Never throws. Inline: the pool records two
  /// values per acquire+release.
  void record(std::chrono::nanoseconds value) noexcept {
    const std::int64_t ns = value.count() > 0 ? value.count() : 0;
    ++buckets[bucket_index(ns)];
    ++count;
    const double seconds = static_cast<double>(ns) * 1e-9;
    sum_seconds += seconds;
    if (seconds > max_seconds) max_seconds = seconds;
  }

  /// Estimates quantile q (0..1) in seconds by linear interpolation inside the bucket that holds
  /// it, clamped to max_seconds. 0 when empty. Never throws.
  [[nodiscard]] double quantile(double q) const noexcept;
  [[nodiscard]] double p50() const noexcept { return quantile(0.50); }  ///< quantile(0.5)
  [[nodiscard]] double p99() const noexcept { return quantile(0.99); }  ///< quantile(0.99)

  /// The values recorded since `earlier` (a previous snapshot of the same histogram): counts and
  /// sums subtracted; max_seconds is kept from *this (an upper bound). Never throws.
  [[nodiscard]] histogram since(const histogram& earlier) const noexcept;
};

/// The most recent connect failure (or other connection error) a pool saw.
struct error_info {
  std::string message;   ///< libpq's verbose error text (never contains a password), empty if none
  std::string sqlstate;  ///< five-character SQLSTATE when the server or libpq reported one, else ""
  std::chrono::system_clock::time_point time{};  ///< when it happened (wall clock)
  [[nodiscard]] bool empty() const noexcept { return message.empty(); }  ///< true if no error yet
};

/// A consistent snapshot of a pool, taken under its lock by pool::stats().
/// Gauges describe the instant of the snapshot; counters only grow over the pool's life.
/// Every physical connection is in exactly one state: total == idle + in_use + connecting.
struct pool_stats {
  /// pool_config::name, or "default" when that is empty: tells pools apart in exports.
  std::string name;

  // --- gauges -------------------------------------------------------------------------
  std::size_t total = 0;       ///< idle + in_use + connecting; never above max_size
  std::size_t idle = 0;        ///< open connections ready to hand out
  std::size_t in_use = 0;      ///< leased out, or being validated / rolled back by the pool
  std::size_t connecting = 0;  ///< connects in flight (slots reserved)
  std::size_t waiting = 0;     ///< threads blocked in acquire()
  std::size_t max_size = 0;    ///< configured pool_config::max_size
  std::size_t min_idle = 0;    ///< configured pool_config::min_idle
  std::uint64_t generation = 0;  ///< bumped by every evict_all()
  bool closed = false;         ///< close() was called

  // --- counters -----------------------------------------------------------------------
  std::uint64_t acquires = 0;               ///< successful acquires (leases handed out)
  std::uint64_t pool_exhausted_count = 0;   ///< acquires (try_acquires, max_waiting refusals) finding all max_size in use
  std::uint64_t acquire_timeouts = 0;       ///< acquires that gave up at their deadline
  std::uint64_t waited_acquires = 0;        ///< acquires that had to queue as a waiter
  std::uint64_t waited_for_connect = 0;     ///< waiters served by a freshly opened connection
  std::uint64_t rejected_waiters = 0;       ///< acquires refused because max_waiting threads already waited
  std::uint64_t connections_created = 0;    ///< physical connections opened successfully
  std::uint64_t connect_errors = 0;         ///< failed connects (including failing hooks)
  std::uint64_t closed_max_lifetime = 0;    ///< closed because they reached their expiry
  std::uint64_t closed_idle = 0;            ///< closed by idle reaping (idle_timeout)
  std::uint64_t closed_broken = 0;          ///< closed because libpq reported them broken, or a rollback failed
  std::uint64_t closed_validation_failed = 0;  ///< closed because a validation round trip failed
  std::uint64_t closed_discarded = 0;       ///< closed by lease::discard()
  std::uint64_t evicted = 0;                ///< closed because evict_all() retired their generation
  std::uint64_t rollbacks = 0;              ///< connections returned inside a transaction, for the pool to roll back (one whose ROLLBACK fails is closed and counted in closed_broken too)
  std::uint64_t leaks_suspected = 0;        ///< leases held past leak_detection_threshold (each counted once)

  // --- histograms ---------------------------------------------------------------------
  /// Time acquire() spent waiting (0 for an immediate hand-out), one value per successful acquire.
  histogram acquire_wait;
  /// How long each lease was held, from hand-out to its return, one value per returned lease.
  /// Timed with the coarse clock unless pool_config::precise_usage_timing (see there).
  histogram usage;
  /// How long each successful physical connect took (TCP, TLS, authentication, hooks included),
  /// timed with the precise clock on the connect thread. Failed connects are not recorded here.
  histogram connect_time;

  error_info last_error;  ///< the most recent connect failure: message, SQLSTATE, time (empty if none)
};

}  // namespace pqxxpool
