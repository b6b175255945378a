#!/usr/bin/env bash
# Smoke test of `pqxxpool bench` (the scenario runner) against the test cluster: no timing
# assertions, only that it runs and its output keeps its shape.
#
# Usage: bench_cli_test.sh PQXXPOOL_BINARY [PLOT_SCRIPT]
#
# Needs PQXXPOOL_TEST_DIR (scripts/test.sh exports it with the rest of DIR/env). Runs
#   pqxxpool bench --scenario cycle --scenario spike --duration 300ms --runs 1
#                  --out FILE --latencies-out DIR
# and checks with python3: exit code 0; stdout and FILE hold the same lines, each a JSON object;
# a meta line first; for each case (cycle_t1, cycle_t16, spike_t50) a result line per pool with
# every documented field of the right type and a summary line; the spike opened at least one
# connection per pool; a non-empty CDF file per result line; no password in stdout or stderr.
# With PLOT_SCRIPT (bench/plot.sh) and gnuplot installed, also draws the PNGs from the output.
set -euo pipefail

BIN="${1:?usage: bench_cli_test.sh PQXXPOOL_BINARY [PLOT_SCRIPT]}"
PLOT="${2:-}"
[[ -x "$BIN" ]] || {
    echo "bench_cli_test.sh: not executable: $BIN" >&2
    exit 1
}
[[ -n "${PQXXPOOL_TEST_DIR:-}" && -f "$PQXXPOOL_TEST_DIR/env" ]] || {
    echo "bench_cli_test.sh: PQXXPOOL_TEST_DIR is not set: run through scripts/test.sh, or source the env" \
        "file written by test/support/pgcluster.sh start DIR" >&2
    exit 1
}
# shellcheck source=/dev/null
source "$PQXXPOOL_TEST_DIR/env"

WORK="$(mktemp -d /tmp/pqxxpool-bench-test.XXXXXX)"
readonly WORK
trap 'rm -rf -- "$WORK"' EXIT

rc=0
env -u PQXXPOOL_BENCH_CONNINFO "$BIN" bench --conninfo "$PQXXPOOL_TEST_CONNINFO" \
    --scenario cycle --scenario spike --duration 300ms --runs 1 \
    --out "$WORK/bench.jsonl" --latencies-out "$WORK/lat" >"$WORK/stdout" 2>"$WORK/stderr" || rc=$?
echo "--- stderr of pqxxpool bench (exit $rc) ---"
cat "$WORK/stderr"
if ((rc != 0)); then
    echo "FAIL: pqxxpool bench exited $rc"
    exit 1
fi

if grep -qF -- "$PQXXPOOL_TEST_APP_PASSWORD" "$WORK/stdout" "$WORK/stderr"; then
    echo "FAIL: the password appears in the output"
    exit 1
fi

python3 - "$WORK/stdout" "$WORK/bench.jsonl" <<'EOF'
import json, os, sys

stdout_path, file_path = sys.argv[1], sys.argv[2]
failures = []

def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)

with open(stdout_path) as f:
    out_lines = [l for l in f.read().splitlines() if l.strip()]
with open(file_path) as f:
    file_lines = [l for l in f.read().splitlines() if l.strip()]
if out_lines != file_lines:
    fail("stdout and --out differ ({} vs {} lines)".format(len(out_lines), len(file_lines)))

docs = []
for n, line in enumerate(out_lines, 1):
    try:
        d = json.loads(line)
    except json.JSONDecodeError as e:
        fail("line {} is not JSON: {}".format(n, e))
        continue
    if not isinstance(d, dict):
        fail("line {} is not a JSON object".format(n))
        continue
    docs.append(d)

number = (int, float)
meta_fields = {"started_at": str, "pqxxpool_version": str, "libpqxx_version": str, "libpq_version": str,
               "server_version": str, "hardware_concurrency": int, "loadavg": list, "scenarios": list,
               "pools": str, "runs": int, "duration_s": number, "transport": str}
