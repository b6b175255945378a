// The credential sources that reach outside the process: STS AssumeRoleWithWebIdentity,
// credential_process, the ECS/EKS container endpoint, EC2 instance metadata; and their parsers.
//
// Not one message here may quote a file's contents, an environment variable's value, a response
// body or a process's output (see credential_sources.hpp). The one exception is the Code and
// Message of an STS error response, which STS writes for the caller and which carry no secret.

#include "aws/credential_sources.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "aws/ascii.hpp"
#include "aws/http.hpp"
#include "pqxxpool/aws/sigv4.hpp"
#include "pqxxpool/errors.hpp"

extern char** environ;  // NOLINT: POSIX

namespace pqxxpool::aws::detail {
namespace {

using std::chrono::milliseconds;
using std::chrono::system_clock;

constexpr std::size_t max_output = std::size_t{1024} * 1024;

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const std::size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

/// The whole of a small file, or nullopt with errno set.
std::optional<std::string> read_small_file(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return std::nullopt;
  std::string content;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0 && content.size() <= max_output) content.append(buf, n);
  const bool failed = std::ferror(f) != 0;
  const int err = errno;
  std::fclose(f);
  if (failed) {
    errno = err;
    return std::nullopt;
  }
  if (content.size() > max_output) {
    errno = EFBIG;
    return std::nullopt;
  }
  return content;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
long long days_from_civil(long long y, unsigned m, unsigned d) {
  y -= m <= 2 ? 1 : 0;
  const long long era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<long long>(doe) - 719468;
}

unsigned days_in_month(int y, int m) {
  static const unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : days[m - 1];
}

/// Decodes XML character data: CDATA sections verbatim, predefined and numeric entities.
std::string xml_text(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size();) {
    if (s.compare(i, 9, "<![CDATA[") == 0) {
      const std::size_t end = s.find("]]>", i + 9);
      const std::size_t stop = end == std::string_view::npos ? s.size() : end;
      out.append(s.substr(i + 9, stop - i - 9));
      i = end == std::string_view::npos ? s.size() : end + 3;
      continue;
    }
    if (s[i] != '&') {
      out += s[i++];
      continue;
    }
    const std::size_t semi = s.find(';', i);
    if (semi == std::string_view::npos || semi - i > 10) {
      out += s[i++];
      continue;
    }
    const std::string_view name = s.substr(i + 1, semi - i - 1);
    unsigned long cp = 0;
    bool numeric = false;
    if (name == "amp") {
      out += '&';
    } else if (name == "lt") {
      out += '<';
    } else if (name == "gt") {
      out += '>';
    } else if (name == "quot") {
      out += '"';
    } else if (name == "apos") {
      out += '\'';
    } else if (name.size() > 1 && name[0] == '#') {
      const std::string digits(name.substr(name[1] == 'x' || name[1] == 'X' ? 2 : 1));
      char* end = nullptr;
      cp = std::strtoul(digits.c_str(), &end, name[1] == 'x' || name[1] == 'X' ? 16 : 10);
      numeric = !digits.empty() && *end == '\0' && cp > 0 && cp <= 0x10FFFF;
      if (!numeric) {
        out += s[i++];
        continue;
      }
    } else {
      out += s[i++];
      continue;
    }
    if (numeric) {  // UTF-8
      if (cp < 0x80) {
        out += static_cast<char>(cp);
      } else if (cp < 0x800) {
        out += static_cast<char>(0xC0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else if (cp < 0x10000) {
        out += static_cast<char>(0xE0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      } else {
        out += static_cast<char>(0xF0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (cp & 0x3F));
      }
    }
    i = semi + 1;
  }
  return out;
}

/// An element name without its namespace prefix.
std::string_view local_name(std::string_view name) {
  const std::size_t colon = name.rfind(':');
  return colon == std::string_view::npos ? name : name.substr(colon + 1);
}

/// An HTTP failure as a short reason for messages.
std::string describe(const http_error& e) { return e.what(); }

/// http(s)://HOST[:PORT]/… → (scheme lowercased, host without brackets); nullopt if not http(s).
std::optional<std::pair<std::string, std::string>> scheme_and_host(const std::string& url) {
  const std::size_t sep = url.find("://");
  if (sep == std::string::npos) return std::nullopt;
  const std::string scheme = ascii_lowercase(url.substr(0, sep));
  if (scheme != "http" && scheme != "https") return std::nullopt;
  std::string_view authority(url);
  authority.remove_prefix(sep + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (const std::size_t at = authority.rfind('@'); at != std::string_view::npos) authority.remove_prefix(at + 1);
  std::string_view host;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
  } else {
    host = authority.substr(0, authority.find(':'));
  }
  if (host.empty()) return std::nullopt;
  return std::make_pair(scheme, ascii_lowercase(host));
}

bool is_loopback_ipv4(const std::string& host) {
  // 127.0.0.0/8 in dotted-quad form.
  if (host.compare(0, 4, "127.") != 0) return false;
  int parts = 0;
  std::size_t i = 0;
  while (i <= host.size()) {
    const std::size_t dot = std::min(host.find('.', i), host.size());
    const std::string_view part = std::string_view(host).substr(i, dot - i);
    if (part.empty() || part.size() > 3 || !std::all_of(part.begin(), part.end(), is_digit) ||
        std::stoi(std::string(part)) > 255)
      return false;
    ++parts;
    i = dot + 1;
  }
  return parts == 4;
}

}  // namespace

// --- parsers -------------------------------------------------------------------------------------

std::optional<system_clock::time_point> parse_iso8601(std::string_view text) noexcept {
  const std::string_view t = trim(text);
  std::size_t i = 0;
  auto number = [&](std::size_t n, int& out) {
    if (i + n > t.size()) return false;
    int v = 0;
    for (std::size_t k = 0; k < n; ++k) {
      if (!is_digit(t[i + k])) return false;
      v = v * 10 + (t[i + k] - '0');
    }
    i += n;
    out = v;
    return true;
  };
  auto skip = [&](char c) {
    if (i >= t.size() || t[i] != c) return false;
    ++i;
    return true;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0;
  if (!number(4, y) || !skip('-') || !number(2, mo) || !skip('-') || !number(2, d)) return std::nullopt;
  if (i >= t.size() || (t[i] != 'T' && t[i] != 't' && t[i] != ' ')) return std::nullopt;
  ++i;
  if (!number(2, h) || !skip(':') || !number(2, mi) || !skip(':') || !number(2, s)) return std::nullopt;
  long long micros = 0;
  if (i < t.size() && (t[i] == '.' || t[i] == ',')) {
    ++i;
    int n = 0;
    for (; i < t.size() && is_digit(t[i]); ++i, ++n)
      if (n < 6) micros = micros * 10 + (t[i] - '0');
    if (n == 0) return std::nullopt;
    for (; n < 6; ++n) micros *= 10;
  }
  int offset_minutes = 0;
  if (i < t.size()) {
    const char z = t[i++];
    if (z == '+' || z == '-') {
      int oh = 0, om = 0;
      if (!number(2, oh)) return std::nullopt;
      if (skip(':')) {
        if (!number(2, om)) return std::nullopt;
      } else if (i < t.size() && !number(2, om)) {
        return std::nullopt;
      }
      if (oh > 23 || om > 59) return std::nullopt;
      offset_minutes = (z == '+' ? 1 : -1) * (oh * 60 + om);
    } else if (z != 'Z' && z != 'z') {
      return std::nullopt;
    }
  }
  if (i != t.size()) return std::nullopt;
  if (mo < 1 || mo > 12 || d < 1 || static_cast<unsigned>(d) > days_in_month(y, mo) || h > 23 || mi > 59 || s > 60)
    return std::nullopt;
  const long long seconds = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
                            h * 3600LL + mi * 60LL + s - offset_minutes * 60LL;
  using std::chrono::duration_cast;
  const long long limit = duration_cast<std::chrono::seconds>(system_clock::duration::max()).count() - 1;
  if (seconds >= limit) return system_clock::time_point::max();  // "never", as far as we can tell
  if (seconds <= -limit) return std::nullopt;
  return system_clock::time_point(
      duration_cast<system_clock::duration>(std::chrono::seconds(seconds) + std::chrono::microseconds(micros)));
}

std::optional<std::string> xml_element(std::string_view xml, std::string_view tag) {
  std::size_t pos = 0;
  while ((pos = xml.find('<', pos)) != std::string_view::npos) {
    const std::size_t name_start = pos + 1;
    const std::size_t name_end = xml.find_first_of(" \t\r\n/>", name_start);
    const std::size_t gt = xml.find('>', name_start);
    if (name_end == std::string_view::npos || gt == std::string_view::npos) return std::nullopt;
    const std::string_view name = xml.substr(name_start, name_end - name_start);
    if (!name.empty() && name.front() != '/' && name.front() != '?' && name.front() != '!' && local_name(name) == tag) {
      if (xml[gt - 1] == '/') return std::string();  // <Tag/>
      for (std::size_t search = gt + 1;;) {
        const std::size_t close = xml.find("</", search);
        if (close == std::string_view::npos) return std::nullopt;
        const std::size_t close_gt = xml.find('>', close);
        if (close_gt == std::string_view::npos) return std::nullopt;
        if (local_name(trim(xml.substr(close + 2, close_gt - close - 2))) == tag)
          return std::string(trim(xml_text(xml.substr(gt + 1, close - gt - 1))));
        search = close_gt + 1;
      }
    }
    pos = gt + 1;
  }
  return std::nullopt;
}

namespace {

/// credentials_from_json's work: on failure nullopt, with why saying what is wrong (never a value).
std::optional<credentials> parse_json_credentials(std::string_view json, const char* token_key, bool version_1,
                                                  std::string& why) {
  // No exceptions from the parser: its messages quote the input.
  const nlohmann::json doc = nlohmann::json::parse(json.begin(), json.end(), nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    why = "the output is not a JSON object";
    return std::nullopt;
  }
  if (version_1) {
    const auto v = doc.find("Version");
    if (v == doc.end() || !v->is_number_integer() || v->get<long long>() != 1) {
      why = "\"Version\" must be 1";
      return std::nullopt;
    }
  }
  auto text = [&](const char* key, bool required, std::string& out) {
    const auto it = doc.find(key);
    if (it == doc.end() || it->is_null()) {
      if (required) why = std::string("\"") + key + "\" is missing";
      return !required;
    }
    if (!it->is_string()) {
      why = std::string("\"") + key + "\" is not a string";
      return false;
    }
    out = it->get<std::string>();
    if (required && out.empty()) {
      why = std::string("\"") + key + "\" is empty";
      return false;
    }
    return true;
  };
  credentials c;
  std::string expiration;
  if (!text("AccessKeyId", true, c.access_key_id) || !text("SecretAccessKey", true, c.secret_access_key) ||
      !text(token_key, false, c.session_token) || !text("Expiration", false, expiration))
    return std::nullopt;
  if (!expiration.empty()) {
    c.expiration = parse_iso8601(expiration);
    if (!c.expiration) {
      why = "\"Expiration\" is not an ISO 8601 time";
      return std::nullopt;
    }
  }
  return c;
}

}  // namespace

void refuse_expired(const credentials& c, const std::string& source) {
  if (c.expiration && *c.expiration <= system_clock::now())
    throw token_error(source, "gave temporary credentials that expired at " + amz_date(*c.expiration));
}

credentials credentials_from_json(std::string_view json, const char* token_key, bool version_1,
                                  const std::string& source) {
  std::string why;
  std::optional<credentials> c = parse_json_credentials(json, token_key, version_1, why);
  if (!c) throw token_error(source, why);
  refuse_expired(*c, source);
  return std::move(*c);
}

// --- web identity --------------------------------------------------------------------------------

std::string sts_endpoint(const std::string& region) {
  if (!env_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"))
    for (const char* variable : {"AWS_ENDPOINT_URL_STS", "AWS_ENDPOINT_URL"})
      if (std::string url = env(variable); !url.empty()) return url;
  if (region.empty()) return "https://sts.amazonaws.com";
  if (!std::all_of(region.begin(), region.end(),
                   [](char c) { return (c >= 'a' && c <= 'z') || is_digit(c) || c == '-'; }))
    throw token_error("web identity", "the region is not a region name (letters, digits and '-')");
  return "https://sts." + region + (region.compare(0, 3, "cn-") == 0 ? ".amazonaws.com.cn" : ".amazonaws.com");
}

credentials web_identity_credentials(const web_identity_settings& settings) {
  const std::string source = "web identity";
  const std::optional<std::string> file = read_small_file(settings.token_file);
  if (!file)
    throw token_error(source, "cannot read the token file " + settings.token_file + " (from " + settings.configured_by +
                                  "): " + std::strerror(errno));
  const std::string_view token = trim(*file);
  if (token.empty()) throw token_error(source, "the token file " + settings.token_file + " is empty");

  std::string session = settings.session_name;
  if (session.empty())
    session = "pqxxpool-session-" +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::seconds>(system_clock::now().time_since_epoch()).count());
  const std::string url = sts_endpoint(settings.region);
  http_request request;
  request.method = "POST";
  request.url = url;
  request.headers = {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}, {"Accept", "text/xml"}};
  request.body = "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleArn=" + percent_encode(settings.role_arn) +
                 "&RoleSessionName=" + percent_encode(session) + "&WebIdentityToken=" + percent_encode(token);
  request.connect_timeout = std::chrono::seconds(5);
  request.timeout = std::chrono::seconds(15);

  const std::string where = "STS (" + url_for_messages(url) + ") AssumeRoleWithWebIdentity for " + settings.role_arn;
  http_response response;
  try {
    response = http_send(request);
  } catch (const http_error& e) {
    throw token_error(source, where + ": " + describe(e));
  }
  if (response.status != 200) {
    std::string why = "HTTP " + std::to_string(response.status);
    if (const auto code = xml_element(response.body, "Code")) why += " " + *code;
    if (auto message = xml_element(response.body, "Message")) {
      if (message->size() > 300) message->resize(300);
      why += ": " + *message;
    }
    throw token_error(source, where + ": " + why);
  }
  auto field = [&](const char* tag) {
    std::optional<std::string> v = xml_element(response.body, tag);
    if (!v || v->empty()) throw token_error(source, where + ": the response has no " + tag);
    return std::move(*v);
  };
  credentials c;
  c.access_key_id = field("AccessKeyId");
  c.secret_access_key = field("SecretAccessKey");
  c.session_token = field("SessionToken");
  c.expiration = parse_iso8601(field("Expiration"));
  if (!c.expiration) throw token_error(source, where + ": the response's Expiration is not an ISO 8601 time");
  refuse_expired(c, source);
  return c;
}

// --- credential_process --------------------------------------------------------------------------

credentials process_credentials(const std::string& command, const std::string& source, milliseconds timeout) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw token_error(source, std::string("cannot make a pipe: ") + std::strerror(errno));
  struct fd_closer {
    int& fd;
    ~fd_closer() {
      if (fd >= 0) ::close(fd);
    }
  } close_read{fds[0]}, close_write{fds[1]};

  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  ::posix_spawn_file_actions_init(&actions);
  ::posix_spawnattr_init(&attr);
  ::posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  ::posix_spawn_file_actions_adddup2(&actions, fds[1], 1);  // stderr stays the caller's
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  ::posix_spawnattr_setsigmask(&attr, &none);
  ::posix_spawnattr_setsigdefault(&attr, &defaults);
  ::posix_spawnattr_setpgroup(&attr, 0);  // its own process group, so a timeout kills the whole command
  ::posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::string sh = "sh", dash_c = "-c", cmd = command;
  char* argv[] = {sh.data(), dash_c.data(), cmd.data(), nullptr};
  pid_t pid = -1;
  const int spawned = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, environ);
  ::posix_spawn_file_actions_destroy(&actions);
  ::posix_spawnattr_destroy(&attr);
  if (spawned != 0) throw token_error(source, std::string("cannot run /bin/sh: ") + std::strerror(spawned));
  ::close(fds[1]);
  fds[1] = -1;

  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto remaining_ms = [&] {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    return static_cast<int>(std::clamp<long long>(left, 0, 1000LL * 1000));
  };
  auto kill_and_fail = [&](const std::string& why) {
    ::kill(-pid, SIGKILL);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return token_error(source, why);
  };
  const std::string seconds = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(timeout).count());

