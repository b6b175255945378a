#pragma once
/// @file latency_histogram.hpp
/// latency_histogram: the per-thread recorder of acquire latencies of `pqxxpool bench`.
///
/// A log-linear histogram of nanoseconds (HdrHistogram's layout): values below 256 ns have a bucket
/// each; above, every power of two is split into 128 equal buckets, so a bucket's width is at most
/// 1/128 of its lower bound and any quantile read from it is at most 0.78 % above the true value.
/// The largest value is kept exactly. Values up to 2^40 ns (18 min) have their own bucket; larger
/// ones share the last. 4,353 counters (34 KiB) per histogram.
///
/// Why not raw samples: a 1-thread acquire+release cycle runs ~9 M times per second on a 2-CPU
/// VM, so exact per-acquire samples of a 3 s run would take ~220 MB per thread, and reservoir
/// sampling would add a random draw per operation and need weighting when threads differ in
/// count. Recording here is one bit scan and one increment, never allocates, counts every
/// operation, and histograms of threads and runs merge by adding counts.
///
/// Thread-safety: none; each thread records into its own histogram, merged after the threads end.

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pqxxpool_cli {

class latency_histogram {
 public:
  /// log2 of the buckets per power of two above the linear range.
  static constexpr unsigned sub_bits = 7;
  /// Values below this (256 ns) have one bucket per nanosecond.
  static constexpr std::uint64_t linear_limit = std::uint64_t{2} << sub_bits;
  /// Values from 2^max_bits ns up go to the last bucket.
  static constexpr unsigned max_bits = 40;
  /// 256 linear buckets, 128 for each power of two from 2^8 to 2^39, and one for the rest.
  static constexpr std::size_t bucket_count = (std::size_t{max_bits - sub_bits + 1} << sub_bits) + 1;
  /// Upper bound of the relative error of a quantile: a bucket's width over its lower bound.
  static constexpr double relative_error = 1.0 / static_cast<double>(std::uint64_t{1} << sub_bits);

  latency_histogram() : m_counts(bucket_count, 0) {}

  /// The bucket that holds value_ns. Never throws.
  [[nodiscard]] static std::size_t index_of(std::uint64_t value_ns) noexcept {
    if (value_ns < linear_limit) return static_cast<std::size_t>(value_ns);
    const auto msb = static_cast<unsigned>(63 - __builtin_clzll(value_ns));
    if (msb >= max_bits) return bucket_count - 1;
    const unsigned shift = msb - sub_bits;
    return (static_cast<std::size_t>(shift) << sub_bits) + static_cast<std::size_t>(value_ns >> shift);
  }
  /// The smallest value in bucket i. Never throws.
  [[nodiscard]] static std::uint64_t lower_bound_of(std::size_t i) noexcept {
    if (i < linear_limit) return i;
    const std::size_t shift = (i >> sub_bits) - 1;
    const std::uint64_t r = i - (shift << sub_bits);
    return r << shift;
  }
  /// The largest value in bucket i (for the last bucket: the smallest value it holds, as its
  /// values have no upper bound; quantiles there are clamped to the exact maximum). Never throws.
  [[nodiscard]] static std::uint64_t upper_bound_of(std::size_t i) noexcept {
    if (i < linear_limit) return i;
    if (i == bucket_count - 1) return lower_bound_of(i);
    return lower_bound_of(i + 1) - 1;
  }

  /// Records one value (negative counts as 0). O(1), never allocates. Never throws.
  void record(std::chrono::nanoseconds value) noexcept {
    const std::uint64_t ns = value.count() > 0 ? static_cast<std::uint64_t>(value.count()) : 0;
    ++m_counts[index_of(ns)];
    ++m_count;
    if (ns > m_max) m_max = ns;
  }

  /// Adds other's counts to this one. Never throws.
  void merge(const latency_histogram& other) noexcept {
    for (std::size_t i = 0; i < bucket_count; ++i) m_counts[i] += other.m_counts[i];
    m_count += other.m_count;
    m_max = std::max(m_max, other.m_max);
  }

  [[nodiscard]] std::uint64_t count() const noexcept { return m_count; }
  [[nodiscard]] std::uint64_t max_ns() const noexcept { return m_max; }
  [[nodiscard]] std::uint64_t count_at(std::size_t i) const noexcept { return m_counts[i]; }

  /// Quantile q (0 < q ≤ 1) by nearest rank: the upper bound of the bucket that holds the
  /// ceil(q·n)-th smallest value, clamped to the exact maximum (so quantile(1) == max_ns()).
  /// At most 0.78 % above the exact nearest-rank value. 0 when empty. Never throws.
  [[nodiscard]] std::uint64_t quantile_ns(double q) const noexcept {
    if (m_count == 0) return 0;
    const double target = std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(m_count));
    const std::uint64_t rank = std::max<std::uint64_t>(1, static_cast<std::uint64_t>(target));
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < bucket_count; ++i) {
      seen += m_counts[i];
      if (seen >= rank) return std::min(upper_bound_of(i), m_max);
    }
    return m_max;
  }

 private:
  std::vector<std::uint64_t> m_counts;  // heap: 34 KiB would be a lot on a thread's stack
  std::uint64_t m_count = 0;
  std::uint64_t m_max = 0;
};

}  // namespace pqxxpool_cli