result_fields = {"case": str, "scenario": str, "pool": str, "threads": int, "pool_size": int, "query": str,
                 "max_lifetime_ms": int, "runs": int, "duration_s": number, "ops": int, "ops_per_s": number,
                 "acquire_p50_ms": number, "acquire_p99_ms": number, "acquire_max_ms": number,
                 "per_thread_ops_min": int, "per_thread_ops_max": int, "per_thread_ops_ratio": number,
                 "connections_opened": int, "cpu_s": number, "cpu_us_per_op": number, "vcsw_per_op": number,
                 "errors": int, "loadavg_1m": number, "ops_per_s_runs": list, "acquire_p50_ms_runs": list,
                 "acquire_p99_ms_runs": list, "acquire_max_ms_runs": list, "connections_opened_runs": list,
                 "latency_cdf": str}
summary_fields = {"case": str, "scenario": str, "threads": int, "pool_size": int, "ops_per_s_ratio": number,
                  "acquire_p50_ratio": number, "acquire_p99_ratio": number, "acquire_max_ratio": number,
                  "per_thread_ops_ratio": dict, "connections_opened": dict, "goals": list}

def check_fields(d, fields, what):
    for k, t in fields.items():
        if k not in d:
            fail("{}: no field {}".format(what, k))
        elif isinstance(d[k], bool) or not isinstance(d[k], t):
            fail("{}: field {} is {!r}".format(what, k, d[k]))

if not docs or docs[0].get("type") != "meta":
    fail("the first line is not the meta line")
else:
    check_fields(docs[0], meta_fields, "meta")
    if docs[0].get("transport") != "tls":  # the test cluster takes TCP only with TLS
        fail("meta: transport is {!r}, expected 'tls'".format(docs[0].get("transport")))

results = {(d.get("case"), d.get("pool")): d for d in docs if d.get("type") == "result"}
summaries = {d.get("case"): d for d in docs if d.get("type") == "summary"}
expected = {"cycle_t1": 1, "cycle_t16": 16, "spike_t50": 50}
for case, threads in expected.items():
    for pool in ("pqxxpool", "naive"):
        r = results.get((case, pool))
        what = "{} {}".format(case, pool)
        if r is None:
            fail("no result line for " + what)
            continue
        check_fields(r, result_fields, what)
        if r.get("threads") != threads:
            fail("{}: threads {}".format(what, r.get("threads")))
        if r.get("errors") != 0:
            fail("{}: {} errors ({})".format(what, r.get("errors"), r.get("first_error")))
        if not isinstance(r.get("ops"), int) or r["ops"] <= 0:
            fail("{}: no operations".format(what))
        for k in ("waited_acquires", "waited_for_connect"):
            if k not in r:
                fail("{}: no field {}".format(what, k))
            elif pool == "pqxxpool" and not isinstance(r[k], int):
                fail("{}: {} is {!r}".format(what, k, r[k]))
        cdf = r.get("latency_cdf", "")
        if not os.path.isfile(cdf) or os.path.getsize(cdf) == 0:
            fail("{}: latency_cdf {!r} missing or empty".format(what, cdf))
    s = summaries.get(case)
    if s is None:
        fail("no summary line for " + case)
    else:
        check_fields(s, summary_fields, case + " summary")
spike = results.get(("spike_t50", "pqxxpool")), results.get(("spike_t50", "naive"))
for r in spike:
    if r is not None and (not isinstance(r.get("connections_opened"), int) or r["connections_opened"] < 1):
        fail("spike_t50 {}: connections_opened {!r}".format(r["pool"], r.get("connections_opened")))
    if r is not None and r.get("ops") != 50:
        fail("spike_t50 {}: ops {!r}, expected 50".format(r["pool"], r.get("ops")))
unexpected = sorted({d.get("case") for d in docs if d.get("type") in ("result", "summary")} - set(expected))
if unexpected:
    fail("cases that were not asked for: {}".format(unexpected))

print("{} lines checked, {} failures".format(len(out_lines), len(failures)))
sys.exit(1 if failures else 0)
EOF

if [[ -n "$PLOT" ]]; then
    if command -v gnuplot >/dev/null; then
        bash "$PLOT" --out "$WORK/img" "$WORK/bench.jsonl"
        for s in cycle spike; do
            [[ -s "$WORK/img/acquire-cdf-$s.png" ]] || {
                echo "FAIL: plot.sh drew no $WORK/img/acquire-cdf-$s.png"
                exit 1
            }
        done
        echo "plot.sh: ok"
    else
        echo "gnuplot not installed: plot.sh not tried"
    fi
fi
echo "PASS"
