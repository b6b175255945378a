#pragma once
// Test hooks of pqxxpool::metrics_server (src/metrics_server.cpp); not part of the public API.

#include <chrono>

namespace pqxxpool::detail {

/// Sets how long one client connection may take from now on (default 5 s) and returns the
/// previous value. Connections already being served keep theirs. Thread-safe.
std::chrono::milliseconds set_metrics_exchange_deadline(std::chrono::milliseconds deadline) noexcept;

}  // namespace pqxxpool::detail
