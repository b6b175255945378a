#include "pqxxpool/metrics.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <cstdio>
#include <cstdlib>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "pqxxpool/errors.hpp"
#include "utf8.hpp"

namespace pqxxpool {
namespace {

// Label values: backslash, double quote and line feed are escaped (exposition format 0.0.4),
// and bytes that are not UTF-8 (which the format requires) become U+FFFD.
std::string escape_label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : detail::to_valid_utf8(value)) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  // The shortest text that reads back as the same double (1e-06, not 9.9999999999999995e-07).
  char buf[32];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string number(std::uint64_t v) { return std::to_string(v); }

/// One metric family: HELP and TYPE once, then one sample (or several) per pool.
struct family {
  const char* name;
  const char* type;
  const char* help;
  std::function<void(std::ostringstream&, const pool_stats&, const std::string& pool_label)> samples;
};

void sample(std::ostringstream& o, const char* name, const std::string& labels, const std::string& value) {
  o << name << '{' << labels << "} " << value << '\n';
}

/// A family with one sample per pool: a gauge or a counter read from the snapshot.
template <typename Get>
family simple(const char* type, const char* name, const char* help, Get get) {
  return {name, type, help, [name, get](std::ostringstream& o, const pool_stats& s, const std::string& pool) {
            sample(o, name, pool, number(static_cast<std::uint64_t>(get(s))));
          }};
}
/// A histogram family: cumulative `le` buckets (2^k µs, in seconds), _sum and _count.
family histogram_family(const char* name, const char* help, const histogram pool_stats::*member) {
  return {name, "histogram", help, [name, member](std::ostringstream& o, const pool_stats& s, const std::string& pool) {
            const histogram& h = s.*member;
            const std::string base(name);
            std::uint64_t cumulative = 0;
            for (std::size_t i = 0; i <= histogram::bucket_count; ++i) {
              cumulative += h.buckets[i];
              sample(o, (base + "_bucket").c_str(), pool + ",le=\"" + number(histogram::upper_bound_seconds(i)) + "\"",
                     number(cumulative));
            }
            sample(o, (base + "_sum").c_str(), pool, number(h.sum_seconds));
            sample(o, (base + "_count").c_str(), pool, number(h.count));
          }};
}

template <typename Get>
family gauge(const char* name, const char* help, Get get) {
  return simple("gauge", name, help, get);
}
template <typename Get>
family counter(const char* name, const char* help, Get get) {
  return simple("counter", name, help, get);
}

const std::vector<family>& families() {
  static const std::vector<family> all = {
      {"pqxxpool_connections", "gauge", "Physical connections by state (idle + in_use + connecting = total).",
       [](std::ostringstream& o, const pool_stats& s, const std::string& pool) {
         sample(o, "pqxxpool_connections", pool + ",state=\"idle\"", number(static_cast<std::uint64_t>(s.idle)));
         sample(o, "pqxxpool_connections", pool + ",state=\"in_use\"", number(static_cast<std::uint64_t>(s.in_use)));
         sample(o, "pqxxpool_connections", pool + ",state=\"connecting\"",
                number(static_cast<std::uint64_t>(s.connecting)));
       }},
      gauge("pqxxpool_connections_max", "Configured max_size.", [](const pool_stats& s) { return s.max_size; }),
      gauge("pqxxpool_connections_min_idle", "Configured min_idle.", [](const pool_stats& s) { return s.min_idle; }),
      gauge("pqxxpool_waiting_threads", "Threads blocked in acquire().", [](const pool_stats& s) { return s.waiting; }),
      gauge("pqxxpool_pool_closed", "1 once close() was called.", [](const pool_stats& s) { return s.closed ? 1 : 0; }),
      counter("pqxxpool_acquires_total", "Leases handed out.", [](const pool_stats& s) { return s.acquires; }),
      counter("pqxxpool_pool_exhausted_total", "Acquires that found all max_size connections in use.",
              [](const pool_stats& s) { return s.pool_exhausted_count; }),
      counter("pqxxpool_acquire_timeouts_total", "Acquires that gave up at their deadline.",
              [](const pool_stats& s) { return s.acquire_timeouts; }),
      counter("pqxxpool_waited_acquires_total", "Acquires that queued as waiters.",
              [](const pool_stats& s) { return s.waited_acquires; }),
      counter("pqxxpool_waited_for_connect_total", "Waiters served by a freshly opened connection.",
              [](const pool_stats& s) { return s.waited_for_connect; }),
      counter("pqxxpool_rejected_waiters_total", "Acquires refused because max_waiting threads waited.",
              [](const pool_stats& s) { return s.rejected_waiters; }),
      counter("pqxxpool_connections_created_total", "Physical connections opened.",
              [](const pool_stats& s) { return s.connections_created; }),
      counter("pqxxpool_connect_errors_total", "Failed connects (including failing hooks).",
              [](const pool_stats& s) { return s.connect_errors; }),
      {"pqxxpool_connections_closed_total", "counter", "Connections closed by the pool, by reason.",
       [](std::ostringstream& o, const pool_stats& s, const std::string& pool) {
         const std::pair<const char*, std::uint64_t> reasons[] = {
             {"max_lifetime", s.closed_max_lifetime}, {"idle", s.closed_idle},
             {"broken", s.closed_broken},             {"validation_failed", s.closed_validation_failed},
             {"discarded", s.closed_discarded},       {"evicted", s.evicted}};
         for (const auto& [reason, n] : reasons)
           sample(o, "pqxxpool_connections_closed_total", pool + ",reason=\"" + reason + "\"", number(n));
       }},
      counter("pqxxpool_rollbacks_total", "Connections returned inside a transaction (rolled back by the pool).",
              [](const pool_stats& s) { return s.rollbacks; }),
      counter("pqxxpool_leaks_suspected_total", "Leases held past leak_detection_threshold.",
              [](const pool_stats& s) { return s.leaks_suspected; }),
      histogram_family("pqxxpool_acquire_seconds", "Time acquire() waited for a connection.",
                       &pool_stats::acquire_wait),
      histogram_family("pqxxpool_usage_seconds", "How long leases were held, from hand-out to return.",
                       &pool_stats::usage),
      histogram_family("pqxxpool_connect_seconds", "How long successful physical connects took.",
                       &pool_stats::connect_time),
  };
  return all;
}

}  // namespace

