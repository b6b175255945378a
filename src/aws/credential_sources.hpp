#pragma once
// The credential sources behind default_credentials_chain and profile_credentials, and their
// parsers (internal, not installed; the unit tests include it).
//
// Not one message thrown from here may quote a file's contents, an environment variable's value,
// a response body or a process's output: any of them may hold a secret. Paths, URLs without their
// query, variable and key names, HTTP statuses and exit statuses only.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pqxxpool/aws/credentials.hpp"

namespace pqxxpool::aws::detail {

/// The value of an environment variable, or "" when it is unset.
[[nodiscard]] std::string env(const char* name);

/// Whether the variable is set to "true" (any case), as the SDKs read boolean settings.
[[nodiscard]] bool env_true(const char* name);

/// An ISO 8601 / RFC 3339 date and time as AWS writes them: "2024-05-01T12:00:00Z",
/// "2024-05-01T12:00:00.123456+02:00", "…+0200" (a space for the T, no zone = UTC); nullopt when
/// malformed. Never throws.
[[nodiscard]] std::optional<std::chrono::system_clock::time_point> parse_iso8601(std::string_view text) noexcept;

/// The text of the first <tag>…</tag> element in xml (namespace prefixes, attributes and CDATA
/// tolerated; the five predefined entities and numeric ones decoded); nullopt when there is none.
/// A tolerant extractor for STS's small responses, not an XML parser. Throws std::bad_alloc only.
[[nodiscard]] std::optional<std::string> xml_element(std::string_view xml, std::string_view tag);

/// Throws token_error(source, "gave temporary credentials that expired at …") when c has an
/// expiration that has passed: botocore refuses refreshed credentials that are still expired,
/// and the source is the one
/// to fix (a stale AWS_CREDENTIAL_EXPIRATION, a credential_process printing old keys). Checked
/// where each source hands credentials out, so that the error names the link of the chain rather
/// than failing later, in the signer, as plain "credentials".
void refuse_expired(const credentials& c, const std::string& source);

/// Credentials from the JSON the container endpoint, the instance metadata service and a
/// credential_process print: AccessKeyId, SecretAccessKey, <token_key> ("Token" or
/// "SessionToken"), Expiration (ISO 8601). With version_1 the object must have "Version": 1.
/// Throws token_error(source, …) naming the missing or malformed field (never a value), or when
/// the credentials have expired already (refuse_expired).
[[nodiscard]] credentials credentials_from_json(std::string_view json, const char* token_key, bool version_1,
                                                const std::string& source);

/// The STS endpoint: AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL (unless
/// AWS_IGNORE_CONFIGURED_ENDPOINT_URLS is true), else https://sts.<region>.amazonaws.com (.com.cn
/// for cn-*), else https://sts.amazonaws.com when region is "". Throws token_error for a region
/// that is not a region name.
[[nodiscard]] std::string sts_endpoint(const std::string& region);

struct web_identity_settings {
  std::string token_file;
  std::string role_arn;
  std::string session_name;   // "" = "pqxxpool-session-<unix time>"
  std::string region;         // for the STS endpoint; "" = global
  std::string configured_by;  // for messages: "the environment" or "profile 'NAME'"
};

/// STS AssumeRoleWithWebIdentity (an unsigned POST). Throws token_error("web identity", …).
[[nodiscard]] credentials web_identity_credentials(const web_identity_settings& settings);

/// Runs command with /bin/sh -c (stdin /dev/null, stderr passed through, stdout read as JSON
/// Version 1). Throws token_error(source, …) on a failed start, a non-zero exit, a timeout (the
/// process group is killed), output over 1 MiB or bad JSON; never quotes the output.
[[nodiscard]] credentials process_credentials(const std::string& command, const std::string& source,
                                              std::chrono::milliseconds timeout = std::chrono::seconds(60));

/// The ECS/EKS container endpoint when AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or
/// AWS_CONTAINER_CREDENTIALS_FULL_URI is set (nullopt with a note in *tried when neither is).
/// Throws token_error("container", …) when set but failing.
[[nodiscard]] std::optional<credentials> container_credentials(std::vector<std::string>& tried);

/// EC2 instance metadata, IMDSv2 (falling back to IMDSv1 on 403/404/405 to the token PUT unless
/// AWS_EC2_METADATA_V1_DISABLED is true). Never throws for an unreachable or unhelpful service:
/// returns nullopt with the reason in *tried, as botocore does. Throws std::bad_alloc.
[[nodiscard]] std::optional<credentials> instance_metadata_credentials(std::vector<std::string>& tried);

/// The profile sources in botocore's order: assume-role (unsupported: token_error), web identity,
/// SSO (unsupported: token_error), keys in the credentials file, credential_process, keys in the
/// config file. region: for STS ("" = AWS_REGION, AWS_DEFAULT_REGION, the profile's region).
///
/// With tried == nullptr (profile_credentials): web identity only from the profile, and a profile
/// that yields nothing is a token_error. With tried (the chain): web identity from
/// AWS_WEB_IDENTITY_TOKEN_FILE / AWS_ROLE_ARN / AWS_ROLE_SESSION_NAME first, then the profile; a
/// source that does not apply adds a note to *tried and nullopt is returned, except that a profile
/// named explicitly (not "default") and found in neither file is a token_error.
[[nodiscard]] std::optional<credentials> profile_sources(const std::string& given_profile, const std::string& region,
                                                         std::vector<std::string>* tried);

}  // namespace pqxxpool::aws::detail
