#!/usr/bin/env bash
# Run pqxxpool's benchmarks against a throwaway PostgreSQL and print pqxxpool vs naive.
# (The longer scenarios of `pqxxpool bench` — contention, recycling, spike — run with
# bench/scenarios.sh instead.)
#
# Usage: bash bench/run.sh [[--bin] PATH] [--report FILE] [-- BENCHMARK_FLAGS...]
#
#   [--bin] PATH   benchmark binary to run (default: build the release preset's
#                  pqxxpool_bench target if needed and run build/release/bench/pqxxpool_bench)
#   --report FILE  do not run anything: print the table for an earlier JSON result file
#   -- FLAGS...    extra Google Benchmark flags, e.g. -- --benchmark_filter=cycle
#
# Starts a throwaway cluster with test/support/pgcluster.sh (stopped and removed on exit)
# unless PQXXPOOL_BENCH_CONNINFO is set, in which case that server is used. Runs
#   pqxxpool_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true
#                  --benchmark_enable_random_interleaving=true --benchmark_min_time=1
#                  --benchmark_out=FILE --benchmark_out_format=json
# (console output on stdout while it runs), then prints the medians of both pools side by
# side with the throughput ratio pqxxpool/naive (> 1: pqxxpool is faster).
#
# Environment:
#   PQXXPOOL_BENCH_OUT   where to write the JSON (default: next to the binary,
#                        pool_bench-YYYYmmdd-HHMMSS.json)
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
    printf 'run.sh: %s\n' "$*" >&2
    exit 1
}

bin=""
report=""
extra=()
while (($# > 0)); do
    case "$1" in
        --bin)
            (($# >= 2)) || usage
            bin="$2"
            shift 2
            ;;
        --bin=*)
            bin="${1#--bin=}"
            shift
            ;;
        --report)
            (($# >= 2)) || usage
            report="$2"
            shift 2
            ;;
        --report=*)
            report="${1#--report=}"
            shift
            ;;
        --)
            shift
            extra=("$@")
            break
            ;;
        -h | --help) usage 0 ;;
        -*)
            printf 'run.sh: unknown argument: %s\n' "$1" >&2
            usage
            ;;
        *)
            [[ -z "$bin" ]] || usage
            bin="$1"
            shift
            ;;
    esac
done

# Prints the pqxxpool vs naive table for a Google Benchmark JSON file.
print_table() {
    python3 - "$1" <<'EOF'
import json, re, sys

with open(sys.argv[1]) as f:
    doc = json.load(f)

ctx = doc.get("context", {})
print()
print("host: {} CPUs, {:.0f} MHz, load avg {}; pqxxpool {}, libpqxx {}, libpq {}, server {}".format(
    ctx.get("num_cpus", "?"), ctx.get("mhz_per_cpu", 0), ctx.get("load_avg", "?"),
    ctx.get("pqxxpool_version", "?"), ctx.get("libpqxx_version", "?"),
    ctx.get("libpq_version", "?"), ctx.get("server_version", "?")))

name_re = re.compile(r"^(?P<scenario>[^/]+)/(?P<pool>pqxxpool|naive)/.*threads:(?P<threads>\d+)")
to_ns = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}
rows = {}    # (scenario, threads) -> pool -> {stat: value}
errors = []
for b in doc.get("benchmarks", []):
    m = name_re.match(b.get("run_name", b["name"]))
    if not m:
        continue
    if b.get("error_occurred"):
        errors.append("{}: {}".format(b["name"], b.get("error_message", "error")))
        continue
    if b.get("run_type") != "aggregate":
        continue
    stat = b.get("aggregate_name")
    value = b["real_time"] * to_ns.get(b.get("time_unit", "ns"), 1.0)
    if stat == "cv":
        value = b["real_time"]  # a fraction, not a time
    key = (m["scenario"], int(m["threads"]))
    rows.setdefault(key, {}).setdefault(m["pool"], {})[stat] = value
    if stat == "median" and "vcsw/op" in b:
        rows[key][m["pool"]]["vcsw"] = b["vcsw/op"]

if not rows:
    sys.exit("run.sh: no aggregate results in {} (were repetitions > 1?)".format(sys.argv[1]))

def ns(v):
    return "{:,.0f}".format(v) if v >= 100 else "{:.1f}".format(v)

def ops(v):
    return "{:,.0f}".format(1e9 / v)

def csw(v):
    return "-" if v is None else "{:.3g}".format(v)

hdr = ("scenario", "threads", "pqxxpool ns/op", "naive ns/op", "pqxxpool ops/s", "naive ops/s",
       "ratio", "cv pqxxpool", "cv naive", "vcsw/op pqxxpool", "vcsw/op naive")
out = [hdr]
order = {"cycle": 0, "select1": 1}
for (scenario, threads) in sorted(rows, key=lambda k: (order.get(k[0], 9), k[0], k[1])):
    r = rows[(scenario, threads)]
    p, n = r.get("pqxxpool", {}), r.get("naive", {})
    if "median" not in p or "median" not in n:
        continue
    out.append((scenario, str(threads), ns(p["median"]), ns(n["median"]), ops(p["median"]),
                ops(n["median"]), "{:.2f}".format(n["median"] / p["median"]),
                "{:.1%}".format(p.get("cv", 0)), "{:.1%}".format(n.get("cv", 0)),
                csw(p.get("vcsw")), csw(n.get("vcsw"))))
widths = [max(len(row[i]) for row in out) for i in range(len(hdr))]
print()
print("medians (wall-clock ns per operation over all threads); ratio = throughput pqxxpool / naive, > 1: pqxxpool faster;")
print("cv = coefficient of variation over the repetitions; vcsw/op = voluntary context switches (blocking) per operation")
for i, row in enumerate(out):
    print("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths))))
    if i == 0:
        print("  ".join("-" * w for w in widths))
for e in errors:
    print("ERROR " + e)
sys.exit(1 if errors else 0)
EOF
}

if [[ -n "$report" ]]; then
    [[ -f "$report" ]] || die "no such file: $report"
    print_table "$report"
    exit
fi

command -v python3 >/dev/null || die "python3 not found (needed to print the table)"

if [[ -z "$bin" ]]; then
    bin="$(release_binary pqxxpool_bench bench/pqxxpool_bench)" || die "no pqxxpool_bench binary"
fi
[[ -x "$bin" ]] || die "not an executable: $bin"
bin="$(realpath -- "$bin")"

out="${PQXXPOOL_BENCH_OUT:-$(dirname "$bin")/pool_bench-$(date +%Y%m%d-%H%M%S).json}"

if [[ -z "${PQXXPOOL_BENCH_CONNINFO:-}" ]]; then
    cluster_dir="$(mktemp -d /tmp/pqxxpool-bench.XXXXXX)"
    # shellcheck disable=SC2064  # expand now: the directory is known
    trap "bash '$CLUSTER_SCRIPT' stop '$cluster_dir'" EXIT
    bash "$CLUSTER_SCRIPT" start "$cluster_dir"
    # shellcheck source=/dev/null
    source "$cluster_dir/env"
fi

"$bin" --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
    --benchmark_enable_random_interleaving=true --benchmark_min_time=1 \
    --benchmark_out="$out" --benchmark_out_format=json "${extra[@]}"

printf '\nJSON results: %s\n' "$out"
print_table "$out"
