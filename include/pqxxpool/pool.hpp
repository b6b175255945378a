#pragma once
/// @file pool.hpp
/// pqxxpool::pool — a thread-safe pool of libpqxx connections — and pqxxpool::lease, the move-only
/// RAII handle through which a caller uses one connection.
///
/// Guarantees: any number of threads may call any member of pool at once. total = idle + in_use +
/// connecting never exceeds max_size. Waiters are served in arrival order once they have waited
/// longer than pool_config::fairness_window. libpq, hooks and user code never run under the pool's
/// lock. A connection is never handed out past its expiry, inside a transaction, broken, of an old
/// generation, or after close().

#include <chrono>
#include <memory>

#include "pqxxpool/config.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/stats.hpp"

namespace pqxxpool {

/// Where a lease was acquired, for leak reports: captured by default arguments of acquire() and
/// try_acquire() with GCC's and clang's __builtin_FILE()/__builtin_LINE() (std::source_location
/// is C++20). Pass one explicitly to attribute leases to your own caller (e.g. in a wrapper).
struct source_location {
  const char* file = "";  ///< path of the source file as the compiler saw it; never null
  int line = 0;           ///< line number; 0 when unknown

  /// The location of the call that evaluates this default argument. Never throws.
  static constexpr source_location current(const char* file = __builtin_FILE(), int line = __builtin_LINE()) noexcept {
    return {file, line};
  }
};

namespace core {
class pool_core;
struct slot;
}  // namespace core

/// One connection borrowed from a pool. Move-only; an empty lease (default-constructed, moved from,
/// or from try_acquire() when nothing was free) converts to false. Destroying a non-empty lease
/// gives the connection back. A lease may outlive its pool object: the connection is then closed
/// when the lease ends. Do not keep a transaction object alive past its lease.
/// Thread-safety: a lease is used by one thread at a time; different leases are independent.
class lease {
 public:
  lease() noexcept = default;
  lease(lease&& other) noexcept;
  lease& operator=(lease&& other) noexcept;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  ~lease();

  /// True when the lease holds a connection. Never throws.
  explicit operator bool() const noexcept { return m_slot != nullptr; }
  /// The connection. Precondition: *this is non-empty (checked: throws pqxxpool::error if empty).
  [[nodiscard]] connection& operator*() const;
  /// The connection. Same precondition as operator*.
  connection* operator->() const;
  /// The connection. Same precondition as operator*.
  [[nodiscard]] connection& get() const { return **this; }

  /// Gives the connection back now (the destructor does this). No-op when empty. Never throws.
  /// Like discard(), call it only once every transaction, pipeline or stream on the connection
  /// has been destroyed: the connection may be closed or handed to another thread at once.
  void release() noexcept;
  /// Closes the connection instead of giving it back (counted in closed_discarded), e.g. after an
  /// error that may have left session state behind. No-op when empty. Never throws.
  /// The connection object is destroyed here: a pqxx::work or nontransaction still alive on it
  /// would later touch freed memory, so end those first (an inner scope).
  void discard() noexcept;

 private:
  friend class core::pool_core;
  lease(core::pool_core* owner, core::slot* s) noexcept : m_core(owner), m_slot(s) {}
  void give_back(bool discard) noexcept;

  core::pool_core* m_core = nullptr;
  core::slot* m_slot = nullptr;
};

/// A thread-safe pool of libpqxx connections. Neither copyable nor movable.
class pool {
 public:
  /// Validates cfg (throws config_error naming the field), parses conninfo and params, and starts
  /// the background threads, which open min_idle connections. Never blocks on connecting.
  explicit pool(pool_config cfg);
  /// Closes the pool (see close()). Outstanding leases stay valid; their connections close on return.
  /// Threads blocked in acquire() or wait_ready() get pool_closed; the pool's internals live on
  /// until the last of them (and the last lease) is done, so destroying a pool that other threads
  /// are waiting on is safe. A call that starts after the destructor has begun is not: the pool
  /// object itself is gone (share it, e.g. through a std::shared_ptr, if threads outlive it).
  ~pool();
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;

  /// Borrows a connection, waiting at most pool_config::acquire_timeout.
  /// Throws acquire_timeout_error (with the last connect error), pool_closed, too_many_waiters.
  /// `where` (the caller's file:line by default) is kept only when leak detection is on.
  /// Thread-safe.
  [[nodiscard]] lease acquire(source_location where = source_location::current());
  /// As acquire(), waiting at most timeout (0 = do not wait for a connection to come free; a
  /// negative timeout counts as 0). An idle connection due for validation still gets its round
  /// trip, bounded by validation_timeout when timeout is 0 and by timeout otherwise. With 0 and
  /// nothing idle, the pool opens one connection in the background while below max_size (as
  /// try_acquire()), so that a later call finds it.
  [[nodiscard]] lease acquire(std::chrono::milliseconds timeout, source_location where = source_location::current());
  /// Borrows an idle connection if one can be had at once, else returns an empty lease.
  /// Never waits for a connection to come free or to be opened; an idle connection due for
  /// validation still gets its round trip, which can take up to validation_timeout. When it
  /// returns empty below max_size, the pool opens one connection in the background (pgxpool's
  /// TryAcquire does the same): a pool with min_idle 0 used only this way still connects.
  /// Throws pool_closed. Thread-safe.
  [[nodiscard]] lease try_acquire(source_location where = source_location::current());

  /// Optional fail-fast at start-up: waits until min_idle connections are open (at least one when
  /// min_idle is 0). Throws the last connect_error when that does not happen within timeout while
  /// connects are failing (acquire_timeout_error otherwise), pool_closed if closed. Thread-safe.
  void wait_ready(std::chrono::milliseconds timeout);

  /// A consistent snapshot of gauges, counters and histograms. Thread-safe; takes the lock briefly.
  [[nodiscard]] pool_stats stats() const;

  /// Retires every connection (starts a new generation): idle ones close now, leased ones close on
  /// return, connects in flight are discarded when they finish. Use after a failover or a
  /// credential change. Thread-safe; never blocks on I/O under the lock.
  void evict_all();

  /// Closes the pool: waiters get pool_closed, idle connections close, background threads stop,
  /// leased connections close on return. Idempotent. Thread-safe. Must not be called from a hook.
  /// Blocks until the background threads have stopped. Network waits end at once: a connect in
  /// flight is abandoned, a validation or rollback round trip in flight (on any thread) ends, and
  /// a query that an after_connect or reset hook is running fails because its socket is shut down
  /// (the hook sees a broken_connection; the connect is not counted as an error). Not interrupted:
  /// a before_connect hook (its own I/O, e.g. fetching credentials) and libpq's blocking
  /// resolution of a host name (hostaddr avoids it).
  void close();

  /// The configuration the pool was built with (connect_timeout as in force: replaced by a
  /// connect_timeout given in conninfo/params). Its conninfo and params hold whatever password
  /// they were given: do not log them. Never throws.
  [[nodiscard]] const pool_config& config() const noexcept;

 private:
  core::pool_core* m_core;  // owned; handed to the last lease if leases outlive the pool
};

}  // namespace pqxxpool
