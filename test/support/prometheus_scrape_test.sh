#!/usr/bin/env bash
# Integration test: a real Prometheus scrapes a running `pqxxpool demo`.
#
# Usage: prometheus_scrape_test.sh PATH/TO/pqxxpool
#
# Needs PQXXPOOL_TEST_CONNINFO (from the env file test/support/pgcluster.sh
# writes; scripts/test.sh sources it before ctest), Debian's `prometheus`
# package (/usr/bin/prometheus, /usr/bin/promtool) and python3.
#
# Steps, all under one overall deadline (DEADLINE_S seconds):
#   1. start `pqxxpool demo --threads 16 --max-size 4 --metrics-listen 127.0.0.1:0`
#      in the background (for longer than the deadline) and read the metrics
#      port from its `metrics: http://127.0.0.1:PORT/metrics` line;
#   2. write prometheus.yml (scrape_interval 1s, one static target: the demo)
#      in a temp dir, check it with promtool, start prometheus on a free
#      loopback port with its TSDB in the temp dir, wait for /-/ready;
#   3. poll /api/v1/query?query=pqxxpool_pool_exhausted_total until a sample
#      with pool="demo", job="pqxxpool_demo", the demo's instance and a value
#      > 0 appears; the demo must still be running at that moment;
#   4. check /api/v1/targets reports the demo target with health "up".
# On failure: the tails of the demo's output and of prometheus' log, exit 1.
# A trap stops the demo and prometheus and removes the temp dir on every exit
# path; both children also get SIGTERM if this script dies without running the
# trap (SIGKILL), through setpriv --pdeathsig.
set -euo pipefail

readonly DEADLINE_S=90     # the whole test
readonly DEMO_DURATION=120s # longer than the deadline: the demo is still running when we look
readonly DEMO_THREADS=16    # more threads than connections: the pool runs out at once
readonly DEMO_MAX_SIZE=4
readonly POLL_S=0.2         # poll interval of the bounded waits below
readonly JOB=pqxxpool_demo
readonly POOL=demo # pool_config::name in tools/pqxxpool/demo.cpp

readonly DEADLINE=$((SECONDS + DEADLINE_S))
readonly T0="$EPOCHREALTIME"

log() { printf 'prometheus_scrape_test: %s\n' "$*"; }

