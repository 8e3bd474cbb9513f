#!/usr/bin/env bash
# Set up emu on a fresh Debian machine and run the demo.
#   tools/setup.sh            install everything, build the firmware, run `emu demo`
#   tools/setup.sh --no-demo  the same without the demo (CI uses this)
#
# emu goes into a virtual environment, .venv/ in the checkout: Debian's own python3 is
# "externally managed" (PEP 668) and refuses a plain `pip install`. Afterwards:
#   .venv/bin/python -m pytest -q        the test suite
#   .venv/bin/emu run PROGRAM [ARGS...]  (or `. .venv/bin/activate`, then `emu ...`)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_PACKAGES=(make gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross musl-tools qemu-user
              valgrind python3 python3-venv python3-dev libsqlite3-dev)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Debian's interpreter, whatever else is first on PATH (a pyenv or conda python would hide
# the PEP 668 problem this script exists to avoid).
PYTHON=/usr/bin/python3
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating the virtual environment .venv ($("$PYTHON" --version))"
    "$PYTHON" -m venv .venv
fi
echo "setup: installing emu into .venv (pip install -e '.[test]')"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
# byte-compile now: with PYTHONDONTWRITEBYTECODE set, every run would compile emu again
.venv/bin/python -m compileall -q emu >/dev/null

# Third-party guests for the tests of real programs: Debian's static busybox and bash for
# both architectures, and the arm64 static SQLite library (the amd64 one comes with
# libsqlite3-dev). dpkg must know the arm64 architecture for that; only its package index
# is fetched, nothing of it is installed.
GUESTS=.cache/guests
if [ ! -x "$GUESTS/aarch64/busybox" ] || [ ! -x "$GUESTS/x86_64/busybox" ] \
        || [ ! -x "$GUESTS/aarch64/bash" ] || [ ! -x "$GUESTS/x86_64/bash" ] \
        || [ ! -f "$GUESTS/aarch64/libsqlite3.a" ]; then
    echo "setup: fetching busybox-static, bash-static (amd64, arm64) and libsqlite3-dev (arm64) for the tests"
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        $SUDO dpkg --add-architecture arm64
        $SUDO apt-get update -qq
    fi
    work="$(mktemp -d)"
    chmod 777 "$work"           # apt's _apt user downloads into it
    packages=(busybox-static:amd64 busybox-static:arm64 bash-static:amd64 bash-static:arm64
              libsqlite3-dev:arm64)
    if ! (cd "$work" && apt-get download -qq "${packages[@]}" >/dev/null 2>&1); then
        $SUDO apt-get update -qq
        (cd "$work" && apt-get download -qq "${packages[@]}" >/dev/null 2>&1)
    fi
    for pair in amd64:x86_64 arm64:aarch64; do
        deb=("$work"/busybox-static_*_"${pair%%:*}".deb)
        mkdir -p "$GUESTS/${pair##*:}"
        dpkg-deb --fsys-tarfile "${deb[0]}" | tar -xO ./bin/busybox > "$GUESTS/${pair##*:}/busybox"
        chmod +x "$GUESTS/${pair##*:}/busybox"
        deb=("$work"/bash-static_*_"${pair%%:*}".deb)
        dpkg-deb --fsys-tarfile "${deb[0]}" | tar -xO ./bin/bash-static > "$GUESTS/${pair##*:}/bash"
        chmod +x "$GUESTS/${pair##*:}/bash"
    done
    deb=("$work"/libsqlite3-dev_*_arm64.deb)
    dpkg-deb --fsys-tarfile "${deb[0]}" | tar -xO ./usr/lib/aarch64-linux-gnu/libsqlite3.a \
        > "$GUESTS/aarch64/libsqlite3.a"
    rm -rf "$work"
fi

echo "setup: building the firmware"
make -C firmware -j2 -s

if [ "${1:-}" != "--no-demo" ]; then
    .venv/bin/emu demo --out emu-demo      # the flagship experiment: plots and emu-demo/REPORT.md
fi
