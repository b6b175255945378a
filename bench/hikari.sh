#!/usr/bin/env bash
# HikariCP and pgxpool side by side with pqxxpool and the naive pool: the same scenarios, the same
# server, one sitting (docs/benchmarks.md, "HikariCP measured here").
#
# Usage: bash bench/hikari.sh [--plain] [--out DIR] [--seconds S] [--runs N]
#
#   --plain        every pool connects over plain TCP on 127.0.0.1 (sslmode=disable), as the
#                  performance issue's table was measured, instead of TLS (sslmode=verify-full)
#   --out DIR      where hikari.jsonl, pgxpool.jsonl and bench.jsonl go
#                  (default build/bench-results/hikari-DATE)
#   --seconds S    length of each run (default 3)
#   --runs N       runs per case and pool (default 3; medians are reported)
#
# Installs what it needs from Debian if missing (openjdk-17-jdk-headless, libhikaricp-java 2.7.9,
# libpostgresql-jdbc-java, golang-go 1.19, golang-github-jackc-pgx-v4-dev 4.15), compiles
# bench/hikari/HikariBench.java into build/hikari and bench/pgxpool/main.go into
# build/pgxpool/pgxpoolbench (offline: GOPATH mode on Debian's Go sources in /usr/share/gocode,
# GOPROXY=off), starts a throwaway cluster with test/support/pgcluster.sh (stopped and removed on
# exit), runs HikariBench (JIT warmed up first) and pgxpoolbench (warmed up the same way) through
# cycle_t1, cycle_t16, select1_t4, select1_t16, contended_t16, then `pqxxpool bench` for the same
# cases, and prints one table: pqxxpool / naive / HikariCP / pgxpool.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

die() {
    printf 'hikari.sh: %s\n' "$*" >&2
    exit 1
}

