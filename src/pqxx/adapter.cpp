// libpq / libpqxx side of pqxxpool: building the connection parameters, opening connections with
// a hard deadline, and the per-connection operations the pool core needs (return check,
// validation round trip, rollback). Only the class that wraps a libpq handle in a libpqxx
// connection depends on the libpqxx major version.

#include "pqxx/adapter.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include <pqxx/version>
#if PQXX_VERSION_MAJOR < 7
#include <pqxx/connectionpolicy>
#else
#include <libpq-events.h>  // PGEVT_CONNDESTROY: when a handle adopted by libpqxx 7 is finished
#include <pqxx/connection>
#endif
#include <pqxx/except>

#include "pqxxpool/errors.hpp"

namespace pqxxpool::pqxx_adapter {

namespace {

using std::chrono::steady_clock;

// ---------------------------------------------------------------------------------------------
// libpq handle ownership and message helpers

struct pgconn_finisher {
  void operator()(PGconn* conn) const noexcept { PQfinish(conn); }
};
using pgconn_ptr = std::unique_ptr<PGconn, pgconn_finisher>;

struct conninfo_freer {
  void operator()(PQconninfoOption* options) const noexcept { PQconninfoFree(options); }
};
using conninfo_ptr = std::unique_ptr<PQconninfoOption, conninfo_freer>;

struct pgresult_clearer {
  void operator()(PGresult* res) const noexcept { PQclear(res); }
};
using pgresult_ptr = std::unique_ptr<PGresult, pgresult_clearer>;

constexpr std::string_view ellipsis = "\xE2\x80\xA6";  // "…" in UTF-8

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

std::string_view trim(std::string_view text) noexcept {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

// libpq's messages about an unparsable conninfo quote pieces of the input, which may be (part of)
// a password, so quoted text is elided.
std::string elide_quoted(std::string_view text) {
  // Everything from the first quote to the last goes: pairing quotes cannot be trusted when the
  // input itself contains quotes (a URI password like a" b "c would expose " b ").
  const std::size_t first = text.find('"');
  if (first == std::string_view::npos) return std::string(text);
  const std::size_t last = text.rfind('"');
  std::string out(text.substr(0, first));
  out.append("\"").append(ellipsis).append("\"");
  if (last != first) out.append(text.substr(last + 1));
  return out;
}

// Defence in depth: libpq never echoes a password, but hooks and future libpq versions might.
std::string scrub(std::string message, const std::vector<std::string>& secrets) {
  for (const auto& secret : secrets) {
    if (secret.empty()) continue;
    for (auto pos = message.find(secret); pos != std::string::npos; pos = message.find(secret, pos + 3)) {
      message.replace(pos, secret.size(), "***");
    }
  }
  return message;
}

// Verbose mode (needed for the SQLSTATE) adds "LOCATION:  function, file.c:line" lines that mean
// nothing to a pool user; drop them and the trailing newline libpq appends.
std::string clean_libpq_message(std::string_view message) {
  std::string out;
  while (!message.empty()) {
    const auto eol = message.find('\n');
    const auto line = message.substr(0, eol);
    if (line.rfind("LOCATION:  ", 0) != 0) out.append(line).append("\n");
    message = eol == std::string_view::npos ? std::string_view{} : message.substr(eol + 1);
  }
  return std::string{trim(out)};
}

}  // namespace

// Declared in adapter.hpp (unit-tested in test/unit/params_test.cpp). Lines that begin with whitespace continue the part
// above them, so a part left out takes its continuation lines with it.
std::string loss_text(std::string_view message) noexcept {
  try {
    std::string kept;
    bool quoting = false;  // inside a part left out, until the next line that starts a new part
    for (std::string_view rest = message; !rest.empty();) {
      const std::size_t eol = rest.find('\n');
      const std::string_view line = rest.substr(0, eol);
      rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
      const bool continuation = !line.empty() && (line[0] == ' ' || line[0] == '\t');
      if (!continuation) {
        quoting = false;
        for (const std::string_view part : {"DETAIL:", "HINT:", "CONTEXT:", "QUERY:", "STATEMENT:", "LINE "}) {
          if (line.substr(0, part.size()) == part) quoting = true;
        }
      }
      if (!quoting) kept.append(line).append("\n");
    }
    std::string out;
    bool space = false;
    for (const char c : clean_libpq_message(kept)) {
      if (c == '\n' || c == '\t' || c == ' ') {
        space = !out.empty();
        continue;
      }
      if (space) out.push_back(' ');
      space = false;
      out.push_back(c);
    }
    return out;
  } catch (...) {
    return {};
  }
}

namespace {

std::string lost_message(const PGconn* conn) noexcept {
  const char* text = conn != nullptr ? PQerrorMessage(conn) : nullptr;
  return text != nullptr ? loss_text(text) : std::string{};
}

std::string exception_text(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "an exception not derived from std::exception";
  }
}

// ---------------------------------------------------------------------------------------------
// Waiting on a libpq socket against a deadline

enum class wait_result { ready, timed_out, failed, stopped };

// Waits until the connection's socket reports one of `events` (or an error condition, which the
// caller's next libpq call will diagnose). The socket is looked up afresh because PQconnectPoll
// may switch to a new one (next host, or SSL/GSS fallback).
wait_result wait_socket(PGconn* conn, short events, core::time_point deadline, int stop_fd = -1) noexcept {
  for (;;) {
    const int fd = PQsocket(conn);
    if (fd < 0) {
      errno = EBADF;  // for the caller's message
      return wait_result::failed;
    }
    const auto now = steady_clock::now();
    if (now >= deadline) return wait_result::timed_out;
    // Round up so a poll that times out really has reached the deadline (no busy loop).
    const auto remaining = std::chrono::ceil<std::chrono::milliseconds>(deadline - now).count();
    const int timeout_ms = static_cast<int>(std::min<decltype(remaining)>(remaining, INT_MAX));
    pollfd pfd[2] = {{fd, events, 0}, {stop_fd, POLLIN, 0}};  // a negative fd is ignored by poll
    const int n = ::poll(pfd, 2, timeout_ms);
    if (n > 0) return (pfd[1].revents & POLLIN) != 0 ? wait_result::stopped : wait_result::ready;
    if (n < 0 && errno != EINTR) return wait_result::failed;
  }
}

// Whether stop_fd (connect_limits::stop_fd) says the pool is closing.
bool stop_requested(int stop_fd) noexcept {
  if (stop_fd < 0) return false;
  pollfd p{stop_fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 1 && (p.revents & POLLIN) != 0;
}

// Sends `sql` and collects its results without ever blocking past `deadline`. True only if
// exactly one result with status `expected` arrived and nothing failed; `first`, when given,
// receives the first result (matching or not). The connection is put in non-blocking mode for the
// round trip; blocking mode (which libpqxx relies on) is restored only once every result is in
// (success, or a statement the server rejected), because restoring it earlier flushes unsent
// output and could block. After a timeout or a lost connection the caller closes the connection,
// and a non-blocking PQfinish cannot hang.
//
// await_round_trip() is the part after PQsendQuery: flushing, then collecting the results. Cut
// by its deadline it sets *timed_out and leaves the round trip in flight on a healthy connection,
// so that a later call (with a later deadline) can finish it (pooled_physical::finish_validation).
bool await_round_trip(PGconn* conn, ExecStatusType expected, core::time_point deadline, int stop_fd,
                      pgresult_ptr* first, bool* timed_out) noexcept {
  const auto ready = [&](wait_result r) {
    if (r == wait_result::timed_out && timed_out != nullptr) *timed_out = true;
    return r == wait_result::ready;
  };
  // Flush as libpq documents for non-blocking mode: while output is pending, wait for either
  // direction, and consume input when readable so the server cannot deadlock us.
  for (int pending = PQflush(conn); pending != 0; pending = PQflush(conn)) {
    if (pending < 0) return false;
    if (!ready(wait_socket(conn, POLLIN | POLLOUT, deadline, stop_fd))) return false;
    if (PQconsumeInput(conn) == 0) return false;
  }

  int matching = 0;
  bool ok = true;
  for (;;) {
    while (PQisBusy(conn) != 0) {
      if (!ready(wait_socket(conn, POLLIN, deadline, stop_fd))) return false;
      if (PQconsumeInput(conn) == 0) return false;
    }
    pgresult_ptr res{PQgetResult(conn)};
    if (!res) break;
    if (PQresultStatus(res.get()) == expected) {
      ++matching;
    } else {
      ok = false;  // keep draining so the connection is left in a consistent state
    }
    if (first != nullptr && !*first) *first = std::move(res);
  }
  // Every result is in and all output was flushed above, so leaving non-blocking mode cannot
  // block: a statement the server rejected leaves a usable connection behind.
  if (PQstatus(conn) != CONNECTION_OK || PQsetnonblocking(conn, 0) != 0) return false;
  return ok && matching == 1;
}

bool round_trip(PGconn* conn, const char* sql, ExecStatusType expected, core::time_point deadline,
                int stop_fd = -1, pgresult_ptr* first = nullptr, bool* timed_out = nullptr) noexcept {
  if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) return false;
  if (PQsetnonblocking(conn, 1) != 0) return false;
  if (PQsendQuery(conn, sql) == 0) return false;
  return await_round_trip(conn, expected, deadline, stop_fd, first, timed_out);
}

// ---------------------------------------------------------------------------------------------
// Wrapping a libpq handle in a libpqxx connection

#if PQXX_VERSION_MAJOR < 7

// libpqxx 6 only builds connections from a conninfo string and hides the handle. A connection
// policy is its only hook into handle management: connection_base asks it for a handle in init()
// and hands the handle back on disconnect. This policy hands over the handle we connected
// ourselves exactly once, so libpqxx can never open a connection on its own, and keeps track of
// the current handle so the pool can reach it for status checks and round trips. Its options
// string is empty, so no password is ever stored where libpqxx could show it.
class handle_policy final : public pqxx::connectionpolicy {
 public:
  // Takes the handle from `conn` only once the base is built, so a throw leaves it with the caller.
  explicit handle_policy(pgconn_ptr&& conn) : pqxx::connectionpolicy{std::string{}}, m_pending{conn.release()} {}
  ~handle_policy() noexcept override {
    if (m_pending != nullptr) PQfinish(m_pending);  // never handed over (construction failed)
  }
  handle_policy(const handle_policy&) = delete;
  handle_policy& operator=(const handle_policy&) = delete;

