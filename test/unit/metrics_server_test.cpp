// pqxxpool::metrics_server: /metrics, /stats and /healthz over real HTTP on 127.0.0.1, for a pool
// that never connects (min_idle 0, a conninfo pointing at a closed port): no PostgreSQL needed.

#include "pqxxpool/metrics_server.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <httplib.h>
#include <nlohmann/json.hpp>

#include "metrics_server_detail.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/pool.hpp"

namespace {

pqxxpool::pool_config idle_pool_config(const std::string& name) {
  pqxxpool::pool_config cfg;
  cfg.name = name;
  cfg.min_idle = 0;  // never connects on its own; stats() works without connections
  cfg.conninfo = "host=127.0.0.1 port=1 connect_timeout=1 sslmode=disable";
  return cfg;
}

/// Runs `promtool check metrics` on body; returns its exit status and output (stdout + stderr).
std::pair<int, std::string> promtool_check(const std::string& body) {
  char path[] = "/tmp/pqxxpool-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return {-1, "mkstemp failed"};
  ::close(fd);
  { std::ofstream(path, std::ios::binary) << body; }
  const std::string out_path = std::string(path) + ".out";
  const std::string cmd = std::string("promtool check metrics < '") + path + "' > '" +
                          out_path + "' 2>&1";
  const int rc = std::system(cmd.c_str());
  std::string output;
  {
    std::ifstream in(out_path, std::ios::binary);
    output.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  std::remove(path);
  std::remove(out_path.c_str());
  return {rc != -1 && WIFEXITED(rc) ? WEXITSTATUS(rc) : -1, output};
}

/// A client that opens a connection to 127.0.0.1:port, starts a request and then sends one more
/// byte of a header every 100 ms, never finishing it — as a stalled or hostile client would, and
/// never idle long enough for the server's read timeout. Stops and closes when destroyed.
class trickling_client {
 public:
  explicit trickling_client(std::uint16_t port) : m_fd(::socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (m_fd < 0 || ::connect(m_fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
      throw std::runtime_error("trickling_client: cannot connect");
    const std::string start = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    if (::send(m_fd, start.data(), start.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(start.size()))
      throw std::runtime_error("trickling_client: cannot send");
    m_thread = std::thread([this] {
      // The slow client's pace, not a synchronisation: the server is never told when it ends.
      while (!m_stop.load()) {
        if (::send(m_fd, "a", 1, MSG_NOSIGNAL) != 1) {  // the server hung up (reset)
          m_cut.store(true);
          return;
        }
        pollfd p{m_fd, POLLIN, 0};  // or it closed its end: end of file to read
        if (::poll(&p, 1, 0) == 1) {
          char c;
          if (::recv(m_fd, &c, 1, MSG_DONTWAIT) <= 0) {
            m_cut.store(true);
            return;
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  /// Whether the server has ended this connection.
  bool cut() const { return m_cut.load(); }
  ~trickling_client() {
    m_stop.store(true);
    m_thread.join();
    ::close(m_fd);
  }
  trickling_client(const trickling_client&) = delete;
  trickling_client& operator=(const trickling_client&) = delete;

 private:
  int m_fd;
  std::atomic<bool> m_stop{false};
  std::atomic<bool> m_cut{false};
  std::thread m_thread;
};

TEST(metrics_server, serves_metrics_stats_and_health) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0)
    GTEST_FAIL() << "promtool (Debian package prometheus) is required: scripts/deps.sh installs it";

  pqxxpool::pool pool{idle_pool_config("demo")};
  pqxxpool::metrics_server server{{&pool}};  // 127.0.0.1, any free port
  ASSERT_NE(server.port(), 0);
  EXPECT_EQ(server.host(), "127.0.0.1");

  httplib::Client client{"127.0.0.1", server.port()};
  client.set_connection_timeout(5);
  client.set_read_timeout(5);

  const auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics) << httplib::to_string(metrics.error());
  EXPECT_EQ(metrics->status, 200);
  EXPECT_EQ(metrics->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(metrics->body.find("pqxxpool_pool_exhausted_total{pool=\"demo\"} 0\n"), std::string::npos)
      << metrics->body;
  const auto [rc, output] = promtool_check(metrics->body);
  EXPECT_EQ(rc, 0) << "promtool check metrics:\n" << output << "\nbody:\n" << metrics->body;

  const auto stats = client.Get("/stats");
  ASSERT_TRUE(stats) << httplib::to_string(stats.error());
  EXPECT_EQ(stats->status, 200);
  EXPECT_EQ(stats->get_header_value("Content-Type"), "application/json");
  const nlohmann::json json = nlohmann::json::parse(stats->body);
  ASSERT_TRUE(json.is_array()) << stats->body;
  ASSERT_EQ(json.size(), 1U);
  EXPECT_TRUE(json[0].is_object());

  const auto healthy = client.Get("/healthz");
  ASSERT_TRUE(healthy) << httplib::to_string(healthy.error());
  EXPECT_EQ(healthy->status, 200);
  EXPECT_EQ(healthy->body, "ok\n");

  pool.close();
  const auto closed = client.Get("/healthz");
  ASSERT_TRUE(closed) << httplib::to_string(closed.error());
  EXPECT_EQ(closed->status, 503);
  EXPECT_NE(closed->body.find("demo"), std::string::npos) << closed->body;
  EXPECT_NE(closed->body.find("closed"), std::string::npos) << closed->body;

  const auto missing = client.Get("/nope");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);

  server.stop();
  server.stop();  // idempotent
  EXPECT_NE(server.port(), 0);
}

TEST(metrics_server, healthz_quotes_a_closed_pools_name_unambiguously) {
  pqxxpool::pool pool{idle_pool_config(R"(say "hi" \ bye)")};
  pqxxpool::metrics_server server{{&pool}};
  pool.close();
  httplib::Client client{"127.0.0.1", server.port()};
  const auto closed = client.Get("/healthz");
  ASSERT_TRUE(closed) << httplib::to_string(closed.error());
  EXPECT_EQ(closed->status, 503);
  EXPECT_EQ(closed->body, R"(pool "say \"hi\" \\ bye" is closed)" "\n");
  server.stop();
}

TEST(metrics_server, stop_right_after_start_returns) {
  pqxxpool::pool pool{idle_pool_config("quick")};
  pqxxpool::metrics_server server{{&pool}};
  server.stop();
}

TEST(metrics_server, clients_that_never_finish_a_request_do_not_hold_up_a_scrape) {
  pqxxpool::pool pool{idle_pool_config("slow")};
  pqxxpool::metrics_server server{{&pool}};
  std::vector<std::unique_ptr<trickling_client>> slow;
  for (int i = 0; i < 4; ++i) slow.push_back(std::make_unique<trickling_client>(server.port()));

  httplib::Client client{"127.0.0.1", server.port()};
  client.set_read_timeout(std::chrono::seconds(60));  // a hang bound; the answer comes at once
  const auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << "no answer while 4 clients trickle requests: " << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find("pqxxpool_pool_exhausted_total{pool=\"slow\"}"), std::string::npos);
}

TEST(metrics_server, a_client_that_trickles_a_request_for_ever_is_dropped) {
  // Each exchange has a deadline (5 s): a client that keeps a request going by sending a byte
  // every 100 ms — never idle long enough for a read timeout — is cut off, and its worker freed.
  pqxxpool::pool pool{idle_pool_config("forever")};
  pqxxpool::metrics_server server{{&pool}};
  trickling_client slow{server.port()};
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);  // a hang bound
  while (!slow.cut() && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
  EXPECT_TRUE(slow.cut()) << "the server still reads a request that began a minute ago";
}

TEST(metrics_server, stop_returns_while_a_client_trickles_a_request) {
  // With an hour per exchange, stop() returns within the wait below only if it ends the stalled
  // exchange itself (the stop eventfd), not by waiting out the deadline.
  const std::chrono::milliseconds saved = pqxxpool::detail::set_metrics_exchange_deadline(std::chrono::hours(1));
  struct restore {
    std::chrono::milliseconds value;
    ~restore() { pqxxpool::detail::set_metrics_exchange_deadline(value); }
  } restore_deadline{saved};
  pqxxpool::pool pool{idle_pool_config("trickle")};
  auto server = std::make_unique<pqxxpool::metrics_server>(std::vector<const pqxxpool::pool*>{&pool});
  auto slow = std::make_unique<trickling_client>(server->port());
  // A request answered afterwards on another connection: the server is serving (and has taken
  // the trickling connection, accepted first, into a worker or its queue).
  httplib::Client client{"127.0.0.1", server->port()};
  ASSERT_TRUE(client.Get("/healthz"));

  auto stopped = std::async(std::launch::async, [&server] { server->stop(); });
  const bool returned = stopped.wait_for(std::chrono::seconds(60)) == std::future_status::ready;
  EXPECT_TRUE(returned) << "stop() still waits on a client that never finishes its request";
  slow.reset();  // if stop() did not return, closing the connection lets it: the test ends either way
}

TEST(metrics_server, port_in_use_is_a_config_error_naming_listen) {
  pqxxpool::pool pool{idle_pool_config("busy")};
  pqxxpool::metrics_server first{{&pool}};
  try {
    pqxxpool::metrics_server second{{&pool}, "127.0.0.1", first.port()};
    FAIL() << "a second server bound the same port";
  } catch (const pqxxpool::config_error& e) {
    EXPECT_EQ(e.field(), "listen");
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(first.port())), std::string::npos)
        << e.what();
  }
}

TEST(metrics_server, rejects_null_and_duplicate_pools) {
  pqxxpool::pool a{idle_pool_config("same")};
  pqxxpool::pool b{idle_pool_config("same")};
  EXPECT_THROW(pqxxpool::metrics_server({nullptr}), pqxxpool::config_error);
  EXPECT_THROW(pqxxpool::metrics_server({&a, &b}), pqxxpool::config_error);
}

}  // namespace
