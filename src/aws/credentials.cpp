#include "pqxxpool/aws/credentials.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pwd.h>
#include <sys/types.h>
#include <unistd.h>

#include "aws/ascii.hpp"
#include "aws/credential_sources.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::aws {

namespace detail {

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

bool env_true(const char* name) { return ascii_lowercase(env(name)) == "true"; }

}  // namespace detail

namespace {

using detail::env;

// Not one of these messages may quote a file's contents or an environment variable's value: any
// of them may be a secret. Paths, profile names, key names and line numbers only.

constexpr const char* access_key_key = "aws_access_key_id";
constexpr const char* secret_key_key = "aws_secret_access_key";
constexpr const char* session_token_key = "aws_session_token";
constexpr const char* security_token_key = "aws_security_token";  // botocore's older name

std::string home_directory() {
  if (std::string h = env("HOME"); !h.empty()) return h;
  long size = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::string buf(size > 0 ? static_cast<std::size_t>(size) : 16384, '\0');
  passwd pw{};
  passwd* found = nullptr;
  if (getpwuid_r(getuid(), &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr && found->pw_dir != nullptr)
    return found->pw_dir;
  return "";
}

/// The file named by variable (a leading "~/" meaning $HOME), else ~/.aws/<default_name>.
std::string aws_file_path(const char* variable, const char* default_name) {
  std::string path = env(variable);
  if (path.empty()) return home_directory() + "/.aws/" + default_name;
  if (path == "~" || path.compare(0, 2, "~/") == 0) path = home_directory() + path.substr(1);
  return path;
}

std::string_view trim(std::string_view s) {
  const char* ws = " \t\r\n\f\v";
  const std::size_t b = s.find_first_not_of(ws);
  if (b == std::string_view::npos) return {};
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

// --- INI files, the dialect of Python's configparser.RawConfigParser that botocore reads ---------

using ini_section = std::map<std::string, std::string>;

struct ini_file {
  std::string path;
  bool exists = false;
  std::map<std::string, ini_section> sections;  // section names are case-sensitive
  ini_section defaults;                         // configparser's [DEFAULT]: a fallback for every section

  /// The section called name with [DEFAULT]'s keys filled in, or nullopt.
  [[nodiscard]] std::optional<ini_section> section(const std::string& name) const {
    const auto it = sections.find(name);
    if (it == sections.end()) return std::nullopt;
    ini_section s = it->second;
    s.insert(defaults.begin(), defaults.end());  // insert() keeps the section's own values
    return s;
  }
};

/// Reads path; a missing file is an empty one. Throws token_error(source, …) naming the path and,
/// for a syntax error, the line (never its text).
ini_file read_ini(const std::string& path, const std::string& source) {
  ini_file file;
  file.path = path;

  std::string content;
  {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
      const int err = errno;
      if (err == ENOENT || err == ENOTDIR) return file;
      throw token_error(source, "cannot read " + path + ": " + std::strerror(err));
    }
    char buf[4096];
    std::size_t n = 0;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) content.append(buf, n);
    const bool failed = std::ferror(f) != 0;
    const int err = errno;
    std::fclose(f);
    if (failed) throw token_error(source, "cannot read " + path + ": " + std::strerror(err));
  }
  file.exists = true;

  auto fail = [&](std::size_t line, const std::string& why) {
    return token_error(source, path + " line " + std::to_string(line) + ": " + why);
  };

  std::set<std::pair<std::string, std::string>> seen;  // (section, "") and (section, key): no duplicates
  ini_section* current = nullptr;
  std::string current_name;
  std::string* value = nullptr;  // the value that more deeply indented lines continue
  std::size_t value_indent = 0;
  std::string_view rest = content;
  if (rest.substr(0, 3) == "\xEF\xBB\xBF") rest.remove_prefix(3);  // UTF-8 byte order mark
  for (std::size_t lineno = 1; !rest.empty(); ++lineno) {
    const std::size_t eol = rest.find('\n');
    const std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 1);

    const std::string_view text = trim(line);
    if (text.empty() || text.front() == '#' || text.front() == ';') continue;  // blank or comment
    const std::size_t indent = line.find_first_not_of(" \t\r\n\f\v");
    if (value != nullptr && indent > value_indent) {  // continuation of a multi-line value
      *value += '\n';
      *value += text;
      continue;
    }
    value = nullptr;
    if (const std::size_t close = text.rfind(']'); text.front() == '[' && close != std::string_view::npos) {
      if (close == 1) throw fail(lineno, "empty section name");
      const std::string name(text.substr(1, close - 1));
      if (name != "DEFAULT" && !seen.emplace(name, "").second)
        throw fail(lineno, "section [" + name + "] appears twice");
      current = name == "DEFAULT" ? &file.defaults : &file.sections[name];
      current_name = name;
      continue;
    }
    if (current == nullptr) throw fail(lineno, "a key before the first [section]");
    const std::size_t delim = text.find_first_of("=:");
    const std::string key = detail::ascii_lowercase(trim(text.substr(0, delim == std::string_view::npos ? 0 : delim)));
    if (delim == std::string_view::npos || key.empty())
      throw fail(lineno, "expected 'key = value', a [section] or a comment");
    if (!seen.emplace(current_name, key).second)
      throw fail(lineno, "key " + key + " appears twice in [" + current_name + "]");
    value = &((*current)[key] = std::string(trim(text.substr(delim + 1))));
    value_indent = indent;
  }
  return file;
}

