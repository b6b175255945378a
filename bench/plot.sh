#!/usr/bin/env bash
# Plot the acquire-latency distributions of a `pqxxpool bench` run, pqxxpool vs naive.
#
# Usage: bash bench/plot.sh [--out DIR] RESULTS.jsonl
#
#   RESULTS.jsonl  the JSON lines of `pqxxpool bench --out RESULTS.jsonl --latencies-out LATDIR`:
#                  every result line names its CDF file (field latency_cdf, written to LATDIR);
#                  a relative name is looked up from the current directory, then next to
#                  RESULTS.jsonl
#   --out DIR      where the PNGs go (default: docs/img of this repository)
#
# Writes one PNG per scenario, DIR/acquire-cdf-<scenario>.png (800x500): the cumulative
# distribution of the acquire latency (fraction of acquires at or below x, x on a log scale, y on
# a "nines" scale: 0, 50 %, 90 %, 99 %, 99.9 % … evenly spaced, so the tail shows) of every case
# of the scenario, pqxxpool in blue, naive in orange, one dash style per case, with p50/p99/max
# in the legend and the load average of the run in the title. Needs gnuplot (Debian:
# gnuplot-nox, with the pngcairo terminal) and python3; scripts/deps.sh installs both.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit "${1:-2}"
}

die() {
    printf 'plot.sh: %s\n' "$*" >&2
    exit 1
}

out_dir="$ROOT/docs/img"
results=""
while (($# > 0)); do
    case "$1" in
        --out)
            (($# >= 2)) || usage
            out_dir="$2"
            shift 2
            ;;
        --out=*)
            out_dir="${1#--out=}"
            shift
            ;;
        -h | --help) usage 0 ;;
        -*)
            printf 'plot.sh: unknown argument: %s\n' "$1" >&2
            usage
            ;;
        *)
            [[ -z "$results" ]] || usage
            results="$1"
            shift
            ;;
    esac
done
[[ -n "$results" ]] || usage
[[ -f "$results" ]] || die "no such file: $results"
command -v gnuplot >/dev/null || die "gnuplot not found (Debian: apt-get install gnuplot-nox, or bash scripts/deps.sh)"
command -v python3 >/dev/null || die "python3 not found"
gnuplot -e 'set terminal' 2>&1 | grep -qw pngcairo || die "this gnuplot has no pngcairo terminal"
mkdir -p -- "$out_dir"

# python3 reads the JSON lines and the CDF files and writes one self-contained gnuplot script per
# scenario (data inline), then runs gnuplot on it.
python3 - "$results" "$out_dir" <<'EOF'
import json, math, os, subprocess, sys, tempfile

results_path, out_dir = sys.argv[1], sys.argv[2]
colors = {"pqxxpool": "#1f77b4", "naive": "#ff7f0e"}
dashes = [1, 2, 3, 4]  # gnuplot dash types, one per case of a scenario
order = ["cycle", "select1", "contended", "recycle", "spike"]

lines = []
with open(results_path) as f:
    for n, text in enumerate(f, 1):
        text = text.strip()
        if not text:
            continue
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError as e:
            sys.exit("plot.sh: {}:{}: not JSON: {}".format(results_path, n, e))

def find(path):
    if os.path.isabs(path) or os.path.exists(path):
        return path
    beside = os.path.join(os.path.dirname(os.path.abspath(results_path)), path)
    return beside if os.path.exists(beside) else path

def human(ms):
    if ms < 0.000999:
        return "{:.3g} ns".format(ms * 1e6)
    if ms < 0.999:
        return "{:.3g} µs".format(ms * 1e3)
    if ms < 999:
        return "{:.3g} ms".format(ms)
    return "{:.3g} s".format(ms / 1000)

def case_label(r):
    label = "{} thread{}".format(r["threads"], "" if r["threads"] == 1 else "s")
    if r["scenario"] == "recycle":
        life = r.get("max_lifetime_ms", 0)
        label += ", no recycling" if life == 0 else ", lifetime {:g} s".format(life / 1000)
    return label

def read_cdf(path):
    """[(latency_ms, nines)], nines = -log10(fraction of acquires slower than latency_ms), from the
    bucket counts (exact even where the fraction column rounds to 1); the slowest bucket, where
    that fraction is 0, is drawn half a decade above the resolution 1/count."""
    rows = []
    with open(path) as f:
        for row in f:
            if row.startswith("#") or not row.strip():
                continue
            x, _, n = row.split()[:3]
            rows.append((float(x), int(n)))
    total = sum(n for _, n in rows)
    if total == 0:
        return []
    top = math.log10(total) + 0.5
    pts, seen = [(rows[0][0], 0.0)], 0
    for x, n in rows:
        seen += n
        slower = (total - seen) / total
        pts.append((x, -math.log10(slower) if slower > 0 else top))
    return pts