  handle do_startconnect(handle orig) override {
    if (orig != nullptr) return orig;
    // Later calls (a reactivation attempt) get nullptr, which libpqxx reports as broken.
    m_current = std::exchange(m_pending, nullptr);
    return m_current;
  }
  handle do_dropconnect(handle orig) noexcept override {
    note_loss(orig);
    m_current = nullptr;
    return orig;
  }
  handle do_disconnect(handle orig) noexcept override {
    note_loss(orig);
    m_current = nullptr;
    return pqxx::connectionpolicy::do_disconnect(orig);  // do_dropconnect, then PQfinish
  }

  [[nodiscard]] PGconn* current() const noexcept { return m_current; }
  /// libpq's last message of a handle that libpqxx dropped after it broke ("" if none).
  [[nodiscard]] const std::string& lost() const noexcept { return m_lost; }

 private:
  // When libpqxx 6 drops (PQfinish) a handle that broke, libpq's message why goes with it: keep
  // it for the pool's "closing connection …: broken" line. A healthy handle being closed has no
  // message worth keeping.
  void note_loss(PGconn* orig) noexcept {
    if (orig != nullptr && m_lost.empty() && PQstatus(orig) != CONNECTION_OK) m_lost = lost_message(orig);
  }

  PGconn* m_pending;
  PGconn* m_current = nullptr;
  std::string m_lost;
};

// The connection users get. Built exactly like pqxx::basic_connection_base: connection_base only
// stores the reference to m_policy in its constructor, so passing the not yet constructed member
// is fine, and the destructor closes while m_policy still exists.
class pooled_connection final : public pqxx::connection_base {
 public:
  explicit pooled_connection(pgconn_ptr&& conn) : pqxx::connection_base{m_policy}, m_policy{std::move(conn)} {
    try {
      init();  // takes the handle and sets up libpqxx's session state (server version, notices)
    } catch (...) {
      close();
      throw;
    }
    // A lost connection must stay lost: without this libpqxx 6 silently reconnects with its
    // (empty) conninfo, i.e. to libpq's defaults, behind the pool's back.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    inhibit_reactivation(true);
#pragma GCC diagnostic pop
  }
  ~pooled_connection() noexcept { close(); }
  pooled_connection(const pooled_connection&) = delete;
  pooled_connection& operator=(const pooled_connection&) = delete;

  /// The libpq handle, or nullptr once libpqxx has dropped it.
  [[nodiscard]] PGconn* handle() const noexcept { return m_policy.current(); }

  /// Why the connection broke, as libpq said it last ("" when it did not break, or said nothing).
  /// Call only as the lease comes back, or from the pool's own round trips. libpqxx 6 makes no
  /// further libpq call on a broken connection (its next transaction fails on the client
  /// encoding first), so libpq's message is still that of the failure.
  [[nodiscard]] std::string lost_reason() const noexcept {
    PGconn* const conn = handle();
    if (conn != nullptr) return PQstatus(conn) != CONNECTION_OK ? lost_message(conn) : std::string{};
    try {
      return m_policy.lost();
    } catch (...) {
      return {};
    }
  }

