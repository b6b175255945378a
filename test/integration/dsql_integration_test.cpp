// The DSQL pool end to end through the DSQL front-door emulator (test/support/dsql_emulator.py):
// TLS with SNI through a "tunnel" (hostaddr), IAM tokens checked by botocore, connections closed
// by the server at their maximum age. The suite starts its own emulator instance with a 4-second
// maximum connection age.

#include <atomic>
#include <fstream>
#include <mutex>
#include <thread>
#include <vector>

#include "pqxxpool/aws/dsql.hpp"
#include "pqxxpool/dsql_pool.hpp"
#include "secrets.hpp"
#include "server.hpp"

namespace pqxxpool::itest {
namespace {

const char* const cluster = "testcluster.dsql.us-east-1.on.aws";
const char* const access_key = "AKIDPQXXPOOLITEST000";
const char* const secret_key = secrets::dsql_secret_key;

class dsql_emulator : public ::testing::Test {
 protected:
  static std::string support_dir() {
    const std::string script = env("PQXXPOOL_TEST_CLUSTER_SCRIPT");
    return script.substr(0, script.rfind('/'));
  }
  static std::string run_emulator(const std::string& verb, const std::string& args = "") {
    return "PQXXPOOL_DSQL_EMULATOR_INSTANCE=itest PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID=" + std::string(access_key) +
           " PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY=" + secret_key + " bash '" + support_dir() +
           "/dsql_emulator.sh' " + verb + " '" + env("PQXXPOOL_TEST_DIR") + "' " + args + " >/dev/null 2>&1";
  }
  static void SetUpTestSuite() {
    ASSERT_EQ(std::system(run_emulator("start", "--max-age 4 --max-age-grace 3").c_str()), 0);
    std::ifstream f(env("PQXXPOOL_TEST_DIR") + "/emulator-itest.port");
    f >> port;
    ASSERT_GT(port, 0);
  }
  static void TearDownTestSuite() { (void)std::system(run_emulator("stop").c_str()); }

  /// The tunnel recipe: connect to the emulator on loopback, name the cluster for SNI, the
  /// certificate and the token.
  static dsql::config tunnel_config() {
    dsql::config cfg;
    cfg.host = cluster;
    cfg.tunnel_address = "127.0.0.1";
    cfg.tunnel_port = static_cast<std::uint16_t>(port);
    cfg.sslrootcert = env("PQXXPOOL_TEST_CA");
    cfg.credentials = std::make_shared<aws::static_credentials>(aws::credentials{access_key, secret_key, "", {}});
    cfg.server_max_age = 4s;  // what this emulator instance enforces
    cfg.handout_margin = 1500ms;
    cfg.pool.max_lifetime = 2s;
    cfg.pool.lifetime_jitter = 0.2;
    cfg.pool.max_size = 4;
    cfg.pool.min_idle = 2;
    cfg.pool.acquire_timeout = 20s;
    return cfg;
  }

  static std::string connect_failure(const pool_config& cfg) {
    pool p{cfg};
    try {
      p.wait_ready(3s);
    } catch (const connect_error& e) {
      log_caught(e);
      return e.what();
    }
    return "connected";
  }

  static inline int port = 0;
};

void run_workload_through_lifetimes(dsql::config cfg) {
  auto p = dsql::make_pool(cfg);
  p->wait_ready(20s);
  std::atomic<bool> stop{false};
  std::atomic<long> ok{0};
  std::atomic<long> failed{0};
  std::mutex error_mu;
  std::string first_error;
  std::vector<std::thread> workers;
  for (int i = 0; i < 8; ++i) {
    workers.emplace_back([&] {
      while (!stop) {
        try {
          lease c = p->acquire();
          pqxx::nontransaction tx{*c};
          if (tx.exec("SELECT current_user")[0][0].as<std::string>() != "admin") ++failed;
          ++ok;
        } catch (const std::exception& e) {
          ++failed;
          std::lock_guard<std::mutex> g(error_mu);
          if (first_error.empty()) first_error = e.what();
        }
      }
    });
  }
  // Several connection ages and token lifetimes (token_duration 2 s): at least 12 retirements.
  const bool recycled = eventually([&] { return p->stats().closed_max_lifetime >= 12; }, 90s);
  stop = true;
  for (auto& w : workers) w.join();
  EXPECT_TRUE(recycled);
  EXPECT_EQ(failed.load(), 0) << first_error;
  EXPECT_GT(ok.load(), 0);
  const pool_stats s = p->stats();
  EXPECT_EQ(s.connect_errors, 0u) << s.last_error.message;
  EXPECT_EQ(s.closed_broken, 0u) << "no connection may reach the server's maximum age";
  EXPECT_GE(s.connections_created, 12u);
}

TEST_F(dsql_emulator, workload_runs_through_token_lifetimes_and_connection_ages) {
  dsql::config cfg = tunnel_config();
  cfg.token_duration = 2s;
  run_workload_through_lifetimes(cfg);
}

TEST_F(dsql_emulator, workload_with_the_token_cache_on) {
  dsql::config cfg = tunnel_config();
  cfg.token_duration = 2s;
  cfg.token_cache = true;
  run_workload_through_lifetimes(cfg);
}

TEST_F(dsql_emulator, wrongly_signed_token_is_refused_with_a_hint_and_no_secret) {
  dsql::config cfg = tunnel_config();
  const std::string wrong_secret = secrets::dsql_wrong_secret_key;
  cfg.credentials = std::make_shared<aws::static_credentials>(aws::credentials{access_key, wrong_secret, "", {}});
  const std::string message = connect_failure(dsql::make_pool_config(cfg));
  EXPECT_NE(message.find("access denied"), std::string::npos) << message;
  EXPECT_NE(message.find("hint:"), std::string::npos) << message;
  EXPECT_NE(message.find("DbConnectAdmin"), std::string::npos) << message;
  EXPECT_NE(message.find("the last token sent was made"), std::string::npos) << message;
  EXPECT_EQ(message.find(wrong_secret), std::string::npos);
  EXPECT_EQ(message.find("X-Amz-Signature"), std::string::npos) << "the token must not be shown";
}

TEST_F(dsql_emulator, expired_token_is_refused_with_a_hint) {
  pool_config cfg = dsql::make_pool_config(tunnel_config());
  cfg.before_connect = [](connect_params& params) {
    dsql::token_request req;
    req.host = cluster;
    req.expires = 60s;
    params.set("password", dsql::generate_token(req, aws::credentials{access_key, secret_key, "", {}},
                                                std::chrono::system_clock::now() - std::chrono::hours(1)));
  };
  const std::string message = connect_failure(cfg);
  EXPECT_NE(message.find("access denied"), std::string::npos) << message;
  EXPECT_NE(message.find("expired"), std::string::npos) << "the hint names expiry as a cause: " << message;
}

TEST_F(dsql_emulator, an_ip_address_as_host_sends_no_sni_and_gets_the_tunnel_hint) {
  dsql::config cfg = tunnel_config();
  cfg.host = "127.0.0.1";
  cfg.region = "us-east-1";
  cfg.tunnel_address.clear();
  cfg.sslmode = "require";  // verify-full would already stop at the certificate name
  const std::string message = connect_failure(dsql::make_pool_config(cfg));
  EXPECT_NE(message.find("sni was not received"), std::string::npos) << message;
  EXPECT_NE(message.find("hostaddr"), std::string::npos) << message;
}

}  // namespace
}  // namespace pqxxpool::itest