/// The name a config-file section gives a profile: "profile NAME" → NAME, "default" → default;
/// nullopt for other sections. As botocore (shlex.split into exactly two words).
std::optional<std::string> config_profile_name(const std::string& section) {
  if (section == "default") return section;
  if (section.compare(0, 7, "profile") != 0) return std::nullopt;
  std::string_view rest(section);
  rest.remove_prefix(7);
  if (rest.empty() || (rest.front() != ' ' && rest.front() != '\t')) return std::nullopt;
  rest = trim(rest);
  if (rest.size() >= 2 && (rest.front() == '"' || rest.front() == '\'') && rest.back() == rest.front()) {
    rest = rest.substr(1, rest.size() - 2);
  } else if (rest.empty() || rest.find_first_of(" \t") != std::string_view::npos) {
    return std::nullopt;
  }
  return std::string(rest);
}

/// The profile called name in the config file, merged from all the sections that name it.
std::optional<ini_section> config_profile(const ini_file& config, const std::string& name) {
  std::optional<ini_section> result;
  for (const auto& [section, unused] : config.sections) {
    if (config_profile_name(section) != name) continue;
    std::optional<ini_section> s = config.section(section);
    if (!result) {
      result = std::move(s);
    } else {
      for (auto& [k, v] : *s) (*result)[k] = std::move(v);
    }
  }
  return result;
}

bool has(const ini_section& s, const char* key) { return s.find(key) != s.end(); }

/// Keys from one profile section. Throws token_error when one is missing or not one line.
credentials credentials_from(const ini_section& s, const std::string& path, const std::string& source) {
  auto value = [&](const char* key, bool required) -> std::string {
    const auto it = s.find(key);
    if (it == s.end() || it->second.empty()) {
      if (required) throw token_error(source, std::string(key) + " is missing or empty in " + path);
      return {};
    }
    if (it->second.find('\n') != std::string::npos)
      throw token_error(source, std::string(key) + " in " + path + " spans several lines");
    return it->second;
  };
  credentials c;
  c.access_key_id = value(access_key_key, true);
  c.secret_access_key = value(secret_key_key, true);
  c.session_token = value(session_token_key, false);
  if (c.session_token.empty()) c.session_token = value(security_token_key, false);
  return c;
}

std::string quoted_profile(const std::string& name) { return "profile '" + name + "'"; }

std::string resolve_profile_name(const std::string& given) {
  if (!given.empty()) return given;
  if (std::string p = env("AWS_DEFAULT_PROFILE"); !p.empty()) return p;
  if (std::string p = env("AWS_PROFILE"); !p.empty()) return p;
  return "default";
}

