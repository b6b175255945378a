#pragma once
// Access to the throwaway cluster that scripts/test.sh starts (test/support/pgcluster.sh).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <pqxx/pqxx>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include "pqxxpool/pqxxpool.hpp"
#include "secrets.hpp"

namespace pqxxpool::itest {

using namespace std::chrono_literals;

/// The value of an environment variable the test bed sets; fails the test clearly when missing.
inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    ADD_FAILURE() << name << " is not set: run the integration tests through scripts/test.sh, "
                  << "or source the env file written by test/support/pgcluster.sh start DIR";
    return {};
  }
  return v;
}

/// Logs a caught error's message through spdlog's default logger (the suite's captured log), so
/// that log_scan_test.cpp checks error messages for secrets too.
inline void log_caught(const std::exception& e) { spdlog::info("test caught: {}", e.what()); }

/// A logger for a test that reads back what a pool logged: into `ring`, and into the default
/// logger's sinks too (the captured log that pqxxpool_logs_hold_no_secrets scans for secrets).
inline std::shared_ptr<spdlog::logger> ring_logger(const std::string& name,
                                                   const std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt>& ring) {
  std::vector<spdlog::sink_ptr> sinks{ring};
  if (const auto fallback = spdlog::default_logger()) {
    for (const spdlog::sink_ptr& sink : fallback->sinks()) sinks.push_back(sink);
  }
  return std::make_shared<spdlog::logger>(name, sinks.begin(), sinks.end());
}

/// A pool_config for the app role over TLS (verify-full), tagged with an application_name so a
/// test can count its own backends on the server.
inline pool_config app_config(const std::string& application_name) {
  pool_config cfg;
  cfg.conninfo = env("PQXXPOOL_TEST_CONNINFO");
  cfg.params["application_name"] = application_name;
  cfg.acquire_timeout = 20s;
  return cfg;
}

/// Runs SQL as the superuser (over the Unix socket) and returns the first field of the first row.
inline std::string admin_query(const std::string& sql) {
  pqxx::connection c{env("PQXXPOOL_TEST_ADMIN_CONNINFO")};
  pqxx::nontransaction tx{c};
  const pqxx::result r = tx.exec(sql);
  if (r.empty() || r[0].empty() || r[0][0].is_null()) return {};
  return r[0][0].c_str();
}

/// Number of server backends with this application_name.
inline int backends(const std::string& application_name) {
  return std::stoi(admin_query("SELECT count(*) FROM pg_stat_activity WHERE application_name = '" +
                               application_name + "'"));
}

/// Terminates every backend with this application_name; returns how many.
inline int terminate_backends(const std::string& application_name) {
  return std::stoi(admin_query(
      "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '" +
      application_name + "'"));
}

/// Polls pred (with yield, no fixed sleeps) until it holds or `bound` of real time passes. The
/// bound only turns a hang into a failure; no test asserts how long anything took.
/// Predicates that query the server pass a poll interval, so polling does not flood it.
inline bool eventually(const std::function<bool()>& pred, std::chrono::seconds bound = 30s,
                       std::chrono::milliseconds poll = 0ms) {
  const auto give_up = std::chrono::steady_clock::now() + bound;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    if (poll.count() > 0)
      std::this_thread::sleep_for(poll);
    else
      std::this_thread::yield();
  }
  return true;
}

/// A TCP listener on loopback that never accepts: a client's connect completes in the kernel's
/// backlog, and then it waits for an answer that never comes (a hung server, or a middlebox
/// that swallows the traffic).
struct silent_listener {
  int fd = -1;
  int port = 0;
  silent_listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), len) != 0 || ::listen(fd, 16) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0)
      ADD_FAILURE() << "cannot listen on loopback";
    port = ntohs(a.sin_port);
  }
  /// Whether a client's connection waits in the backlog, polling up to `timeout` for one.
  bool has_client(std::chrono::milliseconds timeout) const {
    pollfd p{fd, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1 && (p.revents & POLLIN) != 0;
  }
  ~silent_listener() {
    if (fd >= 0) ::close(fd);
  }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
};

}  // namespace pqxxpool::itest