std::string to_prometheus(const std::vector<pool_stats>& pools) {
  std::set<std::string> names;
  for (const pool_stats& s : pools)
    if (!names.insert(s.name).second)
      throw config_error("name", "two pools are named \"" + s.name + "\": give each pool a distinct pool_config::name");
  std::ostringstream o;
  for (const family& f : families()) {
    o << "# HELP " << f.name << ' ' << f.help << '\n' << "# TYPE " << f.name << ' ' << f.type << '\n';
    for (const pool_stats& s : pools) f.samples(o, s, "pool=\"" + escape_label(s.name) + "\"");
  }
  return o.str();
}

std::string to_prometheus(const pool_stats& stats) { return to_prometheus(std::vector<pool_stats>{stats}); }

namespace {
nlohmann::json histogram_json(const histogram& h) {
  using nlohmann::json;
  json buckets = json::array();
  for (std::size_t i = 0; i <= histogram::bucket_count; ++i) {
    const double le = histogram::upper_bound_seconds(i);
    buckets.push_back({{"le", std::isinf(le) ? json("+Inf") : json(le)}, {"count", h.buckets[i]}});
  }
  return {{"count", h.count}, {"sum_seconds", h.sum_seconds}, {"p50_seconds", h.p50()},
          {"p99_seconds", h.p99()}, {"max_seconds", h.max_seconds}, {"buckets", buckets}};
}
}  // namespace

std::string to_json(const pool_stats& s) {
  using nlohmann::json;
  json j = {
      {"name", s.name},
      {"gauges",
       {{"total", s.total}, {"idle", s.idle}, {"in_use", s.in_use}, {"connecting", s.connecting},
        {"waiting", s.waiting}, {"max_size", s.max_size}, {"min_idle", s.min_idle}, {"generation", s.generation},
        {"closed", s.closed}}},
      {"counters",
       {{"acquires", s.acquires}, {"pool_exhausted_count", s.pool_exhausted_count},
        {"acquire_timeouts", s.acquire_timeouts}, {"waited_acquires", s.waited_acquires},
        {"waited_for_connect", s.waited_for_connect}, {"rejected_waiters", s.rejected_waiters},
        {"connections_created", s.connections_created}, {"connect_errors", s.connect_errors},
        {"closed_max_lifetime", s.closed_max_lifetime}, {"closed_idle", s.closed_idle},
        {"closed_broken", s.closed_broken}, {"closed_validation_failed", s.closed_validation_failed},
        {"closed_discarded", s.closed_discarded}, {"evicted", s.evicted}, {"rollbacks", s.rollbacks},
        {"leaks_suspected", s.leaks_suspected}}},
      {"acquire_wait", histogram_json(s.acquire_wait)},
      {"usage", histogram_json(s.usage)},
      {"connect_time", histogram_json(s.connect_time)},
  };
  if (s.last_error.empty()) {
    j["last_error"] = nullptr;
  } else {
    const auto unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(s.last_error.time.time_since_epoch());
    j["last_error"] = {{"message", s.last_error.message}, {"sqlstate", s.last_error.sqlstate},
                       {"time_unix_ms", unix_ms.count()}};
  }
  // Text from a server or libpq may hold bytes of another encoding; JSON must be UTF-8, and
  // nlohmann's default would throw on them: they become U+FFFD instead.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace pqxxpool
