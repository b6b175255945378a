#include "pqxxpool/metrics_server.hpp"

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <utility>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>
#include <nlohmann/json.hpp>

#include "metrics_server_detail.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/metrics.hpp"
#include "pqxxpool/pool.hpp"
#include "pqxxpool/stats.hpp"

namespace pqxxpool {
namespace {

constexpr const char* prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* text_content_type = "text/plain; charset=utf-8";

/// Each open client connection holds one worker until its exchange ends, so a few slow or
/// stalled clients (a probe that connects and waits, a POST that never sends its body) would hold
/// up the scrapes queued behind them. Eight leave room for several such clients at once.
constexpr std::size_t worker_threads = 8;

/// How long one connection may take, from the worker picking it up to the answer written: the
/// request is a few hundred bytes and the answer is computed from memory, so this bounds only
/// clients that stall or trickle. 5 s; a test lengthens it (metrics_server_detail.hpp) to show
/// that stop() ends a stalled exchange at once rather than at the deadline. Read once per
/// connection, so relaxed order suffices.
std::atomic<std::int64_t> exchange_deadline_ms{5000};

std::string address(const std::string& host, std::uint16_t port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

std::vector<pool_stats> snapshot(const std::vector<const pool*>& pools) {
  std::vector<pool_stats> out;
  out.reserve(pools.size());
  for (const pool* p : pools) out.push_back(p->stats());
  return out;
}

/// An empty string when healthy, else the reason.
std::string unhealthy_reason(const std::vector<pool_stats>& all) {
  for (const pool_stats& s : all) {
    // The name quoted as a JSON string, so a quote or backslash in it cannot blur where it ends.
    if (s.closed)
      return "pool " + nlohmann::json(s.name).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) +
             " is closed";
  }
  return {};
}

/// One client connection as httplib reads and writes it, with two bounds httplib's own socket
/// stream lacks: the whole exchange (request read, answer written) must end by a deadline, and a
/// read ends at once when stop_fd (an eventfd) is signalled. httplib bounds each read only by its
/// read timeout, so a client sending a byte now and then would hold a worker — and stop(), which
/// joins the workers — for as long as it liked. The socket is non-blocking (poll does every wait,
/// so no send or recv can outlast the deadline). Reads are buffered: httplib reads a request's
/// lines a byte at a time. Used by one worker thread only, like its socket.
class bounded_stream final : public httplib::Stream {
 public:
  bounded_stream(int sock, int stop_fd, std::chrono::steady_clock::time_point deadline) noexcept
      : m_sock{sock}, m_stop_fd{stop_fd}, m_deadline{deadline} {}

  bool is_readable() const override { return m_begin < m_end || wait(POLLIN); }
  bool is_writable() const override { return wait(POLLOUT); }

  /// Up to size bytes; 0 at end of input; -1 on an error, at the deadline or when stopping.
  ssize_t read(char* ptr, std::size_t size) override {
    if (size == 0) return 0;
    if (m_begin == m_end) {
      const ssize_t n = receive(m_buffer.data(), m_buffer.size());
      if (n <= 0) return n;
      m_begin = 0;
      m_end = static_cast<std::size_t>(n);
    }
    const std::size_t n = std::min(size, m_end - m_begin);
    std::memcpy(ptr, m_buffer.data() + m_begin, n);
    m_begin += n;
    return static_cast<ssize_t>(n);
  }

