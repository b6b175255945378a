#pragma once
/// @file aws/credentials.hpp
/// AWS credentials for signing IAM authentication tokens (Aurora DSQL, RDS), and the providers
/// that find them: fixed values, the environment, a profile of the shared credentials and config
/// files (keys, credential_process, web identity), and botocore's default chain, which adds STS
/// web identity from the environment, the ECS/EKS container endpoint and EC2 instance metadata
/// (IMDSv2); caching_provider keeps what they return until shortly before it expires. SSO and
/// assume-role chains (role_arn with source_profile or credential_source) are not supported; a
/// profile that needs one is reported as such.
///
/// No OpenSSL, libcurl or JSON header is included here; nothing in this header ever logs or prints
/// a secret.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
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
/// AWS_SECURITY_TOKEN), and AWS_CREDENTIAL_EXPIRATION (ISO 8601, e.g. 2024-05-01T12:00:00Z) when
/// set, on every get(), so a changed environment is picked up.
/// Thread-safety: get() and name() may run concurrently with each other, but (as for any
/// std::getenv) not with setenv/putenv/unsetenv in another thread.
class environment_credentials final : public credentials_provider {
 public:
  environment_credentials() = default;
  /// The credentials in the environment. Throws token_error naming the variables when
  /// AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY is unset or empty, or AWS_CREDENTIAL_EXPIRATION
  /// is not an ISO 8601 time or has passed; std::bad_alloc.
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
/// - Order, as botocore, in the profile merged from both files (the credentials file winning):
///   role_arn without web_identity_token_file (assume-role) is reported as unsupported;
///   web_identity_token_file with role_arn [and role_session_name] calls STS
///   AssumeRoleWithWebIdentity (see default_credentials_chain); sso_role_name / sso_account_id
///   (SSO) is reported as unsupported; then keys from the credentials file; then
///   credential_process; then keys from the config file. A profile with no keys but other sso_*
///   settings is reported as SSO.
/// - credential_process: run with /bin/sh -c (stdin /dev/null, its stderr goes to ours), at most
///   60 s (then its process group is killed); stdout must be JSON {"Version": 1, "AccessKeyId",
///   "SecretAccessKey", ["SessionToken"], ["Expiration" (ISO 8601)]}. A non-zero exit, a timeout
///   or bad JSON is a token_error naming credential_process and the exit status, never the output.
/// - Stricter than botocore: an empty key or secret, or one continued over several lines, is an
///   error; a UTF-8 byte order mark at the start of a file is skipped.
///
/// Thread-safety: get() and name() may run concurrently (each get() reads the files afresh), but
/// not with setenv/putenv/unsetenv in another thread.
class profile_credentials final : public credentials_provider {
 public:
  /// profile: the profile name; "" (default) means take it from the environment as above.
  /// region: the STS region for web identity; "" = AWS_REGION, else AWS_DEFAULT_REGION, else the
  /// profile's region, else STS's global endpoint. Throws std::bad_alloc only.
  explicit profile_credentials(std::string profile = "", std::string region = "");
  /// The profile's credentials. Throws token_error naming the profile, the file (and line for a
  /// syntax error) and the reason: profile not found, a key missing, a file unreadable or
  /// malformed, credential_process or STS failing, or an unsupported source (naming it: SSO,
  /// assume-role); std::bad_alloc.
  [[nodiscard]] credentials get() override;
  /// "profile 'NAME'" with the name resolved now. Throws std::bad_alloc only.
  [[nodiscard]] std::string name() const override;

