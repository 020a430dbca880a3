#!/usr/bin/env bash
# Set up benchsuite on a fresh Debian/Ubuntu machine: system data, a virtual environment in .venv,
# the package with its test extras, Ray (the `ray` executor, tested in CI), the example plugin and
# the optimizer zoo, at the versions in constraints.txt.
# Idempotent: running it again is quick.
set -euo pipefail
cd "$(dirname "$0")/.."

# Real Fashion-MNIST files (Debian's package) and Chromium (for the HTML leaderboard test).
# Optional: the bundled `digits` dataset needs neither.
apt_packages=(dataset-fashion-mnist chromium gcc libc6-dev)
if command -v apt-get >/dev/null 2>&1; then
    as_root=""
    [ "$(id -u)" -eq 0 ] || as_root="sudo"
    if [ -z "$as_root" ] || command -v sudo >/dev/null 2>&1; then
        export DEBIAN_FRONTEND=noninteractive
        $as_root apt-get update -qq || echo "setup: apt-get update failed; continuing" >&2
        $as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null \
            || echo "setup: could not install ${apt_packages[*]}; tests that need them will skip" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e ".[dev,ray]" -e plugins/benchsuite-lion \
    -e plugins/benchsuite-zoo
.venv/bin/benchsuite --version
