# shellcheck shell=bash
# bench/common.sh — sourced by the scripts in bench/ (needs ROOT set to the repository root).

# release_binary TARGET PATH: builds TARGET with the release preset (configuring it first if
# needed; ninja parallelism PQXXPOOL_BENCH_JOBS, default 1: a shared machine) and prints
# $ROOT/build/release/PATH. Build output goes to stderr. Exits non-zero if the build fails.
release_binary() {
    local target="$1" path="$2"
    (
        cd "$ROOT"
        if [[ ! -f build/release/build.ninja ]]; then
            cmake --preset release >&2 ||
                { echo "cmake --preset release failed (or pass --bin PATH)" >&2; exit 1; }
        fi
        cmake --build --preset release --target "$target" -- -j"${PQXXPOOL_BENCH_JOBS:-1}" >&2 ||
            { echo "building $target failed (or pass --bin PATH)" >&2; exit 1; }
    ) || return 1
    printf '%s\n' "$ROOT/build/release/$path"
}
