// threads: many threads sharing a small pool.
//
//   example_threads 'host=localhost dbname=app user=app password=secret'
//
// Eight threads share a pool of two connections. Each borrows a connection for a short query; when
// none is free it waits, at most acquire_timeout, and then gets pqxxpool::acquire_timeout_error,
// which says how long it waited and what the pool looked like (and the last connect error, if
// connecting is what failed). Here a timeout is handled by counting it and trying again.

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "pqxxpool/pqxxpool.hpp"

int main(int argc, char** argv) {
  const char* conninfo = argc > 1 ? argv[1] : std::getenv("DATABASE_URL");

  pqxxpool::pool_config cfg;
  cfg.conninfo = conninfo != nullptr ? conninfo : "";
  cfg.max_size = 2;
  cfg.min_idle = 2;
  // Deliberately short so that some of the 8 threads time out while the 2 connections are busy.
  cfg.acquire_timeout = std::chrono::milliseconds{20};

  try {
    pqxxpool::pool pool{cfg};
    pool.wait_ready(std::chrono::seconds{5});

    std::atomic<int> done{0};
    std::atomic<int> timeouts{0};
    std::mutex out_mu;  // std::cout is shared by the threads

    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&pool, &done, &timeouts, &out_mu, t] {
        for (int job = 0; job < 5; ++job) {
          try {
            pqxxpool::lease conn = pool.acquire();  // waits up to cfg.acquire_timeout
            pqxx::nontransaction tx{*conn};
            tx.exec("SELECT pg_sleep(0.01)");
            ++done;
          } catch (const pqxxpool::acquire_timeout_error& e) {
            // The pool was busy for the whole timeout: count it, say so, and go on with the next job.
            // (A real program might retry, shed load, or report "service busy".)
            ++timeouts;
            std::lock_guard<std::mutex> lk(out_mu);
            std::cout << "thread " << t << ": no connection after " << e.waited().count() << " ms ("
                      << e.snapshot().waiting << " threads waiting)\n";
            if (!e.last_connect_error().empty())
              std::cout << "  last connect error: " << e.last_connect_error().message << "\n";
          } catch (const std::exception& e) {
            std::lock_guard<std::mutex> lk(out_mu);
            std::cout << "thread " << t << ": " << e.what() << "\n";
          }
        }
      });
    }
    for (std::thread& th : threads) th.join();

    const pqxxpool::pool_stats s = pool.stats();
    std::cout << done << " queries done, " << timeouts << " acquire timeouts; pool: acquires " << s.acquires
              << ", waited " << s.waited_acquires << ", timeouts " << s.acquire_timeouts
              << ", acquire wait p99 " << s.acquire_wait.p99() * 1e3 << " ms\n";
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
