// `pqxxpool check`: the connectivity test of a tunnel program. Connects once to the target that
// DATABASE_URL or libpq's PG* variables name (see check_target.hpp; --conninfo overrides both),
// then prints the database, user, host and the address connected to (a tunnel's), port, TLS with
// protocol and cipher, and the server's version, recovery state and clock. A failure prints
// libpq's error and a hint for the common mistakes (pqxxpool::connect_hint).
//
// How it connects: pqxxpool::check_connection, i.e. one physical connect through the pool's own
// connector (the same libpq parameters, async connect against a deadline, verbose errors with
// SQLSTATE and password scrubbing as every pool connection), then the checks of
// pqxxpool::health_check. Not a pool of one: a pool retries a failed connect with backoff until
// the acquire deadline and reports only its last error, so a refused connection would take the
// whole --timeout to show; here one attempt answers at once.
//
// Never prints the connection string, a password or a token: only what libpq reports about the
// open connection, and libpq's (scrubbed) error text.
//
// Exit codes: 0 connected and every check passed, 1 the connect or a check failed, 2 bad command
// line or an unusable connection string.

#include <chrono>
#include <cstdio>
#include <ctime>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "check_target.hpp"
#include "commands.hpp"
#include "duration.hpp"
#include "pqxxpool/errors.hpp"
#include "pqxxpool/health.hpp"

