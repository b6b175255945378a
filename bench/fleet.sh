#!/usr/bin/env bash
# Fleet simulation: 1,000 pools of 10 against one Aurora DSQL cluster, in fake time
# (docs/benchmarks.md, "Fleet simulation").
#
# Usage: bash bench/fleet.sh [--bin PATH] [--out DIR] [--png FILE] [--instances N] [--no-core]
#
#   --bin PATH       pqxxpool_fleet_sim to run (default: build the release preset's target if
#                    needed and run build/release/bench/pqxxpool_fleet_sim)
#   --out DIR        where the CSVs and fleet_summary.txt go (default bench/results)
#   --png FILE       the plot (default docs/img/fleet_reconnects.png)
#   --instances N    application instances (default 1000)
#   --no-core        only the discrete-event model (seconds instead of minutes)
#
# Runs, each for 180 minutes of fake time:
#   scenarios a (jitter 0.1), b (jitter 0), c (jitter 0.1, fleet-wide restart at 90 min) with
#   the real pool cores (fleet_{a,b,c}.csv) and with the model (fleet_model_{a,b,c}.csv);
#   the core engine again with other seeds for a (the run-to-run noise), and the per-minute
#   distance between core and model next to the distance between two seeds;
#   proposals: jitter 0.5 (core and model), jitter 0.2, a spread first lifetime and a jittered
#   connect backoff (model); the model over 1, 3 and 7 days (how long the waves take to fade);
# then draws the three core curves and the spread-first-lifetime model curve with
# bench/fleet_plot.gnuplot (needs gnuplot:
# apt-get install -y gnuplot-nox). Each report goes to stdout and into DIR/fleet_summary.txt.
# The core runs take a few minutes each on 2 CPUs (3,000 pool threads).
#
# Environment:
#   PQXXPOOL_BENCH_JOBS  ninja parallelism when building (default 1: shared machine)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit "${1:-2}"
}

