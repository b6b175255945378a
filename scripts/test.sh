#!/usr/bin/env bash
# Build and test pqxxpool: the README's test command.
#
# Usage: bash scripts/test.sh [--preset NAME]... [--no-deps] [--verbose]
#
#   --preset NAME  build/test only this CMake preset (repeatable);
#                  default: release asan pqxx7 tsan (pqxx7: a release build
#                  against libpqxx 7, built first by scripts/libpqxx7.sh)
#   --no-deps      skip scripts/deps.sh (also: PQXXPOOL_NO_DEPS=1)
#   --verbose      stream build and ctest output instead of only logging it
#   --build-only   build the presets one after another and stop (used for the
#                  build that runs beside the tests)
#
# Builds the first preset (`cmake --preset P && cmake --build --preset P`),
# starts ONE throwaway PostgreSQL cluster (test/support/pgcluster.sh), sources
# its env and runs `ctest --preset P` for each preset that built. While one
# preset's tests run, the next preset builds beside them at a lower priority
# (nice 10; the tests mostly wait on the server, so the two share 2 CPUs well).
# Logs: build/logs/<preset>-build.log, build/logs/<preset>-ctest.log,
# build/logs/<preset>-build.report (what a build beside the tests printed; shown
# when it ends, also with --verbose),
# build/logs/postgres.log (server log, copied when the cluster is stopped).
#
# The last line of output is `N passed, M failed`, summed over all presets'
# ctest runs. A preset that fails to build, or whose ctest run fails without
# reporting a failed test (crash, timeout of ctest itself, no tests found),
# counts as one failure. Exit status is non-zero if anything failed.
#
# Environment:
#   PQXXPOOL_CTEST_TIMEOUT  default per-test timeout in seconds for tests that
#                           set no TIMEOUT property (default 300)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly ROOT
readonly CLUSTER_SCRIPT="$ROOT/test/support/pgcluster.sh"
readonly EMULATOR_SCRIPT="$ROOT/test/support/dsql_emulator.sh"
readonly LOG_DIR="$ROOT/build/logs"
readonly DEFAULT_PRESETS=(release asan pqxx7 tsan)
readonly CTEST_TIMEOUT="${PQXXPOOL_CTEST_TIMEOUT:-300}"

usage() {
    sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "${BASH_SOURCE[0]}"
    exit "${1:-2}"
}

presets=()
run_deps=1
verbose=0
build_only=0
[[ "${PQXXPOOL_NO_DEPS:-0}" == 1 ]] && run_deps=0
while (($# > 0)); do
    case "$1" in
        --preset)
            (($# >= 2)) || usage
            presets+=("$2")
            shift 2
            ;;
        --preset=*)
            presets+=("${1#--preset=}")
            shift
            ;;
        --no-deps)
            run_deps=0
            shift
            ;;
        -v | --verbose)
            verbose=1
            shift
            ;;
        --build-only)
            build_only=1
            shift
            ;;
        -h | --help) usage 0 ;;
        *)
            echo "test.sh: unknown argument: $1" >&2
            usage
            ;;
    esac