 private:
  handle_policy m_policy;
};

#else  // libpqxx 7

// libpqxx 7 adopts a libpq handle through pqxx::connection::seize_raw_connection, and users get a
// pqxx::connection, which this class is. libpqxx 7 never reconnects by itself, but the handle is
// private and a user can still close() the connection, move it away or move another one onto it.
// So handle() gives the adopted handle only while it is provably still alive and held here:
//  - alive: a libpq event procedure registered on the handle notes PGEVT_CONNDESTROY, which
//    PQfinish raises whoever calls it (close(), a move-assignment, the destructor, or the user's
//    own connection after moving it out of the lease); until then the handle is valid memory;
//  - held here: the base's socket and backend pid are still those of the handle (a base closed or
//    moved from gives -1 and 0; a connection moved onto it closed ours first, which the event
//    notes). libpq sets the socket to -1 when it drops a broken connection too, which handle()
//    then reports as lost: it is.
struct handle_watch {
  std::atomic<bool> finished{false};
  // libpq's message of the first failed result that found the connection broken. libpq replaces
  // its error message at every later call ("no connection to the server"), and libpqxx 7 keeps
  // a broken handle, so the reason a server or pooler gave would be gone by the lease's return.
  // Written by whichever thread ran the query: the lease's user (read in check_return on the same
  // thread, as the lease returns) or the pool's own validation/reset (read after it, under the
  // pool's lock). Only ever read while the base still holds the handle (lost_reason()), so a
  // connection moved out of its lease and used elsewhere is never read from.
  std::string lost;
};

// A server error of severity FATAL or PANIC: the server (or PgBouncer) ends the session after
// it, so libpq may not know yet that the connection is gone when the result is made.
bool ends_session(const PGresult* res) noexcept {
  const char* severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity == nullptr) severity = PQresultErrorField(res, PG_DIAG_SEVERITY);  // servers before 9.6
  return severity != nullptr && (std::strcmp(severity, "FATAL") == 0 || std::strcmp(severity, "PANIC") == 0);
}

// Owns one reference to the watch through the pass-through pointer, dropped when the handle is
// finished. libpq calls this for every event of the connection; a result that found the
// connection broken leaves its message in the watch. Returns 1 (success) always.
int watch_handle(PGEventId event, void* info, void* pass_through) noexcept {
  // Results carry the event procedure with them: a pqxx::result that outlives its connection
  // raises PGEVT_RESULTDESTROY after CONNDESTROY freed the reference, so `ref` is dereferenced
  // only for events of a live connection.
  auto* ref = static_cast<std::shared_ptr<handle_watch>*>(pass_through);
  if (event == PGEVT_CONNDESTROY) {
    (*ref)->finished.store(true, std::memory_order_release);
    delete ref;
  } else if (event == PGEVT_RESULTCREATE) {
    const auto* created = static_cast<const PGEventResultCreate*>(info);
    if (created->conn == nullptr) return 1;
    handle_watch& w = **ref;
    if (w.lost.empty() && PQresultStatus(created->result) == PGRES_FATAL_ERROR &&
        (PQstatus(created->conn) != CONNECTION_OK || ends_session(created->result))) {
      try {
        w.lost = PQresultErrorMessage(created->result);  // made fit for a log line when read (loss_text)
      } catch (...) {
        // out of memory: the close line falls back to libpq's last message
      }
    }
  }
  return 1;
}

std::shared_ptr<handle_watch> watch(PGconn* conn) {
  auto w = std::make_shared<handle_watch>();
  auto* ref = new std::shared_ptr<handle_watch>(w);
  if (PQregisterEventProc(conn, watch_handle, "pqxxpool", ref) == 0) {
    delete ref;  // not registered: libpq will never call it
    throw std::bad_alloc();  // libpq fails this only when out of memory (arguments are valid)
  }
  return w;
}

class pooled_connection final : public pqxx::connection {
 public:
  // Takes the handle from `conn` only once the base is built, so a throw leaves it with the caller.
  // The watch is registered first (an argument of the delegated constructor): once the base
  // exists nothing may throw, or the base and the caller would both close the handle.
  explicit pooled_connection(pgconn_ptr&& conn) : pooled_connection{std::move(conn), watch(conn.get())} {}
  pooled_connection(const pooled_connection&) = delete;
  pooled_connection& operator=(const pooled_connection&) = delete;

  /// The libpq handle, or nullptr once this connection no longer holds it (or libpq dropped it).
  [[nodiscard]] PGconn* handle() const noexcept {
    if (m_watch->finished.load(std::memory_order_acquire)) return nullptr;
    return m_socket >= 0 && sock() == m_socket && backendpid() == m_backend_pid ? m_handle : nullptr;
  }

  /// Why the connection broke, as libpq said it ("" when it did not break, when libpq said
  /// nothing, or when this connection no longer holds the handle: a user's close() or move).
  /// libpq keeps a broken handle (socket -1, backend pid 0) until PQfinish; the base still holds
  /// ours exactly when its username() is our handle's own string, recorded at adoption (only the
  /// base is asked: m_handle may belong to a connection the user moved it to, on another thread).
  /// Call only as the lease comes back, or from the pool's own round trips.
  [[nodiscard]] std::string lost_reason() const noexcept {
    if (m_user == nullptr || username() != m_user) return {};
    if (m_watch->finished.load(std::memory_order_acquire)) return {};
    if (PQstatus(m_handle) == CONNECTION_OK) return {};
    if (!m_watch->lost.empty()) return loss_text(m_watch->lost);
    return lost_message(m_handle);
  }

 private:
  pooled_connection(pgconn_ptr&& conn, std::shared_ptr<handle_watch> w) noexcept(false)
      : pqxx::connection{pqxx::connection::seize_raw_connection(conn.get())},
        m_handle{conn.get()},
        m_watch{std::move(w)},
        m_socket{PQsocket(conn.get())},
        m_backend_pid{PQbackendPID(conn.get())},
        m_user{PQuser(conn.get())} {
    conn.release();  // the base owns it now; its destructor closes it
  }

  PGconn* const m_handle;                      // valid while !m_watch->finished
  const std::shared_ptr<handle_watch> m_watch;  // shared with the event procedure's reference
  const int m_socket;                           // of m_handle when adopted
  const int m_backend_pid;                      // of m_handle when adopted (0 if the server sent none)
  const char* const m_user;                     // PQuser(m_handle): a string inside m_handle, for identity
};

#endif

// ---------------------------------------------------------------------------------------------
// Interrupting users' hooks when the pool closes

// The sockets of connections inside a user's hook (after_connect, reset) while it runs. A hook
// makes blocking libpq calls, which the stop fd cannot interrupt (round_trip and the connect
// poll it); so close() shuts these sockets down (core::connector::stop), the hook's call fails
// at once, and a hook waiting on a stalled server does not hold close() up. Each entry is a dup()
// of the connection's socket, owned here: shutdown() acts on the socket, not the descriptor, and
// a hook that closed its connection cannot make us shut down a descriptor number reused since.
class hook_sockets {
 public:
  hook_sockets() = default;
  hook_sockets(const hook_sockets&) = delete;
  hook_sockets& operator=(const hook_sockets&) = delete;
  ~hook_sockets() {
    for (const int fd : m_fds) ::close(fd);  // none left in practice: every enter has its leave
  }

  /// Registers `socket` for the duration of a hook: -1 if the pool is closing (run no hook
  /// then), else a handle for leave(). Throws std::bad_alloc.
  int enter(int socket) {
    std::lock_guard<std::mutex> lk(m_mu);
    if (m_stopped) return -1;
    const int fd = socket >= 0 ? ::fcntl(socket, F_DUPFD_CLOEXEC, 0) : -1;
    if (fd < 0) return -2;  // nothing to interrupt (no socket, or no descriptor left): run the hook
    try {
      m_fds.push_back(fd);
    } catch (...) {
      ::close(fd);
      throw;
    }
    return fd;
  }

