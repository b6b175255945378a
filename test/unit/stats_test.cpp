#include <gtest/gtest.h>

#include "pqxxpool/stats.hpp"

namespace pqxxpool::test {
namespace {

using namespace std::chrono_literals;

TEST(histogram, buckets_are_powers_of_two_microseconds) {
  EXPECT_DOUBLE_EQ(histogram::upper_bound_seconds(0), 1e-6);
  EXPECT_DOUBLE_EQ(histogram::upper_bound_seconds(10), 1024e-6);
  histogram h;
  h.record(0ns);
  h.record(1us);
  h.record(1001ns);
  h.record(3us);
  h.record(1000s);  // beyond the last finite bucket
  EXPECT_EQ(h.buckets[0], 2u);
  EXPECT_EQ(h.buckets[1], 1u);
  EXPECT_EQ(h.buckets[2], 1u);
  EXPECT_EQ(h.buckets[histogram::bucket_count], 1u);
  EXPECT_EQ(h.count, 5u);
  EXPECT_DOUBLE_EQ(h.max_seconds, 1000.0);
}

TEST(histogram, quantiles_fall_in_the_right_bucket) {
  histogram h;
  for (int i = 0; i < 99; ++i) h.record(100us);
  h.record(50ms);
  EXPECT_GT(h.p50(), 64e-6);
  EXPECT_LE(h.p50(), 128e-6);
  EXPECT_LE(h.p99(), 128e-6);
  EXPECT_GT(h.quantile(1.0), 32e-3);
  EXPECT_LE(h.quantile(1.0), 50e-3);
  EXPECT_NEAR(h.sum_seconds, 99 * 100e-6 + 50e-3, 1e-9);
  EXPECT_EQ(histogram{}.p99(), 0.0);
}

TEST(histogram, since_gives_the_interval) {
  histogram a;
  a.record(10us);
  histogram b = a;
  b.record(10ms);
  const histogram d = b.since(a);
  EXPECT_EQ(d.count, 1u);
  EXPECT_GT(d.p50(), 8e-3);
}

}  // namespace
}  // namespace pqxxpool::test
