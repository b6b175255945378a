#include "pqxxpool/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pqxxpool {

double histogram::upper_bound_seconds(std::size_t i) noexcept {
  if (i >= bucket_count) return std::numeric_limits<double>::infinity();
  return std::ldexp(1e-6, static_cast<int>(i));  // 2^i µs
}

void histogram::record(std::chrono::nanoseconds value) noexcept {
  const std::int64_t ns = std::max<std::int64_t>(value.count(), 0);
  // Bucket i holds (2^(i-1) µs, 2^i µs]: i is the bit width of ceil(µs) - 1.
  const auto us_ceil = static_cast<std::uint64_t>((ns + 999) / 1000);
  std::size_t i = 0;
  if (us_ceil > 1) i = static_cast<std::size_t>(64 - __builtin_clzll(us_ceil - 1));
  ++buckets[std::min(i, bucket_count)];
  ++count;
  const double seconds = static_cast<double>(ns) * 1e-9;
  sum_seconds += seconds;
  max_seconds = std::max(max_seconds, seconds);
}

double histogram::quantile(double q) const noexcept {
  if (count == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  const double target = q * static_cast<double>(count);
  double below = 0;
  for (std::size_t i = 0; i <= bucket_count; ++i) {
    const auto n = static_cast<double>(buckets[i]);
    if (n > 0 && below + n >= target) {
      const double lower = i == 0 ? 0.0 : upper_bound_seconds(i - 1);
      const double upper = i == bucket_count ? max_seconds : upper_bound_seconds(i);
      const double estimate = lower + (upper - lower) * ((target - below) / n);
      return std::min(estimate, max_seconds);
    }
    below += n;
  }
  return max_seconds;
}

histogram histogram::since(const histogram& earlier) const noexcept {
  histogram d = *this;
  for (std::size_t i = 0; i <= bucket_count; ++i)
    d.buckets[i] = buckets[i] >= earlier.buckets[i] ? buckets[i] - earlier.buckets[i] : 0;
  d.count = count >= earlier.count ? count - earlier.count : 0;
  d.sum_seconds = std::max(0.0, sum_seconds - earlier.sum_seconds);
  return d;
}

}  // namespace pqxxpool
