// connect_params: a small ordered keyword → value list. A vector rather than a map because libpq
// sees the keywords in this order and there are only a few dozen at most, so a linear search is
// both simpler and faster than a tree.

#include <algorithm>
#include <string>
#include <string_view>
#include <utility>

#include "pqxxpool/config.hpp"

namespace pqxxpool {

namespace {

template <typename Items>
auto find_key(Items& items, std::string_view key) noexcept {
  return std::find_if(items.begin(), items.end(), [key](const auto& item) { return item.first == key; });
}

}  // namespace

void connect_params::set(std::string key, std::string value) {
  const auto it = find_key(m_items, key);
  if (it != m_items.end()) {
    // Replacing in place keeps the keyword's original position.
    it->second = std::move(value);
  } else {
    m_items.emplace_back(std::move(key), std::move(value));
  }
}

const std::string* connect_params::get(std::string_view key) const noexcept {
  const auto it = find_key(m_items, key);
  return it == m_items.end() ? nullptr : &it->second;
}

bool connect_params::erase(std::string_view key) noexcept {
  const auto it = find_key(m_items, key);
  if (it == m_items.end()) return false;
  // Moving std::string pairs down is noexcept, so this cannot throw.
  m_items.erase(it);
  return true;
}

}  // namespace pqxxpool