  void leave(int handle) noexcept {
    if (handle < 0) return;
    std::lock_guard<std::mutex> lk(m_mu);
    const auto it = std::find(m_fds.begin(), m_fds.end(), handle);
    if (it != m_fds.end()) m_fds.erase(it);
    ::close(handle);
  }

  /// From close(), after the stop fd was raised: interrupts every hook running now and refuses
  /// later ones. Idempotent.
  void stop() noexcept {
    std::lock_guard<std::mutex> lk(m_mu);  // m_mu guards m_fds and m_stopped; held for syscalls only
    m_stopped = true;
    for (const int fd : m_fds) ::shutdown(fd, SHUT_RDWR);
  }

  [[nodiscard]] bool stopped() const noexcept {
    std::lock_guard<std::mutex> lk(m_mu);
    return m_stopped;
  }

 private:
  mutable std::mutex m_mu;
  std::vector<int> m_fds;
  bool m_stopped = false;
};

// Registers a connection's socket with hook_sockets while a hook runs on it (RAII).
class in_hook {
 public:
  in_hook(hook_sockets& hooks, PGconn* conn) : m_hooks{hooks}, m_handle{hooks.enter(conn != nullptr ? PQsocket(conn) : -1)} {}
  ~in_hook() { m_hooks.leave(m_handle); }
  in_hook(const in_hook&) = delete;
  in_hook& operator=(const in_hook&) = delete;
  /// False when the pool was already closing: do not run the hook.
  [[nodiscard]] bool admitted() const noexcept { return m_handle != -1; }

 private:
  hook_sockets& m_hooks;
  const int m_handle;
};

// ---------------------------------------------------------------------------------------------
// core::physical

class pooled_physical final : public core::physical {
 public:
  // The backend pid is read now: libpq reports 0 once the connection has gone bad, which is
  // exactly when a log line about its closing needs it. stop_fd (connect_limits::stop_fd) ends a
  // validation or rollback round trip at once when the pool closes; hooks share the connector's
  // hook_sockets.
  pooled_physical(std::unique_ptr<pooled_connection> conn, int stop_fd, std::shared_ptr<hook_sockets> hooks) noexcept
      : m_conn{std::move(conn)},
        m_backend_pid{m_conn->handle() != nullptr ? PQbackendPID(m_conn->handle()) : 0},
        m_stop_fd{stop_fd},
        m_hooks{std::move(hooks)} {}

  core::return_state check_return() noexcept override {
    // The reason noted here ends the pool's "closing connection …: broken" line. Each call starts
    // afresh, so that a reason noted by an earlier call that ended well never ends a later line.
    m_failure.clear();
    PGconn* const conn = m_conn->handle();
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      note_lost();
      return core::return_state::broken;
    }
    switch (PQtransactionStatus(conn)) {
      case PQTRANS_IDLE:
        return core::return_state::clean;
      case PQTRANS_INTRANS:
      case PQTRANS_INERROR:
        return core::return_state::dirty;
      case PQTRANS_ACTIVE:  // a query still running: its results would reach the next user
        note_failure("given back with a query still running (an unfinished pipeline or asynchronous query)");
        return core::return_state::broken;
      case PQTRANS_UNKNOWN:  // connection bad
        break;
    }
    note_lost();
    return core::return_state::broken;
  }

  bool validate(core::time_point deadline) noexcept override {
    m_failure.clear();
    bool timed_out = false;
    const bool ok = round_trip(m_conn->handle(), "", PGRES_EMPTY_QUERY, deadline, m_stop_fd, nullptr, &timed_out);
    PGconn* const conn = m_conn->handle();
    m_validation_in_flight = !ok && timed_out && conn != nullptr && PQstatus(conn) == CONNECTION_OK;
    if (!ok) note_validation_failure(timed_out);
    return ok;
  }

  bool validation_in_flight() noexcept override { return m_validation_in_flight; }

  bool finish_validation(core::time_point deadline) noexcept override {
    m_failure.clear();
    if (!std::exchange(m_validation_in_flight, false)) return false;
    PGconn* const conn = m_conn->handle();
    bool timed_out = false;
    const bool ok = conn != nullptr && PQstatus(conn) == CONNECTION_OK &&
                    await_round_trip(conn, PGRES_EMPTY_QUERY, deadline, m_stop_fd, nullptr, &timed_out);
    if (!ok) note_validation_failure(timed_out);
    return ok;
  }

  bool reset(core::time_point deadline, const std::function<void(connection&)>& reset_hook) noexcept override {
    m_failure.clear();
    PGconn* const conn = m_conn->handle();
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) return false;
    const PGTransactionStatusType status = PQtransactionStatus(conn);
    if (status == PQTRANS_INTRANS || status == PQTRANS_INERROR) {
      if (!round_trip(conn, "ROLLBACK", PGRES_COMMAND_OK, deadline, m_stop_fd)) {
        note_failure("the ROLLBACK of a transaction left open failed");
        return false;
      }
    }
    if (PQtransactionStatus(conn) != PQTRANS_IDLE) return false;
    if (!reset_hook) return true;
    try {
      const in_hook registered{*m_hooks, conn};
      if (!registered.admitted()) return false;  // the pool is closing
      reset_hook(*m_conn);
    } catch (const std::exception& e) {
      // Kept for the close log line: a hook that throws on every return (a tx.exec0 on a query
      // that returns a row, say) otherwise shows only as connections closed one after another.
      note_failure("the reset hook threw: ", e.what());
      return false;
    } catch (...) {
      note_failure("the reset hook threw");
      return false;
    }
    // A hook that left a transaction open or lost the connection must not pass as reset.
    if (check_return() == core::return_state::clean) return true;
    note_failure("the reset hook left a transaction open or lost the connection");
    return false;
  }

  std::string failure() override { return m_failure; }

  connection* user_connection() noexcept override { return m_conn.get(); }

  int backend_pid() noexcept override { return m_backend_pid; }

 private:
  /// Records why reset() fails; out of memory loses the reason, not the connection's close.
  void note_failure(const char* what, const char* detail = "") noexcept {
    try {
      m_failure = std::string(what) + detail;
    } catch (...) {
      m_failure.clear();
    }
  }

  /// `what`, then ": " and `said` when libpq said something. Out of memory loses the reason.
  void note_failure_saying(const char* what, const std::string& said) noexcept {
    try {
      m_failure = said.empty() ? std::string(what) : std::string(what) + ": " + said;
    } catch (...) {
      m_failure.clear();
    }
  }

  /// "the connection was lost", with what libpq said when it said something (a server's or
  /// PgBouncer's FATAL message, "server closed the connection unexpectedly", …).
  void note_lost() noexcept { note_failure_saying("the connection was lost", m_conn->lost_reason()); }

  /// Why a validation round trip failed: no answer in time (a slow network, or a server or pooler
  /// that queues the query: PgBouncer waiting for a server connection), a lost connection, or an
  /// error the server sent.
  void note_validation_failure(bool timed_out) noexcept {
    PGconn* const conn = m_conn->handle();
    if (conn == nullptr || PQstatus(conn) != CONNECTION_OK) {
      note_lost();
    } else if (timed_out) {
      note_failure("no answer before the validation deadline (validation_timeout, or the acquire's own)");
    } else if (stop_requested(m_stop_fd)) {
      note_failure("the pool is closing");
    } else {
      note_failure_saying("the server answered with an error", lost_message(conn));
    }
  }

  std::unique_ptr<pooled_connection> m_conn;  // its destructor closes the connection
  const int m_backend_pid;
  const int m_stop_fd;  // owned by the pool core, which outlives its connections
  // The last validate() was cut by its deadline with its empty query still in flight on a healthy
  // connection (the core calls one member at a time, so no lock).
  bool m_validation_in_flight = false;
  const std::shared_ptr<hook_sockets> m_hooks;
  std::string m_failure;  // why check_return() said broken or reset() failed (one member at a time)
};

