// pqxxpool::connect_hint on libpq 15's real texts. Each message below was produced on Debian 12
// (libpq 15.18, PostgreSQL 15.18) by `pqxxpool check` against the test cluster and the DSQL
// emulator (the library's verbose form, with the SQLSTATE after the severity), and by psql (the
// default form) for the password case, so both forms are covered.

#include <string>

#include <gtest/gtest.h>

#include "pqxxpool/dsql_pool.hpp"
#include "pqxxpool/errors.hpp"

namespace pqxxpool::test {
namespace {

bool contains(const std::string& text, const char* needle) { return text.find(needle) != std::string::npos; }

// Connecting to a loopback port nobody listens on (a tunnel that is down).
const char* const refused =
    "connection to server at \"127.0.0.1\", port 49163 failed: Connection refused\n"
    "\tIs the server running on that host and accepting TCP/IP connections?";
// A wrong password for the app role (scram-sha-256), through the library and through psql.
const char* const bad_password_verbose =
    "connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  28P01: password authentication failed for "
    "user \"app\"";
const char* const bad_password_default =
    "connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  password authentication failed for user "
    "\"app\"";
// host=127.0.0.1 with sslmode=verify-full; the certificate names localhost and the DSQL cluster.
const char* const name_mismatch =
    "connection to server at \"127.0.0.1\", port 23121 failed: server certificate for \"localhost\" (and 2 other "
    "names) does not match host name \"127.0.0.1\"";
// The DSQL emulator, hostaddr only (no host, so no SNI) with sslmode=require.
const char* const no_sni =
    "connection to server at \"127.0.0.1\", port 44189 failed: FATAL:  08006: unable to accept connection, sni was "
    "not received";
// The DSQL emulator with a password that is not a valid IAM token.
const char* const access_denied =
    "connection to server at \"127.0.0.1\", port 44189 failed: FATAL:  28P01: unable to accept connection, access "
    "denied";
// A database that does not exist: no hint applies.
const char* const no_database =
    "connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  3D000: database \"nope\" does not exist";

TEST(connect_hint, connection_refused_asks_whether_the_tunnel_is_up) {
  const std::string hint = connect_hint(refused);
  EXPECT_TRUE(contains(hint, "tunnel up")) << hint;
}

TEST(connect_hint, password_failure_names_a_wrong_password_or_an_rds_token) {
  for (const char* message : {bad_password_verbose, bad_password_default}) {
    const std::string hint = connect_hint(message);
    EXPECT_TRUE(contains(hint, "wrong for this user")) << hint;
    EXPECT_TRUE(contains(hint, "RDS IAM token")) << hint;
  }
}

TEST(connect_hint, certificate_name_mismatch_says_host_must_be_the_name_on_the_certificate) {
  const std::string hint = connect_hint(name_mismatch);
  EXPECT_TRUE(contains(hint, "host must be a name on the certificate")) << hint;
  EXPECT_TRUE(contains(hint, "hostaddr")) << hint;
}

TEST(connect_hint, missing_sni_and_access_denied_are_dsql_hints) {
  const std::string sni = connect_hint(no_sni);
  EXPECT_EQ(sni, dsql::hint_for(no_sni));
  EXPECT_TRUE(contains(sni, "set host to the endpoint")) << sni;
  EXPECT_TRUE(contains(sni, "hostaddr")) << sni;

  const std::string denied = connect_hint(access_denied);
  EXPECT_EQ(denied, dsql::hint_for(access_denied));
  EXPECT_TRUE(contains(denied, "expired")) << denied;
  EXPECT_TRUE(contains(denied, "DbConnectAdmin")) << denied;
}

TEST(connect_hint, dsql_connection_limits_are_delegated) {
  // The emulator's texts for DSQL's limits (docs/dsql-emulator.md).
  for (const char* message : {"FATAL:  53300: Unable to accept connection, too many open connections.",
                              "FATAL:  53400: Unable to accept connection, rate exceeded."}) {
    EXPECT_EQ(connect_hint(message), dsql::hint_for(message));
    EXPECT_FALSE(connect_hint(message).empty()) << message;
  }
}

TEST(connect_hint, other_messages_get_none) {
  EXPECT_EQ(connect_hint(no_database), "");
  EXPECT_EQ(connect_hint(""), "");
}

TEST(connect_hint, sni_inside_a_name_is_not_the_dsql_hint) {
  // Found by a new-user trial: "sni" anywhere in the text used to bring the DSQL SNI hint.
  for (const char* message :
       {"connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  3D000: database \"snippets\" does not "
        "exist",
        "connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  28000: role \"unisnic\" does not exist",
        "could not translate host name \"sni.example.com\" to address: Name or service not known",
        "could not translate host name \"my-sni-proxy\" to address: Name or service not known"}) {
    EXPECT_EQ(connect_hint(message), "") << message;
    EXPECT_EQ(dsql::hint_for(message), "") << message;
  }
  // DSQL's own texts still get it, in any case and at the end of the message.
  for (const char* message : {"FATAL:  08006: unable to accept connection, invalid sni",
                              "FATAL:  08006: unable to accept connection, invalid sni.",
                              "FATAL:  08006: Unable to accept connection, SNI was not received"})
    EXPECT_TRUE(contains(connect_hint(message), "set host to the endpoint")) << message;
}

TEST(connect_hint, postgresql_max_connections_is_not_a_dsql_limit) {
  // PostgreSQL 15's texts (53300); the DSQL hint about a 10,000-connection quota does not fit.
  for (const char* message :
       {"connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  53300: sorry, too many clients already",
        "connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  53300: remaining connection slots are "
        "reserved for non-replication superuser connections"}) {
    const std::string hint = connect_hint(message);
    EXPECT_TRUE(contains(hint, "max_connections")) << message << " -> " << hint;
    EXPECT_FALSE(contains(hint, "10,000")) << hint;
  }
}

TEST(connect_hint, a_role_or_database_connection_limit_says_which_limit) {
  // PostgreSQL 15's texts (53300) when ALTER ROLE/DATABASE … CONNECTION LIMIT is reached; the role
  // case as a new-user trial met it through a pool (the database case is the same sentence).
  for (const char* message :
       {"connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  53300: too many connections for role "
        "\"app\"",
        "connection to server at \"127.0.0.1\", port 23121 failed: FATAL:  53300: too many connections for "
        "database \"app\""}) {
    const std::string hint = connect_hint(message);
    EXPECT_TRUE(contains(hint, "CONNECTION LIMIT")) << message << " -> " << hint;
    EXPECT_TRUE(contains(hint, "max_size")) << hint;
    EXPECT_FALSE(contains(hint, "10,000")) << hint;
  }
}

TEST(connect_hint, pgbouncer_refusals_name_the_pooler_and_what_to_change) {
  // PgBouncer 1.18's texts as libpq reports them, met by a new-user trial behind PgBouncer.
  struct refusal {
    const char* message;
    const char* hint_says;
  };
  const std::string at = "connection to server at \"127.0.0.1\", port 16501 failed: ";
  for (const refusal& r : {refusal{"FATAL:  08P01: SASL authentication failed", "auth_file"},
                           refusal{"FATAL:  08P01: unsupported startup parameter: options", "ALTER ROLE"},
                           refusal{"FATAL:  08P01: no more connections allowed (max_client_conn)", "max_client_conn"},
                           refusal{"FATAL:  server login has been failing, try again later (server_login_retry)",
                                   "server_login_retry"}}) {
    const std::string hint = connect_hint(at + r.message);
    EXPECT_TRUE(contains(hint, "PgBouncer")) << r.message << " -> " << hint;
    EXPECT_TRUE(contains(hint, r.hint_says)) << r.message << " -> " << hint;
  }
  // PostgreSQL's own password failure keeps its own hint.
  EXPECT_FALSE(contains(connect_hint(at + "FATAL:  28P01: password authentication failed for user \"app\""),
                        "PgBouncer"));
}

}  // namespace
}  // namespace pqxxpool::test
