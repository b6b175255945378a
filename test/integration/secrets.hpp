#pragma once
// Every password, key and token the integration tests hand to the library, in one place: the
// tests use these constants, and test/integration/log_scan_test.cpp checks that none of them (nor
// anything that looks like an IAM token) appears in what the suite logged.

#include <cstdlib>
#include <string>
#include <vector>

namespace pqxxpool::itest::secrets {

inline const char* const rotation_initial = "rotation-initial-password-1";
inline const char* const rotation_rotated = "rotation-rotated-password-2";
inline const char* const wrong_password = "definitely-not-the-password-7f3a";
inline const char* const occ_password = "occ-tester-password-3c1d";
/// The DSQL emulator's test secret key (the key id, AKID…, is not a secret: it is in every token).
inline const char* const dsql_secret_key = "itest-secret-key-not-an-aws-key-0123456789";
inline const char* const dsql_wrong_secret_key = "wrong-secret-for-the-itest-0000000000000";

/// Query parameters that only a presigned IAM token carries: finding one means a token leaked.
inline const std::vector<std::string>& token_markers() {
  static const std::vector<std::string> markers = {"X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token",
                                                   "Action=DbConnect"};
  return markers;
}

/// The constants above and the test bed's passwords (from the environment scripts/test.sh sets).
inline std::vector<std::string> all() {
  std::vector<std::string> out = {rotation_initial, rotation_rotated, wrong_password,
                                  occ_password,     dsql_secret_key,  dsql_wrong_secret_key};
  for (const char* name : {"PQXXPOOL_TEST_APP_PASSWORD", "PQXXPOOL_TEST_ROTATION_PASSWORD"})
    if (const char* v = std::getenv(name); v != nullptr && *v != '\0') out.emplace_back(v);
  return out;
}

}  // namespace pqxxpool::itest::secrets