namespace pqxxpool_cli {

namespace {

struct check_options {
  std::string conninfo;
  CLI::Option* conninfo_option = nullptr;  // to tell an empty --conninfo from none
  std::chrono::milliseconds timeout{10'000};
  bool json = false;
};

double to_ms(std::chrono::nanoseconds d) { return std::chrono::duration<double, std::milli>(d).count(); }

/// UTC, ISO 8601 with microseconds: 2025-01-31T12:34:56.123456Z.
std::string iso_utc(std::chrono::system_clock::time_point t) {
  const auto micros = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  long long seconds = micros / 1'000'000;
  long long fraction = micros % 1'000'000;
  if (fraction < 0) {
    fraction += 1'000'000;
    seconds -= 1;
  }
  const auto tt = static_cast<std::time_t>(seconds);
  std::tm tm{};
  if (gmtime_r(&tt, &tm) == nullptr) return "?";
  char date[32];
  if (std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm) == 0) return "?";
  char out[48];
  std::snprintf(out, sizeof out, "%s.%06lldZ", date, fraction);
  return out;
}

/// libpq messages may span lines (continuations start with a tab): indent them by two spaces.
std::string indent(std::string_view text) {
  std::string out;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    while (!line.empty() && (line.front() == '\t' || line.front() == ' ')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (!line.empty()) out.append(out.empty() ? "" : "\n  ").append(line);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
  }
  return out;
}

bool had_connection(const pqxxpool::health_report& r) {
  return r.server_version_num != 0 || !r.endpoint.port.empty() || !r.endpoint.host.empty();
}

std::string hint_of(const pqxxpool::health_report& r) {
  return r.ok || r.failed_check == "config" ? std::string{} : pqxxpool::connect_hint(r.error);
}

void print_text(const pqxxpool::health_report& r, const check_target& target) {
  std::printf("target:       %s%s\n", target.source.c_str(),
              target.host_from_hostname ? " (host from HOSTNAME: PGHOSTADDR set, PGHOST unset)" : "");
  if (had_connection(r)) {
    const pqxxpool::endpoint_facts& e = r.endpoint;
    std::printf("database:     %s\n", e.dbname.c_str());
    std::printf("user:         %s\n", e.user.c_str());
    std::printf("host:         %s\n", e.host.c_str());
    if (!e.hostaddr.empty() && e.hostaddr != e.host) std::printf("address:      %s\n", e.hostaddr.c_str());
    std::printf("port:         %s\n", e.port.c_str());
    if (r.tls.in_use) {
      std::printf("ssl:          on (%s, %s)\n", r.tls.protocol.c_str(), r.tls.cipher.c_str());
    } else {
      std::printf("ssl:          off\n");
    }
    if (!r.server_version.empty()) {
      std::printf("server:       %s (%d)\n", r.server_version.c_str(), r.server_version_num);
    } else {
      std::printf("server:       %d\n", r.server_version_num);
    }
    if (r.in_recovery) {
      std::printf("in recovery:  %s\n", *r.in_recovery ? "yes (a standby)" : "no (a primary)");
    } else if (r.ok) {
      std::printf("in recovery:  unknown (the server has no pg_is_in_recovery())\n");
    }
    if (r.server_time) std::printf("server time:  %s\n", iso_utc(*r.server_time).c_str());
    std::printf("latency:      connect %.1f ms, total %.1f ms\n", to_ms(r.acquire_latency), to_ms(r.latency));
  }
  std::fflush(stdout);
  if (r.ok) {
    std::printf("ok\n");
    std::fflush(stdout);
    return;
  }
  // e.g. "error (connect, SQLSTATE 28P01): connection to server at ... failed: FATAL:  28P01: ..."
  std::fprintf(stderr, "error (%s%s%s): %s\n", r.failed_check.c_str(), r.sqlstate.empty() ? "" : ", SQLSTATE ",
               r.sqlstate.c_str(), indent(r.error).c_str());
  const std::string hint = hint_of(r);
  if (!hint.empty()) std::fprintf(stderr, "hint: %s\n", hint.c_str());
}

void print_json(const pqxxpool::health_report& r, const check_target& target) {
  nlohmann::ordered_json j;
  j["ok"] = r.ok;
  j["target"] = target.source;
  j["host_from_hostname"] = target.host_from_hostname;
  if (!r.ok) {
    j["failed_check"] = r.failed_check;
    j["error"] = r.error;
    j["sqlstate"] = r.sqlstate;
    j["hint"] = hint_of(r);
  }
  if (had_connection(r)) {
    j["database"] = r.endpoint.dbname;
    j["user"] = r.endpoint.user;
    j["host"] = r.endpoint.host;
    j["hostaddr"] = r.endpoint.hostaddr;
    j["port"] = r.endpoint.port;
    j["ssl"] = {{"in_use", r.tls.in_use}, {"protocol", r.tls.protocol}, {"cipher", r.tls.cipher}};
    j["server_version"] = r.server_version;
    j["server_version_num"] = r.server_version_num;
    j["in_recovery"] = r.in_recovery ? nlohmann::ordered_json(*r.in_recovery) : nlohmann::ordered_json(nullptr);
    j["server_time"] =
        r.server_time ? nlohmann::ordered_json(iso_utc(*r.server_time)) : nlohmann::ordered_json(nullptr);
  }
  j["connect_ms"] = to_ms(r.acquire_latency);
  j["total_ms"] = to_ms(r.latency);
  // Replace, not throw, on invalid UTF-8 (a server message in another encoding).
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  std::fflush(stdout);
}

int run_check(const check_options& opt) {
  const std::optional<std::string> conninfo =
      opt.conninfo_option->count() > 0 ? std::optional<std::string>{opt.conninfo} : std::nullopt;
  const check_target target = resolve_check_target(conninfo);

  pqxxpool::pool_config cfg;
  cfg.conninfo = target.conninfo;
  cfg.params = target.params;
  const pqxxpool::health_report report = pqxxpool::check_connection(cfg, opt.timeout);

  if (opt.json) {
    print_json(report, target);
  } else {
    print_text(report, target);
  }
  if (report.ok) return exit_ok;
  return report.failed_check == "config" ? exit_usage : exit_failure;
}

}  // namespace

command add_check_command(CLI::App& app) {
  auto opt = std::make_shared<check_options>();
  CLI::App* sub = app.add_subcommand(
      "check",
      "Connect once and print database, user, host and address, port, TLS and server version (a tunnel's "
      "connectivity test); a failure prints libpq's error and a hint");
  sub->footer(
      "Target: --conninfo, else DATABASE_URL, else libpq's PG* variables (PGHOST, PGHOSTADDR, PGPORT, PGDATABASE, "
      "PGUSER, PGPASSWORD, PGSSLMODE, ...). HOSTNAME is the host only when PGHOSTADDR is set and PGHOST is not.\n"
      "Exit codes: 0 ok, 1 the connection or a check failed, 2 bad command line or connection string.");
  opt->conninfo_option = sub->add_option(
      "--conninfo", opt->conninfo,
      "libpq connection string (key=value or postgresql:// URI); replaces DATABASE_URL and the HOSTNAME rule");
  add_duration_option(*sub, "--timeout", opt->timeout, "Bound on the connect and the checks together",
                      /*allow_zero=*/false);
  sub->add_flag("--json", opt->json, "Print one JSON object instead of text (on stdout, also on failure)");

  return command{sub, [opt] { return run_check(*opt); }};
}

}  // namespace pqxxpool_cli