[[noreturn]] void unsupported(const std::string& source, const std::string& what) {
  throw token_error(source, "uses " + what +
                                ", which pqxxpool does not support yet; export "
                                "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN instead "
                                "(e.g. from `aws configure export-credentials`)");
}

}  // namespace

// --- static_credentials --------------------------------------------------------------------------

static_credentials::static_credentials(credentials creds) : m_creds(std::move(creds)) {}

credentials static_credentials::get() {
  if (m_creds.access_key_id.empty()) throw token_error(name(), "access_key_id is empty");
  if (m_creds.secret_access_key.empty()) throw token_error(name(), "secret_access_key is empty");
  return m_creds;
}

std::string static_credentials::name() const { return "static credentials"; }

// --- environment_credentials ---------------------------------------------------------------------

bool environment_credentials::present() noexcept {
  const char* v = std::getenv("AWS_ACCESS_KEY_ID");
  return v != nullptr && *v != '\0';
}

credentials environment_credentials::get() {
  credentials c;
  c.access_key_id = env("AWS_ACCESS_KEY_ID");
  c.secret_access_key = env("AWS_SECRET_ACCESS_KEY");
  if (c.access_key_id.empty() && c.secret_access_key.empty())
    throw token_error(name(), "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set");
  if (c.access_key_id.empty()) throw token_error(name(), "AWS_ACCESS_KEY_ID is not set (AWS_SECRET_ACCESS_KEY is)");
  if (c.secret_access_key.empty()) throw token_error(name(), "AWS_SECRET_ACCESS_KEY is not set (AWS_ACCESS_KEY_ID is)");
  c.session_token = env("AWS_SESSION_TOKEN");
  if (c.session_token.empty()) c.session_token = env("AWS_SECURITY_TOKEN");
  if (const std::string expiration = env("AWS_CREDENTIAL_EXPIRATION"); !expiration.empty()) {
    c.expiration = detail::parse_iso8601(expiration);
    if (!c.expiration)
      throw token_error(name(), "AWS_CREDENTIAL_EXPIRATION is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)");
    detail::refuse_expired(c, name());
  }
  return c;
}

std::string environment_credentials::name() const { return "environment"; }

// --- profile_credentials -------------------------------------------------------------------------

profile_credentials::profile_credentials(std::string profile, std::string region)
    : m_profile(std::move(profile)), m_region(std::move(region)) {}

std::string profile_credentials::name() const { return quoted_profile(resolve_profile_name(m_profile)); }

credentials profile_credentials::get() { return *detail::profile_sources(m_profile, m_region, nullptr); }

