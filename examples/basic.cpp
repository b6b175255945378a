// basic: the smallest useful pqxxpool program.
//
//   example_basic 'host=localhost dbname=app user=app password=secret'
//   DATABASE_URL=postgresql://app:secret@localhost/app example_basic
//
// Builds a pool from a libpq connection string, borrows one connection, runs a transaction on it,
// gives it back and prints the pool's statistics.

#include <cstdlib>
#include <iostream>

#include <pqxx/pqxx>

#include "pqxxpool/pqxxpool.hpp"

int main(int argc, char** argv) {
  // The connection string: first argument, else $DATABASE_URL, else libpq's defaults (PG* variables).
  const char* conninfo = argc > 1 ? argv[1] : std::getenv("DATABASE_URL");

  try {
    pqxxpool::pool_config cfg;
    cfg.conninfo = conninfo != nullptr ? conninfo : "";
    cfg.max_size = 4;                                  // at most 4 connections
    cfg.min_idle = 1;                                  // keep one open and ready
    cfg.acquire_timeout = std::chrono::seconds{5};     // acquire() gives up after 5 s

    pqxxpool::pool pool{cfg};  // throws pqxxpool::config_error for a bad setting; never blocks

    {
      // A lease is the connection on loan; it goes back to the pool when the lease goes out of scope.
      pqxxpool::lease conn = pool.acquire();

      // Use it like any libpqxx connection. Keep the transaction inside the lease's scope.
      pqxx::work tx{*conn};
      const pqxx::row r = tx.exec1("SELECT current_user, version()");
      tx.commit();
      std::cout << "connected as " << r[0].c_str() << "\n" << r[1].c_str() << "\n";
    }  // the connection is back in the pool here

    const pqxxpool::pool_stats s = pool.stats();
    std::cout << "pool: total " << s.total << ", idle " << s.idle << ", in use " << s.in_use
              << ", acquires " << s.acquires << ", connections created " << s.connections_created << "\n";
    return 0;
  } catch (const std::exception& e) {
    // pqxxpool's messages (and libpq's) never contain the password.
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
