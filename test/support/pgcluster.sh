#!/usr/bin/env bash
# Throwaway PostgreSQL 15 cluster on loopback with real TLS, for pqxxpool tests.
#
# Usage:
#   pgcluster.sh start   DIR   initialise + start a cluster in DIR, write DIR/env
#   pgcluster.sh stop    DIR   stop the server (if running) and remove DIR
#   pgcluster.sh restart DIR   pg_ctl restart -m fast -w (starts the server if it is down)
#   pgcluster.sh env     DIR   print DIR/env
#   pgcluster.sh down    DIR   stop the server but keep DIR (outage tests)
#   pgcluster.sh up      DIR   start a server previously stopped with `down`
#   pgcluster.sh status  DIR   print running/stopped; exit 0 if running, 3 if not
#
# Environment: PQXXPOOL_TEST_CLUSTER_PORT=N forces the TCP port (default: a
# random free port in 15432-29999, below the kernel's ephemeral port range).
# PQXXPOOL_TEST_CLUSTER_PLAIN_TCP=1 (benchmarks only; default 0) also accepts
# TCP without TLS on 127.0.0.1 and writes PQXXPOOL_TEST_PLAIN_CONNINFO
# (sslmode=disable) to DIR/env; tests keep TLS mandatory.
#
# DIR is normally created by the caller with `mktemp -d /tmp/pqxxpool-test.XXXXXX`;
# it must be absolute, empty (or absent) at `start`, outside root's home, and
# contain only [A-Za-z0-9._/-] (it goes unquoted into conninfo strings).
#
# Layout of DIR (everything owned by the `postgres` OS user when run as root):
#   .pqxxpool-pgcluster  marker; `stop` refuses to delete a DIR without it
#   data/                PGDATA (0700)
#   postgres.log         server log
#   ca.crt ca.key        throwaway CA (EC P-256, valid 2 days)
#   server.crt server.key  server cert: SAN = DNS:localhost, DNS:testcluster.dsql.us-east-1.on.aws
#   env                  `export NAME='value'` lines for tests to source
#   .s.PGSQL.<port>      unix socket
set -euo pipefail

readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly MARKER_NAME=.pqxxpool-pgcluster
readonly MARKER_TEXT='pqxxpool throwaway test cluster'
readonly SERVER_DNS_NAMES=(localhost testcluster.dsql.us-east-1.on.aws)
readonly PG_TIMEOUT=60

SCRIPT_PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")"
readonly SCRIPT_PATH

die() {
    printf 'pgcluster.sh: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'pgcluster.sh: %s\n' "$*" >&2
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SCRIPT_PATH" >&2
    exit 2
}

# Whether PQXXPOOL_TEST_CLUSTER_PLAIN_TCP asks for plain TCP next to TLS (0, 1 or unset).
plain_tcp() {
    case "${PQXXPOOL_TEST_CLUSTER_PLAIN_TCP:-0}" in
        0) return 1 ;;
        1) return 0 ;;
        *) die "PQXXPOOL_TEST_CLUSTER_PLAIN_TCP must be 0 or 1, not '${PQXXPOOL_TEST_CLUSTER_PLAIN_TCP}'" ;;
    esac
}

is_root() {
    [[ "$(id -u)" -eq 0 ]]
}

