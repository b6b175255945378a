#pragma once
// Locale-independent ASCII helpers shared by the AWS sources (internal, not installed).

#include <string>
#include <string_view>

namespace pqxxpool::aws::detail {

/// s with A–Z turned into a–z; other bytes unchanged. Throws std::bad_alloc only.
inline std::string ascii_lowercase(std::string_view s) {
  std::string r(s);
  for (char& c : r)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return r;
}

/// Whether s looks like an AWS region name (us-east-1, us-gov-west-1, cn-north-1): lowercase
/// letters, digits and '-', starting with a letter. It is signed into the credential scope, so a
/// space, '/' or newline there gives a token no endpoint accepts. Never throws.
inline bool is_region_name(std::string_view s) noexcept {
  if (s.empty() || !(s[0] >= 'a' && s[0] <= 'z')) return false;
  for (const char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return false;
  return true;
}

/// The message of a config_error for a region that is not one.
inline constexpr const char* bad_region_message =
    "must be an AWS region name: lowercase letters, digits and '-' (e.g. us-east-1)";

}  // namespace pqxxpool::aws::detail