// ---------------------------------------------------------------------------------------------
// core::connector

std::string password_of(const connect_params& params) {
  const std::string* password = params.get("password");
  return password != nullptr ? *password : std::string{};
}

// Where a timed-out connect was going, for the error message (never credentials).
std::string target_of(PGconn* conn) {
  std::string out;
  const char* host = PQhost(conn);
  const char* port = PQport(conn);
  if (host != nullptr && *host != '\0') out.append(" to host ").append(host);
  if (port != nullptr && *port != '\0') out.append(" port ").append(port);
  return out;
}

// The entries of a comma-separated libpq list ("a,,b" has three, the middle one empty).
std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::size_t from = 0;
  for (;;) {
    const std::size_t comma = text.find(',', from);
    out.push_back(text.substr(from, comma == std::string::npos ? std::string::npos : comma - from));
    if (comma == std::string::npos) return out;
    from = comma + 1;
  }
}

// A parameter as libpq will see it: set in params, else from its environment variable.
std::vector<std::string> list_param(const connect_params& params, std::string_view key, const char* env_name) {
  if (const std::string* v = params.get(key)) return v->empty() ? std::vector<std::string>{} : split_list(*v);
  const char* e = std::getenv(env_name);
  return e == nullptr || *e == '\0' ? std::vector<std::string>{} : split_list(e);
}

// Whether libpq reads parameters from a service file (service=, PGSERVICE): those are invisible
// here, so host lists are then left to libpq.
bool uses_service(const connect_params& params) {
  if (const std::string* v = params.get("service")) return !v->empty();
  const char* e = std::getenv("PGSERVICE");
  return e != nullptr && *e != '\0';
}

// One connect_params per host of a multi-host conninfo (host, hostaddr and port narrowed to that
// entry), or just `params` when it names at most one host. Also just `params`, leaving the list
// to libpq, when splitting could change what libpq would do:
// - the lists do not line up (libpq then reports the mismatch itself);
// - an entry is empty (libpq then uses its built-in default, which a single-host attempt would
//   take from PGHOST/PGPORT instead);
// - a service file may supply or override parameters (service=, PGSERVICE);
// - target_session_attrs = prefer-standby, whose second pass over all hosts ("no standby: take
//   any") only libpq can run, and load_balance_hosts (libpq 16+) other than "disable", whose
//   shuffling only libpq does.
std::vector<connect_params> split_hosts(const connect_params& params) {
  const std::vector<std::string> hosts = list_param(params, "host", "PGHOST");
  const std::vector<std::string> addrs = list_param(params, "hostaddr", "PGHOSTADDR");
  const std::vector<std::string> ports = list_param(params, "port", "PGPORT");
  const std::size_t n = std::max(hosts.size(), addrs.size());
  if (n <= 1 || (!hosts.empty() && hosts.size() != n) || (!addrs.empty() && addrs.size() != n) ||
      (ports.size() > 1 && ports.size() != n))
    return {params};
  const auto has_empty = [](const std::vector<std::string>& list) {
    return std::any_of(list.begin(), list.end(), [](const std::string& e) { return e.empty(); });
  };
  const std::vector<std::string> attrs = list_param(params, "target_session_attrs", "PGTARGETSESSIONATTRS");
  // load_balance_hosts came with libpq 16; older ones ignore PGLOADBALANCEHOSTS (and reject the keyword).
  const std::vector<std::string> balance = PQlibVersion() >= 160000
                                               ? list_param(params, "load_balance_hosts", "PGLOADBALANCEHOSTS")
                                               : std::vector<std::string>{};
  if (has_empty(hosts) || has_empty(addrs) || has_empty(ports) || uses_service(params) ||
      (attrs.size() == 1 && attrs[0] == "prefer-standby") || (!balance.empty() && balance != std::vector<std::string>{"disable"}))
    return {params};
  std::vector<connect_params> out(n, params);
  for (std::size_t i = 0; i < n; ++i) {
    if (!hosts.empty()) out[i].set("host", hosts[i]);
    if (!addrs.empty()) out[i].set("hostaddr", addrs[i]);
    if (ports.size() == n) out[i].set("port", ports[i]);
  }
  return out;
}

class pqxx_connector final : public core::connector {
 public:
  pqxx_connector(const pool_config& cfg, connect_params base)
      : m_before_connect{cfg.before_connect},
        m_after_connect{cfg.after_connect},
        m_error_hint{cfg.error_hint},
        m_base{std::move(base)} {}

  void stop() noexcept override { m_hooks->stop(); }

  std::unique_ptr<core::physical> connect(const core::connect_limits& limits) override {
    const auto started = steady_clock::now();
    connect_params params = m_base;
    // Scrubs both passwords: the hook may have replaced the base one, even if it then threw.
    const auto fail = [this, &params](const std::string& message, std::string sqlstate = {}) {
      const std::vector<std::string> secrets{password_of(m_base), password_of(params)};
      std::string text = scrub(message, secrets);  // the hint sees only the scrubbed text
      if (m_error_hint) {
        try {
          const std::string hint = m_error_hint(text);
          if (!hint.empty()) text += "\nhint: " + scrub(hint, secrets);
        } catch (...) {
          // A failing hint must not hide the error itself.
        }
      }
      return connect_error{std::move(text), std::move(sqlstate)};
    };

    if (m_before_connect) {
      try {
        m_before_connect(params);
      } catch (...) {
        throw fail("before_connect hook failed: " + exception_text(std::current_exception()));
      }
    }

    // One attempt per host of a multi-host conninfo (split_hosts): libpq tries the hosts in turn
    // by itself, but it applies connect_timeout per host only in its blocking connect; in this
    // non-blocking one a host that never answers would use up the whole deadline and the hosts
    // after it would never be tried. Each host gets the whole connect_timeout, as in libpq,
    // within limits.give_up_at, and none once limits.stop_fd says the pool is closing.
    const std::vector<connect_params> hosts = split_hosts(params);
    const auto per_host = limits.deadline - started;
    pgconn_ptr conn;
    std::string earlier;  // what the hosts before this one said, for the final error
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      core::time_point until = limits.deadline;
      if (i > 0) {  // saturating: connect_timeout may be milliseconds::max() ("wait for ever")
        const core::time_point now = steady_clock::now();
        until = per_host >= core::time_point::max() - now ? core::time_point::max() : now + per_host;
      }
      attempt_result r = attempt(hosts[i], std::min(until, limits.give_up_at), limits.stop_fd);
      if (r.conn) {
        conn = std::move(r.conn);
        break;
      }
      if (r.stopped) throw core::connect_abandoned(fail(earlier + r.message, r.sqlstate));
      if (i + 1 == hosts.size() || !r.next_host_may_help) throw fail(earlier + r.message, r.sqlstate);
      if (stop_requested(limits.stop_fd))
        throw core::connect_abandoned(
            fail(earlier + r.message + "\n(the pool is closing: the other hosts were not tried)", r.sqlstate));
      if (steady_clock::now() >= limits.give_up_at)
        throw fail(earlier + r.message + "\n(no time left to try the other hosts)", r.sqlstate);
      earlier += r.message + "\n";
    }
    // Users' libpqxx error texts should look as usual.
    PQsetErrorVerbosity(conn.get(), PQERRORS_DEFAULT);

