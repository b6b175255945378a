// `pqxxpool token`: prints an Aurora DSQL IAM authentication token (the password for one login),
// alone on stdout, like `aws dsql generate-db-connect-admin-auth-token`.
//
// Credentials: pqxxpool::aws::default_credentials_chain (the environment, web identity, the
// profile named by AWS_DEFAULT_PROFILE / AWS_PROFILE / "default", the container endpoint, EC2
// instance metadata); --profile P names the profile and skips the environment keys.
// Region: --region, else from a DSQL endpoint host, else AWS_REGION, else AWS_DEFAULT_REGION.
//
// Exit codes: 0 token printed, 1 no usable credentials (or signing failed), 2 bad command line,
// bad option value, or no region.

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "commands.hpp"
#include "duration.hpp"
#include "pqxxpool/aws/credentials.hpp"
#include "pqxxpool/aws/dsql.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool_cli {

namespace {

struct token_options {
  std::string host;
  std::string region;
  std::string user = pqxxpool::dsql::token_request{}.user;
  std::chrono::milliseconds expires = pqxxpool::dsql::token_request{}.expires;
  std::string profile;
};

/// --region, else the endpoint's region, else AWS_REGION, else AWS_DEFAULT_REGION; "" if none.
std::string resolve_region(const token_options& opt) {
  if (!opt.region.empty()) return opt.region;
  if (std::optional<std::string> r = pqxxpool::dsql::region_from_host(opt.host)) return *r;
  for (const char* variable : {"AWS_REGION", "AWS_DEFAULT_REGION"})
    if (const char* r = std::getenv(variable); r != nullptr && *r != '\0') return r;
  return "";
}

int run_token(const token_options& opt) {
  if (opt.expires.count() % 1000 != 0) {
    std::fprintf(stderr, "error: --expires must be a whole number of seconds\n");
    return exit_usage;
  }
  if (opt.host.empty()) {
    std::fprintf(stderr, "error: --host must not be empty: give the cluster endpoint\n");
    return exit_usage;
  }
  if (opt.host.find(':') != std::string::npos || opt.host.find('/') != std::string::npos) {
    std::fprintf(stderr, "error: --host takes the endpoint's name alone, without a port, scheme or path "
                         "(e.g. <cluster id>.dsql.us-east-1.on.aws)\n");
    return exit_usage;
  }
  pqxxpool::dsql::token_request request;
  request.host = opt.host;
  request.user = opt.user;
  request.expires = std::chrono::duration_cast<std::chrono::seconds>(opt.expires);
  request.region = resolve_region(opt);
  if (request.region.empty()) {
    std::fprintf(stderr,
                 "error: cannot tell the region: give --region, use a DSQL endpoint "
                 "(<cluster>.dsql.<region>.on.aws) as --host, or set AWS_REGION or AWS_DEFAULT_REGION\n");
    return exit_usage;
  }

  // The default chain, as the pool uses it; --profile drops the environment keys (as the AWS CLI).
  pqxxpool::aws::chain_options options;
  options.profile = opt.profile;
  options.region = request.region;
  const std::shared_ptr<pqxxpool::aws::credentials_provider> provider =
      pqxxpool::aws::default_credentials_chain(std::move(options));

  std::string token;
  try {
    token = pqxxpool::dsql::generate_token(request, provider->get(), std::chrono::system_clock::now());
  } catch (const pqxxpool::config_error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return exit_usage;
  } catch (const pqxxpool::token_error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return exit_failure;
  }
  if (std::printf("%s\n", token.c_str()) < 0 || std::fflush(stdout) != 0) return exit_failure;
  return exit_ok;
}

}  // namespace

command add_token_command(CLI::App& app) {
  auto opt = std::make_shared<token_options>();
  CLI::App* sub = app.add_subcommand("token", "Print an Aurora DSQL IAM authentication token (a password) on stdout");

  sub->add_option("--host", opt->host, "Cluster endpoint, e.g. <cluster id>.dsql.us-east-1.on.aws")->required();
  sub->add_option("--region", opt->region,
                  "AWS region (default: from a DSQL endpoint host, else AWS_REGION, else AWS_DEFAULT_REGION)");
  sub->add_option("--user", opt->user, "Database role; 'admin' signs DbConnectAdmin, any other DbConnect")
      ->capture_default_str();
  add_duration_option(*sub, "--expires", opt->expires,
                      "How long the token can be used to log in (whole seconds, 1s to 7 days)");
  sub->add_option("--profile", opt->profile,
                  "Use this profile of ~/.aws/credentials and ~/.aws/config and ignore the environment keys "
                  "(default: the environment keys, else the AWS_DEFAULT_PROFILE, AWS_PROFILE or 'default' "
                  "profile, then web identity, container and instance metadata credentials)");

  return command{sub, [opt] { return run_token(*opt); }};
}

}  // namespace pqxxpool_cli