 private:
  std::string m_profile;
  std::string m_region;
};

/// What default_credentials_chain builds on.
struct chain_options {
  /// A provider given in code: the chain is this provider alone. Default: none.
  std::shared_ptr<credentials_provider> provider;
  /// Credentials given in code (when provider is not set): the chain is static_credentials of
  /// them. Default: none.
  std::optional<credentials> explicit_credentials;
  /// A profile given in code: the file sources use it, and the environment keys are not consulted
  /// (as botocore with an explicit profile). Default "": AWS_DEFAULT_PROFILE, else AWS_PROFILE,
  /// else "default", and the environment keys come first.
  std::string profile;
  /// The region for STS (web identity). Default "": AWS_REGION, else AWS_DEFAULT_REGION, else the
  /// profile's region, else STS's global endpoint.
  std::string region;
};

/// botocore's default credential chain, without the AWS SDK. get() tries, in order, and returns
/// the first source's credentials:
///
///  1. options.provider, else options.explicit_credentials, if given: nothing else is tried.
///  2. The environment: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
///     AWS_CREDENTIAL_EXPIRATION (environment_credentials) — unless options.profile is given.
///  3. Web identity: AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN [+ AWS_ROLE_SESSION_NAME], each
///     falling back to the profile's web_identity_token_file / role_arn / role_session_name: an
///     unsigned POST of AssumeRoleWithWebIdentity to STS at AWS_ENDPOINT_URL_STS, else
///     AWS_ENDPOINT_URL, else https://sts.<region>.amazonaws.com, else https://sts.amazonaws.com.
///     (A profile with role_arn but no token file is assume-role: reported as unsupported, before
///     this step, as botocore orders it.)
///  4. The profile (see profile_credentials): keys in the shared credentials file `[name]`, then
///     credential_process, then keys in the config file `[profile name]` (SSO is reported as
///     unsupported before these). A profile named explicitly (argument, AWS_DEFAULT_PROFILE or
///     AWS_PROFILE, anything but "default") that is in neither file stops the chain with an error.
///  5. The container endpoint: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI (on http://169.254.170.2),
///     else AWS_CONTAINER_CREDENTIALS_FULL_URI (https, or http to a loopback address or the
///     ECS/EKS agent addresses), with an Authorization header from the file
///     AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE, else AWS_CONTAINER_AUTHORIZATION_TOKEN.
///  6. EC2 instance metadata, IMDSv2: PUT /latest/api/token, then
///     /latest/meta-data/iam/security-credentials/<role>; at AWS_EC2_METADATA_SERVICE_ENDPOINT,
///     else http://169.254.169.254 (http://[fd00:ec2::254] with
///     AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6); 1 s to connect, 2 s per request, one attempt;
///     IMDSv1 when the token PUT gets 403/404/405 unless AWS_EC2_METADATA_V1_DISABLED=true;
///     skipped with AWS_EC2_METADATA_DISABLED=true.
///
/// A source that is not configured is skipped; one that is configured but fails (partial keys,
/// STS refusing, credential_process exiting non-zero, the container endpoint failing) stops the
/// chain with its token_error, as in botocore. Instance metadata failing is a skip. When nothing
/// gives credentials, the token_error (source "credentials chain") lists every source tried and
/// why each did not apply — paths, variable names, URLs and statuses, never a secret. Temporary
/// credentials that have expired already are refused where they come from (botocore refuses
/// refreshed credentials that are still expired): token_error whose source() names the link
/// ("environment", "credential_process (profile 'dev')", "web identity", "container (…)"). From
/// instance metadata they are a skip with that reason (botocore instead extends them for a
/// while, its "static stability" during an IMDS outage; pqxxpool does not).
///
/// Every get() walks the chain afresh (files re-read, STS or the endpoints asked again): wrap the
/// result in a caching_provider, as dsql::make_pool does. HTTP goes through libcurl; the container
/// and instance metadata requests never use a proxy, STS honours http(s)_proxy/no_proxy.
///
/// Thread-safety: the provider returned allows concurrent get() and name(), but (as any
/// std::getenv) not concurrently with setenv/putenv/unsetenv. Throws std::bad_alloc only.
[[nodiscard]] std::shared_ptr<credentials_provider> default_credentials_chain(chain_options options = {});

/// Keeps another provider's credentials until refresh_window before they expire (credentials
/// without an expiration: for 5 minutes, so an edited credentials file is picked up), then asks
/// the inner provider again.
///
/// - Refreshing happens on the calling thread, inside get(). dsql::make_pool calls get() only
///   from the pool's connect threads (in before_connect), never on the acquire path, so a slow
///   STS or metadata call delays a new connection, never a lease.
/// - While one thread refreshes, others get the cached credentials if they are still valid, or
///   wait for the refresh if not.
/// - When a refresh fails and the cached credentials have not expired yet, they are still served
///   (nothing is logged) and the refresh is retried after 10 seconds; the error surfaces only once
///   they have expired (or when there were none).
/// - Credentials fresh from the inner provider that already fall inside refresh_window are used,
///   and asked for again 10 seconds later at the earliest.
///
/// Thread-safety: get() and name() may be called from several threads at once.
class caching_provider final : public credentials_provider {
 public:
  using clock_function = std::function<std::chrono::system_clock::time_point()>;

  /// inner: the provider to cache (required, else std::invalid_argument). refresh_window: how
  /// long before expiration to refresh (≥ 0). clock: the time source (tests); default
  /// std::chrono::system_clock::now. Throws std::invalid_argument, std::bad_alloc.
  explicit caching_provider(std::shared_ptr<credentials_provider> inner,
                            std::chrono::seconds refresh_window = std::chrono::minutes(5), clock_function clock = {});
  /// Cached or refreshed credentials, as above. Throws what the inner provider throws (a
  /// token_error) when there are no unexpired credentials to fall back on; std::bad_alloc.
  [[nodiscard]] credentials get() override;
  /// The inner provider's name. Throws std::bad_alloc only.
  [[nodiscard]] std::string name() const override;

  /// How long credentials without an expiration are kept, and how long after a failed (or
  /// too-late) refresh the next one is tried.
  static constexpr std::chrono::seconds ttl_without_expiration{300};
  static constexpr std::chrono::seconds retry_interval{10};

 private:
  const std::shared_ptr<credentials_provider> m_inner;
  const std::chrono::seconds m_window;
  const clock_function m_clock;
  std::mutex m_mu;  // guards everything below
  std::condition_variable m_refreshed;
  std::optional<credentials> m_cached;
  std::chrono::system_clock::time_point m_next_refresh{};
  bool m_refreshing = false;
};

}  // namespace pqxxpool::aws
