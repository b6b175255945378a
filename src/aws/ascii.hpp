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

}  // namespace pqxxpool::aws::detail