bin=""
out="$ROOT/bench/results"
png="$ROOT/docs/img/fleet_reconnects.png"
instances=1000
core=1
while (($# > 0)); do
    case "$1" in
        --bin) (($# >= 2)) || usage; bin="$2"; shift 2 ;;
        --out) (($# >= 2)) || usage; out="$2"; shift 2 ;;
        --png) (($# >= 2)) || usage; png="$2"; shift 2 ;;
        --instances) (($# >= 2)) || usage; instances="$2"; shift 2 ;;
        --no-core) core=0; shift ;;
        -h | --help) usage 0 ;;
        *) usage ;;
    esac
done

if [[ -z "$bin" ]]; then
    bin="$(release_binary pqxxpool_fleet_sim bench/pqxxpool_fleet_sim)" || exit 1
fi
[[ -x "$bin" ]] || { echo "fleet.sh: no executable $bin" >&2; exit 1; }
mkdir -p "$out" "$(dirname "$png")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
summary="$out/fleet_summary.txt"
{
    echo "# pqxxpool fleet simulation, $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# $bin, $instances instances"
} >"$summary"

sim() { # sim ARGS... : one run, its report to stdout and the summary
    # Scenarios a-c are the behaviour before pool_config::initial_lifetime_spread existed
    # (--first-lifetime-spread 0); a later --first-lifetime-spread in ARGS wins.
    "$bin" --instances "$instances" --first-lifetime-spread 0 "$@" | tee -a "$summary"
    echo >>"$summary"
}

# compare A.csv B.csv LABEL: the two per-second curves summed per minute, side by side.
compare() {
    awk -F, -v label="$3" '
        FNR == 1 { next }
        FNR == NR { a[int($1 / 60)] += $2; ta += $2; next }
        { b[int($1 / 60)] += $2; tb += $2 }
        END {
            for (m in a) keys[m] = 1
            for (m in b) keys[m] = 1
            n = 0; sad = 0; worst = 0; at = 0; sa = sb = saa = sbb = sab = 0
            for (m in keys) {
                x = a[m] + 0; y = b[m] + 0; d = x > y ? x - y : y - x
                n++; sad += d; if (d > worst) { worst = d; at = m }
                sa += x; sb += y; saa += x * x; sbb += y * y; sab += x * y
            }
            r = (n * sab - sa * sb) / sqrt((n * saa - sa * sa) * (n * sbb - sb * sb))
            printf "compare %-34s per-minute connects: totals %d / %d, sum |diff| %d (%.1f%%), largest |diff| %d (minute %d), correlation %.4f\n",
                label, ta, tb, sad, 100 * sad / (ta > 0 ? ta : 1), worst, at, r
        }' "$1" "$2" | tee -a "$summary"
}

if ((core)); then
    for s in a b c; do
        echo "== scenario $s, real pool cores (progress on stderr)"
        sim --engine core --scenario "$s" --csv "$out/fleet_$s.csv"
    done
    for seed in 2 3; do
        sim --engine core --scenario a --seed "$seed" --label "a, seed $seed" --csv "$tmp/fleet_a_seed$seed.csv"
    done
    # A proposal that needs no code change (lifetime_jitter is a setting): real cores too.
    sim --engine core --scenario a --jitter 0.5 --label "proposal: jitter 0.5"
    # Today's defaults: initial_lifetime_spread 0.9 (the fourth panel of the plot).
    sim --engine core --scenario a --first-lifetime-spread 0.9 --csv "$out/fleet_a_spread.csv" \
        --label "a with initial_lifetime_spread 0.9 (the default)"
    sim --engine core --scenario b --first-lifetime-spread 0.9 --csv "$out/fleet_b_spread.csv" \
        --label "b with initial_lifetime_spread 0.9 (the default)"
fi
for s in a b c; do
    sim --engine model --scenario "$s" --csv "$out/fleet_model_$s.csv"
done
if ((core)); then
    # Is the model faithful? Its distance to the cores should be no larger than the distance
    # between two core runs that differ only in their seeds.
    for s in a b c; do
        compare "$out/fleet_$s.csv" "$out/fleet_model_$s.csv" "core $s vs model $s"
    done
    compare "$out/fleet_a.csv" "$tmp/fleet_a_seed2.csv" "core a vs core a (seed 2)"
    compare "$tmp/fleet_a_seed2.csv" "$tmp/fleet_a_seed3.csv" "core a (seed 2) vs core a (seed 3)"
    echo >>"$summary"
fi
# Proposals (model). The spread first lifetime became pool_config::initial_lifetime_spread
# (default 0.9; real-core runs above); the backoff jitter is model only.
sim --engine model --scenario a --jitter 0.2 --label "proposal: jitter 0.2"
sim --engine model --scenario a --jitter 0.5 --label "proposal: jitter 0.5"
sim --engine model --scenario a --first-lifetime-spread 0.9 --csv "$out/fleet_model_spread.csv" \
    --label "proposal: first lifetime spread over (5.5, 55] min"
sim --engine model --scenario c --first-lifetime-spread 0.9 \
    --label "proposal: first lifetime spread over (5.5, 55] min, restart"
sim --engine model --scenario a --first-lifetime-spread 1 --label "proposal: first lifetime spread over (0, 55] min"
sim --engine model --scenario a --backoff-jitter 1 --label "proposal: backoff x (1 - U), full jitter"
sim --engine model --scenario a --backoff-jitter 0.5 --label "proposal: backoff x (1 - U/2)"

# How long the waves of (a) take to fade: the model run for 1, 3 and 7 days, its last 3 hours.
for days in 1 3 7; do
    m=$((days * 1440))
    "$bin" --engine model --scenario a --instances "$instances" --minutes "$m" --csv "$tmp/days$days.csv" >/dev/null
    awk -F, -v m="$m" -v days="$days" '
        NR > 1 && $1 >= (m - 180) * 60 && $1 < m * 60 {
            sum += $2; if ($2 > peak) peak = $2; per_min[int($1 / 60)] += $2
        }
        END {
            zero = 0; busiest = 0
            for (k in per_min) { if (per_min[k] == 0) zero++; if (per_min[k] / 60 > busiest) busiest = per_min[k] / 60 }
            zero += 180 - length(per_min)
            printf "model a, %d day(s), last 3 h: mean %.2f/s, peak %d/s, largest 1-minute mean %.2f/s, minutes without a connect %d of 180\n",
                days, sum / 10800, peak, busiest, zero
        }' "$tmp/days$days.csv" | tee -a "$summary"
done

if ((core)); then
    if command -v gnuplot >/dev/null; then
        gnuplot -e "dir='$out'; out='$png'" "$ROOT/bench/fleet_plot.gnuplot"
        echo "plot: $png"
    else
        echo "fleet.sh: gnuplot not found (apt-get install -y gnuplot-nox): no plot" >&2
    fi
fi
echo "summary: $summary"