  std::string output;
  for (;;) {
    pollfd p{fds[0], POLLIN, 0};
    const int ready = ::poll(&p, 1, remaining_ms());
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) throw kill_and_fail(std::string("poll failed: ") + std::strerror(errno));
    if (ready == 0) throw kill_and_fail("the command did not finish within " + seconds + " s");
    char buf[4096];
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw kill_and_fail(std::string("cannot read its output: ") + std::strerror(errno));
    if (n == 0) break;
    output.append(buf, static_cast<std::size_t>(n));
    if (output.size() > max_output) throw kill_and_fail("the command printed more than 1 MiB");
  }

  int status = 0;
  for (;;) {
    const pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 && errno == ECHILD) {  // SIGCHLD ignored by the application: the status is gone
      status = 0;
      break;
    }
    if (r < 0) throw token_error(source, std::string("waitpid failed: ") + std::strerror(errno));
    // stdout closed but the shell still runs: wait for it, up to the deadline.
    if (remaining_ms() == 0) throw kill_and_fail("the command did not exit within " + seconds + " s");
    ::poll(nullptr, 0, 10);
  }
  if (WIFSIGNALED(status))
    throw token_error(source, "the command was killed by signal " + std::to_string(WTERMSIG(status)));
  if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
    throw token_error(source, "the command exited with status " + std::to_string(WEXITSTATUS(status)));
  return credentials_from_json(output, "SessionToken", true, source);
}

