#include "pqxxpool/metrics_server.hpp"

#include <atomic>
#include <chrono>
#include <exception>
#include <mutex>
#include <set>
#include <thread>
#include <utility>

#include <sys/socket.h>

#include <httplib.h>

#include "pqxxpool/errors.hpp"
#include "pqxxpool/metrics.hpp"
#include "pqxxpool/pool.hpp"
#include "pqxxpool/stats.hpp"

namespace pqxxpool {
namespace {

constexpr const char* prometheus_content_type = "text/plain; version=0.0.4; charset=utf-8";
constexpr const char* text_content_type = "text/plain; charset=utf-8";

/// Few worker threads: a scrape every few seconds needs no more.
constexpr std::size_t worker_threads = 2;

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
  d.server.stop();
  if (d.thread.joinable()) d.thread.join();
}

}  // namespace pqxxpool
