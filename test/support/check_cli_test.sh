#!/usr/bin/env bash
# Integration test of `pqxxpool check` against the test cluster and the DSQL emulator.
#
# Usage: check_cli_test.sh PQXXPOOL_BINARY
#
# Needs PQXXPOOL_TEST_DIR (scripts/test.sh exports it with the rest of DIR/env); sources
# "$PQXXPOOL_TEST_DIR/env" for the cluster's and the emulator's settings. Every run of the binary
# gets a clean environment (env -i) with only the variables the case sets, so the caller's PG*
# variables, ~/.pgpass or AWS configuration cannot change the outcome. Sanitizer options pass
# through. Each case checks the exit code, the output, and that no password or token appears in
# stdout or stderr. Prints one line per case; exits 1 if any failed.
set -euo pipefail

BIN="${1:?usage: check_cli_test.sh PQXXPOOL_BINARY}"
[[ -x "$BIN" ]] || {
    echo "check_cli_test.sh: not executable: $BIN" >&2
    exit 1
}
[[ -n "${PQXXPOOL_TEST_DIR:-}" && -f "$PQXXPOOL_TEST_DIR/env" ]] || {
    echo "check_cli_test.sh: PQXXPOOL_TEST_DIR is not set: run through scripts/test.sh, or source the env" \
        "file written by test/support/pgcluster.sh start DIR" >&2
    exit 1
}
# shellcheck source=/dev/null
source "$PQXXPOOL_TEST_DIR/env"

WORK="$(mktemp -d /tmp/pqxxpool-check-test.XXXXXX)"
readonly WORK
trap 'rm -rf -- "$WORK"' EXIT

readonly PW="$PQXXPOOL_TEST_APP_PASSWORD"
readonly PORT="$PQXXPOOL_TEST_PORT"
readonly CA="$PQXXPOOL_TEST_CA"
readonly WRONG_PW="wrong-password-for-check-5e7a1b"

failures=0
case_name=""
case_failed=0

# A loopback port nothing listens on (bound to learn a free one, then closed).
CLOSED_PORT="$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
readonly CLOSED_PORT

