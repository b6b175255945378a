#!/usr/bin/env bash
# Run the pqxxpool demo against a throwaway TLS PostgreSQL cluster: the
# README's demo command.
#
# Usage: bash scripts/demo.sh [--dsql] [DEMO_ARGS...]
#
#   --dsql   run against the local Aurora DSQL front-door emulator instead
#            (test/support/dsql_emulator.sh): IAM tokens per connection, TLS with
#            SNI through a "tunnel" on loopback, throwaway test credentials
#
# Installs missing Debian packages (scripts/deps.sh; skip with
# PQXXPOOL_NO_DEPS=1), builds the release preset (log: build/logs/release-build.log),
# starts a cluster with test/support/pgcluster.sh and runs
#   build/release/tools/pqxxpool/pqxxpool demo --conninfo "$PQXXPOOL_TEST_CONNINFO" --duration 10s DEMO_ARGS...
# (--conninfo/--duration are left out if DEMO_ARGS gives them). The cluster is
# stopped and removed on exit.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly CLUSTER_SCRIPT="$ROOT/test/support/pgcluster.sh"
readonly EMULATOR_SCRIPT="$ROOT/test/support/dsql_emulator.sh"

use_dsql=0
if [[ "${1:-}" == --dsql ]]; then
    use_dsql=1
    shift
fi
readonly LOG_DIR="$ROOT/build/logs"
readonly DEMO_BIN="$ROOT/build/release/tools/pqxxpool/pqxxpool"

cd "$ROOT"
mkdir -p "$LOG_DIR"

if [[ "${PQXXPOOL_NO_DEPS:-0}" != 1 ]]; then
    bash "$ROOT/scripts/deps.sh"
fi

log="$LOG_DIR/release-build.log"
echo "== build release (log: ${log#"$ROOT"/})"
t0=$SECONDS
if ! { cmake --preset release && cmake --build --preset release; } >"$log" 2>&1; then
    echo "demo.sh: build failed; last 60 lines of $log:" >&2
    tail -n 60 "$log" >&2
    exit 1
fi
echo "   build release: ok ($((SECONDS - t0))s)"
[[ -x "$DEMO_BIN" ]] || {
    echo "demo.sh: $DEMO_BIN was not built" >&2
    exit 1
}

CLUSTER_DIR=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    if [[ -n "$CLUSTER_DIR" && -d "$CLUSTER_DIR" ]]; then
        cp -f -- "$CLUSTER_DIR/postgres.log" "$LOG_DIR/demo-postgres.log" 2>/dev/null || true
        bash "$EMULATOR_SCRIPT" stop "$CLUSTER_DIR" >/dev/null 2>&1 || true
        bash "$CLUSTER_SCRIPT" stop "$CLUSTER_DIR" || echo "demo.sh: warning: could not stop cluster in $CLUSTER_DIR" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== cluster"
CLUSTER_DIR="$(mktemp -d /tmp/pqxxpool-demo.XXXXXX)"
bash "$CLUSTER_SCRIPT" start "$CLUSTER_DIR"
((use_dsql)) && bash "$EMULATOR_SCRIPT" start "$CLUSTER_DIR" >/dev/null
# shellcheck source=/dev/null
source "$CLUSTER_DIR/env"

args=(demo)
has_conninfo=0
has_duration=0
for a in "$@"; do
    case "$a" in
        --conninfo | --conninfo=*) has_conninfo=1 ;;
        --duration | --duration=*) has_duration=1 ;;
    esac
done
if ((use_dsql)); then
    # The emulator's throwaway credentials, through the standard AWS environment variables;
    # instance metadata is off so nothing is asked of the network.
    export AWS_ACCESS_KEY_ID="$PQXXPOOL_DSQL_TEST_ACCESS_KEY_ID"
    export AWS_SECRET_ACCESS_KEY="$PQXXPOOL_DSQL_TEST_SECRET_ACCESS_KEY"
    export AWS_EC2_METADATA_DISABLED=true
    ((has_conninfo)) || args+=(--dsql "postgres://admin@$PQXXPOOL_DSQL_TEST_CLUSTER/postgres?region=$PQXXPOOL_DSQL_TEST_REGION&sslrootcert=$PQXXPOOL_TEST_CA"
                               --tunnel "127.0.0.1:$PQXXPOOL_DSQL_EMULATOR_PORT")
else
    ((has_conninfo)) || args+=(--conninfo "$PQXXPOOL_TEST_CONNINFO")
fi
((has_duration)) || args+=(--duration 10s)
args+=("$@")

echo "== ${DEMO_BIN#"$ROOT"/} ${args[*]}" | sed -E 's/password=[^ ]*/password=***/g'
"$DEMO_BIN" "${args[@]}"
