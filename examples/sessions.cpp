// sessions: per-connection state in a pool — prepared statements and session settings.
//
//   example_sessions 'host=localhost dbname=app user=app password=secret'
//
// A pooled connection was used before and will be used again by someone else. So what every
// connection needs is set up in after_connect (here: the prepared statements; libpqxx 6 prepares
// each one on the server the first time it is used on that connection), and what one lease
// changes for itself is undone by a reset hook before the connection is handed out again. Without
// a reset hook a SET made through one lease is still in force for the next, as in HikariCP and
// pgxpool. RESET ALL suits PostgreSQL; Aurora DSQL supports few SET commands (docs/usage.md).

#include <chrono>
#include <cstdlib>
#include <iostream>

#include <pqxx/pqxx>

#include "pqxxpool/pqxxpool.hpp"

int main(int argc, char** argv) {
  const char* conninfo = argc > 1 ? argv[1] : std::getenv("DATABASE_URL");

  try {
    pqxxpool::pool_config cfg;
    cfg.conninfo = conninfo != nullptr ? conninfo : "";
    cfg.max_size = 1;  // one connection, so that every lease below gets the same one
    cfg.min_idle = 1;

    cfg.after_connect = [](pqxxpool::connection& c) {
      c.prepare("add", "SELECT $1::int + $2::int");
    };
    // Runs on the pool's maintenance thread after every return (after the pool has rolled back
    // a transaction left open), before the connection is handed out again.
    cfg.reset = [](pqxxpool::connection& c) {
      pqxx::nontransaction tx{c};
      tx.exec0("RESET ALL");
    };

    pqxxpool::pool pool{cfg};
    pool.wait_ready(std::chrono::seconds{5});

    {
      pqxxpool::lease c = pool.acquire();
      pqxx::work tx{*c};  // declared after the lease, so it ends before the lease gives c back
      std::cout << "add(2, 3) = " << tx.exec_prepared1("add", 2, 3)[0].as<int>() << "\n";
      tx.commit();
    }
    {
      pqxxpool::lease c = pool.acquire();
      pqxx::nontransaction tx{*c};
      tx.exec0("SET statement_timeout = '42s'");  // this lease's own setting
      std::cout << "statement_timeout in the lease that set it = "
                << tx.exec1("SHOW statement_timeout")[0].c_str() << "\n";
    }
    {
      pqxxpool::lease c = pool.acquire();  // the same connection, reset in between
      pqxx::nontransaction tx{*c};
      std::cout << "statement_timeout in the next lease = "
                << tx.exec1("SHOW statement_timeout")[0].c_str() << "\n";
      std::cout << "add(40, 2) = " << tx.exec_prepared1("add", 40, 2)[0].as<int>() << "\n";
    }
    const pqxxpool::pool_stats s = pool.stats();
    std::cout << "connections opened = " << s.connections_created << "\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