elapsed() {
    local now="$EPOCHREALTIME"
    # Both are "seconds.microseconds"; integer arithmetic on microseconds.
    local us=$(((${now//[.,]/} - ${T0//[.,]/}) / 1000))
    printf '%d.%03ds' $((us / 1000)) $((us % 1000))
}

TMP=""
DEMO_PID=""
PROM_PID=""

print_tail() {
    local file="$1" what="$2"
    [[ -n "$file" && -f "$file" ]] || return 0
    printf -- '----- last 40 lines of %s (%s) -----\n' "$what" "$file"
    tail -n 40 -- "$file" || true
    printf -- '----- end of %s -----\n' "$what"
}

fail() {
    log "FAILED after $(elapsed): $*" >&2
    if [[ -n "$TMP" ]]; then
        print_tail "$TMP/demo.out" "pqxxpool demo output" >&2
        print_tail "$TMP/prometheus.log" "prometheus log" >&2
    fi
    exit 1
}

# Stop one child: SIGTERM, up to 10 s to exit, then SIGKILL; reap it.
stop_child() {
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_child "$PROM_PID"
    stop_child "$DEMO_PID"
    if [[ -n "$TMP" && -d "$TMP" ]]; then
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted" >&2; exit 130' INT
trap 'log "terminated" >&2; exit 143' TERM

remaining() {
    local left=$((DEADLINE - SECONDS))
    ((left > 0)) || left=0
    printf '%d\n' "$left"
}

past_deadline() {
    ((SECONDS >= DEADLINE))
}

# --- prerequisites ---------------------------------------------------------------------------------

(($# == 1)) || {
    echo "usage: $0 PATH/TO/pqxxpool" >&2
    exit 2
}
readonly PQXXPOOL_BIN="$1"
[[ -x "$PQXXPOOL_BIN" ]] || fail "not an executable: $PQXXPOOL_BIN (build the pqxxpool_cli target)"
[[ -n "${PQXXPOOL_TEST_CONNINFO:-}" ]] ||
    fail "PQXXPOOL_TEST_CONNINFO is not set: start a cluster with test/support/pgcluster.sh start DIR and source DIR/env (scripts/test.sh does this)"
PROMETHEUS="$(command -v prometheus || true)"
PROMTOOL="$(command -v promtool || true)"
[[ -n "$PROMETHEUS" && -n "$PROMTOOL" ]] ||
    fail "prometheus/promtool not found: install the Debian package 'prometheus' (bash scripts/deps.sh installs it)"
readonly PROMETHEUS PROMTOOL
if [[ -x /usr/bin/python3 ]]; then
    PYTHON=/usr/bin/python3 # Debian's, as in scripts/deps.sh
else
    PYTHON="$(command -v python3 || true)"
fi
[[ -n "$PYTHON" ]] || fail "python3 not found: install the Debian package 'python3'"
readonly PYTHON

# Children get SIGTERM when this script dies, even by SIGKILL (no trap runs then).
DEATHSIG=()
if setpriv --pdeathsig TERM true 2>/dev/null; then
    DEATHSIG=(setpriv --pdeathsig TERM)
fi
readonly DEATHSIG

TMP="$(mktemp -d /tmp/pqxxpool-prom.XXXXXX)"

# --- helpers (HTTP and JSON through Python's standard library) -------------------------------------

# http_status URL: prints the HTTP status (000 when there is no answer).
http_status() {
    "$PYTHON" - "$1" <<'EOF'
import sys, urllib.request, urllib.error
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        print(r.status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

# exhausted_sample PROM_PORT INSTANCE: exit 0 and print the sample when the query API returns
# pqxxpool_pool_exhausted_total{pool=POOL, job=JOB, instance=INSTANCE} > 0; exit 1 otherwise
# (printing what it saw).
exhausted_sample() {
    "$PYTHON" - "$1" "$2" "$POOL" "$JOB" <<'EOF'
import json, sys, urllib.parse, urllib.request
port, instance, pool, job = sys.argv[1:5]
url = "http://127.0.0.1:%s/api/v1/query?%s" % (
    port, urllib.parse.urlencode({"query": "pqxxpool_pool_exhausted_total"}))
try:
    with urllib.request.urlopen(url, timeout=2) as r:
        body = json.load(r)
except Exception as e:
    print("no answer: %s" % e)
    sys.exit(1)
if body.get("status") != "success":
    print("query failed: %s" % json.dumps(body))
    sys.exit(1)
result = body["data"]["result"]
for s in result:
    m = s["metric"]
    if m.get("pool") == pool and m.get("job") == job and m.get("instance") == instance:
        value = float(s["value"][1])
        print("%s = %s" % (json.dumps(m, sort_keys=True), s["value"][1]))
        sys.exit(0 if value > 0 else 1)
print("no matching sample yet; result: %s" % json.dumps(result))
sys.exit(1)
EOF
}

# target_health PROM_PORT SCRAPE_URL: prints the health of that active target ("up", "down",
# "unknown"; "missing" when Prometheus does not list it).
target_health() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import json, sys, urllib.request
port, scrape_url = sys.argv[1:3]
try:
    with urllib.request.urlopen("http://127.0.0.1:%s/api/v1/targets?state=active" % port, timeout=2) as r:
        body = json.load(r)
except Exception as e:
    print("no-answer(%s)" % e)
    sys.exit(0)
for t in body.get("data", {}).get("activeTargets", []):
    if t.get("scrapeUrl") == scrape_url:
        print(t.get("health", "?") + ("" if not t.get("lastError") else " (%s)" % t["lastError"]))
        sys.exit(0)
print("missing")
EOF
}

# A free TCP port on 127.0.0.1, below the kernel's ephemeral range when possible (so an outgoing
# connection cannot take it before prometheus binds it), from a random start.
free_port() {
    "$PYTHON" - <<'EOF'
import random, socket
try:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        eph_lo = int(f.read().split()[0])
except Exception:
    eph_lo = 32768
lo, hi = (15432, 29999) if eph_lo > 29999 else (40000, 65000)
start = random.randint(lo, hi)
for i in range(hi - lo + 1):
    port = lo + (start - lo + i) % (hi - lo + 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit("no free port")
EOF
}

# --- 1. the demo ---------------------------------------------------------------------------------

log "starting pqxxpool demo ($DEMO_THREADS threads, max-size $DEMO_MAX_SIZE, $DEMO_DURATION)"
"${DEATHSIG[@]}" "$PQXXPOOL_BIN" demo --conninfo "$PQXXPOOL_TEST_CONNINFO" \
    --threads "$DEMO_THREADS" --max-size "$DEMO_MAX_SIZE" \
    --duration "$DEMO_DURATION" --metrics-listen 127.0.0.1:0 </dev/null >"$TMP/demo.out" 2>&1 &
DEMO_PID=$!

DEMO_PORT=""
while [[ -z "$DEMO_PORT" ]]; do
    line="$(grep -m 1 -E '^metrics: http://127\.0\.0\.1:[0-9]+/metrics$' "$TMP/demo.out" || true)"
    if [[ "$line" =~ :([0-9]+)/metrics$ ]]; then
        DEMO_PORT="${BASH_REMATCH[1]}"
        break
    fi
    kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo exited before printing its metrics URL"
    past_deadline && fail "no 'metrics: http://127.0.0.1:PORT/metrics' line from the demo within ${DEADLINE_S}s"
    sleep "$POLL_S"
done
readonly DEMO_PORT
readonly INSTANCE="127.0.0.1:$DEMO_PORT"
readonly SCRAPE_URL="http://$INSTANCE/metrics"
log "demo (pid $DEMO_PID) serves $SCRAPE_URL ($(elapsed))"

# --- 2. prometheus -------------------------------------------------------------------------------

cat >"$TMP/prometheus.yml" <<EOF
# Written by test/support/prometheus_scrape_test.sh
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: $JOB
    metrics_path: /metrics
    static_configs:
      - targets: ['$INSTANCE']
EOF
"$PROMTOOL" check config "$TMP/prometheus.yml" >"$TMP/promtool.out" 2>&1 || {
    cat "$TMP/promtool.out" >&2
    fail "promtool rejects the generated prometheus.yml"
}

PROM_PORT=""
for attempt in 1 2 3; do
    PROM_PORT="$(free_port)" || fail "no free TCP port for prometheus"
    log "starting $PROMETHEUS on 127.0.0.1:$PROM_PORT (attempt $attempt)"
    : >"$TMP/prometheus.log"
    "${DEATHSIG[@]}" "$PROMETHEUS" --config.file="$TMP/prometheus.yml" \
        --storage.tsdb.path="$TMP/data" --web.listen-address="127.0.0.1:$PROM_PORT" \
        </dev/null >"$TMP/prometheus.log" 2>&1 &
    PROM_PID=$!
    ready=0
    while ! past_deadline; do
        if [[ "$(http_status "http://127.0.0.1:$PROM_PORT/-/ready")" == 200 ]]; then
            ready=1
            break
        fi
        kill -0 "$PROM_PID" 2>/dev/null || break
        sleep "$POLL_S"
    done
    ((ready)) && break
    if ! kill -0 "$PROM_PID" 2>/dev/null && grep -q 'address already in use' "$TMP/prometheus.log" && ((attempt < 3)); then
        wait "$PROM_PID" 2>/dev/null || true
        PROM_PID=""
        log "port $PROM_PORT was taken meanwhile, trying another"
        continue
    fi
    kill -0 "$PROM_PID" 2>/dev/null || fail "prometheus exited before it was ready"
    fail "prometheus on 127.0.0.1:$PROM_PORT not ready (/-/ready) within ${DEADLINE_S}s"
done
readonly PROM_PORT
log "prometheus (pid $PROM_PID) ready on 127.0.0.1:$PROM_PORT ($(elapsed))"

# --- 3. the exhaustion counter through the query API ----------------------------------------------

seen=""
until seen="$(exhausted_sample "$PROM_PORT" "$INSTANCE")"; do
    past_deadline && fail "pqxxpool_pool_exhausted_total{pool=\"$POOL\",job=\"$JOB\",instance=\"$INSTANCE\"} > 0 not found within ${DEADLINE_S}s; last answer: $seen; target health: $(target_health "$PROM_PORT" "$SCRAPE_URL")"
    kill -0 "$PROM_PID" 2>/dev/null || fail "prometheus exited"
    kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo exited before Prometheus had seen the pool exhausted"
    sleep "$POLL_S"
done
# The sample was seen while the demo runs: it must still be running now.
kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo is no longer running"
log "query API: $seen ($(elapsed))"

# --- 4. the target is up -------------------------------------------------------------------------

health=""
until [[ "$health" == up ]]; do
    health="$(target_health "$PROM_PORT" "$SCRAPE_URL")"
    [[ "$health" == up ]] && break
    past_deadline && fail "target $SCRAPE_URL not up within ${DEADLINE_S}s: $health"
    sleep "$POLL_S"
done
kill -0 "$DEMO_PID" 2>/dev/null || fail "the demo is no longer running"
log "target $SCRAPE_URL health: up ($(elapsed), $(remaining)s of the ${DEADLINE_S}s deadline left)"
log "OK in $(elapsed)"