// --- container endpoint --------------------------------------------------------------------------

std::optional<credentials> container_credentials(std::vector<std::string>& tried) {
  const std::string source = "container";
  const std::string relative = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
  const std::string full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
  if (relative.empty() && full.empty()) {
    tried.push_back(source +
                    ": AWS_CONTAINER_CREDENTIALS_RELATIVE_URI and AWS_CONTAINER_CREDENTIALS_FULL_URI are not set");
    return std::nullopt;
  }
  std::string url;
  if (!relative.empty()) {
    url = "http://169.254.170.2" + (relative.front() == '/' ? relative : "/" + relative);
  } else {
    url = full;
    const auto sh = scheme_and_host(full);
    if (!sh) throw token_error(source, "AWS_CONTAINER_CREDENTIALS_FULL_URI is not an http:// or https:// URL");
    const auto& [scheme, host] = *sh;
    const bool allowed = scheme == "https" || is_loopback_ipv4(host) || host == "localhost" || host == "::1" ||
                         host == "169.254.170.2" || host == "169.254.170.23" || host == "fd00:ec2::23";
    if (!allowed)
      throw token_error(source,
                        "AWS_CONTAINER_CREDENTIALS_FULL_URI must use https, or http to a loopback address "
                        "or the ECS/EKS agent (169.254.170.2, 169.254.170.23, fd00:ec2::23); its host is " +
                            host);
  }

  http_request request;
  request.url = url;
  request.use_proxy = false;
  request.connect_timeout = std::chrono::seconds(2);
  request.timeout = std::chrono::seconds(5);
  std::string authorization;
  if (const std::string file = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"); !file.empty()) {
    const std::optional<std::string> content = read_small_file(file);
    if (!content)
      throw token_error(source,
                        "cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE " + file + ": " + std::strerror(errno));
    authorization = std::string(trim(*content));
  } else {
    authorization = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
  }
  if (authorization.find_first_of("\r\n") != std::string::npos)
    throw token_error(source, "the authorization token contains a line break");
  if (!authorization.empty()) request.headers.emplace_back("Authorization", authorization);

  const std::string where = "GET " + url_for_messages(url);
  http_response response;
  try {
    response = http_send(request);
  } catch (const http_error& e) {
    throw token_error(source, where + ": " + describe(e));
  }
  if (response.status != 200) throw token_error(source, where + ": HTTP " + std::to_string(response.status));
  return credentials_from_json(response.body, "Token", false, source + " (" + url_for_messages(url) + ")");
}

