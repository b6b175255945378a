// pqxxpool — command-line companion of the pqxxpool library.
//
// Every subcommand lives in its own file and registers itself through commands.hpp; this file only
// builds the top-level parser, parses, and runs the chosen subcommand.

#include <exception>
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>

#include "commands.hpp"
#include "pqxxpool/version.hpp"

int main(int argc, char** argv) {
  using namespace pqxxpool_cli;

  CLI::App app{"pqxxpool: tools for the pqxxpool PostgreSQL connection pool", "pqxxpool"};
  app.set_version_flag("--version", pqxxpool::version);
  app.require_subcommand(1);

  std::vector<command> commands;
  commands.push_back(add_demo_command(app));
  commands.push_back(add_token_command(app));
  commands.push_back(add_check_command(app));
  commands.push_back(add_bench_command(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2 (CLI11's own codes are 100+).
    const int rc = app.exit(e);
    return rc == 0 ? exit_ok : exit_usage;
  }

  try {
    for (const command& c : commands)
      if (c.app->parsed()) return c.run();
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << '\n';
    return exit_failure;
  }
  return exit_usage;  // unreachable: require_subcommand(1)
}
