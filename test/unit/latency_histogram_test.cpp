// `pqxxpool bench`'s acquire-latency recorder (tools/pqxxpool/latency_histogram.hpp): buckets tile
// the range without gaps or overlaps, each within 1/128 of its lower bound; quantiles are nearest
// rank, never below the true value and at most 0.78 % above it; the maximum is exact; merging adds.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "latency_histogram.hpp"

namespace pqxxpool::test {
namespace {

using pqxxpool_cli::latency_histogram;
using std::chrono::nanoseconds;

TEST(latency_histogram, buckets_tile_the_range_contiguously) {
  EXPECT_EQ(latency_histogram::lower_bound_of(0), 0u);
  for (std::size_t i = 0; i + 1 < latency_histogram::bucket_count; ++i) {
    const std::uint64_t lo = latency_histogram::lower_bound_of(i);
    const std::uint64_t hi = latency_histogram::upper_bound_of(i);
    ASSERT_LE(lo, hi) << i;
    ASSERT_EQ(latency_histogram::lower_bound_of(i + 1), hi + 1) << i;
    ASSERT_EQ(latency_histogram::index_of(lo), i) << i;
    ASSERT_EQ(latency_histogram::index_of(hi), i) << i;
    // Width over lower bound: at most 1/128 (exact buckets below 256 ns).
    ASSERT_LE(static_cast<double>(hi - lo + 1), static_cast<double>(std::max<std::uint64_t>(lo, 1)) / 128.0 + 1.0) << i;
  }
  const std::size_t last = latency_histogram::bucket_count - 1;
  EXPECT_EQ(latency_histogram::lower_bound_of(last), std::uint64_t{1} << 40);
  EXPECT_EQ(latency_histogram::index_of(std::uint64_t{1} << 40), last);
  EXPECT_EQ(latency_histogram::index_of(UINT64_MAX), last);
}

TEST(latency_histogram, small_values_are_exact) {
  for (std::uint64_t v = 0; v < 256; ++v) {
    EXPECT_EQ(latency_histogram::index_of(v), v);
    EXPECT_EQ(latency_histogram::upper_bound_of(latency_histogram::index_of(v)), v);
  }
}

TEST(latency_histogram, quantiles_are_nearest_rank_within_the_bound) {
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> dist(std::log(2e6), 1.5);  // around 2 ms, wide tail
  std::vector<std::uint64_t> values;
  latency_histogram h;
  for (int i = 0; i < 100'000; ++i) {
    const auto v = static_cast<std::uint64_t>(dist(rng));
    values.push_back(v);
    h.record(nanoseconds(static_cast<std::int64_t>(v)));
  }
  std::sort(values.begin(), values.end());
  EXPECT_EQ(h.count(), values.size());
  EXPECT_EQ(h.max_ns(), values.back());
  EXPECT_EQ(h.quantile_ns(1.0), values.back());
  for (const double q : {0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999}) {
    const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(values.size())));
    const std::uint64_t exact = values[rank - 1];
    const std::uint64_t got = h.quantile_ns(q);
    EXPECT_GE(got, exact) << q;
    EXPECT_LE(static_cast<double>(got), static_cast<double>(exact) * (1 + latency_histogram::relative_error)) << q;
  }
}

TEST(latency_histogram, empty_negative_and_merge) {
  latency_histogram a;
  EXPECT_EQ(a.quantile_ns(0.99), 0u);
  a.record(nanoseconds(-5));  // counts as 0
  EXPECT_EQ(a.count_at(0), 1u);
  latency_histogram b;
  b.record(nanoseconds(1'000));
  b.record(nanoseconds(3'000'000));
  a.merge(b);
  EXPECT_EQ(a.count(), 3u);
  EXPECT_EQ(a.max_ns(), 3'000'000u);
  EXPECT_EQ(a.quantile_ns(0.5), latency_histogram::upper_bound_of(latency_histogram::index_of(1'000)));
  EXPECT_EQ(a.quantile_ns(0.99), 3'000'000u);  // clamped to the exact maximum
}

}  // namespace
}  // namespace pqxxpool::test
