#!/usr/bin/env bash
# Run `pqxxpool bench` (the scenario runner) against a throwaway PostgreSQL, plot the latency
# distributions, and print the results as a Markdown table.
#
# Usage: bash bench/scenarios.sh [--plain] [--bin PATH] [--out DIR] [--img DIR] [-- BENCH_ARGS...]
#        bash bench/scenarios.sh --report FILE
#
#   --plain        connect over plain TCP on 127.0.0.1 (sslmode=disable), as the performance
#                  issue's table was measured, instead of TLS (sslmode=verify-full); only with the
#                  throwaway cluster, not with PQXXPOOL_BENCH_CONNINFO
#   --bin PATH     the pqxxpool program to run (default: build the release preset's pqxxpool_cli
#                  target if needed and run build/release/tools/pqxxpool/pqxxpool)
#   --out DIR      where the JSON lines (DIR/bench.jsonl) and the latency CDFs (DIR/latencies/)
#                  go (default: build/bench-results/scenarios-YYYYmmdd-HHMMSS)
#   --img DIR      where bench/plot.sh writes the PNGs (default: docs/img)
#   -- ARGS...     more `pqxxpool bench` arguments, e.g. -- --scenario spike --runs 1
#   --report FILE  do not run anything: print the table of an earlier bench.jsonl
#
# Runs `pqxxpool bench --runs 3 --out DIR/bench.jsonl --latencies-out DIR/latencies` (every
# scenario, 3 s per run; the JSON lines also stream to stdout, progress to stderr), then
# `bench/plot.sh --out IMG DIR/bench.jsonl`, then prints the table. Starts a throwaway cluster
# with test/support/pgcluster.sh (stopped and removed on exit) unless PQXXPOOL_BENCH_CONNINFO is
# set, in which case that server is used. Needs what scripts/deps.sh installs (gnuplot-nox for
# the plots). Takes about 3.5 minutes with the defaults.
#
# Environment:
#   PQXXPOOL_BENCH_JOBS  ninja parallelism when building (default 1: shared machine)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
readonly CLUSTER_SCRIPT="$ROOT/test/support/pgcluster.sh"

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit "${1:-2}"
}

die() {
    printf 'scenarios.sh: %s\n' "$*" >&2
    exit 1
}

plain=0
bin=""
out=""
img="$ROOT/docs/img"
report=""
extra=()
while (($# > 0)); do
    case "$1" in
        --bin | --out | --img | --report)
            (($# >= 2)) || usage
            case "$1" in
                --bin) bin="$2" ;;
                --out) out="$2" ;;
                --img) img="$2" ;;
                --report) report="$2" ;;
            esac
            shift 2
            ;;
        --bin=*) bin="${1#--bin=}" && shift ;;
        --out=*) out="${1#--out=}" && shift ;;
        --img=*) img="${1#--img=}" && shift ;;
        --report=*) report="${1#--report=}" && shift ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        --plain) plain=1 && shift ;;
        -h | --help) usage 0 ;;
        *)
            printf 'scenarios.sh: unknown argument: %s\n' "$1" >&2
            usage
            ;;
    esac
done

command -v python3 >/dev/null || die "python3 not found (run bash scripts/deps.sh)"