    std::unique_ptr<pooled_connection> user;
    try {
      user = std::make_unique<pooled_connection>(std::move(conn));
    } catch (const std::bad_alloc&) {
      throw;
    } catch (const std::exception& e) {
      throw fail(std::string{"setting up the libpqxx connection failed: "} + e.what());
    }

    if (m_after_connect) {
      // Registered while it runs: close() shuts the socket down under a hook stuck on a stalled
      // server (hook_sockets). What the hook then throws is the closing pool's doing, not an error.
      const auto abandoned = [&fail] {
        return core::connect_abandoned(fail("connect abandoned during the after_connect hook: the pool is closing"));
      };
      const in_hook registered{*m_hooks, user->handle()};
      if (!registered.admitted()) throw abandoned();
      try {
        m_after_connect(*user);
      } catch (const pqxx::sql_error& e) {
        if (m_hooks->stopped()) throw abandoned();
        throw fail(std::string{"after_connect hook failed: "} + e.what(), e.sqlstate());
      } catch (...) {
        if (m_hooks->stopped()) throw abandoned();
        throw fail("after_connect hook failed: " + exception_text(std::current_exception()));
      }
      if (m_hooks->stopped()) throw abandoned();  // the hook swallowed the failure
    }
    auto physical = std::make_unique<pooled_physical>(std::move(user), limits.stop_fd, m_hooks);
    // A hook that left a transaction open (or lost the connection) must not hand it out dirty.
    if (physical->check_return() != core::return_state::clean)
      throw fail("after_connect hook left the connection inside a transaction or broken");
    return physical;
  }

 private:
  struct attempt_result {
    pgconn_ptr conn;  // set when connected
    std::string message;
    std::string sqlstate;
    bool next_host_may_help = false;
    bool stopped = false;  // given up because the pool is closing (connect_limits::stop_fd)
  };

  // One non-blocking connect against `deadline`. The next host of a list is worth trying when
  // this one could not be reached or did not answer in time, refused the session for
  // target_session_attrs (a client-side check, no SQLSTATE), or said it cannot take connections
  // now (57P03, e.g. a standby starting up) — the cases in which libpq itself moves on. After any
  // other answer from a server (a failed password, say) libpq stops, and so do we.
  static attempt_result attempt(const connect_params& params, core::time_point deadline, int stop_fd) {
    const auto started = steady_clock::now();
    attempt_result r;
    pgconn_ptr conn = start(params);
    // Verbose errors carry the SQLSTATE ("FATAL:  28P01: password authentication failed …").
    // Set before the first PQconnectPoll, so it applies to errors during authentication too.
    PQsetErrorVerbosity(conn.get(), PQERRORS_VERBOSE);

    PostgresPollingStatusType state = PGRES_POLLING_WRITING;  // what PQconnectStartParams implies
    if (PQstatus(conn.get()) == CONNECTION_BAD) state = PGRES_POLLING_FAILED;
    while (state != PGRES_POLLING_OK) {
      if (state == PGRES_POLLING_FAILED) {
        r.message = clean_libpq_message(PQerrorMessage(conn.get()));
        r.sqlstate = sqlstate_from_message(r.message);
        r.next_host_may_help = r.sqlstate.empty() || r.sqlstate == "57P03";
        return r;
      }
      const short events = state == PGRES_POLLING_READING ? POLLIN : POLLOUT;
      switch (wait_socket(conn.get(), events, deadline, stop_fd)) {
        case wait_result::ready:
          break;
        case wait_result::stopped:
          r.message = "connect" + target_of(conn.get()) + " abandoned: the pool is closing";
          r.stopped = true;
          return r;
        case wait_result::timed_out: {
          const auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - started);
          r.message = "connect timed out after " + std::to_string(waited.count()) + " ms (connect_timeout)" +
                      target_of(conn.get());
          r.next_host_may_help = true;
          return r;
        }
        case wait_result::failed:
          r.message = "connect failed: waiting on the connection's socket failed: " + std::string{std::strerror(errno)} +
                      target_of(conn.get());
          return r;
      }
      state = PQconnectPoll(conn.get());
    }
    r.conn = std::move(conn);
    return r;
  }

  // PQconnectStartParams wants parallel, null-terminated keyword and value arrays.
  static pgconn_ptr start(const connect_params& params) {
    std::vector<const char*> keywords;
    std::vector<const char*> values;
    keywords.reserve(params.items().size() + 1);
    values.reserve(params.items().size() + 1);
    for (const auto& [key, value] : params.items()) {
      keywords.push_back(key.c_str());
      values.push_back(value.c_str());
    }
    keywords.push_back(nullptr);
    values.push_back(nullptr);
    // expand_dbname = 0: params already hold the parsed conninfo; a dbname is just a name.
    pgconn_ptr conn{PQconnectStartParams(keywords.data(), values.data(), 0)};
    if (!conn) throw std::bad_alloc{};
    return conn;
  }

  std::function<void(connect_params&)> m_before_connect;
  std::function<void(connection&)> m_after_connect;
  // Shared with the connections made here, whose reset hooks register too.
  const std::shared_ptr<hook_sockets> m_hooks = std::make_shared<hook_sockets>();
  std::function<std::string(const std::string&)> m_error_hint;
  const connect_params m_base;
};

// ---------------------------------------------------------------------------------------------
// build_params helpers