# run NAME [VAR=VALUE...] -- [ARGS...]: runs `$BIN ARGS...` with only the given variables (plus
# PATH, HOME and the sanitizers' options); output in $WORK/NAME.{out,err}, exit code in $rc.
run() {
    case_name="$1"
    case_failed=0
    shift
    local vars=(PATH="$PATH" HOME="$WORK" LANG=C)
    local v
    for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS; do
        if [[ -n "${!v:-}" ]]; then
            vars+=("$v=${!v}")
        fi
    done
    while (($# > 0)) && [[ "$1" != -- ]]; do
        vars+=("$1")
        shift
    done
    [[ "${1:-}" == -- ]] && shift
    rc=0
    env -i "${vars[@]}" "$BIN" "$@" >"$WORK/$case_name.out" 2>"$WORK/$case_name.err" </dev/null || rc=$?
}

fail() {
    case_failed=1
    printf '  FAIL %s: %s\n' "$case_name" "$*"
}

expect_rc() {
    [[ "$rc" == "$1" ]] || fail "exit code $rc, expected $1"
}

# expect STREAM REGEX: an extended regular expression that must match a line of out or err.
expect() {
    grep -qE -- "$2" "$WORK/$case_name.$1" || fail "$1 does not match /$2/"
}

# no_secret TEXT...: none of the texts may appear anywhere in stdout or stderr.
no_secret() {
    local s
    for s in "$@"; do
        [[ -n "$s" ]] || continue
        if grep -qF -- "$s" "$WORK/$case_name.out" "$WORK/$case_name.err"; then
            fail "a secret (${#s} characters; not shown) appears in the output"
        fi
    done
}

done_case() {
    if ((case_failed)); then
        failures=$((failures + 1))
        printf 'FAIL %s\n----- stdout\n%s\n----- stderr\n%s\n-----\n' "$case_name" \
            "$(cat "$WORK/$case_name.out")" "$(cat "$WORK/$case_name.err")"
    else
        printf 'ok   %s\n' "$case_name"
    fi
}

url() { # url HOST PORT PASSWORD DB [QUERY]: a postgresql:// URL for the app role
    printf 'postgresql://app:%s@%s:%s/%s?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert=%s%s' \
        "$3" "$1" "$2" "$4" "$CA" "${5:+&$5}"
}

# --- the TLS cluster ------------------------------------------------------------------------------

run success_database_url DATABASE_URL="$(url localhost "$PORT" "$PW" app)" -- check
expect_rc 0
expect out '^target: +DATABASE_URL$'
expect out '^database: +app$'
expect out '^user: +app$'
expect out '^host: +localhost$'
expect out '^address: +127\.0\.0\.1$'
expect out "^port: +$PORT\$"
expect out '^ssl: +on \(TLSv1\.3, [A-Z0-9_-]+\)$'
expect out '^server: +15\.[0-9]+ .*\(150[0-9]{3}\)$'
expect out '^in recovery: +no'
expect out '^ok$'
no_secret "$PW"
done_case

# The tunnel program's environment: the address in PGHOSTADDR, the name in HOSTNAME, no PGHOST.
run success_pg_variables_with_hostname PGHOSTADDR=127.0.0.1 HOSTNAME=localhost PGPORT="$PORT" PGDATABASE=app \
    PGUSER=app PGPASSWORD="$PW" PGSSLMODE=verify-full PGSSLROOTCERT="$CA" -- check
expect_rc 0
expect out '^target: +PG\* variables \(host from HOSTNAME'
expect out '^host: +localhost$'
expect out '^address: +127\.0\.0\.1$'
expect out '^ssl: +on \(TLSv1\.3, '
no_secret "$PW"
done_case

# PGHOST wins over HOSTNAME (a shell's HOSTNAME is the machine's name).
run pghost_wins_over_hostname PGHOST=localhost PGHOSTADDR=127.0.0.1 HOSTNAME=not-the-server.invalid PGPORT="$PORT" \
    PGDATABASE=app PGUSER=app PGPASSWORD="$PW" PGSSLMODE=verify-full PGSSLROOTCERT="$CA" -- check
expect_rc 0
expect out '^target: +PG\* variables$'
expect out '^host: +localhost$'
no_secret "$PW"
done_case

run success_json DATABASE_URL="$(url localhost "$PORT" "$PW" app)" -- check --json
expect_rc 0
if ! /usr/bin/python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
assert j["ok"] is True, j
assert j["database"] == "app" and j["user"] == "app", j
assert j["ssl"]["in_use"] is True and j["ssl"]["protocol"] == "TLSv1.3" and j["ssl"]["cipher"], j
assert j["server_version_num"] >= 150000 and j["in_recovery"] is False, j
' "$WORK/$case_name.out"; then
    fail "JSON output is not as expected"
fi
no_secret "$PW"
done_case

run conninfo_overrides_database_url DATABASE_URL="$(url localhost "$CLOSED_PORT" "$PW" app)" -- check \
    --conninfo "host=localhost hostaddr=127.0.0.1 port=$PORT dbname=app user=app password=$PW sslmode=verify-full sslrootcert=$CA"
expect_rc 0
expect out '^target: +--conninfo$'
no_secret "$PW"
done_case

run connection_refused DATABASE_URL="$(url localhost "$CLOSED_PORT" "$PW" app)" -- check --timeout 10s
expect_rc 1
expect err 'Connection refused'
expect err '^hint: .*is the tunnel up'
no_secret "$PW"
done_case

run wrong_password_in_url DATABASE_URL="$(url localhost "$PORT" "$WRONG_PW" app)" -- check
expect_rc 1
expect err 'SQLSTATE 28P01'
expect err 'password authentication failed for user "app"'
expect err '^hint: .*wrong for this user.*RDS IAM token'
no_secret "$WRONG_PW" "$PW"
done_case

run wrong_password_in_pgpassword PGHOSTADDR=127.0.0.1 HOSTNAME=localhost PGPORT="$PORT" PGDATABASE=app PGUSER=app \
    PGPASSWORD="$WRONG_PW" PGSSLMODE=verify-full PGSSLROOTCERT="$CA" -- check
expect_rc 1
expect err 'password authentication failed'
expect err '^hint: .*wrong for this user'
no_secret "$WRONG_PW" "$PW"
done_case

# verify-full against an IP address: the certificate names localhost and the DSQL cluster only.
run certificate_name_mismatch -- check \
    --conninfo "host=127.0.0.1 port=$PORT dbname=app user=app password=$PW sslmode=verify-full sslrootcert=$CA"
expect_rc 1
expect err 'does not match host name "127\.0\.0\.1"'
expect err '^hint: .*host must be a name on the certificate'
no_secret "$PW"
done_case

run unparsable_conninfo -- check --conninfo "host=localhost port"
expect_rc 2
expect err 'invalid conninfo'
done_case

# --- the DSQL emulator ----------------------------------------------------------------------------

if [[ -z "${PQXXPOOL_DSQL_EMULATOR_PORT:-}" ]]; then
    echo "FAIL dsql: PQXXPOOL_DSQL_EMULATOR_PORT is not set (start test/support/dsql_emulator.sh first)"
    failures=$((failures + 1))
else
    readonly CLUSTER="$PQXXPOOL_DSQL_TEST_CLUSTER"
    readonly EMU="$PQXXPOOL_DSQL_EMULATOR_PORT"
    # token SECRET_KEY: a token from `pqxxpool token` with the emulator's key id (and region from
    # the endpoint), isolated from any AWS configuration on the machine.
    token() {
        env -i PATH="$PATH" HOME="$WORK" AWS_ACCESS_KEY_ID="$PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID" \
            AWS_SECRET_ACCESS_KEY="$1" ${PQXXPOOL_DSQL_TEST_SESSION_TOKEN:+AWS_SESSION_TOKEN="$PQXXPOOL_DSQL_TEST_SESSION_TOKEN"} \
            AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/nonexistent AWS_SHARED_CREDENTIALS_FILE=/nonexistent \
            ${ASAN_OPTIONS:+ASAN_OPTIONS="$ASAN_OPTIONS"} ${LSAN_OPTIONS:+LSAN_OPTIONS="$LSAN_OPTIONS"} \
            ${UBSAN_OPTIONS:+UBSAN_OPTIONS="$UBSAN_OPTIONS"} "$BIN" token --host "$CLUSTER"
    }
    GOOD_TOKEN="$(token "$PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY")"
    BAD_TOKEN="$(token "not-the-emulators-secret-key-0000000000")"
    readonly GOOD_TOKEN BAD_TOKEN
    dsql_vars=(PGPORT="$EMU" PGDATABASE=postgres PGUSER=admin PGSSLROOTCERT="$CA")

    # A tunnel address only: no host name, so no SNI (require: verify-full would stop at the name).
    run dsql_missing_sni PGHOSTADDR=127.0.0.1 "${dsql_vars[@]}" PGSSLMODE=require PGPASSWORD="$GOOD_TOKEN" -- check
    expect_rc 1
    expect err 'sni was not received'
    expect err '^hint: .*set host to the endpoint.*hostaddr'
    no_secret "$GOOD_TOKEN"
    done_case

    run dsql_bad_token PGHOSTADDR=127.0.0.1 HOSTNAME="$CLUSTER" "${dsql_vars[@]}" PGSSLMODE=verify-full \
        PGPASSWORD="$BAD_TOKEN" -- check
    expect_rc 1
    expect err 'access denied'
    expect err '^hint: .*expired'
    no_secret "$BAD_TOKEN" "X-Amz-Signature"
    done_case

    run dsql_success PGHOSTADDR=127.0.0.1 HOSTNAME="$CLUSTER" "${dsql_vars[@]}" PGSSLMODE=verify-full \
        PGPASSWORD="$GOOD_TOKEN" -- check
    expect_rc 0
    expect out '^database: +postgres$'
    expect out '^user: +admin$'
    expect out "^host: +$CLUSTER\$"
    expect out '^address: +127\.0\.0\.1$'
    expect out '^ssl: +on \(TLSv1\.[23], [A-Z0-9_-]+\)$'
    expect out '^server: +15\.'
    no_secret "$GOOD_TOKEN" "X-Amz-Signature"
    done_case
fi

if ((failures > 0)); then
    echo "check_cli_test.sh: $failures case(s) failed"
    exit 1
fi
echo "check_cli_test.sh: all cases passed"
