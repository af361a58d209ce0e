#!/usr/bin/env bash
# `make pi-check`: the deploy bundle on every emulated Raspberry Pi OS (qemu-user), compared with x86
# bit for bit. Needs root (mounts, binfmt_misc, debootstrap); installs its host packages.
#
#   pi/check.sh [--bundle artifacts/mnist-edge-bundle.tar.gz] [--python .venv/bin/python]
#               [--artifacts DIR: the bundle's export, for the install runs' bundles (default: the bundle's directory)]
#               [--rows bookworm-arm64,trixie-arm64,bookworm-armhf,trixie-armhf,bookworm-armel] [pi.check options]
#
# Builds or reuses each row's cached rootfs (pi/rootfs.sh; missing ones are built in parallel),
# mounts /proc, /sys, /dev and the wheel cache in each, runs `python -m pi.check`, and unmounts
# again however that ends (trap). Exit 2: this machine cannot emulate (the reason is printed);
# 1: a check failed; 0: all passed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=pi/rootfs.sh
. "$HERE/rootfs.sh"

BUNDLE=$HERE/../artifacts/mnist-edge-bundle.tar.gz
PYTHON=$HERE/../.venv/bin/python
ROWS=
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) BUNDLE=$2; shift 2 ;;
        --python) PYTHON=$2; shift 2 ;;
        --rows) ROWS=$2; shift 2 ;;
        --artifacts) PASS+=(--artifacts "$(realpath "$2")"); shift 2 ;;
        *) PASS+=("$1"); shift ;;
    esac
done
[ -f "$BUNDLE" ] || die "$BUNDLE: no such bundle; run 'make bundle' first"
[ -x "$PYTHON" ] || die "$PYTHON: no such python; run 'make venv' first"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"   # absolute, symlinks kept (a venv)
BUNDLE=$(realpath "$BUNDLE")
cd "$HERE/.."
[ -n "$ROWS" ] || ROWS=$("$PYTHON" -m pi.check --list-rows | paste -sd, -)
IFS=, read -r -a ROW_LIST <<< "$ROWS"
for row in "${ROW_LIST[@]}"; do ( select_rootfs "$row" ) || exit 1; done

if ! reason=$(can_emulate); then
    echo "pi: cannot emulate a Raspberry Pi here: $reason" >&2
    exit 2
fi
started=$SECONDS
select_rootfs "${ROW_LIST[0]}"
ensure_host_deps
registered=" "
for row in "${ROW_LIST[@]}"; do
    select_rootfs "$row"
    case "$registered" in *" $QEMU "*) ;; *) ensure_binfmt; registered="$registered$QEMU " ;; esac
done

# Build the missing rootfs side by side: debootstrap waits on the network as much as on the CPU.
built=$(mktemp -d)
pids=()
for row in "${ROW_LIST[@]}"; do
    ( select_rootfs "$row"; build_rootfs > "$built/$row" ) &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || die "a rootfs build failed (see above)"; done
declare -A ROOTFS
for row in "${ROW_LIST[@]}"; do ROOTFS[$row]=$(cat "$built/$row"); done
rm -rf "$built"
setup_seconds=$((SECONDS - started))

unmount_all() {
    local row
    for row in "${ROW_LIST[@]}"; do [ -z "${ROOTFS[$row]:-}" ] || unmount_rootfs "${ROOTFS[$row]}" || true; done
}
# One check at a time per rootfs: each is shared by every checkout on this machine.
for row in "${ROW_LIST[@]}"; do
    exec {lock_fd}>"${ROOTFS[$row]}.lock"
    flock -w 1800 "$lock_fd" || die "timed out waiting for another pi-check using ${ROOTFS[$row]}"
done
trap unmount_all EXIT
trap 'exit 130' INT TERM
ROOTFS_ARGUMENTS=()
for row in "${ROW_LIST[@]}"; do
    select_rootfs "$row"
    mount_rootfs "${ROOTFS[$row]}"
    ROOTFS_ARGUMENTS+=(--rootfs "$row=${ROOTFS[$row]}")
done
log "rootfs ready in ${setup_seconds} s: ${ROOTFS[*]}"
status=0
"$PYTHON" -m pi.check "${ROOTFS_ARGUMENTS[@]}" --rows "$ROWS" --bundle "$BUNDLE" --x86-python "$PYTHON" \
    ${PASS[@]+"${PASS[@]}"} || status=$?
log "finished in $((SECONDS - started)) s (setup ${setup_seconds} s)"
exit $status
