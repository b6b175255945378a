#pragma once
// Test helper: set or unset an environment variable for a scope, restoring it afterwards.

#include <cstdlib>
#include <optional>
#include <string>

namespace pqxxpool::test {

/// Sets (or, with nullptr, unsets) an environment variable for the lifetime of the object, then
/// restores its old value (or unsets it again). Not thread-safe, as setenv is not.
class scoped_env {
 public:
  scoped_env(const char* name, const char* value) : m_name(name) {
    if (const char* old = std::getenv(name)) m_old = old;
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  scoped_env(const char* name, const std::string& value) : scoped_env(name, value.c_str()) {}
  ~scoped_env() {
    if (m_old) {
      ::setenv(m_name.c_str(), m_old->c_str(), 1);
    } else {
      ::unsetenv(m_name.c_str());
    }
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;

 private:
  std::string m_name;
  std::optional<std::string> m_old;
};

}  // namespace pqxxpool::test
