#include "pqxxpool/stats.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace pqxxpool {

double histogram::upper_bound_seconds(std::size_t i) noexcept {
  if (i >= bucket_count) return std::numeric_limits<double>::infinity();
  return std::ldexp(1e-6, static_cast<int>(i));  // 2^i µs
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
