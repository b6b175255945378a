// hooks: per-connection hooks.
//
//   EXAMPLE_DB_PASSWORD=secret example_hooks 'host=localhost dbname=app user=app'
//
// before_connect runs for every new physical connection (on a background thread) with a fresh copy
// of the connection parameters. Here it reads the password from an environment variable each time,
// standing in for a token provider whose tokens expire (e.g. an IAM auth token): connections
// opened later automatically pick up the current credential.
// after_connect runs once on every new connection before it is first handed out: a good place for
// session settings such as application_name or search_path.

#include <cstdlib>
#include <iostream>
#include <stdexcept>

#include <pqxx/pqxx>

#include "pqxxpool/pqxxpool.hpp"

int main(int argc, char** argv) {
  const char* conninfo = argc > 1 ? argv[1] : std::getenv("DATABASE_URL");

  try {
    pqxxpool::pool_config cfg;
    cfg.conninfo = conninfo != nullptr ? conninfo : "";
    cfg.min_idle = 1;

    cfg.before_connect = [](pqxxpool::connect_params& params) {
      // Read at every connect, never cached: a rotated credential is used by the next connection.
      const char* password = std::getenv("EXAMPLE_DB_PASSWORD");
      if (password == nullptr) throw std::runtime_error("EXAMPLE_DB_PASSWORD is not set");  // connect fails
      params.set("password", password);
    };

    cfg.after_connect = [](pqxxpool::connection& c) {
      pqxx::nontransaction tx{c};
      tx.exec0("SET application_name = 'pqxxpool-example-hooks'");
    };

    pqxxpool::pool pool{cfg};
    // Fail fast at start-up: wait until min_idle connections are open, or throw the connect error.
    pool.wait_ready(std::chrono::seconds{5});

    pqxxpool::lease conn = pool.acquire();
    pqxx::nontransaction tx{*conn};
    std::cout << "application_name = " << tx.exec1("SHOW application_name")[0].c_str() << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