namespace detail {

std::optional<credentials> profile_sources(const std::string& given_profile, const std::string& region,
                                           std::vector<std::string>* tried) {
  const bool chain = tried != nullptr;
  const std::string profile = resolve_profile_name(given_profile);
  const std::string source = quoted_profile(profile);
  const ini_file creds_file = read_ini(aws_file_path("AWS_SHARED_CREDENTIALS_FILE", "credentials"), source);
  const ini_file config_file = read_ini(aws_file_path("AWS_CONFIG_FILE", "config"), source);

  const std::optional<ini_section> from_creds = creds_file.section(profile);
  const std::optional<ini_section> from_config = config_profile(config_file, profile);
  auto where = [](const ini_file& f) { return f.path + (f.exists ? "" : " (no such file)"); };
  if (!chain && !from_creds && !from_config)
    throw token_error(source, "not found in " + where(creds_file) + " or " + where(config_file));

  // botocore's order within a profile, with the rules by which each of its providers claims the
  // profile: assume-role (role_arn without web_identity_token_file), assume-role with web identity
  // (web_identity_token_file; in the chain also AWS_WEB_IDENTITY_TOKEN_FILE), SSO (sso_role_name
  // or sso_account_id) — these read both files merged, the credentials file winning —, keys from
  // the credentials file, credential_process (merged), keys from the config file.
  ini_section merged = from_config.value_or(ini_section{});
  if (from_creds)
    for (const auto& [k, v] : *from_creds) merged[k] = v;
  auto merged_value = [&](const char* key) {
    const auto it = merged.find(key);
    return it == merged.end() ? std::string() : std::string(trim(it->second));
  };

  if (has(merged, "role_arn") && !has(merged, "web_identity_token_file"))
    unsupported(source, "assume-role (role_arn with source_profile or credential_source)");

  web_identity_settings web;
  web.configured_by = "the environment";
  if (chain) web.token_file = env("AWS_WEB_IDENTITY_TOKEN_FILE");
  if (web.token_file.empty()) {
    web.token_file = merged_value("web_identity_token_file");
    web.configured_by = source;
  }
  if (!web.token_file.empty()) {
    if (chain) web.role_arn = env("AWS_ROLE_ARN");
    if (web.role_arn.empty()) web.role_arn = merged_value("role_arn");
    if (web.role_arn.empty())
      throw token_error("web identity", "a web identity token file is configured by " + web.configured_by +
                                            " but no role: set " + (chain ? "AWS_ROLE_ARN or " : "") + "role_arn in " +
                                            source);
    if (chain) web.session_name = env("AWS_ROLE_SESSION_NAME");
    if (web.session_name.empty()) web.session_name = merged_value("role_session_name");
    web.region = region;
    if (web.region.empty()) web.region = env("AWS_REGION");
    if (web.region.empty()) web.region = env("AWS_DEFAULT_REGION");
    if (web.region.empty()) web.region = merged_value("region");
    return web_identity_credentials(web);
  }
  if (chain)
    tried->push_back("web identity: AWS_WEB_IDENTITY_TOKEN_FILE is not set and " + source +
                     " has no web_identity_token_file");

  const auto sso_key =
      std::find_if(merged.begin(), merged.end(), [](const auto& kv) { return kv.first.compare(0, 4, "sso_") == 0; });
  if (has(merged, "sso_role_name") || has(merged, "sso_account_id")) unsupported(source, "SSO (sso_*)");
  if (from_creds && has(*from_creds, access_key_key)) return credentials_from(*from_creds, creds_file.path, source);
  if (const auto it = merged.find("credential_process"); it != merged.end()) {
    const std::string process_source = "credential_process (" + source + ")";
    if (trim(it->second).empty()) throw token_error(process_source, "the command is empty");
    return process_credentials(std::string(trim(it->second)), process_source);
  }
  if (from_config && has(*from_config, access_key_key)) return credentials_from(*from_config, config_file.path, source);

  if (!chain) {
    // No keys: name what the profile seems meant for, even where botocore would not use it.
    if (sso_key != merged.end()) unsupported(source, "SSO (" + sso_key->first + ")");
    throw token_error(source,
                      std::string("has no ") + access_key_key + " in " + creds_file.path + " or " + config_file.path);
  }
  // As botocore (ProfileNotFound): a profile asked for by name must exist; only "default" may be
  // missing, and then the container and instance metadata sources still run.
  const bool named = !given_profile.empty() || !env("AWS_DEFAULT_PROFILE").empty() || !env("AWS_PROFILE").empty();
  if (!from_creds && !from_config && named && profile != "default")
    throw token_error(source, "not found in " + where(creds_file) + " or " + where(config_file));
  auto file_note = [&](const char* what, const ini_file& f, bool section) {
    std::string note = std::string(what) + " " + f.path + ": ";
    if (!f.exists) return note + "no such file";
    if (!section) return note + "no " + source;
    return note + source + " has no " + access_key_key;
  };
  tried->push_back(file_note("shared credentials file", creds_file, from_creds.has_value()));
  tried->push_back("credential_process: " + source + " has none");
  tried->push_back(file_note("config file", config_file, from_config.has_value()));
  if (sso_key != merged.end())
    tried->push_back("SSO: " + source + " has " + sso_key->first + ", but SSO is not supported");
  return std::nullopt;
}

}  // namespace detail

}  // namespace pqxxpool::aws