// libpq's keyword for a word it could not place, if the word is one or a near miss of one (a
// typo such as "hots" or "sslmod": one edit, or two in a word of six letters or more, a swap of
// neighbours counting as one) — then it is safe to repeat; any other word may be a piece of a
// value, a password's included.
std::string keyword_near(std::string_view word) {
  if (word.size() < 3 || word.size() > 40) return {};
  for (const char c : word)
    if (!((c >= 'a' && c <= 'z') || c == '_')) return {};
  const std::size_t allowed = word.size() >= 6 ? 2 : 1;
  const conninfo_ptr defaults{PQconndefaults()};
  if (!defaults) throw std::bad_alloc{};
  std::string best;
  std::size_t best_distance = allowed + 1;
  for (const PQconninfoOption* option = defaults.get(); option->keyword != nullptr; ++option) {
    const std::string_view k = option->keyword;
    // Optimal string alignment distance (Levenshtein plus adjacent transpositions).
    std::vector<std::vector<std::size_t>> d(word.size() + 1, std::vector<std::size_t>(k.size() + 1));
    for (std::size_t i = 0; i <= word.size(); ++i) d[i][0] = i;
    for (std::size_t j = 0; j <= k.size(); ++j) d[0][j] = j;
    for (std::size_t i = 1; i <= word.size(); ++i) {
      for (std::size_t j = 1; j <= k.size(); ++j) {
        const std::size_t cost = word[i - 1] == k[j - 1] ? 0 : 1;
        d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
        if (i > 1 && j > 1 && word[i - 1] == k[j - 2] && word[i - 2] == k[j - 1])
          d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
    if (d[word.size()][k.size()] < best_distance) {
      best_distance = d[word.size()][k.size()];
      best = std::string{k};
    }
  }
  return best;
}

// The text between the first pair of double quotes after `prefix` at the start of `message`.
std::optional<std::string_view> quoted_after(std::string_view message, std::string_view prefix) {
  if (message.substr(0, prefix.size()) != prefix) return std::nullopt;
  const std::string_view rest = message.substr(prefix.size());
  const std::size_t end = rest.find('"');
  if (end == std::string_view::npos) return std::nullopt;
  return rest.substr(0, end);
}

conninfo_ptr parse_conninfo(const std::string& conninfo) {
  char* error = nullptr;
  conninfo_ptr parsed{PQconninfoParse(conninfo.c_str(), &error)};
  if (parsed) return parsed;
  if (error == nullptr) throw std::bad_alloc{};  // libpq's only error without a message
  const std::string raw{trim(error)};
  PQfreemem(error);
  // libpq quotes pieces of the input, which may be (part of) a password: those are elided, except
  // a word that is a libpq keyword or a near miss of one (a typo: "hots" for "host").
  constexpr std::string_view quoting_hint = " (a value containing spaces must be in single quotes: key='a b')";
  if (const auto word = quoted_after(raw, "invalid connection option \"")) {
    const std::string near = keyword_near(*word);
    if (!near.empty() && near != *word)
      throw config_error("conninfo", "cannot be parsed: invalid connection option \"" + std::string{*word} +
                                         "\" (did you mean \"" + near + "\"?)");
    throw config_error("conninfo", "cannot be parsed: " + elide_quoted(raw) + " (not a libpq keyword)" +
                                       std::string{quoting_hint});
  }
  if (const auto word = quoted_after(raw, "missing \"=\" after \"")) {
    if (!word->empty() && keyword_near(*word) == *word)
      throw config_error("conninfo", "cannot be parsed: missing \"=\" after \"" + std::string{*word} + "\"");
    throw config_error("conninfo", "cannot be parsed: missing \"=\" after a word \"" + std::string{ellipsis} +
                                       "\" that is not a keyword" + std::string{quoting_hint});
  }
  throw config_error("conninfo", "cannot be parsed: " + elide_quoted(raw));
}

// libpq's parse_int_param: an int, with surrounding white space allowed.
std::optional<int> libpq_int(const std::string& text) {
  const char* const begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(begin, &end, 10);
  if (end == begin || errno != 0 || value < INT_MIN || value > INT_MAX) return std::nullopt;
  while (*end != '\0' && is_space(*end)) ++end;
  if (*end != '\0') return std::nullopt;
  return static_cast<int>(value);
}

// Values libpq would only reject when connecting (every connect, retried for ever), said at
// construction instead, naming where they came from: conninfo, params["key"], or the environment
// variable libpq reads when neither sets the key. Values quoted here are not secrets.
void check_values(const connect_params& out, const std::map<std::string, std::string>& overlay) {
  struct rule {
    const char* key;
    const char* env;                          // nullptr: libpq reads none
    std::vector<std::string_view> allowed;   // empty: an integer (a port list for "port")
  };
  static const std::vector<rule> rules = {
      {"port", "PGPORT", {}},
      {"connect_timeout", "PGCONNECT_TIMEOUT", {}},
      {"keepalives", nullptr, {}},
      {"keepalives_idle", nullptr, {}},
      {"keepalives_interval", nullptr, {}},
      {"keepalives_count", nullptr, {}},
      {"tcp_user_timeout", nullptr, {}},
      {"sslmode", "PGSSLMODE", {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}},
      {"gssencmode", "PGGSSENCMODE", {"disable", "prefer", "require"}},
      {"channel_binding", "PGCHANNELBINDING", {"disable", "prefer", "require"}},
      {"target_session_attrs", "PGTARGETSESSIONATTRS",
       {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}},
  };
  for (const rule& r : rules) {
    std::string value;
    std::string field;
    if (const std::string* v = out.get(r.key)) {
      value = *v;
      field = overlay.count(r.key) != 0 ? "params[\"" + std::string{r.key} + "\"]" : std::string{"conninfo"};
    } else if (const char* e = r.env != nullptr ? std::getenv(r.env) : nullptr; e != nullptr && *e != '\0') {
      value = e;
      field = r.env;
    } else {
      continue;
    }
    if (std::string_view{r.key} == "port") {
      for (const std::string& p : split_list(value)) {
        if (p.empty()) continue;  // libpq's default port for that host
        const std::optional<int> n = libpq_int(p);
        if (!n || *n < 1 || *n > 65535)
          throw config_error(field, "port \"" + p + "\" is not a port number; allowed: 1-65535 (or a list, one per host)");
      }
    } else if (r.allowed.empty()) {
      if (!libpq_int(value))
        throw config_error(field, std::string{r.key} + " \"" + value + "\" is not an integer" +
                                      (std::string_view{r.key} == "connect_timeout" ? " (whole seconds)" : ""));
    } else if (std::find(r.allowed.begin(), r.allowed.end(), value) == r.allowed.end()) {
      std::string list;
      for (const std::string_view a : r.allowed) list.append(list.empty() ? "" : ", ").append(a);
      throw config_error(field, std::string{r.key} + " \"" + value + "\" is not valid; allowed: " + list);
    }
  }
}

void check_keywords(const std::map<std::string, std::string>& params) {
  if (params.empty()) return;
  const conninfo_ptr defaults{PQconndefaults()};
  if (!defaults) throw std::bad_alloc{};
  for (const auto& entry : params) {
    const std::string& key = entry.first;
    bool known = false;
    for (const PQconninfoOption* option = defaults.get(); option->keyword != nullptr && !known; ++option) {
      known = key == option->keyword;
    }
    if (!known) {
      throw config_error("params[\"" + key + "\"]",
                         "unknown libpq connection keyword \"" + key +
                             "\"; allowed: host, hostaddr, port, dbname, user, password, sslmode, "
                             "application_name, options, … (see PQconndefaults())");
    }
  }
}

// libpq accepts a list of hosts with one hostaddr per host and one port for all or one per host;
// anything else fails every connect ("could not match 3 port numbers to 2 hosts"). Said at
// construction instead, naming where the lists came from.
// Without a host or hostaddr here the hosts come from PGHOST/PGHOSTADDR or a service file, which
// libpq pairs with the ports itself; nor is anything said when a service file may add to the lists.
void check_host_lists(const connect_params& out, const std::map<std::string, std::string>& overlay) {
  if (uses_service(out)) return;
  const auto count = [&out](const char* key) -> std::size_t {
    const std::string* v = out.get(key);
    return v == nullptr || v->empty() ? 0 : split_list(*v).size();
  };
  const auto field = [&overlay](const char* key) {
    return overlay.count(key) != 0 ? "params[\"" + std::string{key} + "\"]" : std::string{"conninfo"};
  };
  const std::size_t hosts = count("host");
  const std::size_t addrs = count("hostaddr");
  const std::size_t ports = count("port");
  if (hosts > 0 && addrs > 0 && addrs != hosts)
    throw config_error(field("hostaddr"), "lists " + std::to_string(addrs) + " hostaddr entries for " +
                                              std::to_string(hosts) + " hosts; give one per host");
  const std::size_t n = std::max(hosts, addrs);
  if (ports > 1 && n > 0 && ports != n)
    throw config_error(field("port"), "lists " + std::to_string(ports) + " ports for " + std::to_string(n) +
                                          (n == 1 ? " host" : " hosts") + "; give one port for all, or one per host");
}

}  // namespace

std::optional<std::chrono::milliseconds> user_connect_timeout(const pool_config& cfg) {
  std::string value;
  if (const auto it = cfg.params.find("connect_timeout"); it != cfg.params.end()) {
    value = it->second;
  } else {
    const conninfo_ptr parsed = parse_conninfo(cfg.conninfo);
    for (const PQconninfoOption* option = parsed.get(); option->keyword != nullptr; ++option)
      if (option->val != nullptr && std::string_view{option->keyword} == "connect_timeout") value = option->val;
    if (value.empty()) return std::nullopt;
  }
  const std::optional<int> seconds = libpq_int(value);
  if (!seconds) return std::nullopt;  // build_params has said so already
  // libpq's reading: 0 or less waits for ever, 1 means 2.
  if (*seconds <= 0) return std::chrono::milliseconds::max();
  return std::chrono::seconds{std::max(*seconds, 2)};
}

connect_params build_params(const pool_config& cfg) {
  const conninfo_ptr parsed = parse_conninfo(cfg.conninfo);
  check_keywords(cfg.params);

  connect_params out;
  for (const PQconninfoOption* option = parsed.get(); option->keyword != nullptr; ++option) {
    if (option->val != nullptr) out.set(option->keyword, option->val);
  }
  for (const auto& [key, value] : cfg.params) out.set(key, value);
  check_host_lists(out, cfg.params);
  check_values(out, cfg.params);

  // libpq would otherwise notice a dead peer only after the kernel's TCP timeout (hours).
  const auto add_default = [&out](const char* key, std::string value) {
    if (!out.contains(key)) out.set(key, std::move(value));
  };
  add_default("keepalives", "1");
  add_default("keepalives_idle", "30");
  add_default("keepalives_interval", "10");
  add_default("keepalives_count", "3");
  // Our own poll loop enforces cfg.connect_timeout; this is for any blocking libpq connect.
  // libpq treats 1 as 2, so say 2.
  const auto timeout_s = std::chrono::ceil<std::chrono::seconds>(cfg.connect_timeout).count();
  add_default("connect_timeout", std::to_string(std::max<decltype(timeout_s)>(timeout_s, 2)));
  add_default("application_name", "pqxxpool");
  return out;
}

std::unique_ptr<core::connector> make_connector(const pool_config& cfg, connect_params base) {
  return std::make_unique<pqxx_connector>(cfg, std::move(base));
}

int libpq_version() noexcept { return PQlibVersion(); }

::pg_conn* native_handle(connection& conn) noexcept {
  // connection_base has no virtual functions in libpqxx 6, so no dynamic_cast: the precondition
  // (a connection from our connector, i.e. any a pool hands out) makes the downcast valid.
  return static_cast<pooled_connection&>(conn).handle();
}

statement_result run_statement(connection& conn, const char* sql, core::time_point deadline) {
  using status = statement_result::status;
  statement_result out;
  PGconn* const handle = native_handle(conn);
  if (handle == nullptr) {
    out.error = "the connection has been closed";
    return out;
  }
  pgresult_ptr first;
  if (round_trip(handle, sql, PGRES_TUPLES_OK, deadline, -1, &first)) {
    out.outcome = status::ok;
    if (PQntuples(first.get()) > 0 && PQnfields(first.get()) > 0 && PQgetisnull(first.get(), 0, 0) == 0) {
      out.value = PQgetvalue(first.get(), 0, 0);
      out.is_null = false;
    }
    return out;
  }
  const bool usable = PQstatus(handle) == CONNECTION_OK && PQisnonblocking(handle) == 0;
  if (usable && first && PQresultStatus(first.get()) != PGRES_TUPLES_OK) {
    out.outcome = status::failed;
    const char* const primary = PQresultErrorField(first.get(), PG_DIAG_MESSAGE_PRIMARY);
    out.error = primary != nullptr ? std::string{primary} : clean_libpq_message(PQresultErrorMessage(first.get()));
    if (const char* const state = PQresultErrorField(first.get(), PG_DIAG_SQLSTATE)) out.sqlstate = state;
    return out;
  }
  if (usable) {  // nothing was sent, or not exactly one result came back
    out.outcome = status::failed;
    out.error = first ? std::string{"the statement did not return exactly one result set"}
                      : clean_libpq_message(PQerrorMessage(handle));
    return out;
  }
  if (steady_clock::now() >= deadline) {
    out.error = "no answer from the server before the deadline";
  } else {
    out.error = clean_libpq_message(PQerrorMessage(handle));
    if (out.error.empty()) out.error = "the connection was lost";
  }
  return out;
}

std::string sqlstate_from_message(std::string_view message) {
  // Verbose libpq text is "<SEVERITY>:  <SQLSTATE>: <message>". The severity may be translated,
  // so accept any word; it starts a line, or follows a space as in PostgreSQL 14+'s
  // "connection to server at … failed: FATAL:  28P01: …".
  constexpr std::string_view separator = ":  ";
  for (auto pos = message.find(separator); pos != std::string_view::npos; pos = message.find(separator, pos + 1)) {
    const std::size_t code = pos + separator.size();
    if (code + 6 > message.size()) break;
    const auto code_text = message.substr(code, 5);
    const bool code_ok = std::all_of(code_text.begin(), code_text.end(),
                                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z'); });
    if (!code_ok || message[code + 5] != ':') continue;
    std::size_t word = pos;
    while (word > 0 && !is_space(message[word - 1]) && message[word - 1] != ':') --word;
    if (word == pos || (word > 0 && message[word - 1] == ':')) continue;
    return std::string{code_text};
  }
  return {};
}

}  // namespace pqxxpool::pqxx_adapter
