#!/usr/bin/env bash
# `make pi-check`: the deploy bundle on an emulated Raspberry Pi 4 and 5 (arm64, qemu-user), compared
# with x86 bit for bit. Needs root (mounts, binfmt_misc, debootstrap); installs its host packages.
#
#   pi/check.sh [--bundle artifacts/mnist-edge-bundle.tar.gz] [--python .venv/bin/python] [check.py options]
#
# Builds or reuses the cached rootfs (pi/rootfs.sh), mounts /proc, /sys, /dev and the wheel cache in
# it, runs pi/check.py, and unmounts again however that ends (trap). Exit 2: this machine cannot
# emulate (the reason is printed); 1: a check failed; 0: all passed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=pi/rootfs.sh
. "$HERE/rootfs.sh"

BUNDLE=$HERE/../artifacts/mnist-edge-bundle.tar.gz
PYTHON=$HERE/../.venv/bin/python
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        *) PASS+=("$1"); shift ;;
    esac
done
[ -f "$BUNDLE" ] || die "$BUNDLE: no such bundle; run 'make bundle' first"
[ -x "$PYTHON" ] || die "$PYTHON: no such python; run 'make venv' first"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"   # absolute, symlinks kept (a venv)

if ! reason=$(can_emulate); then
    echo "pi: cannot emulate a Raspberry Pi here: $reason" >&2
    exit 2
fi
started=$SECONDS
ensure_host_deps
ensure_binfmt
ROOTFS=$(build_rootfs)
setup_seconds=$((SECONDS - started))

# One check at a time per rootfs: it is shared by every checkout on this machine.
exec 9>"$ROOTFS.lock"
flock -w 1800 9 || die "timed out waiting for another pi-check using $ROOTFS"
trap 'unmount_rootfs "$ROOTFS"' EXIT
trap 'exit 130' INT TERM
mount_rootfs "$ROOTFS"
log "rootfs ready in ${setup_seconds} s: $ROOTFS"
status=0
"$PYTHON" "$HERE/check.py" --rootfs "$ROOTFS" --bundle "$BUNDLE" --x86-python "$PYTHON" ${PASS[@]+"${PASS[@]}"} || status=$?
log "finished in $((SECONDS - started)) s (setup ${setup_seconds} s)"
exit $status
