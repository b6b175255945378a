#pragma once
// How long dsql::config::token_cache reuses a token (src/dsql_pool.cpp; unit-tested on its own),
// and make_pool_config with an injected clock, for the unit tests of the cache.

#include <algorithm>
#include <chrono>
#include <functional>

#include "pqxxpool/config.hpp"
#include "pqxxpool/dsql_pool.hpp"

namespace pqxxpool::dsql {

/// Until when a cached token made at `made`, valid for `expires`, may be handed to another
/// connect. The token's X-Amz-Date has whole seconds, so it expires at `made` rounded down to the
/// second + expires: the 80 % counts from there, and at least a second is left for the connect
/// to reach the server (a 2 s token reused for 1.6 s from the unrounded time was refused as
/// expired under AddressSanitizer). A 1 s token is not reused at all.
inline std::chrono::system_clock::time_point token_reuse_until(std::chrono::system_clock::time_point made,
                                                               std::chrono::seconds expires) {
  using clock_duration = std::chrono::system_clock::duration;
  const auto signed_at = std::chrono::floor<std::chrono::seconds>(made);
  const clock_duration reuse = std::min<clock_duration>(std::chrono::duration_cast<clock_duration>(expires * 8 / 10),
                                                        expires - std::chrono::seconds(1));
  return signed_at + reuse;
}

namespace detail {

/// make_pool_config(cfg, libpq_version) whose token source reads the time from `now` (tests; an
/// empty function means std::chrono::system_clock::now). Throws what make_pool_config throws.
[[nodiscard]] pool_config make_pool_config(const config& cfg, int libpq_version,
                                           std::function<std::chrono::system_clock::time_point()> now);

}  // namespace detail

}  // namespace pqxxpool::dsql
