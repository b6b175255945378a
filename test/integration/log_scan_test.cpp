// Runs after every other integration and stress test (a CTest fixture cleanup): scans everything
// the suite logged through spdlog (test/integration/log_capture.cpp) for the tests' passwords,
// keys and IAM tokens. Passwords and tokens must never appear in a log line or error message.

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "secrets.hpp"

namespace pqxxpool::itest {
namespace {

std::string captured_log() {
  const char* path = std::getenv("PQXXPOOL_TEST_LOG");
  if (path == nullptr || *path == '\0') {
    ADD_FAILURE() << "PQXXPOOL_TEST_LOG is not set: run this through ctest (test/integration/CMakeLists.txt)";
    return {};
  }
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

/// The line of `text` around position pos, to show where a secret was found.
std::string line_at(const std::string& text, std::size_t pos) {
  const std::size_t begin = text.rfind('\n', pos);
  const std::size_t end = text.find('\n', pos);
  return text.substr(begin == std::string::npos ? 0 : begin + 1, end == std::string::npos ? std::string::npos : end - begin - 1);
}

TEST(logs, hold_no_password_key_or_token) {
  const std::string log = captured_log();
  ASSERT_NE(log.find("opened in"), std::string::npos) << "nothing was logged: run the integration label";
  // The scan means something only if the suite really logged the risky paths: failed connects
  // (wrong password, refused IAM tokens), new tokens, and the errors the tests caught. A run of a
  // few tests (ctest -R) may not have them; scripts/test.sh runs everything and requires them.
  const char* full = std::getenv("PQXXPOOL_TEST_REQUIRE_FULL_LOG");
  if (full != nullptr && std::string(full) == "1") {
    EXPECT_NE(log.find("connect failed with SQLSTATE 28P01"), std::string::npos);
    EXPECT_NE(log.find("access denied"), std::string::npos) << "the DSQL tests' refused tokens should be logged";
    EXPECT_NE(log.find("test caught:"), std::string::npos);
    EXPECT_NE(log.find("new IAM token for user"), std::string::npos);
  }
  for (const std::string& secret : secrets::all()) {
    const std::size_t at = log.find(secret);
    EXPECT_EQ(at, std::string::npos) << "a secret was logged: " << line_at(log, at);
  }
  for (const std::string& marker : secrets::token_markers()) {
    const std::size_t at = log.find(marker);
    EXPECT_EQ(at, std::string::npos) << "an IAM token was logged: " << line_at(log, at);
  }
}

}  // namespace
}  // namespace pqxxpool::itest
