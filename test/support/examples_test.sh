#!/usr/bin/env bash
# Runs the programs in examples/ as their header comments tell a user to, against the test
# cluster, and checks what each prints: the recipes in the docs are not allowed to rot.
#
# Usage: examples_test.sh EXAMPLES_BINARY_DIR
#
# Needs PQXXPOOL_TEST_DIR (scripts/test.sh exports it with the rest of DIR/env).
#   example_basic    CONNINFO   prints the server's version and the pool's statistics line
#   example_hooks    CONNINFO without its password, EXAMPLE_DB_PASSWORD set: the before_connect
#                    hook supplies the password, after_connect sets application_name; without
#                    EXAMPLE_DB_PASSWORD: exit 1 with the hook's error (after wait_ready's 5 s)
#   example_threads  CONNINFO   8 threads on 2 connections: queries done, no error
#   example_sessions CONNINFO   a statement prepared in after_connect works in every lease; a SET
#                    made in one lease is gone in the next (the reset hook); one connection opened
# No output may contain the password.
set -euo pipefail

DIR="${1:?usage: examples_test.sh EXAMPLES_BINARY_DIR}"
[[ -n "${PQXXPOOL_TEST_DIR:-}" && -f "$PQXXPOOL_TEST_DIR/env" ]] || {
    echo "examples_test.sh: PQXXPOOL_TEST_DIR is not set: run through scripts/test.sh, or source the env" \
        "file written by test/support/pgcluster.sh start DIR" >&2
    exit 1
}
# shellcheck source=/dev/null
source "$PQXXPOOL_TEST_DIR/env"

failures=0
# run NAME EXIT EXPECTED_REGEX... -- COMMAND...: runs COMMAND, shows its output, checks its exit
# code, every regex (grep -E) and the absence of the password.
run() {
    local name="$1" want_rc="$2"
    shift 2
    local patterns=()
    while [[ "$1" != "--" ]]; do
        patterns+=("$1")
        shift
    done
    shift
    local out rc=0
    out="$("$@" 2>&1)" || rc=$?
    echo "--- $name (exit $rc) ---"
    echo "$out"
    if ((rc != want_rc)); then
        echo "FAIL $name: exit $rc, expected $want_rc"
        failures=$((failures + 1))
    fi
    local p
    for p in "${patterns[@]}"; do
        if ! grep -Eq -- "$p" <<<"$out"; then
            echo "FAIL $name: no line matches /$p/"
            failures=$((failures + 1))
        fi
    done
    if grep -Fq -- "$PQXXPOOL_TEST_APP_PASSWORD" <<<"$out"; then
        echo "FAIL $name: the password appears in the output"
        failures=$((failures + 1))
    fi
}

conninfo="$PQXXPOOL_TEST_CONNINFO"
without_password="${conninfo/password=$PQXXPOOL_TEST_APP_PASSWORD/}"
[[ "$without_password" != "$conninfo" ]] || {
    echo "examples_test.sh: the test conninfo holds no password=… to take out" >&2
    exit 1
}

run example_basic 0 '^PostgreSQL 15' '^pool: total [0-9]+, .*acquires 1,' -- \
    "$DIR/example_basic" "$conninfo"
run example_hooks 0 '^application_name = pqxxpool-example-hooks$' -- \
    env EXAMPLE_DB_PASSWORD="$PQXXPOOL_TEST_APP_PASSWORD" "$DIR/example_hooks" "$without_password"
run example_hooks_without_password 1 '^error: before_connect hook failed: EXAMPLE_DB_PASSWORD is not set$' -- \
    env -u EXAMPLE_DB_PASSWORD "$DIR/example_hooks" "$without_password"
run example_threads 0 '^[1-9][0-9]* queries done' -- \
    "$DIR/example_threads" "$conninfo"
run example_sessions 0 '^add\(2, 3\) = 5$' "^statement_timeout in the lease that set it = 42s$" \
    '^statement_timeout in the next lease = 0$' '^add\(40, 2\) = 42$' '^connections opened = 1$' -- \
    "$DIR/example_sessions" "$conninfo"

if ((failures > 0)); then
    echo "examples_test.sh: $failures check(s) failed"
    exit 1
fi
echo "examples_test.sh: every example ran as its comment says"
