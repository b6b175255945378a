#pragma once
/// @file metrics_server.hpp
/// A small HTTP endpoint for monitoring one or more pools (built when the CMake option
/// PQXXPOOL_WITH_HTTP is on, the default; the umbrella header includes it only then).
///
/// ```cpp
/// pqxxpool::pool orders{cfg};
/// pqxxpool::metrics_server metrics{{&orders}, "127.0.0.1", 9187};
/// // GET http://127.0.0.1:9187/metrics  → Prometheus text format 0.0.4
/// // GET http://127.0.0.1:9187/stats    → JSON array, one object per pool
/// // GET http://127.0.0.1:9187/healthz  → 200 "ok", or 503 when a pool is closed
/// ```
///
/// The pools must outlive the server: destroy (or stop()) the server before its pools.
/// Requests only read pool::stats() (a brief lock); they never touch the database.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace pqxxpool {

class pool;

/// Serves the statistics of a fixed set of pools over HTTP on a background thread:
///
/// - `GET /metrics`: to_prometheus() of every pool's stats(), content type
///   `text/plain; version=0.0.4; charset=utf-8`;
/// - `GET /stats`: a JSON array with to_json() of every pool's stats(), `application/json`;
/// - `GET /healthz`: 200 `ok` when every pool is open (not closed); 503 with a one-line reason
///   (e.g. `pool "orders" is closed`) otherwise. Pool state only: no database round trip, so it
///   stays 200 while the database is unreachable (a liveness answer; for readiness that depends
///   on the database use health_check(), docs/health.md).
///
/// Anything else is 404. The server binds to loopback by default; exposing pool statistics on
/// other interfaces is the caller's decision. There is no TLS and no authentication.
///
/// Eight worker threads answer, one request per connection (`Connection: close`). A connection
/// holds its worker until its answer is written, at most 5 s: a client that has not sent its
/// request and taken the answer by then is dropped. So a few stalled clients do not hold up a
/// scrape; eight that each stall for the full 5 s, again and again, would delay it.
///
/// Thread-safety: port() and stop() may be called from any thread, concurrently with requests.
class metrics_server {
 public:
  /// Binds host:port (port 0 = any free port; see port()) and starts serving at once.
  /// pools must be non-null, have distinct names, and outlive the server (or its stop()).
  /// Throws config_error naming "pools" for a null pool, "listen" when the address cannot be
  /// bound (the message names host:port), std::system_error when the thread or its stop eventfd
  /// cannot be created.
  explicit metrics_server(std::vector<const pool*> pools, std::string host = "127.0.0.1",
                          std::uint16_t port = 0);
  /// Stops and joins (see stop()). Never throws.
  ~metrics_server();
  metrics_server(const metrics_server&) = delete;
  metrics_server& operator=(const metrics_server&) = delete;
  metrics_server(metrics_server&&) = delete;
  metrics_server& operator=(metrics_server&&) = delete;

  /// The port bound, useful when constructed with port 0. Stays valid after stop(). Never throws.
  [[nodiscard]] std::uint16_t port() const noexcept;

  /// The host the server was bound to, as given to the constructor. Never throws.
  [[nodiscard]] const std::string& host() const noexcept;

  /// Closes the listening socket and joins the server thread. An answer being written finishes
  /// first (within the 5 s bound); connections still sending a request are cut at once, so a slow
  /// client cannot hold stop() up. Idempotent and thread-safe; must not be called from a request
  /// handler. Never throws.
  void stop() noexcept;

 private:
  struct impl;
  std::unique_ptr<impl> m_impl;
};

}  // namespace pqxxpool