  /// All size bytes, or -1 (an error or the deadline; stop() does not cut an answer).
  ssize_t write(const char* ptr, std::size_t size) override {
    std::size_t sent = 0;
    while (sent < size) {
      const ssize_t n = ::send(m_sock, ptr + sent, size - sent, MSG_NOSIGNAL);
      if (n > 0) {
        sent += static_cast<std::size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (!wait(POLLOUT)) return -1;
      } else {
        return -1;
      }
    }
    return static_cast<ssize_t>(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { describe(false, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { describe(true, ip, port); }
  socket_t socket() const override { return m_sock; }

  /// After the answer: reads and drops what the client still sends (a body nobody read, a second
  /// request) until it closes, for at most linger or the deadline, so that closing with unread
  /// input does not reset the connection and lose the answer's tail on its way. Ends at stop().
  void drain(std::chrono::milliseconds linger) {
    const auto until = std::min(m_deadline, std::chrono::steady_clock::now() + linger);
    char sink[4096];
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return;
      pollfd fds[2] = {{m_sock, POLLIN, 0}, {m_stop_fd, POLLIN, 0}};
      const int r = ::poll(fds, 2, static_cast<int>(left.count()) + 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || fds[1].revents != 0) return;
      const ssize_t n = ::recv(m_sock, sink, sizeof sink, 0);
      if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK)) return;
    }
  }

 private:
  ssize_t receive(char* ptr, std::size_t size) {
    for (;;) {
      if (!wait(POLLIN)) return -1;
      const ssize_t n = ::recv(m_sock, ptr, size, 0);
      if (n >= 0) return n;
      if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    }
  }

  /// Waits until the socket is ready for events, the deadline passes (false), or — when reading —
  /// the server is stopping (false). A response being written is not cut by stop().
  bool wait(short events) const {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          m_deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd fds[2] = {{m_sock, events, 0}, {m_stop_fd, POLLIN, 0}};
      const nfds_t n = (events & POLLIN) != 0 ? 2 : 1;
      const int r = ::poll(fds, n, static_cast<int>(std::min<std::int64_t>(left.count() + 1, 60000)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return false;
      if (r == 0) continue;  // re-checks the deadline
      if (n == 2 && fds[1].revents != 0) return false;
      return fds[0].revents != 0;  // ready, or an error or hang-up that the next call reports
    }
  }

  void describe(bool local, std::string& ip, int& port) const {
    sockaddr_storage addr{};
    socklen_t len = sizeof addr;
    ip.clear();
    port = 0;
    const int rc = local ? ::getsockname(m_sock, reinterpret_cast<sockaddr*>(&addr), &len)
                         : ::getpeername(m_sock, reinterpret_cast<sockaddr*>(&addr), &len);
    if (rc != 0) return;
    char host[INET6_ADDRSTRLEN] = {};
    if (addr.ss_family == AF_INET) {
      const auto& a = reinterpret_cast<const sockaddr_in&>(addr);
      if (::inet_ntop(AF_INET, &a.sin_addr, host, sizeof host) != nullptr) ip = host;
      port = ntohs(a.sin_port);
    } else if (addr.ss_family == AF_INET6) {
      const auto& a = reinterpret_cast<const sockaddr_in6&>(addr);
      if (::inet_ntop(AF_INET6, &a.sin6_addr, host, sizeof host) != nullptr) ip = host;
      port = ntohs(a.sin6_port);
    }
  }

  const int m_sock;
  const int m_stop_fd;
  const std::chrono::steady_clock::time_point m_deadline;
  std::array<char, 4096> m_buffer{};
  std::size_t m_begin = 0;  // unread input is m_buffer[m_begin, m_end)
  std::size_t m_end = 0;
};

/// httplib's server with its per-connection step replaced (httplib calls the private virtual
/// process_and_close_socket on a worker for every accepted socket): one request per connection,
/// read and answered through a bounded_stream, then the socket closed.
class bounded_server final : public httplib::Server {
 public:
  explicit bounded_server(int stop_fd) noexcept : m_stop_fd{stop_fd} {}
  /// httplib's destructor leaves the listening socket open when the server never ran (stop()
  /// closes it only while running): a constructor that failed after binding would keep the port.
  ~bounded_server() override {
    const socket_t s = svr_sock_.exchange(INVALID_SOCKET);
    if (s != INVALID_SOCKET) ::close(s);
  }
  bounded_server(const bounded_server&) = delete;
  bounded_server& operator=(const bounded_server&) = delete;

 private:
  bool process_and_close_socket(socket_t sock) override {
    bool ok = false;
    try {
      const int flags = ::fcntl(sock, F_GETFL, 0);
      if (flags >= 0 && ::fcntl(sock, F_SETFL, flags | O_NONBLOCK) == 0) {
        bounded_stream stream{sock, m_stop_fd, std::chrono::steady_clock::now() +
                                                    std::chrono::milliseconds(exchange_deadline_ms.load(std::memory_order_relaxed))};
        bool connection_closed = false;
        ok = process_request(stream, /*close_connection=*/true, connection_closed, nullptr);
        ::shutdown(sock, SHUT_WR);  // the answer is complete: the client sees its end
        stream.drain(std::chrono::milliseconds(200));
      }
    } catch (...) {
      // A worker must not die with an exception: the connection is dropped instead.
    }
    ::close(sock);
    return ok;
  }

  const int m_stop_fd;
};

int make_eventfd() {
  const int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "metrics_server: eventfd");
  return fd;
}

}  // namespace

namespace detail {
std::chrono::milliseconds set_metrics_exchange_deadline(std::chrono::milliseconds deadline) noexcept {
  return std::chrono::milliseconds(exchange_deadline_ms.exchange(deadline.count(), std::memory_order_relaxed));
}
}  // namespace detail

struct metrics_server::impl {
  impl() : stop_fd{make_eventfd()}, server{stop_fd} {}
  ~impl() { ::close(stop_fd); }  // the server thread has been joined (stop()) or never started
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  std::vector<const pool*> pools;
  std::string host;
  std::uint16_t port = 0;
  const int stop_fd;  // eventfd, signalled by stop(): ends every worker's pending read at once
  bounded_server server;
  std::thread thread;
  std::atomic<bool> thread_done{false};
  std::mutex stop_mu;  // serializes stop()
  bool stopped = false;

