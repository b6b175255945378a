// Builds against the installed headers and library; runs without a server.
#include <iostream>

#include <pqxxpool/pqxxpool.hpp>

int main() {
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
