#include "pqxxpool/config.hpp"

#include <cmath>
#include <string>

#include "pqxxpool/errors.hpp"
#include "utf8.hpp"

namespace pqxxpool {

namespace {
void require_non_negative(const char* field, std::chrono::milliseconds v) {
  if (v.count() < 0) throw config_error(field, "must be >= 0 ms, got " + std::to_string(v.count()) + " ms");
}
void require_positive(const char* field, std::chrono::milliseconds v) {
  if (v.count() <= 0) throw config_error(field, "must be > 0 ms, got " + std::to_string(v.count()) + " ms");
}
// Durations the pool adds to a time point: beyond this the sum could overflow the clock's
// 64-bit nanoseconds (about 292 years from boot). 0 already means "off" or "unlimited" where
// that is wanted.
constexpr std::chrono::milliseconds longest = std::chrono::hours(24 * 3653);  // 10 years
void require_at_most_longest(const char* field, std::chrono::milliseconds v, const char* instead) {
  if (v > longest)
    throw config_error(field, "must be at most 10 years (" + std::to_string(longest.count()) + " ms), got " +
                                  std::to_string(v.count()) + " ms" + instead);
}
// The shortest max_lifetime other than 0 (see validate()).
constexpr std::chrono::milliseconds shortest_lifetime{100};
}  // namespace

void pool_config::validate() const {
  // The name goes into log lines, JSON and Prometheus labels: it must be text.
  if (const std::size_t bad = detail::first_invalid_utf8(name); bad != std::string::npos)
    throw config_error("name", "must be UTF-8 text; byte " + std::to_string(bad) + " of " +
                                   std::to_string(name.size()) + " is not");
  for (const char c : name) {
    if (static_cast<unsigned char>(c) < 0x20 || c == '\x7f')
      throw config_error("name", "must not contain control characters (line feed, tab, ...)");
  }
  if (max_size == 0) throw config_error("max_size", "must be >= 1, got 0");
  if (min_idle > max_size)
    throw config_error("min_idle", "must be <= max_size (" + std::to_string(max_size) + "), got " +
                                       std::to_string(min_idle) + " (the default is 2: lower it with max_size)");
  if (max_connecting == 0) throw config_error("max_connecting", "must be >= 1, got 0");
  if (!(lifetime_jitter >= 0.0 && lifetime_jitter < 1.0))  // also rejects NaN
    throw config_error("lifetime_jitter", "must be in [0, 1), got " + std::to_string(lifetime_jitter));
  if (!(initial_lifetime_spread >= 0.0 && initial_lifetime_spread < 1.0))  // also rejects NaN
    throw config_error("initial_lifetime_spread",
                       "must be in [0, 1), got " + std::to_string(initial_lifetime_spread));
  require_non_negative("acquire_timeout", acquire_timeout);
  require_positive("connect_timeout", connect_timeout);
  require_non_negative("max_lifetime", max_lifetime);
  require_at_most_longest("max_lifetime", max_lifetime, " (0 = unlimited)");
  // The hot path reads a coarse clock (a few ms per tick) and never hands out a connection
  // within one tick of its expiry: with lifetimes of that order every new connection counted as
  // expired at once, and the pool reconnected in a loop without serving anyone.
  if (max_lifetime.count() > 0 && max_lifetime < shortest_lifetime)
    throw config_error("max_lifetime", "must be 0 (unlimited) or at least " + std::to_string(shortest_lifetime.count()) +
                                           " ms, got " + std::to_string(max_lifetime.count()) + " ms");
  require_non_negative("idle_timeout", idle_timeout);
  require_at_most_longest("idle_timeout", idle_timeout, " (0 = never reap idle connections)");
  require_non_negative("validate_after_idle", validate_after_idle);
  require_at_most_longest("validate_after_idle", validate_after_idle, "");
  require_positive("validation_timeout", validation_timeout);
  require_at_most_longest("validation_timeout", validation_timeout, "");
  require_non_negative("health_check_period", health_check_period);
  require_at_most_longest("health_check_period", health_check_period, " (0 = no background pings)");
  require_non_negative("leak_detection_threshold", leak_detection_threshold);
  require_at_most_longest("leak_detection_threshold", leak_detection_threshold, " (0 = off)");
  require_positive("connect_backoff_initial", connect_backoff_initial);
  require_at_most_longest("connect_backoff_max", connect_backoff_max, "");
  if (connect_backoff_max < connect_backoff_initial)
    throw config_error("connect_backoff_max", "must be >= connect_backoff_initial (" +
                                                  std::to_string(connect_backoff_initial.count()) + " ms), got " +
                                                  std::to_string(connect_backoff_max.count()) + " ms");
  if (!(max_connect_rate >= 0.0))  // also rejects NaN
    throw config_error("max_connect_rate", "must be >= 0 connects per second (0 = unlimited)");
  // The spacing 1/rate is added to time points like the durations above: at most 10 years.
  if (max_connect_rate > 0.0 && 1.0 / max_connect_rate > std::chrono::duration<double>(longest).count())
    throw config_error("max_connect_rate", "must be 0 (unlimited) or at least one connect per 10 years "
                                           "(about 3.2e-09 per second)");
  if (fairness_window.count() < 0 || fairness_window > std::chrono::minutes(1))
    throw config_error("fairness_window", "must be in [0, 60000000] us (0 to 1 min), got " +
                                              std::to_string(fairness_window.count()) + " us");
}

}  // namespace pqxxpool
