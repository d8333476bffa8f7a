#!/usr/bin/env bash
# Prepare what the Cortex-M firmware tests need, idempotently: the Arm bare-metal toolchain
# (arm-none-eabi-gcc, binutils), newlib (libc and libm, with the nano specs) and qemu-system-arm
# (the mps2-an500 / mps2-an386 boards), via apt-get, each only if missing.
# Usage: tools/board/setup_mcu.sh   (needs root for apt-get when something is missing; CI and the
# development machines run as root). Recipe: shared ANCHORS.md, "Microcontrollers (Cortex-M)".
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

missing=()
command -v arm-none-eabi-gcc >/dev/null || missing+=(gcc-arm-none-eabi)
command -v arm-none-eabi-size >/dev/null || missing+=(binutils-arm-none-eabi)
# newlib-nano's specs file sits beside its libraries; gcc prints the bare name when it cannot find it.
if ! command -v arm-none-eabi-gcc >/dev/null ||
        [ ! -f "$(arm-none-eabi-gcc -print-file-name=nano.specs)" ]; then
    missing+=(libnewlib-arm-none-eabi)
fi
command -v qemu-system-arm >/dev/null || missing+=(qemu-system-arm)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup_mcu: need ${missing[*]}; run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "mcu board ready: $(arm-none-eabi-gcc --version | head -n 1); $(qemu-system-arm --version | head -n 1)"
