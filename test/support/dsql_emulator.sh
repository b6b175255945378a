#!/usr/bin/env bash
# Start/stop the Aurora DSQL front-door emulator (dsql_emulator.py) for a pgcluster.sh DIR.
#
# Usage:
#   dsql_emulator.sh start  DIR [EMULATOR_ARGS...]  start in the background, wait until it listens,
#                                                   print its port; the default instance also
#                                                   appends its settings to DIR/env
#   dsql_emulator.sh stop   DIR                     stop (SIGTERM, then SIGKILL after 10 s); without
#                                                   PQXXPOOL_DSQL_EMULATOR_INSTANCE: every instance
#   dsql_emulator.sh status DIR                     print running/stopped; exit 0 if running, 3 if not
#
# EMULATOR_ARGS go to dsql_emulator.py (e.g. --max-age 2 --clock-offset 10); see
# docs/dsql-emulator.md. DIR must hold a cluster started by pgcluster.sh (DIR/env).
#
# Environment:
#   PQXXPOOL_DSQL_EMULATOR_INSTANCE=NAME  a second emulator on the same DIR: files DIR/emulator-NAME.*,
#                                         DIR/env left alone (default: files DIR/emulator.*)
#   PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID, PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY,
#   PQXXPOOL_DSQL_TEST_SESSION_TOKEN      credentials the emulator trusts (default: fixed fake ones)
#   PQXXPOOL_PYTHON                       interpreter with Debian's botocore (/usr/bin/python3)
#
# Files: DIR/emulator[-NAME].pid, .port (present while it listens), .log (its stderr/stdout).
# Appended to DIR/env by the default instance (replacing earlier such lines):
#   PQXXPOOL_DSQL_EMULATOR_PORT, PQXXPOOL_DSQL_TEST_CLUSTER, PQXXPOOL_DSQL_TEST_REGION,
#   PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID, PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY
#   [, PQXXPOOL_DSQL_TEST_SESSION_TOKEN]
set -euo pipefail

# Throwaway credentials: not AWS keys, accepted by nothing but this emulator.
readonly DEFAULT_ACCESS_KEY_ID=AKIDEXAMPLEPQXXPOOL0
readonly DEFAULT_SECRET_ACCESS_KEY=pqxxpool/dsql-emulator/fake+secret/EXAMPLEKEY
readonly DEFAULT_CLUSTER=testcluster.dsql.us-east-1.on.aws
readonly START_TIMEOUT=30
readonly STOP_TIMEOUT=10

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly HERE
readonly EMULATOR="$HERE/dsql_emulator.py"
SCRIPT_PATH="$HERE/$(basename "${BASH_SOURCE[0]}")"
readonly SCRIPT_PATH
PYTHON="${PQXXPOOL_PYTHON:-/usr/bin/python3}"
readonly PYTHON

die() {
    printf 'dsql_emulator.sh: %s\n' "$*" >&2
    exit 1
}

log() {
    printf 'dsql_emulator.sh: %s\n' "$*" >&2
}

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$SCRIPT_PATH" >&2
    exit 2
}