// --- instance metadata ---------------------------------------------------------------------------

std::optional<credentials> instance_metadata_credentials(std::vector<std::string>& tried) {
  const std::string source = "instance metadata";
  if (env_true("AWS_EC2_METADATA_DISABLED")) {
    tried.push_back(source + ": AWS_EC2_METADATA_DISABLED is true");
    return std::nullopt;
  }
  std::string endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
  if (endpoint.empty()) {
    // botocore refuses any other value rather than guessing which address was meant.
    const std::string mode = ascii_lowercase(env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE"));
    if (!mode.empty() && mode != "ipv4" && mode != "ipv6") {
      tried.push_back(source + ": AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE must be IPv4 or IPv6, got \"" +
                      env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") + "\"");
      return std::nullopt;
    }
    endpoint = mode == "ipv6" ? "http://[fd00:ec2::254]" : "http://169.254.169.254";
  }
  while (!endpoint.empty() && endpoint.back() == '/') endpoint.pop_back();
  std::string prefix = source + " (" + url_for_messages(endpoint) + "): ";

  auto send = [&](const char* method, const std::string& path,
                  const std::string& token) -> std::optional<http_response> {
    http_request request;
    request.method = method;
    request.url = endpoint + path;
    request.use_proxy = false;
    request.connect_timeout = std::chrono::seconds(1);
    request.timeout = std::chrono::seconds(2);
    if (std::strcmp(method, "PUT") == 0) request.headers.emplace_back("X-aws-ec2-metadata-token-ttl-seconds", "21600");
    if (!token.empty()) request.headers.emplace_back("X-aws-ec2-metadata-token", token);
    try {
      return http_send(request);
    } catch (const http_error& e) {
      tried.push_back(prefix + method + " " + path + ": " + describe(e));
      return std::nullopt;
    }
  };
  auto fail = [&](const std::string& why) {
    tried.push_back(prefix + why);
    return std::nullopt;
  };

  std::string token;
  const std::optional<http_response> put = send("PUT", "/latest/api/token", "");
  if (!put) return std::nullopt;
  if (put->status == 200) {
    token = std::string(trim(put->body));
  } else if ((put->status == 403 || put->status == 404 || put->status == 405) &&
             !env_true("AWS_EC2_METADATA_V1_DISABLED")) {
    // IMDSv1 fallback, as the SDKs do unless it is disabled.
    prefix += "IMDSv1 (the token PUT got HTTP " + std::to_string(put->status) + "): ";
  } else {
    return fail("PUT /latest/api/token: HTTP " + std::to_string(put->status));
  }

  const std::string roles_path = "/latest/meta-data/iam/security-credentials/";
  const std::optional<http_response> roles = send("GET", roles_path, token);
  if (!roles) return std::nullopt;
  if (roles->status == 404) return fail("no IAM role is attached to the instance (HTTP 404)");
  if (roles->status != 200) return fail("GET " + roles_path + ": HTTP " + std::to_string(roles->status));
  const std::string role(trim(std::string_view(roles->body).substr(0, roles->body.find('\n'))));
  if (role.empty() || role.find_first_of("/?#% ") != std::string::npos)
    return fail("GET " + roles_path + ": no usable role name");

  const std::optional<http_response> creds = send("GET", roles_path + role, token);
  if (!creds) return std::nullopt;
  if (creds->status != 200) return fail("GET " + roles_path + role + ": HTTP " + std::to_string(creds->status));
  const nlohmann::json doc = nlohmann::json::parse(creds->body, nullptr, false);
  if (doc.is_object()) {
    const auto code = doc.find("Code");
    if (code != doc.end() && code->is_string() && code->get<std::string>() != "Success")
      return fail("role " + role + ": Code is not Success");
  }
  std::string why;
  std::optional<credentials> c = parse_json_credentials(creds->body, "Token", false, why);
  if (!c) return fail("role " + role + ": " + why);
  if (c->expiration && *c->expiration <= system_clock::now())
    return fail("role " + role + ": gave temporary credentials that expired at " + amz_date(*c->expiration));
  return c;
}

}  // namespace pqxxpool::aws::detail
