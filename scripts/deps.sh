#!/usr/bin/env bash
# Install the Debian packages pqxxpool needs to build, test, demo and benchmark (gnuplot-nox:
# bench/plot.sh draws the scenario runner's latency plots with it).
#
# Usage: bash scripts/deps.sh [EXTRA_PACKAGE...]
#
# Only packages that dpkg reports as not installed are installed; `apt-get
# update` runs once, and only if something is missing. Uses sudo when not root.
set -euo pipefail

PACKAGES=(
    build-essential cmake ninja-build pkg-config
    libpqxx-dev libpq-dev postgresql-15 postgresql-client-15 openssl
    libgtest-dev libgmock-dev googletest libbenchmark-dev
    libspdlog-dev libfmt-dev libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libssl-dev libcurl4-openssl-dev
    python3 python3-botocore prometheus pgbouncer
    gnuplot-nox
)
PACKAGES+=("$@")

is_installed() {
    # dpkg -s exits 0 for removed-but-not-purged packages too; check the status word.
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
    echo "deps: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null || {
        echo "deps: need root or sudo to install: ${missing[*]}" >&2
        exit 1
    }
    SUDO=(sudo)
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "deps: done"
