#pragma once
// naive_pool.hpp — the baseline every pqxxpool performance goal is measured against: the libpqxx
// connection pool a C++ team would write for itself in an afternoon. One std::mutex, one
// std::condition_variable, a std::deque of idle connections.
//
//  - acquire(timeout) takes the front idle connection if there is one; otherwise, while fewer
//    than max_size connections exist, it connects on the caller's thread (outside the lock);
//    otherwise it waits on the condition variable (up to timeout).
//  - Returning a connection (the handle's destructor) pushes it to the back and notify_one()s.
//    A connection that is no longer open, or older than max_lifetime (0 = no limit), is closed
//    instead, which frees its place for a new connect.
//
// No validation, no background threads, no fairness, no statistics beyond a count of connects.
// Intentionally small: it is a yardstick, not a product. All handles must be returned before the
// pool is destroyed.
//
// Two additions for the scenario runner (`pqxxpool bench`, tools/pqxxpool/bench.cpp), which
// includes this header as does pool_bench.cpp: an optional before_connect hook, run on the
// caller's thread right before each connect (outside the lock; the spike scenario sleeps 150 ms in
// it, as pqxxpool's before_connect does there), and connections_opened(), the number of
// successful connects so far.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>

#include <pqxx/connection>

namespace naive {

using clock_type = std::chrono::steady_clock;

/// An open connection and the time it was opened.
struct pooled_connection {
  std::unique_ptr<pqxx::connection> conn;
  clock_type::time_point created{};
};

class pool;

/// RAII lease of one connection; gives it back when destroyed. Move-only.
class handle {
 public:
  handle() noexcept = default;
  handle(handle&& other) noexcept : m_pool(std::exchange(other.m_pool, nullptr)), m_entry(std::move(other.m_entry)) {}
  handle& operator=(handle&& other) noexcept {
    if (this != &other) {
      release();
      m_pool = std::exchange(other.m_pool, nullptr);
      m_entry = std::move(other.m_entry);
    }
    return *this;
  }
  handle(const handle&) = delete;
  handle& operator=(const handle&) = delete;
  ~handle() { release(); }

  explicit operator bool() const noexcept { return m_entry.conn != nullptr; }
  pqxx::connection& operator*() const noexcept { return *m_entry.conn; }
  pqxx::connection* operator->() const noexcept { return m_entry.conn.get(); }

  /// Gives the connection back now (the destructor does this). No-op when empty.
  inline void release() noexcept;

 private:
  friend class pool;
  handle(pool* owner, pooled_connection entry) noexcept : m_pool(owner), m_entry(std::move(entry)) {}

  pool* m_pool = nullptr;
  pooled_connection m_entry;
};

class pool {
 public:
  /// before_connect (optional) runs on the acquiring thread before each connect, outside the
  /// lock; if it throws, that acquire fails as if the connect had.
  pool(std::string conninfo, std::size_t max_size, std::chrono::milliseconds max_lifetime = {},
       std::function<void()> before_connect = {})
      : m_conninfo(std::move(conninfo)),
        m_max_size(max_size),
        m_max_lifetime(max_lifetime),
        m_before_connect(std::move(before_connect)) {}
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;

  /// Connections opened successfully since construction. Never blocks. Thread-safe.
  [[nodiscard]] std::uint64_t connections_opened() const noexcept { return m_connects.load(std::memory_order_relaxed); }

  /// Borrows a connection, connecting on this thread if the pool may still grow. Throws
  /// std::runtime_error after waiting `timeout` for a return, or whatever pqxx throws on connect.
  handle acquire(std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> lk(m_mu);
    if (m_idle.empty() && m_total >= m_max_size &&
        !m_cv.wait_for(lk, timeout, [this] { return !m_idle.empty() || m_total < m_max_size; }))
      throw std::runtime_error("naive::pool: timed out waiting for a connection");
    if (!m_idle.empty()) {
      pooled_connection entry = std::move(m_idle.front());
      m_idle.pop_front();
      return handle(this, std::move(entry));
    }
    ++m_total;  // reserve a place, then connect outside the lock
    lk.unlock();
    try {
      if (m_before_connect) m_before_connect();
      auto conn = std::make_unique<pqxx::connection>(m_conninfo);
      m_connects.fetch_add(1, std::memory_order_relaxed);
      return handle(this, pooled_connection{std::move(conn), clock_type::now()});
    } catch (...) {
      lk.lock();
      --m_total;
      lk.unlock();
      m_cv.notify_one();  // a waiter may try to connect in our place
      throw;
    }
  }

 private:
  friend class handle;

  void give_back(pooled_connection entry) noexcept {
    const bool keep = entry.conn->is_open() &&
                      (m_max_lifetime.count() == 0 || clock_type::now() - entry.created < m_max_lifetime);
    {
      std::lock_guard<std::mutex> lk(m_mu);
      if (keep)
        m_idle.push_back(std::move(entry));
      else
        --m_total;
    }
    m_cv.notify_one();
    // A retired connection (still in `entry` when !keep) closes here, outside the lock.
  }

  const std::string m_conninfo;
  const std::size_t m_max_size;
  const std::chrono::milliseconds m_max_lifetime;
  const std::function<void()> m_before_connect;
  std::atomic<std::uint64_t> m_connects{0};  // successful connects; not guarded (atomic)
  std::mutex m_mu;
  std::condition_variable m_cv;
  std::deque<pooled_connection> m_idle;  // guarded by m_mu
  std::size_t m_total = 0;               // idle + leased + connecting; guarded by m_mu
};

inline void handle::release() noexcept {
  if (m_pool == nullptr) return;
  std::exchange(m_pool, nullptr)->give_back(std::move(m_entry));
}

}  // namespace naive
