#pragma once
/// @file aws/credentials.hpp
/// AWS credentials for signing IAM authentication tokens (Aurora DSQL, RDS), and the providers
/// that find them: fixed values, the environment, or a profile of the shared credentials and
/// config files. Sources not supported yet (web identity, container, instance metadata,
/// credential_process, SSO, assume-role) are recognised in a profile and reported as such.
///
/// No OpenSSL header is included here; nothing in this header ever logs or prints a secret.

#include <chrono>
#include <optional>
#include <string>

namespace pqxxpool::aws {

/// One set of AWS credentials.
///
/// Holds secrets: secret_access_key and session_token must never be logged, printed or put in an
/// error message (access_key_id is not secret, but pqxxpool does not print it either).
/// Thread-safety: a plain value type; not synchronised.
struct credentials {
  /// The access key id, e.g. "AKIA…" or "ASIA…". Required for signing.
  std::string access_key_id;
  /// The secret access key. Required for signing. Secret.
  std::string secret_access_key;
  /// The session token of temporary credentials; "" for long-term keys. Secret.
  std::string session_token;
  /// When temporary credentials stop working; std::nullopt when unknown or long-term. A DSQL token
  /// signed with them is made to expire no later than this.
  std::optional<std::chrono::system_clock::time_point> expiration;
};

/// Where credentials come from. get() is called for every token, i.e. for every new connection.
///
/// Thread-safety: get() and name() may be called from several threads at once; every
/// implementation must allow that.
class credentials_provider {
 public:
  virtual ~credentials_provider() = default;

  /// The current credentials. Throws token_error (naming the source and the reason, never a
  /// secret) when they are missing, incomplete or malformed, or when the source is not supported;
  /// std::bad_alloc.
  [[nodiscard]] virtual credentials get() = 0;

  /// A short description of the source for messages, e.g. "environment" or "profile 'dev'". Never
  /// contains a secret. Throws std::bad_alloc only.
  [[nodiscard]] virtual std::string name() const = 0;

 protected:
  credentials_provider() = default;
  credentials_provider(const credentials_provider&) = default;
  credentials_provider& operator=(const credentials_provider&) = default;
  credentials_provider(credentials_provider&&) = default;
  credentials_provider& operator=(credentials_provider&&) = default;
};

/// Always returns the credentials it was built with (for tests, or credentials obtained elsewhere).
/// Thread-safety: get() and name() may run concurrently.
class static_credentials final : public credentials_provider {
 public:
  /// Stores creds; does not check them. Throws std::bad_alloc only.
  explicit static_credentials(credentials creds);
  /// The stored credentials. Throws token_error when access_key_id or secret_access_key is empty;
  /// std::bad_alloc.
  [[nodiscard]] credentials get() override;
  /// "static credentials". Throws std::bad_alloc only.
  [[nodiscard]] std::string name() const override;

 private:
  credentials m_creds;
};

/// Reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (or its older name
/// AWS_SECURITY_TOKEN) on every get(), so a changed environment is picked up.
/// Thread-safety: get() and name() may run concurrently with each other, but (as for any
/// std::getenv) not with setenv/putenv/unsetenv in another thread.
class environment_credentials final : public credentials_provider {
 public:
  environment_credentials() = default;
  /// The credentials in the environment. Throws token_error naming the variables when
  /// AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is unset or empty; std::bad_alloc.
  [[nodiscard]] credentials get() override;
  /// "environment". Throws std::bad_alloc only.
  [[nodiscard]] std::string name() const override;

  /// Whether AWS_ACCESS_KEY_ID is set and not empty, i.e. whether the environment is meant to
  /// provide credentials (botocore's rule for trying the next source). Never throws.
  [[nodiscard]] static bool present() noexcept;
};

/// Reads a named profile from the shared credentials file and the config file, as the AWS CLI and
/// botocore do, on every get() (the files are small; a rotated key is picked up at once).
///
/// - Profile name: the constructor's argument, else AWS_DEFAULT_PROFILE, else AWS_PROFILE, else
///   "default" (looked up at get()).
/// - Credentials file: AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials; section `[name]`.
/// - Config file: AWS_CONFIG_FILE, else ~/.aws/config; section `[profile name]`, or `[default]`
///   (also `[profile default]`) for the default profile. A leading `~/` in either variable means
///   $HOME. A missing file counts as empty.
/// - Keys aws_access_key_id, aws_secret_access_key, aws_session_token (or aws_security_token).
///   Key names are case-insensitive and section names case-sensitive, as in botocore (Python's
///   configparser). Whole-line comments start with `#` or `;`; there are no inline comments;
///   `=` or `:` separates key and value; indented lines continue the previous value.
/// - Order, as botocore: a profile (merged from both files, the credentials file winning) with
///   role_arn (assume-role, or web identity with web_identity_token_file) or with sso_role_name /
///   sso_account_id (SSO) is reported as unsupported; then keys from the credentials file; then
///   credential_process (unsupported); then keys from the config file. A profile with no keys
///   but other sso_* or web_identity_token_file settings is reported as SSO / web identity.
/// - Stricter than botocore: an empty key or secret, or one continued over several lines, is an
///   error; a UTF-8 byte order mark at the start of a file is skipped.
///
/// Thread-safety: get() and name() may run concurrently (each get() reads the files afresh), but
/// not with setenv/putenv/unsetenv in another thread.
class profile_credentials final : public credentials_provider {
 public:
  /// profile: the profile name; "" (default) means take it from the environment as above.
  /// Throws std::bad_alloc only.
  explicit profile_credentials(std::string profile = "");
  /// The profile's credentials. Throws token_error naming the profile, the file (and line for a
  /// syntax error) and the reason: profile not found, a key missing, a file unreadable or
  /// malformed, or an unsupported source (naming it: SSO, assume-role, web identity,
  /// credential_process); std::bad_alloc.
  [[nodiscard]] credentials get() override;
  /// "profile 'NAME'" with the name resolved now. Throws std::bad_alloc only.
  [[nodiscard]] std::string name() const override;

 private:
  std::string m_profile;
};

}  // namespace pqxxpool::aws