  void routes() {
    server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
      res.set_content(to_prometheus(snapshot(pools)), prometheus_content_type);
    });
    server.Get("/stats", [this](const httplib::Request&, httplib::Response& res) {
      std::string body = "[";
      bool first = true;
      for (const pool* p : pools) {
        if (!first) body += ',';
        first = false;
        body += to_json(p->stats());
      }
      body += "]\n";
      res.set_content(body, "application/json");
    });
    server.Get("/healthz", [this](const httplib::Request&, httplib::Response& res) {
      const std::string reason = unhealthy_reason(snapshot(pools));
      if (reason.empty()) {
        res.set_content("ok\n", text_content_type);
      } else {
        res.status = 503;
        res.set_content(reason + "\n", text_content_type);
      }
    });
    server.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        if (ep) std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      res.status = 500;
      res.set_content(what + "\n", text_content_type);
    });
  }
};

metrics_server::metrics_server(std::vector<const pool*> pools, std::string host, std::uint16_t port)
    : m_impl(std::make_unique<impl>()) {
  impl& d = *m_impl;
  std::set<std::string> names;
  for (const pool* p : pools) {
    if (p == nullptr) throw config_error("pools", "must not hold a null pool");
    const std::string name = p->stats().name;
    if (!names.insert(name).second)
      throw config_error("pools", "two pools are named \"" + name + "\"; pool_config::name must tell them apart");
  }
  d.pools = std::move(pools);
  d.host = std::move(host);
  d.server.new_task_queue = [] { return new httplib::ThreadPool(worker_threads); };
  // Only GETs are served: a body (of a request routed nowhere) is read and dropped, up to this.
  d.server.set_payload_max_length(8192);
  // httplib's default also sets SO_REUSEPORT, which would let a second server (or another program
  // of the same user) share the port silently. Keep SO_REUSEADDR only (restart after TIME_WAIT).
  d.server.set_socket_options([](socket_t sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  d.routes();

  bool bound = false;
  if (port == 0) {
    const int p = d.server.bind_to_any_port(d.host);
    if (p > 0 && p <= 65535) {
      d.port = static_cast<std::uint16_t>(p);
      bound = true;
    }
  } else {
    bound = d.server.bind_to_port(d.host, port);
    d.port = port;
  }
  if (!bound) throw config_error("listen", "cannot listen on " + address(d.host, port));

  d.thread = std::thread([&d] {
    d.server.listen_after_bind();
    d.thread_done.store(true);
  });
  // httplib's stop() does nothing until the server thread is running: wait for that.
  while (!d.server.is_running() && !d.thread_done.load()) std::this_thread::yield();
}

metrics_server::~metrics_server() { stop(); }

std::uint16_t metrics_server::port() const noexcept { return m_impl->port; }

const std::string& metrics_server::host() const noexcept { return m_impl->host; }

void metrics_server::stop() noexcept {
  impl& d = *m_impl;
  std::lock_guard<std::mutex> lk(d.stop_mu);
  if (d.stopped) return;
  d.stopped = true;
  d.server.stop();  // closes the listening socket: no new connection
  // Ends the reads of connections still sending a request (answers being written finish), so
  // that httplib's workers, which listen_after_bind() joins before it returns, all end.
  const std::uint64_t one = 1;
  [[maybe_unused]] const ssize_t n = ::write(d.stop_fd, &one, sizeof one);
  if (d.thread.joinable()) d.thread.join();
}

}  // namespace pqxxpool
