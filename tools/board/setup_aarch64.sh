#!/usr/bin/env bash
# Prepare what the emulated-board test needs, idempotently (each step is skipped when already done):
#   1. the Debian cross toolchain (aarch64-linux-gnu-g++), qemu-user and chromium (for the test that
#      screenshots the profiler's HTML report), via apt-get, only if missing;
#   2. an aarch64 sysroot: arm64 .debs of Python 3.11 and its libraries, `dpkg -x`'d into DEST/sysroot;
#   3. a site folder of aarch64 wheels of the device runtime's dependencies, DEST/site.
# Usage: tools/board/setup_aarch64.sh [DEST]   (default build/aarch64; not committed).
# Needs root for apt-get (CI and the development machines run as root). Recipe: shared ANCHORS.md,
# "An emulated aarch64 board works here".
set -euo pipefail
DEST=${1:-build/aarch64}
PY=${PY:-.venv/bin/python}
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=""
apt_update() { [ -n "$APT_UPDATED" ] || { apt-get update -qq; APT_UPDATED=1; }; }

# 1. toolchain and emulator
missing=()
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
command -v chromium >/dev/null || missing+=(chromium)  # headless screenshot of the profile's HTML report
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup_aarch64: need ${missing[*]}; run as root or apt-get install them" >&2; exit 1
    fi
    apt_update
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. sysroot with an aarch64 Python 3.11
SYSROOT=$DEST/sysroot
if [ ! -x "$SYSROOT/usr/bin/python3.11" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64
        APT_UPDATED=""
    fi
    apt_update
    debs=$DEST/debs
    mkdir -p "$debs" "$SYSROOT.tmp"
    pkgs=(python3.11-minimal libpython3.11-minimal libpython3.11-stdlib libc6 libexpat1 zlib1g libffi8
          libssl3 libstdc++6 libgcc-s1 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6
          libreadline8 libgomp1 libdb5.3 libgdbm6 libnsl2 libtirpc3 libcrypt1)
    (cd "$debs" && apt-get download -qq "${pkgs[@]/%/:arm64}")
    for d in "$debs"/*.deb; do dpkg -x "$d" "$SYSROOT.tmp"; done
    rm -rf "$SYSROOT" && mv "$SYSROOT.tmp" "$SYSROOT" && rm -rf "$debs"
fi

# 3. aarch64 wheels of the runtime's dependencies (versions as in pyproject.toml)
SITE=$DEST/site
if [ ! -f "$SITE/.complete" ]; then
    rm -rf "$SITE"
    "$PY" -m pip install -q --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --platform manylinux2014_aarch64 --python-version 3.11 --implementation cp --target "$SITE" \
        "numpy>=1.24" "numba>=0.59" "apache-tvm==0.27.0.post1" "apache-tvm-ffi==0.1.14.post1"
    touch "$SITE/.complete"
fi
echo "aarch64 board ready: qemu-aarch64 -L $SYSROOT $SYSROOT/usr/bin/python3.11 (PYTHONPATH=$SITE)"