resolve_dir() {
    [[ "$1" == /* ]] || die "DIR must be an absolute path: $1"
    DIR="$(realpath -m -- "$1")"
    [[ -d "$DIR" ]] || die "no such directory: $DIR"
    [[ -f "$DIR/.pqxxpool-pgcluster" ]] || die "$DIR is not a pgcluster.sh directory"
}

instance_base() {
    local name="${PQXXPOOL_DSQL_EMULATOR_INSTANCE:-}"
    if [[ -z "$name" ]]; then
        printf '%s/emulator' "$DIR"
    else
        [[ "$name" =~ ^[A-Za-z0-9_-]+$ ]] || die "PQXXPOOL_DSQL_EMULATOR_INSTANCE: only [A-Za-z0-9_-]"
        printf '%s/emulator-%s' "$DIR" "$name"
    fi
}

# pid of a running emulator recorded in PIDFILE, or nothing.
live_pid() {
    local pidfile="$1" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(head -n 1 "$pidfile" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    # Only a process that is really our emulator (a recycled pid is left alone).
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- 'dsql_emulator\.py'; then
        printf '%s\n' "$pid"
    fi
}

# Drop the lines the default instance adds to DIR/env.
strip_env() {
    local env="$DIR/env" tmp="$DIR/env.emulator.tmp"
    [[ -f "$env" ]] || return 0
    grep -v -E '^export PQXXPOOL_DSQL_(EMULATOR_PORT|TEST_(CLUSTER|REGION|ACCESS_KEY_ID|SECRET_ACCESS_KEY|SESSION_TOKEN))=' \
        "$env" >"$tmp" || true
    chmod 0644 "$tmp"
    mv -f -- "$tmp" "$env"
}

cmd_start() {
    [[ -f "$DIR/env" ]] || die "no $DIR/env (start the cluster with pgcluster.sh first)"
    [[ -x "$PYTHON" ]] || die "python not found: $PYTHON"
    "$PYTHON" -c 'import botocore' 2>/dev/null ||
        die "$PYTHON cannot import botocore (apt-get install -y python3-botocore)"

    local base pidfile portfile logfile pid
    base="$(instance_base)"
    pidfile="$base.pid"
    portfile="$base.port"
    logfile="$base.log"
    pid="$(live_pid "$pidfile")"
    [[ -z "$pid" ]] || die "already running (pid $pid); stop it first"
    rm -f -- "$pidfile" "$portfile"

    local cluster="$DEFAULT_CLUSTER" arg prev=""
    for arg in "$@"; do
        [[ "$prev" == --cluster-name ]] && cluster="$arg"
        [[ "$arg" == --cluster-name=* ]] && cluster="${arg#--cluster-name=}"
        prev="$arg"
    done
    cluster="${cluster,,}"
    local region
    region="$(sed -n -E 's/.*\.dsql[^.]*\.([^.]+)\.on\.aws$/\1/p' <<<"$cluster")"

    export PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID="${PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID:-$DEFAULT_ACCESS_KEY_ID}"
    export PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY="${PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY:-$DEFAULT_SECRET_ACCESS_KEY}"

    # setsid: own process group, so the caller's terminal signals do not reach it.
    setsid "$PYTHON" "$EMULATOR" --dir "$DIR" --port-file "$portfile" "$@" \
        </dev/null >>"$logfile" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$pidfile"

    local waited=0
    while [[ ! -s "$portfile" ]]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f -- "$pidfile"
            log "emulator exited during startup; tail of $logfile:"
            tail -n 20 "$logfile" >&2 || true
            exit 1
        fi
        if ((waited >= START_TIMEOUT * 10)); then
            kill -TERM "$pid" 2>/dev/null || true
            rm -f -- "$pidfile"
            die "emulator did not listen within ${START_TIMEOUT}s (see $logfile)"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    local port
    port="$(head -n 1 "$portfile")"
    [[ "$port" =~ ^[0-9]+$ ]] || die "bad port file $portfile"

    if [[ -z "${PQXXPOOL_DSQL_EMULATOR_INSTANCE:-}" ]]; then
        strip_env
        {
            printf "export PQXXPOOL_DSQL_EMULATOR_PORT='%s'\n" "$port"
            printf "export PQXXPOOL_DSQL_TEST_CLUSTER='%s'\n" "$cluster"
            printf "export PQXXPOOL_DSQL_TEST_REGION='%s'\n" "$region"
            printf "export PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID='%s'\n" "$PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID"
            printf "export PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY='%s'\n" "$PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY"
            if [[ -n "${PQXXPOOL_DSQL_TEST_SESSION_TOKEN:-}" ]]; then
                printf "export PQXXPOOL_DSQL_TEST_SESSION_TOKEN='%s'\n" "$PQXXPOOL_DSQL_TEST_SESSION_TOKEN"
            fi
        } >>"$DIR/env"
    fi
    log "emulator up: pid=$pid port=$port log=$logfile"
    printf '%s\n' "$port"
}

stop_one() {
    local base="$1" pid i
    pid="$(live_pid "$base.pid")"
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "emulator $pid did not stop, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f -- "$base.pid" "$base.port"
}

cmd_stop() {
    if [[ -n "${PQXXPOOL_DSQL_EMULATOR_INSTANCE:-}" ]]; then
        stop_one "$(instance_base)"
        return 0
    fi
    local pidfile
    for pidfile in "$DIR"/emulator.pid "$DIR"/emulator-*.pid; do
        [[ -e "$pidfile" ]] || continue
        stop_one "${pidfile%.pid}"
    done
    strip_env
}

cmd_status() {
    local base pid
    base="$(instance_base)"
    pid="$(live_pid "$base.pid")"
    if [[ -n "$pid" ]]; then
        printf 'running (pid %s, port %s)\n' "$pid" "$(head -n 1 "$base.port" 2>/dev/null || echo '?')"
    else
        printf 'stopped\n'
        exit 3
    fi
}

main() {
    [[ $# -ge 2 ]] || usage
    local cmd="$1"
    resolve_dir "$2"
    shift 2
    case "$cmd" in
        start) cmd_start "$@" ;;
        stop) [[ $# -eq 0 ]] || usage && cmd_stop ;;
        status) [[ $# -eq 0 ]] || usage && cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
