#pragma once
/// @file commands.hpp
/// The pqxxpool program's subcommands. Each lives in its own source file and registers itself on
/// the top-level CLI::App; main.cpp parses the command line and runs the one that was chosen.

#include <functional>

#include <CLI/CLI.hpp>

namespace pqxxpool_cli {

/// A registered subcommand: the CLI11 subcommand (to tell whether it was chosen) and the function
/// that runs it after a successful parse, returning the process exit code.
struct command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

/// Exit codes shared by all subcommands.
inline constexpr int exit_ok = 0;
inline constexpr int exit_failure = 1;  ///< the command ran but something failed (connect, queries)
inline constexpr int exit_usage = 2;    ///< bad command line or bad pool configuration

/// `pqxxpool demo`: runs a load against a pool and prints live statistics.
command add_demo_command(CLI::App& app);

/// `pqxxpool token`: prints an Aurora DSQL IAM authentication token on stdout.
command add_token_command(CLI::App& app);

/// `pqxxpool check`: connects once and prints what the connection and server report.
command add_check_command(CLI::App& app);

/// `pqxxpool bench`: runs the performance scenarios with pqxxpool and the naive pool, JSON lines out.
command add_bench_command(CLI::App& app);

}  // namespace pqxxpool_cli