done
((${#presets[@]} > 0)) || presets=("${DEFAULT_PRESETS[@]}")

cd "$ROOT"
mkdir -p "$LOG_DIR"

# Sanitizer runtime options (also needed at build time: gtest test discovery
# runs the instrumented test binaries).
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1"
# The secret scan of the integration tests' log (pqxxpool_logs_hold_no_secrets) also checks that
# the risky paths (failed connects, refused tokens) were logged at all: this runs every test.
export PQXXPOOL_TEST_REQUIRE_FULL_LOG=1
if [[ -f "$ROOT/test/support/lsan.supp" ]]; then
    export LSAN_OPTIONS="suppressions=$ROOT/test/support/lsan.supp"
fi
if [[ -f "$ROOT/test/support/tsan.supp" ]]; then
    TSAN_OPTIONS+=":suppressions=$ROOT/test/support/tsan.supp"
fi

# GCC 12's TSan runtime cannot cope with the high mmap randomisation of newer
# kernels (vm.mmap_rnd_bits > 28: "unexpected memory mapping"); run TSan
# binaries with ASLR disabled there, if the sandbox lets us.
TSAN_WRAP=()
if (("$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)" > 28)); then
    if setarch "$(uname -m)" -R true 2>/dev/null; then
        TSAN_WRAP=(setarch "$(uname -m)" -R)
        echo "test.sh: vm.mmap_rnd_bits > 28, running tsan with ASLR disabled (setarch -R)"
    else
        echo "test.sh: warning: vm.mmap_rnd_bits > 28 and setarch -R is not permitted; tsan may crash" >&2
    fi
fi

# Sets the global array `wrap` to the command prefix for preset $1.
set_wrap() {
    wrap=()
    if [[ "$1" == tsan ]]; then
        wrap=("${TSAN_WRAP[@]}")
    fi
}

# Run "$@" with output to log file $1 (and to stdout with --verbose). The
# command runs in the background and we `wait` for it, so that INT/TERM are
# handled at once (the trap kills this child, stops the cluster and exits).
CHILD_PID=""
run_logged() {
    local log="$1" rc=0
    shift
    if ((verbose)); then
        "$@" > >(tee -a "$log") 2>&1 </dev/null &
    else
        "$@" >>"$log" 2>&1 </dev/null &
    fi
    CHILD_PID=$!
    wait "$CHILD_PID" || rc=$?
    CHILD_PID=""
    return "$rc"
}

# shellcheck disable=SC2317  # invoked via trap
on_signal() {
    if [[ -n "$CHILD_PID" ]]; then
        kill -TERM "$CHILD_PID" 2>/dev/null || true
        wait "$CHILD_PID" 2>/dev/null || true
    fi
    stop_background_build
    exit "$1"
}

# The build that runs beside a preset's tests: its own process group (setsid), so that a signal
# stops all of it, cmake and the compilers included.
BG_PID=""
# shellcheck disable=SC2317  # invoked via trap
stop_background_build() {
    if [[ -n "$BG_PID" ]]; then
        kill -TERM -- "-$BG_PID" 2>/dev/null || true
        wait "$BG_PID" 2>/dev/null || true
        BG_PID=""
    fi
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

print_tail() {
    local log="$1" lines="${2:-60}"
    echo "----- last $lines lines of $log -----"
    tail -n "$lines" "$log" || true
    echo "----- end of $log -----"
}

total_passed=0
total_failed=0
overall_rc=0
summary=()
declare -A built=()

if ((run_deps)); then
    echo "== deps"
    if ! bash "$ROOT/scripts/deps.sh"; then
        echo "test.sh: scripts/deps.sh failed" >&2
        exit 1
    fi
fi

# ---- build ----------------------------------------------------------------
build_preset() {
    local p="$1" log t0
    log="$LOG_DIR/$p-build.log"
    : >"$log"
    set_wrap "$p"
    echo "== build $p (log: ${log#"$ROOT"/})"
    t0=$SECONDS
    # pqxx7 builds against libpqxx 7, which Debian 12 does not package: build that first.
    if { [[ "$p" != pqxx7 ]] || run_logged "$log" bash "$ROOT/scripts/libpqxx7.sh"; } &&
        run_logged "$log" cmake --preset "$p" &&
        run_logged "$log" "${wrap[@]}" cmake --build --preset "$p"; then
        built[$p]=1
        echo "   build $p: ok ($((SECONDS - t0))s)"
    else
        echo "   build $p: FAILED ($((SECONDS - t0))s)"
        ((verbose)) || print_tail "$log" 60
        summary+=("$p: build FAILED")
        total_failed=$((total_failed + 1))
        overall_rc=1
    fi
}

if ((build_only)); then
    for p in "${presets[@]}"; do
        build_preset "$p"
    done
    exit "$overall_rc"
fi

# Starts building preset $1 beside what runs next (see the header); its report goes to a file
# that finish_background_build prints.
start_background_build() {
    local extra=()
    ((verbose)) && extra=(--verbose)
    # Two compile jobs (ninja's default is CPUs + 2): the tests beside it keep a CPU's worth.
    CMAKE_BUILD_PARALLEL_LEVEL=2 setsid -w nice -n 10 bash "${BASH_SOURCE[0]}" --build-only --no-deps \
        --preset "$1" "${extra[@]}" >"$LOG_DIR/$1-build.report" 2>&1 </dev/null &
    BG_PID=$!
}

# Waits for the background build of preset $1 and takes over its result.
finish_background_build() {
    local p="$1" rc=0
    wait "$BG_PID" || rc=$?
    BG_PID=""
    cat "$LOG_DIR/$p-build.report"
    if ((rc == 0)); then
        built[$p]=1
    else
        grep -q "build $p: FAILED" "$LOG_DIR/$p-build.report" ||
            echo "   build $p: FAILED (exit $rc)"
        summary+=("$p: build FAILED")
        total_failed=$((total_failed + 1))
        overall_rc=1
    fi
}

build_preset "${presets[0]}"

if ((${#built[@]} == 0 && ${#presets[@]} == 1)); then
    echo "test.sh: nothing built, not running tests"
    printf '%s\n' "${summary[@]}"
    echo "$total_passed passed, $total_failed failed"
    exit 1
fi

# ---- cluster ----------------------------------------------------------------
CLUSTER_DIR=""
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local rc=$?
    stop_background_build
    if [[ -n "$CLUSTER_DIR" && -d "$CLUSTER_DIR" ]]; then
        cp -f -- "$CLUSTER_DIR/postgres.log" "$LOG_DIR/postgres.log" 2>/dev/null || true
        cp -f -- "$CLUSTER_DIR/emulator.log" "$LOG_DIR/dsql-emulator.log" 2>/dev/null || true
        bash "$EMULATOR_SCRIPT" stop "$CLUSTER_DIR" >/dev/null 2>&1 || true
        bash "$CLUSTER_SCRIPT" stop "$CLUSTER_DIR" || echo "test.sh: warning: could not stop cluster in $CLUSTER_DIR" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT

echo "== cluster"
CLUSTER_DIR="$(mktemp -d /tmp/pqxxpool-test.XXXXXX)"
if ! bash "$CLUSTER_SCRIPT" start "$CLUSTER_DIR"; then
    echo "test.sh: could not start the PostgreSQL test cluster" >&2
    # Only the first preset was built yet (a failed build is counted already); none is tested.
    for p in "${presets[@]}"; do
        if [[ -n "${built[$p]:-}" || "$p" != "${presets[0]}" ]]; then
            summary+=("$p: not tested (cluster failed to start)")
            total_failed=$((total_failed + 1))
        fi
    done
    printf '%s\n' "${summary[@]}"
    echo "$total_passed passed, $total_failed failed"
    exit 1
fi
# The DSQL front-door emulator in front of the cluster (appends its port to DIR/env).
if ! bash "$EMULATOR_SCRIPT" start "$CLUSTER_DIR" >/dev/null; then
    echo "test.sh: warning: could not start the DSQL emulator; its tests will fail" >&2
fi
# shellcheck source=/dev/null
source "$CLUSTER_DIR/env"
echo "   cluster up on 127.0.0.1:$PQXXPOOL_TEST_PORT ($CLUSTER_DIR), DSQL emulator on ${PQXXPOOL_DSQL_EMULATOR_PORT:-?}"

# ---- test -------------------------------------------------------------------
for ((i = 0; i < ${#presets[@]}; i++)); do
    p="${presets[$i]}"
    next="${presets[$((i + 1))]:-}"
    [[ -z "$next" ]] || start_background_build "$next"
    if [[ -z "${built[$p]:-}" ]]; then
        [[ -z "$next" ]] || finish_background_build "$next"
        continue
    fi
    log="$LOG_DIR/$p-ctest.log"
    : >"$log"
    set_wrap "$p"
    echo "== ctest $p (log: ${log#"$ROOT"/})"
    t0=$SECONDS
    rc=0
    run_logged "$log" "${wrap[@]}" ctest --preset "$p" --timeout "$CTEST_TIMEOUT" --no-tests=error || rc=$?
    dt=$((SECONDS - t0))
    line="$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1 || true)"
    if [[ "$line" =~ ([0-9]+)\ tests?\ failed\ out\ of\ ([0-9]+) ]]; then
        failed="${BASH_REMATCH[1]}"
        total="${BASH_REMATCH[2]}"
        passed=$((total - failed))
    else
        failed=0
        passed=0
        total=0
    fi
    if ((rc != 0 && failed == 0)); then
        failed=1 # ctest failed without a failed test (crash, no tests, ...)
    fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    if ((rc == 0 && failed == 0)); then
        echo "   ctest $p: $passed passed, 0 failed (${dt}s)"
        summary+=("$p: $passed passed, 0 failed")
    else
        overall_rc=1
        echo "   ctest $p: $passed passed, $failed failed, ctest exit $rc (${dt}s)"
        summary+=("$p: $passed passed, $failed failed")
        if ((!verbose)); then
            print_tail "$log" 80
        fi
    fi
    [[ -z "$next" ]] || finish_background_build "$next"
done

echo "== summary"
printf '   %s\n' "${summary[@]}"
echo "$total_passed passed, $total_failed failed"
exit "$overall_rc"