# Prints a Markdown table of a bench.jsonl: one row per case, pqxxpool / naive side by side.
print_table() {
    python3 - "$1" <<'EOF'
import json, sys

docs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
meta = next((d for d in docs if d.get("type") == "meta"), {})
res = {(d["case"], d["pool"]): d for d in docs if d.get("type") == "result"}
summ = {d["case"]: d for d in docs if d.get("type") == "summary"}
cases = []
for d in docs:
    if d.get("type") == "result" and d["case"] not in cases:
        cases.append(d["case"])

def lat(ms):
    if ms is None:
        return "-"
    if ms < 0.001:
        return "{:.0f} ns".format(ms * 1e6)
    if ms < 1:
        return "{:.3g} µs".format(ms * 1e3)
    if ms < 1000:
        return "{:.3g} ms".format(ms)
    return "{:.3g} s".format(ms / 1000)

def num(v):
    if v is None:
        return "-"
    if v >= 100:
        return "{:,.0f}".format(v)
    return "{:.3g}".format(v)

def pair(case, key, fmt):
    p, n = res.get((case, "pqxxpool")), res.get((case, "naive"))
    return "{} / {}".format(fmt(p.get(key)) if p else "-", fmt(n.get(key)) if n else "-")

print("pqxxpool {}, libpqxx {}, libpq {}, server {} over {}; {} CPUs; load average at the start {}; {} run(s) of {} s per case and pool; started {}".format(
    meta.get("pqxxpool_version"), meta.get("libpqxx_version"), meta.get("libpq_version"), meta.get("server_version"),
    {"tls": "TLS", "plain": "plain TCP"}.get(meta.get("transport"), "an unrecorded transport"),
    meta.get("hardware_concurrency"), meta.get("loadavg"), meta.get("runs"), meta.get("duration_s"), meta.get("started_at")))
print()
print("Cells are pqxxpool / naive, medians over the runs; ratio = ops/s pqxxpool / naive.")
print()
print("| case | ops/s | ratio | acquire p50 | acquire p99 | acquire max | thread min/max | conns opened | CPU µs/op | load | goals |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for c in cases:
    s = summ.get(c, {})
    goals = "; ".join("{} {} ({})".format("✔" if g["met"] else "✘", g["goal"], g["value"]) for g in s.get("goals", []))
    extra = []
    p = res.get((c, "pqxxpool"), {})
    if p.get("waited_for_connect") is not None and c.startswith("recycle"):
        extra.append("waited_for_connect {}".format(p["waited_for_connect"]))
    if "p99_ratio_vs_no_recycle" in s:
        r = s["p99_ratio_vs_no_recycle"]
        extra.append("p99 vs no recycling {} / {}".format(r.get("pqxxpool"), r.get("naive")))
    if "p99_over_p50" in p:
        extra.append("pqxxpool p99/p50 {}, max/p50 {}".format(p["p99_over_p50"], p["max_over_p50"]))
    errors = sum(res.get((c, k), {}).get("errors", 0) for k in ("pqxxpool", "naive"))
    if errors:
        extra.append("**{} errors**".format(errors))
    loads = [res[(c, k)]["loadavg_1m"] for k in ("pqxxpool", "naive") if (c, k) in res]
    print("| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |".format(
        c, pair(c, "ops_per_s", num), num(s.get("ops_per_s_ratio")), pair(c, "acquire_p50_ms", lat),
        pair(c, "acquire_p99_ms", lat), pair(c, "acquire_max_ms", lat), pair(c, "per_thread_ops_ratio", num),
        pair(c, "connections_opened", num), pair(c, "cpu_us_per_op", num),
        "{:.1f}".format(max(loads)) if loads else "-", "; ".join([x for x in [goals] if x] + extra) or "-"))
EOF
}

if [[ -n "$report" ]]; then
    [[ -f "$report" ]] || die "no such file: $report"
    print_table "$report"
    exit
fi

if [[ -z "$bin" ]]; then
    bin="$(release_binary pqxxpool_cli tools/pqxxpool/pqxxpool)" || die "no pqxxpool binary"
fi
[[ -x "$bin" ]] || die "not an executable: $bin"
bin="$(realpath -- "$bin")"

out="${out:-$ROOT/build/bench-results/scenarios-$(date +%Y%m%d-%H%M%S)}"
mkdir -p -- "$out"
out="$(realpath -- "$out")"

if [[ -z "${PQXXPOOL_BENCH_CONNINFO:-}" ]]; then
    cluster_dir="$(mktemp -d /tmp/pqxxpool-bench.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the directory is known
    trap "bash '$CLUSTER_SCRIPT' stop '$cluster_dir'" EXIT
    PQXXPOOL_TEST_CLUSTER_PLAIN_TCP="$plain" bash "$CLUSTER_SCRIPT" start "$cluster_dir"
    # shellcheck source=/dev/null
    source "$cluster_dir/env"
    if ((plain)); then
        export PQXXPOOL_BENCH_CONNINFO="$PQXXPOOL_TEST_PLAIN_CONNINFO"
    fi
elif ((plain)); then
    die "--plain starts its own cluster: unset PQXXPOOL_BENCH_CONNINFO (or put sslmode=disable in it)"
fi

printf 'scenarios.sh: load average before the run: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
rc=0
"$bin" bench --runs 3 --out "$out/bench.jsonl" --latencies-out "$out/latencies" "${extra[@]}" || rc=$?
printf 'scenarios.sh: load average after the run: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
[[ -s "$out/bench.jsonl" ]] || die "pqxxpool bench wrote nothing (exit $rc)"

bash "$ROOT/bench/plot.sh" --out "$img" "$out/bench.jsonl"
printf '\nJSON lines: %s\nlatency CDFs: %s/latencies\nplots: %s\n\n' "$out/bench.jsonl" "$out" "$img"
print_table "$out/bench.jsonl"
if ((rc != 0)); then
    die "pqxxpool bench exited $rc (some operations failed: see the errors fields)"
fi