# Run a command as the postgres OS user when we are root, as ourselves otherwise.
as_pg() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Canonicalise and sanity-check DIR. Sets the global DIR.
resolve_dir() {
    local raw="$1"
    [[ -n "$raw" ]] || die "DIR must not be empty"
    [[ "$raw" == /* ]] || die "DIR must be an absolute path: $raw"
    DIR="$(realpath -m -- "$raw")"
    [[ "$DIR" =~ ^/[A-Za-z0-9._/-]+$ ]] ||
        die "DIR may only contain [A-Za-z0-9._/-] (it is used unquoted in conninfo): $DIR"
    case "$DIR" in
        / | /tmp | /var | /var/tmp | /usr | /usr/* | /etc | /etc/* | /bin | /bin/* | /sbin | /sbin/* | /lib | /lib/* | /boot | /boot/* | /proc | /proc/* | /sys | /sys/* | /dev | /dev/*)
            die "refusing to use system directory as DIR: $DIR"
            ;;
    esac
    local root_home
    root_home="$(getent passwd root | cut -d: -f6)"
    root_home="${root_home:-/root}"
    if [[ "$DIR" == "$root_home" || "$DIR" == "$root_home"/* ]]; then
        die "DIR must be outside root's home ($root_home) so postgres can reach it: $DIR"
    fi
    # Unix socket paths ("$DIR/.s.PGSQL.<port>.lock") are limited to 107 bytes.
    if ((${#DIR} + 21 > 107)); then
        die "DIR is too long for a unix socket path: $DIR"
    fi
    DATA="$DIR/data"
    LOGFILE="$DIR/postgres.log"
    MARKER="$DIR/$MARKER_NAME"
}

is_ours() {
    [[ -f "$MARKER" ]] && [[ "$(head -n 1 "$MARKER" 2>/dev/null)" == "$MARKER_TEXT" ]]
}

require_ours() {
    [[ -d "$DIR" ]] || die "no such directory: $DIR"
    is_ours || die "$DIR does not look like a pgcluster.sh directory (no $MARKER_NAME marker)"
}

server_running() {
    [[ -f "$DATA/postmaster.pid" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

log_tail() {
    if [[ -f "$LOGFILE" ]]; then
        printf -- '----- tail of %s -----\n' "$LOGFILE" >&2
        tail -n 40 "$LOGFILE" >&2 || true
        printf -- '----- end of log -----\n' >&2
    fi
}

port_is_free() {
    local port="$1"
    python3 - "$port" <<'EOF' >/dev/null 2>&1
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

# Pick a free TCP port on 127.0.0.1 below the kernel's ephemeral range (so an
# outgoing connection cannot grab it between our check and postgres' bind),
# starting at a random offset so that concurrent clusters rarely collide.
pick_port() {
    local lo=15432 hi=29999 eph_lo start port i
    eph_lo="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    if ((eph_lo <= hi)); then
        lo=40000
        hi=65000
    fi
    start=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
    for ((i = 0; i <= hi - lo; i++)); do
        port=$((lo + (start - lo + i) % (hi - lo + 1)))
        ((port == 5432)) && continue
        if port_is_free "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    return 1
}

make_certs() {
    local tmpd="$1"
    local san="" n
    for n in "${SERVER_DNS_NAMES[@]}"; do
        san+="${san:+,}DNS:$n"
    done
    openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/ca.key" 2>/dev/null
    openssl req -x509 -new -sha256 -key "$DIR/ca.key" -days 2 \
        -subj "/O=pqxxpool tests/CN=pqxxpool throwaway test CA" \
        -addext 'basicConstraints=critical,CA:TRUE' \
        -addext 'keyUsage=critical,keyCertSign,cRLSign' \
        -addext 'subjectKeyIdentifier=hash' \
        -out "$DIR/ca.crt" 2>/dev/null
    openssl ecparam -name prime256v1 -genkey -noout -out "$DIR/server.key" 2>/dev/null
    openssl req -new -sha256 -key "$DIR/server.key" \
        -subj "/O=pqxxpool tests/CN=localhost" -out "$tmpd/server.csr" 2>/dev/null
    cat >"$tmpd/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
subjectAltName=$san
EOF
    openssl x509 -req -sha256 -in "$tmpd/server.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" \
        -CAcreateserial -CAserial "$tmpd/ca.srl" -days 2 -extfile "$tmpd/server.ext" \
        -out "$DIR/server.crt" 2>/dev/null
    openssl verify -CAfile "$DIR/ca.crt" "$DIR/server.crt" >/dev/null ||
        die "generated server certificate does not verify against the CA"
    chmod 0600 "$DIR/ca.key" "$DIR/server.key"
    chmod 0644 "$DIR/ca.crt" "$DIR/server.crt"
}

write_conf() {
    local port="$1"
    # Written as ourselves, then handed to postgres (see chown in cmd_start).
    cat >"$DATA/pqxxpool.conf" <<EOF
# Generated by pgcluster.sh -- throwaway test cluster, durability disabled.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
ssl = on
ssl_cert_file = '$DIR/server.crt'
ssl_key_file = '$DIR/server.key'
ssl_ca_file = '$DIR/ca.crt'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if is_root; then
        chown postgres:postgres "$DATA/pqxxpool.conf"
    fi
}

write_hba() {
    cat >"$DATA/pg_hba.conf" <<'EOF'
# Generated by pgcluster.sh: TLS is mandatory for TCP, no plain `host` lines
# (unless PQXXPOOL_TEST_CLUSTER_PLAIN_TCP=1 added one below, for benchmarks).
# TYPE   DATABASE  USER  ADDRESS        METHOD
local    all       all                  trust
hostssl  all       all   127.0.0.1/32   scram-sha-256
hostssl  all       all   ::1/128        scram-sha-256
EOF
    if plain_tcp; then
        printf 'host     all       all   127.0.0.1/32   scram-sha-256\n' >>"$DATA/pg_hba.conf"
    fi
    if is_root; then
        chown postgres:postgres "$DATA/pg_hba.conf"
    fi
    chmod 0600 "$DATA/pg_hba.conf"
}

pg_start() {
    as_pg "$PG_BIN/pg_ctl" start -D "$DATA" -l "$LOGFILE" -w -t "$PG_TIMEOUT" -s >/dev/null
}

pg_stop() {
    local mode="${1:-fast}"
    as_pg "$PG_BIN/pg_ctl" stop -D "$DATA" -m "$mode" -w -t "$PG_TIMEOUT" -s >/dev/null
}

psql_admin() {
    local port="$1"
    shift
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$port" -U postgres -d "${PSQL_DB:-postgres}" "$@"
}

current_port() {
    sed -n "s/^port = \([0-9]*\)$/\1/p" "$DATA/pqxxpool.conf" | tail -n 1
}

start_failed() {
    log "start failed: $*"
    log_tail
    if server_running; then
        pg_stop immediate || true
    fi
    log "leaving $DIR for inspection; remove it with: $SCRIPT_PATH stop $DIR"
    exit 1
}

cmd_start() {
    plain_tcp || true  # an invalid value stops here, before anything is created
    command -v openssl >/dev/null || die "openssl not found"
    command -v python3 >/dev/null || die "python3 not found (used to find a free port)"
    [[ -x "$PG_BIN/initdb" ]] || die "$PG_BIN/initdb not found (install postgresql-15)"
    if is_root; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
    fi

    if [[ -e "$DIR" ]]; then
        [[ -d "$DIR" ]] || die "not a directory: $DIR"
        if [[ -n "$(ls -A -- "$DIR")" ]]; then
            die "DIR must be empty (create it with mktemp -d): $DIR"
        fi
    else
        mkdir -p -- "$DIR"
    fi
    printf '%s\ncreated %s by pid %s\n' "$MARKER_TEXT" "$(date -u +%FT%TZ)" "$$" >"$MARKER"
    chmod 0755 "$DIR"

    local tmpd
    tmpd="$(mktemp -d)"
    # shellcheck disable=SC2064  # expand now: tmpd is local
    trap "rm -rf -- '$tmpd'" EXIT

    make_certs "$tmpd"
    : >"$LOGFILE"
    chmod 0644 "$LOGFILE"
    if is_root; then
        chown -R postgres:postgres "$DIR"
        # postgres must be able to reach DIR (all parents searchable) and write to it.
        runuser -u postgres -- test -w "$DIR" -a -x "$DIR" ||
            die "user postgres cannot write to $DIR (is a parent directory not searchable?)"
    fi

    cd "$DIR"
    as_pg "$PG_BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        -E UTF8 --locale=C --no-sync >"$tmpd/initdb.log" 2>&1 || {
        cat "$tmpd/initdb.log" >&2
        start_failed "initdb failed"
    }
    write_hba
    printf "\ninclude 'pqxxpool.conf'\n" >>"$DATA/postgresql.conf"

    local port="" attempt log_lines
    for attempt in 1 2 3 4 5; do
        if [[ -n "${PQXXPOOL_TEST_CLUSTER_PORT:-}" ]]; then
            port="$PQXXPOOL_TEST_CLUSTER_PORT" # forced port (debugging); no retry
            attempt=5
        else
            port="$(pick_port)" || start_failed "no free TCP port found"
        fi
        write_conf "$port"
        log_lines="$(wc -l <"$LOGFILE")"
        if pg_start; then
            break
        fi
        if server_running; then
            start_failed "pg_ctl start reported failure"
        fi
        if tail -n "+$((log_lines + 1))" "$LOGFILE" | grep -q -e 'could not bind' -e 'Address already in use' &&
            ((attempt < 5)); then
            log "port $port was taken meanwhile, retrying with another port"
            continue
        fi
        start_failed "pg_ctl start failed"
    done

    local app_pw rot_pw
    app_pw="$(openssl rand -hex 16)"
    rot_pw="$(openssl rand -hex 16)"
    psql_admin "$port" <<EOF || start_failed "role/database creation failed"
CREATE ROLE app LOGIN PASSWORD '$app_pw';
CREATE ROLE admin LOGIN SUPERUSER;
CREATE ROLE pqxxpool_test_rotation LOGIN PASSWORD '$rot_pw';
CREATE DATABASE app OWNER app;
EOF
    PSQL_DB=app psql_admin "$port" <<'EOF' || start_failed "granting privileges failed"
GRANT ALL ON SCHEMA public TO app;
GRANT USAGE ON SCHEMA public TO pqxxpool_test_rotation;
EOF

    local env_tmp="$DIR/env.tmp"
    {
        printf "export PQXXPOOL_TEST_DIR='%s'\n" "$DIR"
        printf "export PQXXPOOL_TEST_PORT='%s'\n" "$port"
        printf "export PQXXPOOL_TEST_CA='%s'\n" "$DIR/ca.crt"
        printf "export PQXXPOOL_TEST_CONNINFO='host=localhost hostaddr=127.0.0.1 port=%s dbname=app user=app password=%s sslmode=verify-full sslrootcert=%s'\n" \
            "$port" "$app_pw" "$DIR/ca.crt"
        printf "export PQXXPOOL_TEST_ADMIN_CONNINFO='host=%s port=%s dbname=app user=postgres'\n" "$DIR" "$port"
        printf "export PQXXPOOL_TEST_APP_PASSWORD='%s'\n" "$app_pw"
        printf "export PQXXPOOL_TEST_ROTATION_USER='%s'\n" pqxxpool_test_rotation
        printf "export PQXXPOOL_TEST_ROTATION_PASSWORD='%s'\n" "$rot_pw"
        printf "export PQXXPOOL_TEST_CLUSTER_SCRIPT='%s'\n" "$SCRIPT_PATH"
        if plain_tcp; then
            printf "export PQXXPOOL_TEST_PLAIN_CONNINFO='host=127.0.0.1 port=%s dbname=app user=app password=%s sslmode=disable'\n" \
                "$port" "$app_pw"
        fi
    } >"$env_tmp"
    chmod 0644 "$env_tmp"
    if is_root; then
        chown postgres:postgres "$env_tmp"
    fi
    mv -f -- "$env_tmp" "$DIR/env"

    # Fail early if TLS does not actually work the way the tests expect.
    local ssl
    ssl="$(PGCONNECT_TIMEOUT=10 "$PG_BIN/psql" -X -At \
        "host=localhost hostaddr=127.0.0.1 port=$port dbname=app user=app password=$app_pw sslmode=verify-full sslrootcert=$DIR/ca.crt" \
        -c 'select ssl from pg_stat_ssl where pid = pg_backend_pid()' 2>&1)" ||
        start_failed "TLS self-check failed: $ssl"
    [[ "$ssl" == t ]] || start_failed "TLS self-check: expected ssl=t, got: $ssl"

    log "cluster up: dir=$DIR port=$port (env: $DIR/env)"
}

cmd_stop() {
    if [[ ! -e "$DIR" ]]; then
        return 0
    fi
    require_ours
    cd /
    if [[ -f "$DATA/postmaster.pid" ]]; then
        if ! pg_stop fast 2>/dev/null; then
            pg_stop immediate 2>/dev/null || true
        fi
        if [[ -f "$DATA/postmaster.pid" ]]; then
            # Last resort: the postmaster we started, by its pid (first line of postmaster.pid).
            local pid
            pid="$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true)"
            if [[ "$pid" =~ ^[0-9]+$ ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == postgres ]]; then
                log "postmaster $pid did not stop, sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                sleep 1
            fi
        fi
    fi
    rm -rf -- "$DIR"
}

cmd_restart() {
    require_ours
    cd "$DIR"
    # If the server is down, pg_ctl restart just starts it.
    as_pg "$PG_BIN/pg_ctl" restart -D "$DATA" -l "$LOGFILE" -m fast -w -t "$PG_TIMEOUT" -s >/dev/null || {
        log "restart failed"
        log_tail
        exit 1
    }
}

cmd_down() {
    require_ours
    cd "$DIR"
    server_running || return 0
    pg_stop fast || {
        log_tail
        exit 1
    }
}

cmd_up() {
    require_ours
    cd "$DIR"
    server_running && return 0
    pg_start || {
        log "start failed"
        log_tail
        exit 1
    }
}

cmd_status() {
    require_ours
    if server_running; then
        printf 'running (port %s)\n' "$(current_port)"
    else
        printf 'stopped\n'
        exit 3
    fi
}

cmd_env() {
    require_ours
    [[ -f "$DIR/env" ]] || die "no env file in $DIR (did start succeed?)"
    cat -- "$DIR/env"
}

main() {
    [[ $# -eq 2 ]] || usage
    local cmd="$1"
    resolve_dir "$2"
    case "$cmd" in
        start) cmd_start ;;
        stop) cmd_stop ;;
        restart) cmd_restart ;;
        env) cmd_env ;;
        down) cmd_down ;;
        up) cmd_up ;;
        status) cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
