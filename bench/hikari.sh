#!/usr/bin/env bash
# HikariCP side by side with pqxxpool and the naive pool: the same scenarios, the same server,
# one sitting (docs/benchmarks.md, "HikariCP measured here").
#
# Usage: bash bench/hikari.sh [--out DIR] [--seconds S] [--runs N]
#
#   --out DIR      where hikari.jsonl and bench.jsonl go (default build/bench-results/hikari-DATE)
#   --seconds S    length of each run (default 3)
#   --runs N       runs per case and pool (default 3; medians are reported)
#
# Installs what it needs from Debian if missing (openjdk-17-jdk-headless, libhikaricp-java 2.7.9,
# libpostgresql-jdbc-java), compiles bench/hikari/HikariBench.java into build/hikari, starts a
# throwaway cluster with test/support/pgcluster.sh (stopped and removed on exit), runs HikariBench
# (cycle_t1, cycle_t16, select1_t4, select1_t16, contended_t16; JIT warmed up first), then
# `pqxxpool bench` for the same cases, and prints one table: pqxxpool / naive / HikariCP.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

die() {
    printf 'hikari.sh: %s\n' "$*" >&2
    exit 1
}

out=""
seconds=3
runs=3
while (($# > 0)); do
    case "$1" in
        --out) out="${2:?--out needs a directory}" && shift 2 ;;
        --seconds) seconds="${2:?--seconds needs a number}" && shift 2 ;;
        --runs) runs="${2:?--runs needs a number}" && shift 2 ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}" && exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--seconds must be a positive number, got '$seconds'"
[[ "$runs" =~ ^[1-9][0-9]*$ ]] || die "--runs must be a whole number ≥ 1, got '$runs'"

need=()
command -v javac >/dev/null || need+=(openjdk-17-jdk-headless)
[[ -f /usr/share/java/HikariCP.jar ]] || need+=(libhikaricp-java)
[[ -f /usr/share/java/postgresql.jar ]] || need+=(libpostgresql-jdbc-java)
if ((${#need[@]} > 0)); then
    printf 'hikari.sh: installing %s\n' "${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi
readonly CP="/usr/share/java/HikariCP.jar:/usr/share/java/postgresql.jar:/usr/share/java/slf4j-api.jar"
mkdir -p "$ROOT/build/hikari"
javac -d "$ROOT/build/hikari" -cp "$CP" "$ROOT/bench/hikari/HikariBench.java" || die "javac failed"

bin="$(release_binary pqxxpool_cli tools/pqxxpool/pqxxpool)" || die "no pqxxpool binary"
out="${out:-$ROOT/build/bench-results/hikari-$(date +%Y%m%d-%H%M%S)}"
mkdir -p -- "$out"

cluster_dir="$(mktemp -d /tmp/pqxxpool-hikari.XXXXXX)"
# shellcheck disable=SC2064  # expand now: the directory is known
trap "bash '$ROOT/test/support/pgcluster.sh' stop '$cluster_dir'" EXIT
bash "$ROOT/test/support/pgcluster.sh" start "$cluster_dir" >&2
# shellcheck source=/dev/null
source "$cluster_dir/env"
url="jdbc:postgresql://localhost:${PQXXPOOL_TEST_PORT}/app?sslmode=verify-full&sslrootcert=${PQXXPOOL_TEST_CA}"

printf 'hikari.sh: load average before: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
java -cp "$CP:$ROOT/build/hikari" HikariBench "$url" app "$PQXXPOOL_TEST_APP_PASSWORD" "$seconds" "$runs" \
    >"$out/hikari.jsonl"
"$bin" bench --scenario cycle --scenario select1 --scenario contended --runs "$runs" \
    --duration "${seconds}s" --out "$out/bench.jsonl" >/dev/null
printf 'hikari.sh: load average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$out/bench.jsonl" "$out/hikari.jsonl" <<'EOF'
import json, sys

rows = {}
for path in sys.argv[1:]:
    for line in open(path):
        d = json.loads(line)
        if d.get("type") == "result":
            pool = "hikari" if d["pool"].startswith("hikari") else d["pool"]
            rows[(d["case"], pool)] = d

def ms(v):
    return "-" if v is None else ("{:.0f} ns".format(v * 1e6) if v < 1e-3 else
                                  "{:.1f} µs".format(v * 1e3) if v < 1 else "{:.2f} ms".format(v))

pools = ("pqxxpool", "naive", "hikari")
print("| case | ops/s pqxxpool / naive / HikariCP | HikariCP ÷ naive | pqxxpool ÷ naive | acquire p99 | acquire max | thread min/max |")
print("|---|---:|---:|---:|---:|---:|---:|")
for case in ("cycle_t1", "cycle_t16", "select1_t4", "select1_t16", "contended_t16"):
    r = [rows.get((case, p), {}) for p in pools]
    ops = [x.get("ops_per_s") for x in r]
    naive = ops[1] or 0
    ratio = lambda v: "{:.2f}".format(v / naive) if v and naive else "-"
    print("| {} | {} | {} | {} | {} | {} | {} |".format(
        case, " / ".join("{:,.0f}".format(v) if v else "-" for v in ops), ratio(ops[2]), ratio(ops[0]),
        " / ".join(ms(x.get("acquire_p99_ms")) for x in r), " / ".join(ms(x.get("acquire_max_ms")) for x in r),
        " / ".join("{:.2f}".format(x["per_thread_ops_ratio"]) if x.get("per_thread_ops_ratio") is not None else "-"
                   for x in r)))
EOF
printf 'hikari.sh: JSON lines in %s\n' "$out" >&2
