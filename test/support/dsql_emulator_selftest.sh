#!/usr/bin/env bash
# Self-test of the DSQL emulator against a running pgcluster.sh cluster and emulator.
#
# Usage: dsql_emulator_selftest.sh DIR
#
# DIR: a cluster started with `pgcluster.sh start DIR` and an emulator with
# `dsql_emulator.sh start DIR` (its port and test credentials are read from DIR/env). The test
# starts further emulator instances on the same DIR for the checks that need other options
# (--clock-offset, --max-age, limits, a session token) and stops them when it ends.
# Uses psql (libpq) where a real client's view matters, and dsql_probe.py where the exact
# SQLSTATE, direct TLS or an unsolicited server message must be seen.
# Prints one line per check and `N passed, M failed`; exits 1 if any check failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
PYTHON="${PQXXPOOL_PYTHON:-/usr/bin/python3}"
readonly PYTHON
readonly PSQL=/usr/lib/postgresql/15/bin/psql

[[ $# -eq 1 && "$1" == /* ]] || {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}
DIR="$(realpath -m -- "$1")"
readonly DIR
[[ -f "$DIR/env" ]] || {
    echo "selftest: no $DIR/env" >&2
    exit 2
}
# shellcheck disable=SC1091  # generated at run time
source "$DIR/env"
[[ -n "${PQXXPOOL_DSQL_EMULATOR_PORT:-}" ]] || {
    echo "selftest: no PQXXPOOL_DSQL_EMULATOR_PORT in $DIR/env (start dsql_emulator.sh first)" >&2
    exit 2
}
# Nothing from the caller's libpq environment may change what psql does here.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE PGSERVICE PGSERVICEFILE \
    PGSSLMODE PGSSLROOTCERT PGSSLNEGOTIATION PGSSLSNI PGOPTIONS PGAPPNAME PGCONNECT_TIMEOUT \
    PGREQUIRESSL PGSSLCERT PGSSLKEY PGGSSENCMODE
export PGCONNECT_TIMEOUT=10

readonly CLUSTER="${PQXXPOOL_DSQL_TEST_CLUSTER:-testcluster.dsql.us-east-1.on.aws}"
readonly PORT="$PQXXPOOL_DSQL_EMULATOR_PORT"
readonly CA="$DIR/ca.crt"
readonly ROLE=dsql_selftest_user
readonly SECRET="$PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY"

passed=0
failed=0
# Emulator instances this test starts (names fixed here: start_instance runs in a subshell).
readonly INSTANCES=(clock maxage grace maxconn rate session)
TMP="$(mktemp -d)"
readonly TMP

cleanup() {
    local name
    for name in "${INSTANCES[@]}"; do
        PQXXPOOL_DSQL_EMULATOR_INSTANCE="$name" "$HERE/dsql_emulator.sh" stop "$DIR" || true
    done
    rm -rf -- "$TMP"
}
trap cleanup EXIT

pass() {
    passed=$((passed + 1))
    printf 'PASS  %s\n' "$1"
}

fail() {
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$1"
    shift
    if (($#)); then
        printf '%s\n' "$@" | sed 's/^/      | /'
    fi
}

# check NAME COMMAND...: pass if COMMAND succeeds.
check() {
    local name="$1"
    shift
    if "$@"; then
        pass "$name"
    else
        fail "$name"
    fi
}

# Superuser psql over the Unix socket (trust), for setup and inspection.
admin_sql() {
    "$PSQL" -X -At -v ON_ERROR_STOP=1 -h "$DIR" -p "$PQXXPOOL_TEST_PORT" -U postgres -d postgres -c "$1"
}

token() { # token USER [dsql_token.py options...]
    local user="$1"
    shift
    "$PYTHON" "$HERE/dsql_token.py" --host "$CLUSTER" --user "$user" "$@"
}

conninfo() { # conninfo PORT USER [HOST-PART]
    local host="${3:-host=$CLUSTER hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=$CA}"
    printf '%s port=%s user=%s dbname=%s' "$host" "$1" "$2" "$DB"
}

# psql_expect NAME WANT(ok|fail) PATTERN PASSWORD CONNINFO SQL
# ok: exit 0 and output equal to PATTERN; fail: exit != 0 and output containing PATTERN.
psql_expect() {
    local name="$1" want="$2" pattern="$3" pw="$4" ci="$5" sql="$6" out rc=0
    out="$(PGPASSWORD="$pw" timeout 60 "$PSQL" -X -At -v ON_ERROR_STOP=1 "$ci" -c "$sql" 2>&1)" || rc=$?
    if [[ "$want" == ok && $rc -eq 0 && "$out" == "$pattern" ]]; then
        pass "$name"
    elif [[ "$want" == fail && $rc -ne 0 && "$out" == *"$pattern"* ]]; then
        pass "$name"
    else
        fail "$name" "expected $want with '$pattern'; psql exit $rc, output:" "$out"
    fi
}

# probe_expect NAME PATTERN [dsql_probe.py args...]   (password from $PROBE_PW)
probe_expect() {
    local name="$1" pattern="$2" out rc=0
    shift 2
    out="$(PGPASSWORD="${PROBE_PW:-}" timeout 60 "$PYTHON" "$HERE/dsql_probe.py" --ca "$CA" \
        --sni "$CLUSTER" --database "$DB" "$@" 2>&1)" || rc=$?
    if [[ $rc -eq 0 && "$out" == *"$pattern"* ]]; then
        pass "$name"
    else
        fail "$name" "expected '$pattern'; probe exit $rc, output:" "$out"
    fi
}

start_instance() { # start_instance NAME [emulator args...]; prints the port
    local name="$1"
    shift
    rm -f -- "$DIR/emulator-$name.log"
    PQXXPOOL_DSQL_EMULATOR_INSTANCE="$name" "$HERE/dsql_emulator.sh" start "$DIR" "$@" 2>"$TMP/start-$name.err" || {
        cat "$TMP/start-$name.err" >&2
        echo "selftest: could not start emulator instance $name" >&2
        exit 1
    }
}

# log_has INSTANCE PATTERN: PATTERN in what the instance logged during this run.
log_has() {
    local file="$DIR/emulator${1:+-$1}.log" skip=0
    [[ -n "$1" ]] || skip="$MAIN_LOG_LINES"
    tail -n "+$((skip + 1))" "$file" | grep -q -E -- "$2"
}

# DSQL has database `postgres`; the throwaway cluster has it too (initdb), and `app`.
if [[ "$(admin_sql "select count(*) from pg_database where datname = 'postgres'")" == 1 ]]; then
    DB=postgres
else
    DB=app
fi
readonly DB
admin_sql "select count(*) from pg_roles where rolname = 'admin'" | grep -qx 1 ||
    fail "cluster has role admin"
admin_sql "SET client_min_messages = warning; DROP ROLE IF EXISTS $ROLE; CREATE ROLE $ROLE LOGIN" >/dev/null

MAIN_LOG_LINES="$(wc -l <"$DIR/emulator.log")"
readonly MAIN_LOG_LINES
ADMIN_TOKEN="$(token admin)"
USER_TOKEN="$(token "$ROLE")"
echo "selftest: cluster port $PQXXPOOL_TEST_PORT, emulator port $PORT, database $DB"

# Instances with other options (started first so they are warm; each adds ~0.5 s).
# Leftovers of an interrupted run go first.
for name in "${INSTANCES[@]}"; do
    PQXXPOOL_DSQL_EMULATOR_INSTANCE="$name" "$HERE/dsql_emulator.sh" stop "$DIR"
done
CLOCK_PORT="$(start_instance clock --clock-offset 10)"
MAXAGE_PORT="$(start_instance maxage --max-age 2 --max-age-grace 30)"
GRACE_PORT="$(start_instance grace --max-age 1 --max-age-grace 2)"
LIMIT_PORT="$(start_instance maxconn --max-connections 1)"
RATE_PORT="$(start_instance rate --max-connect-rate 0.2 --max-connect-burst 1)"
SESSION_PORT="$(PQXXPOOL_DSQL_TEST_SESSION_TOKEN=selftest-fake-session-token start_instance session)"

# --- 1. valid admin token -> a normal login -------------------------------------------------
psql_expect "1 admin token, verify-full via hostaddr: current_user is admin" ok admin \
    "$ADMIN_TOKEN" "$(conninfo "$PORT" admin)" "SELECT current_user"
psql_expect "1b session works after login (two statements)" ok $'2\nadmin' \
    "$ADMIN_TOKEN" "$(conninfo "$PORT" admin)" "SELECT 1+1; SELECT session_user"
PROBE_PW="$ADMIN_TOKEN" probe_expect "1c wire: R 3 then R 0, ReadyForQuery, query" \
    $'tls TLSv1.3 alpn=None\nauth 3\nauth 0\nlogin ok\nrow admin' --port "$PORT" --query 'SELECT current_user'

# --- 2. wrong secret -> access denied ----------------------------------------------------------
BAD_TOKEN="$(token admin --secret-access-key wrong-secret)"
psql_expect "2 token signed with a wrong secret: access denied" fail \
    "FATAL:  unable to accept connection, access denied" "$BAD_TOKEN" "$(conninfo "$PORT" admin)" "SELECT 1"
PROBE_PW="$BAD_TOKEN" probe_expect "2b wire: FATAL 28P01 after the password" \
    $'auth 3\nerror FATAL 28P01 unable to accept connection, access denied' --port "$PORT"
check "2c log names the failed check" log_has "" "access denied for user 'admin': signature mismatch"

# --- 3. expired token (emulator clock +10 s) -------------------------------------------------
psql_expect "3 clock +10 s: a 900 s token still works" ok admin \
    "$ADMIN_TOKEN" "$(conninfo "$CLOCK_PORT" admin)" "SELECT current_user"
psql_expect "3b clock +10 s: a 1 s token has expired: access denied" fail \
    "unable to accept connection, access denied" "$(token admin --expires 1)" "$(conninfo "$CLOCK_PORT" admin)" "SELECT 1"
check "3c log says: token expired" log_has clock "access denied for user 'admin': token expired"

# --- 4. no SNI / wrong SNI ------------------------------------------------------------------
psql_expect "4 host=127.0.0.1 (no SNI), sslmode=require: sni was not received" fail \
    "FATAL:  unable to accept connection, sni was not received" "$ADMIN_TOKEN" \
    "$(conninfo "$PORT" admin "host=127.0.0.1 sslmode=require")" "SELECT 1"
PROBE_PW="$ADMIN_TOKEN" probe_expect "4b wire: FATAL 08006, no password asked" \
    $'tls TLSv1.3 alpn=None\nerror FATAL 08006 unable to accept connection, sni was not received' --port "$PORT" --no-sni
psql_expect "4c host=localhost (SNI localhost, cert valid): invalid sni" fail \
    "FATAL:  unable to accept connection, invalid sni" "$ADMIN_TOKEN" \
    "$(conninfo "$PORT" admin "host=localhost hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=$CA")" "SELECT 1"
psql_expect "4d sslsni=0: sni was not received" fail "sni was not received" "$ADMIN_TOKEN" \
    "$(conninfo "$PORT" admin "host=$CLUSTER hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=$CA sslsni=0")" "SELECT 1"
psql_expect "4e verify-full against host=127.0.0.1 fails in the client (cert has no IP)" fail \
    "does not match host name" "$ADMIN_TOKEN" \
    "$(conninfo "$PORT" admin "host=127.0.0.1 sslmode=verify-full sslrootcert=$CA")" "SELECT 1"

# --- 5. maximum connection age, idle ---------------------------------------------------------
out="$(printf 'SELECT 1;\n\\! sleep 4\nSELECT current_user;\n' |
    PGPASSWORD="$ADMIN_TOKEN" timeout 60 "$PSQL" -X -At -v ON_ERROR_STOP=1 "$(conninfo "$MAXAGE_PORT" admin)" 2>&1)" && rc=0 || rc=$?
if [[ $rc -ne 0 && "$out" == 1$'\n'*"FATAL:  terminating connection: maximum connection age exceeded"* ]]; then
    pass "5 --max-age 2: psql idle for 4 s finds its session closed (FATAL 57P01 text)"
else
    fail "5 --max-age 2: psql idle for 4 s finds its session closed" "psql exit $rc, output:" "$out"
fi
# The probe's idle time is the age less its login and query (1.9 s when those took 0.1 s on a
# busy machine), so 5b checks the message only; 5c checks the age from the emulator's log, from
# 2.0 s (never early) up to 2.9 s (its timer may run late on a busy machine).
PROBE_PW="$ADMIN_TOKEN" probe_expect "5b wire: unsolicited FATAL 57P01 while idle, then close" \
    "error FATAL 57P01 terminating connection: maximum connection age exceeded (after " \
    --port "$MAXAGE_PORT" --query 'SELECT 1' --idle 8
check "5c log: closed while idle at age 2.0-2.9 s" \
    log_has maxage "closed: max age exceeded while idle \(age 2\.[0-9]s"

# --- 6. maximum connection age, busy: forced after the grace period ---------------------------
start_s=$SECONDS
psql_expect "6 --max-age 1 --max-age-grace 2: pg_sleep(30) cut off with FATAL" fail \
    "FATAL:  terminating connection: maximum connection age exceeded" "$ADMIN_TOKEN" \
    "$(conninfo "$GRACE_PORT" admin)" "SELECT pg_sleep(30)"
took=$((SECONDS - start_s))
check "6b ...within ${took} s (limit 10)" test "$took" -le 10
sleep 0.5
left="$(admin_sql "select count(*) from pg_stat_activity where query = 'SELECT pg_sleep(30)'")"
check "6c the backend query was cancelled (left: $left)" test "$left" = 0

# --- 7. plaintext -----------------------------------------------------------------------------
psql_expect "7 sslmode=disable: TLS is required" fail "FATAL:  unable to accept connection, TLS is required" \
    "$ADMIN_TOKEN" "$(conninfo "$PORT" admin "host=$CLUSTER hostaddr=127.0.0.1 sslmode=disable")" "SELECT 1"
PROBE_PW="$ADMIN_TOKEN" probe_expect "7b wire: FATAL 08P01" \
    "error FATAL 08P01 unable to accept connection, TLS is required" --port "$PORT" --plaintext
psql_expect "7c sslmode=allow retries with TLS and logs in" ok admin "$ADMIN_TOKEN" \
    "$(conninfo "$PORT" admin "host=$CLUSTER hostaddr=127.0.0.1 sslmode=allow")" "SELECT current_user"

# --- 8. users and actions -----------------------------------------------------------------------
psql_expect "8 non-admin user with a DbConnect token" ok "$ROLE" "$USER_TOKEN" \
    "$(conninfo "$PORT" "$ROLE")" "SELECT current_user"
psql_expect "8b non-admin user with a DbConnectAdmin token: access denied" fail "access denied" \
    "$(token "$ROLE" --action DbConnectAdmin)" "$(conninfo "$PORT" "$ROLE")" "SELECT 1"
psql_expect "8c admin with a DbConnect token: access denied" fail "access denied" \
    "$(token admin --action DbConnect)" "$(conninfo "$PORT" admin)" "SELECT 1"
psql_expect "8d user's token used by admin: access denied" fail "access denied" \
    "$USER_TOKEN" "$(conninfo "$PORT" admin)" "SELECT 1"
psql_expect "8e unknown role, valid token: the backend's own FATAL is relayed" fail \
    'role "no_such_role_x" does not exist' "$(token no_such_role_x)" "$(conninfo "$PORT" no_such_role_x)" "SELECT 1"

# --- 9. token bound to another host / region / key --------------------------------------------
psql_expect "9 token for another cluster host: access denied" fail "access denied" \
    "$("$PYTHON" "$HERE/dsql_token.py" --host other.dsql.us-east-1.on.aws --user admin)" \
    "$(conninfo "$PORT" admin)" "SELECT 1"
psql_expect "9b token scoped to another region: access denied" fail "access denied" \
    "$(token admin --region us-west-2)" "$(conninfo "$PORT" admin)" "SELECT 1"
psql_expect "9c token from another access key id: access denied" fail "access denied" \
    "$(token admin --access-key-id AKIDEXAMPLEOTHER0000)" "$(conninfo "$PORT" admin)" "SELECT 1"
psql_expect "9d no password at all: libpq gives up" fail "no password supplied" \
    "" "$(conninfo "$PORT" admin)" "SELECT 1"

# --- 10. direct TLS (libpq 17 sslnegotiation=direct) --------------------------------------------
PROBE_PW="$ADMIN_TOKEN" probe_expect "10 direct TLS with ALPN postgresql: login" \
    $'tls TLSv1.3 alpn=postgresql\nauth 3\nauth 0\nlogin ok\nrow admin' --port "$PORT" --direct --query 'SELECT current_user'
PROBE_PW="$ADMIN_TOKEN" probe_expect "10b direct TLS without ALPN: FATAL 08P01" \
    "error FATAL 08P01 received direct SSL connection request without ALPN" --port "$PORT" --direct --no-alpn

# --- 11. --max-connections --------------------------------------------------------------------
PGPASSWORD="$ADMIN_TOKEN" "$PYTHON" "$HERE/dsql_probe.py" --ca "$CA" --sni "$CLUSTER" --database "$DB" \
    --port "$LIMIT_PORT" --idle 3 >"$TMP/holder.out" 2>&1 &
holder=$!
for _ in $(seq 50); do grep -q "login ok" "$TMP/holder.out" && break; sleep 0.1; done
psql_expect "11 --max-connections 1, one open: too many open connections" fail \
    "FATAL:  Unable to accept connection, too many open connections." "$ADMIN_TOKEN" \
    "$(conninfo "$LIMIT_PORT" admin)" "SELECT 1"
PROBE_PW="$ADMIN_TOKEN" probe_expect "11b wire: FATAL 53300" \
    "error FATAL 53300 Unable to accept connection, too many open connections." --port "$LIMIT_PORT"
wait "$holder" || true
psql_expect "11c after it closed: accepted again" ok admin "$ADMIN_TOKEN" \
    "$(conninfo "$LIMIT_PORT" admin)" "SELECT current_user"

# --- 12. --max-connect-rate -------------------------------------------------------------------
psql_expect "12 --max-connect-rate 0.2 burst 1: first connection" ok admin "$ADMIN_TOKEN" \
    "$(conninfo "$RATE_PORT" admin)" "SELECT current_user"
PROBE_PW="$ADMIN_TOKEN" probe_expect "12b second at once: FATAL 53400 rate exceeded" \
    "error FATAL 53400 Unable to accept connection, rate exceeded." --port "$RATE_PORT"

# --- 13. session tokens ---------------------------------------------------------------------
psql_expect "13 emulator with a session token: token carrying it" ok admin \
    "$(token admin --session-token selftest-fake-session-token)" "$(conninfo "$SESSION_PORT" admin)" "SELECT current_user"
psql_expect "13b ...token without it: access denied" fail "access denied" \
    "$ADMIN_TOKEN" "$(conninfo "$SESSION_PORT" admin)" "SELECT 1"
psql_expect "13c ...token with another one: access denied" fail "access denied" \
    "$(token admin --session-token other)" "$(conninfo "$SESSION_PORT" admin)" "SELECT 1"

# --- 14. shutdown -----------------------------------------------------------------------------
PGPASSWORD="$ADMIN_TOKEN" "$PYTHON" "$HERE/dsql_probe.py" --ca "$CA" --sni "$CLUSTER" --database "$DB" \
    --port "$CLOCK_PORT" --idle 10 >"$TMP/shutdown.out" 2>&1 &
victim=$!
for _ in $(seq 50); do grep -q "login ok" "$TMP/shutdown.out" && break; sleep 0.1; done
PQXXPOOL_DSQL_EMULATOR_INSTANCE=clock "$HERE/dsql_emulator.sh" stop "$DIR"
wait "$victim" || true
if grep -q "error FATAL 57P01 terminating connection due to administrator command" "$TMP/shutdown.out" &&
    log_has clock "stopped$"; then
    pass "14 SIGTERM: open session gets FATAL 57P01, emulator stops"
else
    fail "14 SIGTERM: open session gets FATAL 57P01, emulator stops" "$(cat "$TMP/shutdown.out")"
fi

# --- 15. logs carry no secrets ----------------------------------------------------------------
sig="${ADMIN_TOKEN##*X-Amz-Signature=}"
if grep -q -F -e "$SECRET" -e "$sig" -e "X-Amz-Signature" -e "selftest-fake-session-token" \
    "$DIR"/emulator*.log; then
    fail "15 emulator logs contain a secret, token or signature"
else
    pass "15 emulator logs contain no secret, token or signature"
fi

admin_sql "DROP ROLE IF EXISTS $ROLE" >/dev/null
echo "selftest: $passed passed, $failed failed"
((failed == 0))
