#!/usr/bin/env bash
# Set up emu on a fresh Debian machine and run the demo.
#   tools/setup.sh            install everything, build the firmware, run tools/demo.py
#   tools/setup.sh --no-demo  the same without the demo (CI uses this)
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_PACKAGES=(make gcc libc6-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross musl-tools qemu-user)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "setup: installing emu (pip install -e '.[test]')"
python3 -m pip install -q -e '.[test]'

echo "setup: building the firmware"
make -C firmware -j2 -s

if [ "${1:-}" != "--no-demo" ]; then
    python3 tools/demo.py
fi
