#pragma once
// The two interfaces through which the pool core reaches a database. The core knows nothing of
// libpq: src/pqxx implements these with libpqxx, the unit tests with fakes.

#include <memory>
#include <string>

#include "core/clock.hpp"
#include "pqxxpool/config.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::core {

/// What a returned connection needs before it can be handed out again.
enum class return_state {
  clean,   ///< idle, no transaction open: back to the pool
  dirty,   ///< a transaction is open (or failed): roll back off the caller's thread first
  broken,  ///< the connection is lost: close it
};

/// One open physical connection. The core calls at most one member at a time per object.
class physical {
 public:
  virtual ~physical() = default;  // closes the connection (may send a Terminate message)
  /// Cheap check without I/O, run by the releasing thread outside the lock.
  virtual return_state check_return() noexcept = 0;
  /// One round trip (an empty query) bounded by deadline. False if it failed or timed out.
  virtual bool validate(time_point deadline) noexcept = 0;
  /// Whether the last validate() returned false only because its deadline came while the round
  /// trip was still in flight on a connection otherwise healthy (so not known to be bad). No I/O.
  virtual bool validation_in_flight() noexcept { return false; }
  /// Finishes the round trip validation_in_flight() reported, bounded by deadline: true if it
  /// completed and the connection is usable; false otherwise (the connection is then closed).
  virtual bool finish_validation(time_point deadline) noexcept {
    (void)deadline;
    return false;
  }
  /// Rolls back an open transaction (bounded by deadline), then runs reset_hook if given.
  /// False if anything failed: the connection is then closed.
  virtual bool reset(time_point deadline, const std::function<void(connection&)>& reset_hook) noexcept = 0;
  /// The libpqxx connection handed to users; nullptr for test fakes.
  virtual connection* user_connection() noexcept = 0;
  /// The server process serving this connection (PQbackendPID, no I/O), for log lines that an
  /// operator can match with the server's log; 0 when unknown.
  virtual int backend_pid() noexcept { return 0; }
  /// Why the last validate() or reset() returned false ("" when unknown), for the log line that
  /// closes the connection: e.g. what a reset hook threw. Never holds a password or token.
  virtual std::string failure() { return {}; }
};

/// The bounds of one connector::connect() call.
struct connect_limits {
  /// The (first) host must answer by then. Each further host of a multi-host conninfo gets as
  /// long again, counted from when its attempt starts (libpq's connect_timeout is per host).
  time_point deadline{};
  /// No further host is tried once this has passed, and no attempt runs past it: the bound of
  /// the whole call (a health check's timeout). time_point::max(): none.
  time_point give_up_at = time_point::max();
  /// A file descriptor that becomes readable when the pool is closing (-1: none): the connect
  /// then gives up at once, tries no further host, and throws connect_abandoned.
  int stop_fd = -1;
};

/// Thrown by connector::connect() when it gave up because connect_limits::stop_fd said the pool
/// is closing: not a connect error (the pool neither counts nor reports it as one).
class connect_abandoned : public connect_error {
 public:
  explicit connect_abandoned(const connect_error& e) : connect_error(e) {}
};

/// Opens physical connections. connect() runs on a background thread, never under the lock, and
/// may be called from several threads at once (up to max_connecting).
class connector {
 public:
  virtual ~connector() = default;
  /// Opens one connection (running before_connect / after_connect hooks) or throws
  /// pqxxpool::connect_error (with SQLSTATE when known). Must keep to `limits`.
  virtual std::unique_ptr<physical> connect(const connect_limits& limits) = 0;
  /// Called once by the pool's close(), outside the lock, after the stop fd became readable:
  /// interrupts what the stop fd cannot, such as a hook's blocking calls on a connection (its
  /// connect, or that connection's reset, then fails or throws connect_abandoned). From then on
  /// this connector runs no more hooks.
  virtual void stop() noexcept {}
};

}  // namespace pqxxpool::core
