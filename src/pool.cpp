#include "pqxxpool/pool.hpp"

#include <utility>

#include "core/pool_core.hpp"
#include "pqxx/adapter.hpp"

namespace pqxxpool {

// --- lease -------------------------------------------------------------------------------------

lease::lease(lease&& other) noexcept
    : m_core(std::exchange(other.m_core, nullptr)), m_slot(std::exchange(other.m_slot, nullptr)) {}

lease& lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    release();
    m_core = std::exchange(other.m_core, nullptr);
    m_slot = std::exchange(other.m_slot, nullptr);
  }
  return *this;
}

lease::~lease() { release(); }

connection& lease::operator*() const {
  if (m_slot == nullptr) throw error("pqxxpool: use of an empty lease");
  connection* c = m_slot->conn->user_connection();
  if (c == nullptr) throw error("pqxxpool: this lease has no libpqxx connection");
  return *c;
}

connection* lease::operator->() const { return &**this; }

void lease::give_back(bool discard) noexcept {
  if (m_slot == nullptr) return;
  core::pool_core* owner = std::exchange(m_core, nullptr);
  core::slot* s = std::exchange(m_slot, nullptr);
  owner->give_back(s, discard);
}

void lease::release() noexcept { give_back(false); }
void lease::discard() noexcept { give_back(true); }

// --- pool --------------------------------------------------------------------------------------

namespace {
core::pool_core* make_core(pool_config cfg) {
  cfg.validate();
  connect_params params = pqxx_adapter::build_params(cfg);
  // libpq's connect_timeout in conninfo/params is what a libpq user expects to apply.
  if (const auto t = pqxx_adapter::user_connect_timeout(cfg)) cfg.connect_timeout = *t;
  std::unique_ptr<core::connector> conn = pqxx_adapter::make_connector(cfg, std::move(params));
  return new core::pool_core(std::move(cfg), std::move(conn), core::make_system_clock());
}
}  // namespace

pool::pool(pool_config cfg) : m_core(make_core(std::move(cfg))) {}

pool::~pool() { m_core->destroy_from_owner(); }

lease pool::acquire(source_location where) { return m_core->acquire(m_core->config().acquire_timeout, where); }
lease pool::acquire(std::chrono::milliseconds timeout, source_location where) { return m_core->acquire(timeout, where); }
lease pool::try_acquire(source_location where) { return m_core->try_acquire(where); }
void pool::wait_ready(std::chrono::milliseconds timeout) { m_core->wait_ready(timeout); }
pool_stats pool::stats() const { return m_core->stats(); }
void pool::evict_all() { m_core->evict_all(); }
void pool::close() { m_core->close(); }
const pool_config& pool::config() const noexcept { return m_core->config(); }

}  // namespace pqxxpool