meta = next((l for l in lines if l.get("type") == "meta"), {})
by_scenario = {}
for r in lines:
    if r.get("type") == "result" and r.get("latency_cdf"):
        by_scenario.setdefault(r["scenario"], []).append(r)
if not by_scenario:
    sys.exit("plot.sh: no result line with a latency_cdf in {} (run pqxxpool bench with --latencies-out DIR)".format(results_path))

def xticks(lo, hi):
    """Tick marks with readable units: every decade, and 2 and 5 within them when the range spans
    less than two decades."""
    mult = (1, 2, 5) if hi / lo < 100 else (1,)
    out = []
    for e in range(-6, 6):
        for m in mult:
            v = m * 10.0 ** e
            if lo <= v <= hi:
                out.append('"{}" {!r}'.format(human(v), v))
    return ", ".join(out)

for scenario in sorted(by_scenario, key=lambda s: (order.index(s) if s in order else 99, s)):
    rows = by_scenario[scenario]
    case_ids = []
    for r in rows:
        if r["case"] not in case_ids:
            case_ids.append(r["case"])
    blocks, plots = [], []
    xmin, xmax, ymax = float("inf"), 0.0, 1.0
    loads = []
    for i, r in enumerate(sorted(rows, key=lambda r: (case_ids.index(r["case"]), r["pool"] != "pqxxpool"))):
        path = find(r["latency_cdf"])
        if not os.path.exists(path):
            sys.exit("plot.sh: {}: latency file not found: {}".format(results_path, r["latency_cdf"]))
        pts = read_cdf(path)
        if not pts:
            continue
        xmin, xmax = min(xmin, pts[0][0]), max(xmax, pts[-1][0])
        ymax = max(ymax, pts[-1][1])
        loads.append(r.get("loadavg_1m", 0))
        name = "$d{}".format(i)
        data = ["{!r} {!r}".format(x, y) for x, y in pts]
        blocks.append("{} << EOD\n{}\nEOD\n".format(name, "\n".join(data)))
        title = "{} {}: p50 {}, p99 {}, max {}".format(
            r["pool"], case_label(r), human(r["acquire_p50_ms"]), human(r["acquire_p99_ms"]), human(r["acquire_max_ms"]))
        plots.append("{} using 1:2 with steps lw 2 lc rgb '{}' dt {} title '{}'".format(
            name, colors.get(r["pool"], "#555555"), dashes[case_ids.index(r["case"]) % len(dashes)],
            title.replace("'", "")))
    if not plots:
        continue
    lo, hi = xmin / 1.5, xmax * 1.5
    xt = xticks(lo, hi)
    # y: the CDF on a "nines" scale, so that the tail (p99, p99.9, max) is as visible as the median.
    nines = [(0, "0%"), (math.log10(2), "50%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"),
             (5, "99.999%"), (6, "99.9999%"), (7, "99.99999%"), (8, "99.999999%")]
    yt = ", ".join('"{}" {!r}'.format(label.replace("%", "%%"), v) for v, label in nines if v <= ymax)
    runs = rows[0].get("runs", 1)
    load = max(loads) if loads else 0
    title = "{}: acquire latency, pqxxpool vs naive (pool of {}; {} run{} merged; load avg ≤ {:.1f} on {} CPUs)".format(
        scenario, rows[0].get("pool_size", "?"), runs, "" if runs == 1 else "s", load,
        meta.get("hardware_concurrency", "?"))
    png = os.path.join(out_dir, "acquire-cdf-{}.png".format(scenario))
    script = "\n".join([
        "set terminal pngcairo size 800,500 noenhanced font 'DejaVu Sans,9'",
        "set output '{}'".format(png.replace("'", "''")),
    ] + blocks + [
        "set title '{}'".format(title),
        "set logscale x",
        "set xrange [{!r}:{!r}]".format(lo, hi),
        "set xtics ({})".format(xt),
        "set yrange [0:{!r}]".format(ymax * 1.04),
        "set ytics ({})".format(yt),
        "set grid xtics ytics lc rgb '#dddddd'",
        "set xlabel 'acquire latency (log scale)'",
        "set ylabel 'acquires at or below (CDF, nines scale)'",
        # The legend below the plot, one entry per line (two columns would not fit 800 px).
        "set bmargin {:.1f}".format(3.6 + 0.95 * len(plots)),
        "set key at screen 0.5, screen 0.012 center bottom Left reverse maxrows {} samplen 3 font ',8'".format(len(plots)),
        "plot " + ", \\\n     ".join(plots),
        "",
    ])
    with tempfile.NamedTemporaryFile("w", suffix=".gp", delete=False) as gp:
        gp.write(script)
    try:
        subprocess.run(["gnuplot", gp.name], check=True)
    finally:
        os.unlink(gp.name)
    print(png)
EOF