plain=0
out=""
seconds=3
runs=3
while (($# > 0)); do
    case "$1" in
        --plain) plain=1 && shift ;;
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
command -v go >/dev/null || need+=(golang-go)
readonly GOCODE=/usr/share/gocode
[[ -d "$GOCODE/src/github.com/jackc/pgx/v4/pgxpool" ]] || need+=(golang-github-jackc-pgx-v4-dev)
if ((${#need[@]} > 0)); then
    printf 'hikari.sh: installing %s\n' "${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
fi
readonly CP="/usr/share/java/HikariCP.jar:/usr/share/java/postgresql.jar:/usr/share/java/slf4j-api.jar"
mkdir -p "$ROOT/build/hikari"
javac -d "$ROOT/build/hikari" -cp "$CP" "$ROOT/bench/hikari/HikariBench.java" || die "javac failed"
# Offline Go build: GOPATH mode against the library sources Debian installs under $GOCODE/src
# (no go.mod, no module cache, nothing fetched); the build cache stays in build/pgxpool.
pgx_version="$(dpkg-query -W -f='${Version}' golang-github-jackc-pgx-v4-dev)" || die "pgx v4 not installed"
mkdir -p "$ROOT/build/pgxpool"
(cd "$ROOT/bench/pgxpool" &&
    GO111MODULE=off GOPATH="$GOCODE" GOPROXY=off GOFLAGS='' GOTOOLCHAIN=local \
        GOCACHE="$ROOT/build/pgxpool/gocache" go build -p "${PQXXPOOL_BENCH_JOBS:-1}" \
        -ldflags "-X main.pgxVersion=${pgx_version%-*}" -o "$ROOT/build/pgxpool/pgxpoolbench" .) ||
    die "go build of bench/pgxpool failed"

bin="$(release_binary pqxxpool_cli tools/pqxxpool/pqxxpool)" || die "no pqxxpool binary"
out="${out:-$ROOT/build/bench-results/hikari-$(date +%Y%m%d-%H%M%S)}"
mkdir -p -- "$out"

cluster_dir="$(mktemp -d /tmp/pqxxpool-hikari.XXXXXX)"
# shellcheck disable=SC2064  # expand now: the directory is known
trap "bash '$ROOT/test/support/pgcluster.sh' stop '$cluster_dir'" EXIT
PQXXPOOL_TEST_CLUSTER_PLAIN_TCP="$plain" bash "$ROOT/test/support/pgcluster.sh" start "$cluster_dir" >&2
# shellcheck source=/dev/null
source "$cluster_dir/env"
if ((plain)); then
    url="jdbc:postgresql://127.0.0.1:${PQXXPOOL_TEST_PORT}/app?sslmode=disable"
    pgx_conn="host=127.0.0.1 port=${PQXXPOOL_TEST_PORT} dbname=app user=app sslmode=disable"
    export PQXXPOOL_BENCH_CONNINFO="$PQXXPOOL_TEST_PLAIN_CONNINFO"
else
    url="jdbc:postgresql://localhost:${PQXXPOOL_TEST_PORT}/app?sslmode=verify-full&sslrootcert=${PQXXPOOL_TEST_CA}"
    pgx_conn="host=localhost port=${PQXXPOOL_TEST_PORT} dbname=app user=app sslmode=verify-full sslrootcert=${PQXXPOOL_TEST_CA}"
    export PQXXPOOL_BENCH_CONNINFO="$PQXXPOOL_TEST_CONNINFO"  # this cluster, whatever the caller set
fi

printf 'hikari.sh: load average before: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
java -cp "$CP:$ROOT/build/hikari" HikariBench "$url" app "$PQXXPOOL_TEST_APP_PASSWORD" "$seconds" "$runs" \
    >"$out/hikari.jsonl"
PGPASSWORD="$PQXXPOOL_TEST_APP_PASSWORD" "$ROOT/build/pgxpool/pgxpoolbench" "$pgx_conn" "$seconds" "$runs" \
    >"$out/pgxpool.jsonl" || die "pgxpoolbench failed"
"$bin" bench --scenario cycle --scenario select1 --scenario contended --runs "$runs" \
    --duration "${seconds}s" --out "$out/bench.jsonl" >/dev/null
printf 'hikari.sh: load average after: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$out/bench.jsonl" "$out/hikari.jsonl" "$out/pgxpool.jsonl" <<'EOF'
import json, sys

rows, versions = {}, []
for path in sys.argv[1:]:
    for line in open(path):
        d = json.loads(line)
        if d.get("type") == "result":
            pool = d["pool"].split("-")[0]  # hikaricp-2.7.9 -> hikaricp, pgxpool-4.15.0 -> pgxpool
            rows[(d["case"], pool)] = d
            if d["pool"] != pool and d["pool"] not in versions:
                versions.append(d["pool"])

def ms(v):
    return "-" if v is None else ("{:.0f} ns".format(v * 1e6) if v < 1e-3 else
                                  "{:.1f} µs".format(v * 1e3) if v < 1 else "{:.2f} ms".format(v))

pools = ("pqxxpool", "naive", "hikaricp", "pgxpool")
print("| case | ops/s pqxxpool / naive / HikariCP / pgxpool | ÷ naive: pqxxpool / HikariCP / pgxpool | acquire p99 | acquire max | thread min/max |")
print("|---|---:|---:|---:|---:|---:|")
for case in ("cycle_t1", "cycle_t16", "select1_t4", "select1_t16", "contended_t16"):
    r = [rows.get((case, p), {}) for p in pools]
    ops = [x.get("ops_per_s") for x in r]
    naive = ops[1] or 0
    ratio = lambda v: "{:.2f}".format(v / naive) if v and naive else "-"
    print("| {} | {} | {} | {} | {} | {} |".format(
        case, " / ".join("{:,.0f}".format(v) if v else "-" for v in ops),
        " / ".join(ratio(ops[i]) for i in (0, 2, 3)),
        " / ".join(ms(x.get("acquire_p99_ms")) for x in r), " / ".join(ms(x.get("acquire_max_ms")) for x in r),
        " / ".join("{:.2f}".format(x["per_thread_ops_ratio"]) if x.get("per_thread_ops_ratio") is not None else "-"
                   for x in r)))
print()
print("(p99, max and thread min/max cells are pqxxpool / naive / HikariCP / pgxpool; {}.)".format(
    ", ".join(versions) or "no HikariCP/pgxpool results"))
EOF
printf 'hikari.sh: JSON lines in %s\n' "$out" >&2
