#include "pqxxpool/metrics_server.hpp"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include <dirent.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <httplib.h>

#include "pqxxpool/errors.hpp"
#include "pqxxpool/metrics.hpp"
#include "pqxxpool/pool.hpp"
#include "pqxxpool/stats.hpp"

namespace pqxxpool {
namespace {

constexpr const char* prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* text_content_type = "text/plain; charset=utf-8";

/// Each open client connection holds one worker while httplib reads its request, so a few slow or
/// stalled clients (a load balancer's half-open probe, a POST that never sends its body) would
/// hold up the scrapes behind them. Eight leave room for several such clients at once.
constexpr std::size_t worker_threads = 8;

/// How long one read of a request may wait for bytes (httplib's default is 5 s). A client that
/// sends nothing for this long is dropped and its worker freed.
constexpr std::chrono::seconds read_timeout{2};

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
    if (s.closed) return "pool \"" + s.name + "\" is closed";
  }
  return {};
}

/// Ends the reading side of every connection this server accepted on port, found among the process's
/// open sockets (Linux /proc/self/fd): a socket of ours is a connected stream socket whose local
/// port is port and, unless host is a wildcard, whose local address is host's. Why: httplib's stop()
/// closes only the listening socket and then joins its workers, and a worker reads a request until
/// it is complete or one read waits read_timeout, so a client sending a byte now and then would hold
/// stop() (and the destructor) for as long as it likes. After shutdown(SHUT_RD) that read sees end
/// of file at once; a response being written is not cut. Another socket of the process would match
/// only if something bound this address and port in the moments after the listening socket closed.
void end_reads(const std::string& host, std::uint16_t port) {
  in_addr want4{};
  in6_addr want6{};
  const bool any = host.empty() || host == "0.0.0.0" || host == "::";
  const bool is4 = !any && ::inet_pton(AF_INET, host.c_str(), &want4) == 1;
  const bool is6 = !any && !is4 && ::inet_pton(AF_INET6, host.c_str(), &want6) == 1;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return;
  const int dir_fd = ::dirfd(dir);
  while (const dirent* e = ::readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || fd == dir_fd) continue;
    const int s = static_cast<int>(fd);
    struct stat st{};
    if (::fstat(s, &st) != 0 || !S_ISSOCK(st.st_mode)) continue;
    int type = 0;
    int listening = 0;
    socklen_t len = sizeof type;
    if (::getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) continue;
    len = sizeof listening;
    if (::getsockopt(s, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0 || listening != 0) continue;
    sockaddr_storage local{};
    len = sizeof local;
    if (::getsockname(s, reinterpret_cast<sockaddr*>(&local), &len) != 0) continue;
    bool ours = false;
    if (local.ss_family == AF_INET) {
      const auto& a = reinterpret_cast<const sockaddr_in&>(local);
      ours = ntohs(a.sin_port) == port && (any || (is4 && a.sin_addr.s_addr == want4.s_addr));
    } else if (local.ss_family == AF_INET6) {
      const auto& a = reinterpret_cast<const sockaddr_in6&>(local);
      ours = ntohs(a.sin6_port) == port &&
             (any || (is6 && std::memcmp(&a.sin6_addr, &want6, sizeof want6) == 0) ||
              (is4 && IN6_IS_ADDR_V4MAPPED(&a.sin6_addr) &&
               std::memcmp(&a.sin6_addr.s6_addr[12], &want4, 4) == 0));
    }
    if (!ours) continue;
    sockaddr_storage peer{};
    len = sizeof peer;
    if (::getpeername(s, reinterpret_cast<sockaddr*>(&peer), &len) != 0) continue;  // not connected
    ::shutdown(s, SHUT_RD);
  }
  ::closedir(dir);
}

}  // namespace

struct metrics_server::impl {
  std::vector<const pool*> pools;
  std::string host;
  std::uint16_t port = 0;
  httplib::Server server;
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
  d.server.set_keep_alive_timeout(1);
  d.server.set_read_timeout(read_timeout);
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
  d.server.stop();  // closes the listening socket before it returns
  // listen_after_bind() returns only after httplib's workers have finished their connections; cut
  // the reads of those still open so that none can hold this join. Repeated until the thread ends,
  // because a connection accepted just before the listening socket closed may reach a worker later.
  if (d.thread.joinable()) {
    for (;;) {
      end_reads(d.host, d.port);
      if (d.thread_done.load()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    d.thread.join();
  }
}

}  // namespace pqxxpool
