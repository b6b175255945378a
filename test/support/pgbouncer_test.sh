#!/usr/bin/env bash
# Runs the PgBouncer integration tests: starts a throwaway PgBouncer (Debian's `pgbouncer`) in
# transaction mode in front of the test cluster, runs TEST_BINARY against it, stops it.
#
# Usage: pgbouncer_test.sh TEST_BINARY [GTEST_ARGS...]
#
# Needs PQXXPOOL_TEST_DIR (scripts/test.sh exports it with the rest of DIR/env). PgBouncer:
#   - listens on a free loopback port with TLS required from its clients (the cluster's own
#     certificate, so clients use sslmode=verify-full with host=localhost), SCRAM against an
#     auth_file holding the app role's password;
#   - reaches PostgreSQL over the cluster's Unix socket (trusted there);
#   - pool_mode transaction, one server connection (default_pool_size 1) and query_wait_timeout
#     2 s, so that a test can make PgBouncer end a waiting client.
# The binary gets PQXXPOOL_TEST_PGBOUNCER_CONNINFO. PgBouncer refuses to run as root: as root it
# runs as the postgres user, like the cluster. Its log is printed when the tests fail.
set -euo pipefail

BIN="${1:?usage: pgbouncer_test.sh TEST_BINARY [GTEST_ARGS...]}"
shift
[[ -x "$BIN" ]] || {
    echo "pgbouncer_test.sh: not executable: $BIN" >&2
    exit 1
}
[[ -n "${PQXXPOOL_TEST_DIR:-}" && -f "$PQXXPOOL_TEST_DIR/env" ]] || {
    echo "pgbouncer_test.sh: PQXXPOOL_TEST_DIR is not set: run through scripts/test.sh, or source the env" \
        "file written by test/support/pgcluster.sh start DIR" >&2
    exit 1
}
PGBOUNCER="$(command -v pgbouncer || echo /usr/sbin/pgbouncer)"
[[ -x "$PGBOUNCER" ]] || {
    echo "pgbouncer_test.sh: pgbouncer not found (apt-get install -y pgbouncer; scripts/deps.sh installs it)" >&2
    exit 1
}
# shellcheck source=/dev/null
source "$PQXXPOOL_TEST_DIR/env"

WORK="$(mktemp -d /tmp/pqxxpool-pgbouncer.XXXXXX)"
readonly WORK
as_owner=()
if [[ "$(id -u)" -eq 0 ]]; then
    as_owner=(runuser -u postgres --)
fi

stop_bouncer() {
    local pid
    pid="$(head -n 1 "$WORK/pgbouncer.pid" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == pgbouncer ]]; then
        kill -INT "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}
trap 'stop_bouncer; rm -rf -- "$WORK"' EXIT

PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cp -- "$PQXXPOOL_TEST_DIR/server.crt" "$PQXXPOOL_TEST_DIR/server.key" "$WORK/"
# Plain-text password in the auth_file: PgBouncer runs SCRAM with clients from it.
printf '"app" "%s"\n' "$PQXXPOOL_TEST_APP_PASSWORD" >"$WORK/userlist.txt"
cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
app = host=$PQXXPOOL_TEST_DIR port=$PQXXPOOL_TEST_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 50
query_wait_timeout = 2
client_tls_sslmode = require
client_tls_cert_file = $WORK/server.crt
client_tls_key_file = $WORK/server.key
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
EOF
chmod 0600 "$WORK/userlist.txt" "$WORK/server.key"
if ((${#as_owner[@]})); then
    chown -R postgres:postgres "$WORK"
fi

"${as_owner[@]}" "$PGBOUNCER" -d "$WORK/pgbouncer.ini" >"$WORK/start.out" 2>&1 || {
    echo "pgbouncer_test.sh: pgbouncer did not start:" >&2
    cat "$WORK/start.out" "$WORK/pgbouncer.log" >&2 2>/dev/null || true
    exit 1
}
# Wait until it accepts TCP connections (a daemonised pgbouncer listens before it returns, but
# do not count on it).
for attempt in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        break
    fi
    ((attempt < 100)) || {
        echo "pgbouncer_test.sh: pgbouncer does not listen on 127.0.0.1:$PORT" >&2
        cat "$WORK/pgbouncer.log" >&2 || true
        exit 1
    }
    sleep 0.1
done

export PQXXPOOL_TEST_PGBOUNCER_CONNINFO="host=localhost hostaddr=127.0.0.1 port=$PORT dbname=app user=app password=$PQXXPOOL_TEST_APP_PASSWORD sslmode=verify-full sslrootcert=$PQXXPOOL_TEST_CA"
rc=0
"$BIN" "$@" || rc=$?
if ((rc != 0)); then
    echo "----- pgbouncer log -----"
    cat "$WORK/pgbouncer.log" || true
fi
exit "$rc"
