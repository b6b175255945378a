#!/usr/bin/env bash
# Build libpqxx 7 for the test suite's `pqxx7` preset: Debian 12 ships libpqxx 6.4 only, and
# pqxxpool supports 7.x too (Debian 13 and Ubuntu 24.04 ship it). The source comes from Debian 13
# (trixie)'s source package through apt, which checks it against the archive's signed index; it
# is built with this machine's compiler into build/deps/libpqxx-7 (nothing is installed
# system-wide, and apt's own configuration and lists are left alone).
#
# Usage: bash scripts/libpqxx7.sh        prints the install prefix on its last line
#
# Does nothing when build/deps/libpqxx-7 already holds a build. Needs apt-get (as root, or
# through sudo for nothing: apt-get source runs unprivileged), a C++17 compiler and make.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/build/deps/libpqxx-7"
WORK="$ROOT/build/deps/libpqxx-7-src"

if [[ -f "$PREFIX/lib/pkgconfig/libpqxx.pc" ]]; then
    echo "libpqxx7: already built ($(pkg-config --modversion "$PREFIX/lib/pkgconfig/libpqxx.pc"))"
    echo "$PREFIX"
    exit 0
fi

rm -rf "$WORK"
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial"
echo "deb-src http://deb.debian.org/debian trixie main" >"$WORK/apt/sources.list"
# A private source list, list directory and cache: the machine's apt setup is not touched.
APT=(apt-get -q
    -o Dir::Etc::SourceList="$WORK/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o Dir::State::Lists="$WORK/apt/lists" -o Dir::Cache="$WORK/apt/cache"
    -o APT::Sandbox::User=root)
echo "libpqxx7: fetching the libpqxx source package of Debian trixie"
"${APT[@]}" update >"$WORK/apt-update.log" 2>&1 || {
    cat "$WORK/apt-update.log" >&2
    exit 1
}
(cd "$WORK" && "${APT[@]}" source --download-only libpqxx) >"$WORK/apt-source.log" 2>&1 || {
    cat "$WORK/apt-source.log" >&2
    exit 1
}
tarball="$(find "$WORK" -maxdepth 1 -name 'libpqxx_7.*.orig.tar.gz' | sort | tail -n 1)"
[[ -n "$tarball" ]] || {
    echo "libpqxx7: no libpqxx 7 source tarball in trixie's source package" >&2
    exit 1
}
tar -xzf "$tarball" -C "$WORK"
src="$(find "$WORK" -maxdepth 1 -type d -name 'libpqxx-7.*' | sort | tail -n 1)"
echo "libpqxx7: building $(basename "$src") (log: ${WORK#"$ROOT"/}/build.log)"
(
    cd "$src"
    # libpqxx 7.10's CMake wants 3.28 (Debian 12 has 3.25); its autoconf build is equivalent.
    ./configure --prefix="$PREFIX" --disable-documentation --enable-shared --disable-static \
        CXXFLAGS="-O2 -std=c++17"
    make -j"$(nproc)"
    make install
) >"$WORK/build.log" 2>&1 || {
    tail -n 40 "$WORK/build.log" >&2
    rm -rf "$PREFIX"
    exit 1
}
echo "$PREFIX"
