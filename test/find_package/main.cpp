// Builds against the installed headers and library; runs without a server.
#include <chrono>
#include <iostream>
#include <string>

#include <pqxxpool/pqxxpool.hpp>

int main() {
  // Token signing links libpqxxpool's OpenSSL dependency, which the package config must re-find.
  pqxxpool::dsql::token_request request;
  request.host = "test.dsql.us-east-1.on.aws";
  pqxxpool::aws::credentials creds;
  creds.access_key_id = "access_key";
  creds.secret_access_key = "secret_key";
  const std::chrono::system_clock::time_point t{std::chrono::seconds{1731001173}};  // 2024-11-07T17:39:33Z
  const std::string token = pqxxpool::dsql::generate_token(request, creds, t);
  if (token.find("X-Amz-Signature=a08adc4c84a490014ce374b90c98ba9ed015b77b451c0d9f9fb3f8ca8c6f9c36") ==
      std::string::npos) {
    std::cout << "unexpected DSQL token signature\n";
    return 1;
  }

  pqxxpool::pool_config cfg;
  cfg.max_size = 0;
  try {
    cfg.validate();
  } catch (const pqxxpool::config_error& e) {
    std::cout << "pqxxpool " << pqxxpool::version << ": config_error for " << e.field() << "\n";
    return e.field() == "max_size" ? 0 : 1;
  }
  return 1;
}
