#!/usr/bin/env bash
# Emulated Raspberry Pi OSes: Debian root filesystems (arm64, armhf, armel) run with qemu-user.
#
#   pi/rootfs.sh can-emulate        exit 0 if this machine can emulate, else print the reason, exit 1
#   pi/rootfs.sh host-deps          install debootstrap and qemu-user-static 10 (bookworm-backports)
#   pi/rootfs.sh binfmt [ROOTFS]    (re)register its qemu (aarch64 or arm) with binfmt_misc, F flag
#   pi/rootfs.sh build [ROOTFS]     build or reuse that cached rootfs; print its path
#   pi/rootfs.sh path [ROOTFS]      print the cached rootfs path (built or not)
#   pi/rootfs.sh list               the rootfs names, one a line
#
# ROOTFS is one of the names in select_rootfs below (default bookworm-arm64). Also sourced by
# pi/check.sh for select_rootfs / mount_rootfs / unmount_rootfs. Needs root.
#
# Why these choices (measured on Debian 12 x86-64):
# - Debian 12's own qemu 7.2 with its default CPU returns wrong int8 values from LiteRT/XNNPACK
#   without any error, and crashes without an emulated /proc/cpuinfo: qemu 10 from
#   bookworm-backports, with QEMU_CPU=cortex-a72 (Pi 4) or cortex-a76 (Pi 5), computes the
#   interpreters' integer reference kernels bit-exactly as x86 does. (XNNPACK's arm64 kernels round
#   differently from its x86 ones: a few int8 outputs in 10,000 images differ by one step, identically
#   on both CPU models; pi/check.py reports them.)
# - 32-bit ARM: Debian armhf needs ARMv7 (QEMU_CPU=cortex-a7, the Pi 2's CPU); ARMv6, the Pi 1 and
#   Zero's arm1176, runs Debian armel (soft-float). Neither is Raspbian, Raspberry Pi OS 32-bit's
#   ARMv6 hard-float rebuild; the rows prove instruction sets, Python and numpy versions, and the
#   install recipe, not Raspbian's own builds.
# - The F flag makes the kernel open the interpreter at registration, so it works inside the
#   chroot, where /usr/bin/qemu-* does not exist. It also means an upgraded qemu is only used
#   after re-registering: `binfmt` always re-registers.
# - Without /sys mounted LiteRT quietly drops XNNPACK; without /proc, qemu has no cpuinfo.
#
# Each rootfs lives outside the repository, in $MNIST_EDGE_PI_CACHE (default /var/cache/mnist-edge)
# under a name that hashes everything it is built from; it is built in a temporary directory and
# renamed into place only when complete, so an interrupted build never leaves a half rootfs behind.
# Different rootfs build in parallel; the same one is built once (a lock per rootfs).

set -euo pipefail

# Bump when the way a rootfs is built changes: a new version is a new cache entry.
ROOTFS_SCRIPT_VERSION=1
VARIANT=minbase
MIRROR=${MNIST_EDGE_PI_MIRROR:-http://deb.debian.org/debian}
QEMU_MIN_MAJOR=10
CACHE_ROOT=${MNIST_EDGE_PI_CACHE:-/var/cache/mnist-edge}
SETUP_TIMEOUT=${MNIST_EDGE_PI_SETUP_TIMEOUT:-900}   # seconds for host packages + debootstrap
ROOTFS_PIP_CACHE=/var/cache/mnist-edge-pip   # inside the rootfs: the host's $CACHE_ROOT/pip-$ARCH
BINFMT_DIR=/proc/sys/fs/binfmt_misc
ROOTFS_NAMES="bookworm-arm64 trixie-arm64 bookworm-armhf trixie-armhf bookworm-armel"

# What each emulated OS is built from. Python with venv, Debian's numpy (for venvs made with
# --system-site-packages, as Raspberry Pi OS users make them for tflite-runtime and the numpy
# engine) and, where pip has no wheel of it (32-bit ARM) or the recipe uses Debian's, Pillow.
select_rootfs() {
    ROOTFS_NAME=${1:-bookworm-arm64}
    case "$ROOTFS_NAME" in
        bookworm-arm64)   # 64-bit Raspberry Pi OS bookworm: Python 3.11, numpy 1.24
            SUITE=bookworm ARCH=arm64 QEMU=aarch64
            ROOTFS_PACKAGES=python3,python3-venv,python3-numpy,ca-certificates ;;
        trixie-arm64)     # the current 64-bit Raspberry Pi OS (Debian 13): Python 3.13, numpy 2.2
            SUITE=trixie ARCH=arm64 QEMU=aarch64
            ROOTFS_PACKAGES=python3,python3-venv,python3-numpy,python3-pil,ca-certificates ;;
        bookworm-armhf)   # 32-bit, ARMv7 hard-float: Python 3.11, numpy 1.24, Pillow 9.4
            SUITE=bookworm ARCH=armhf QEMU=arm
            ROOTFS_PACKAGES=python3,python3-venv,python3-numpy,python3-pil,ca-certificates ;;
        trixie-armhf)     # the current 32-bit Raspberry Pi OS's Debian: Python 3.13, numpy 2.2, Pillow 11.1
            SUITE=trixie ARCH=armhf QEMU=arm
            ROOTFS_PACKAGES=python3,python3-venv,python3-numpy,python3-pil,ca-certificates ;;
        bookworm-armel)   # 32-bit, ARMv5+ soft-float, which an ARMv6 runs: Python 3.11, numpy 1.24, Pillow 9.4,
                          # cryptography 38 for `install`'s signatures (pip has no armv6 wheel of it); its
                          # cffi backend named too: debootstrap does not resolve the virtual package it depends on
            SUITE=bookworm ARCH=armel QEMU=arm
            ROOTFS_PACKAGES=python3,python3-venv,python3-numpy,python3-pil,python3-cryptography,python3-cffi-backend,ca-certificates ;;
        *) die "unknown rootfs '$ROOTFS_NAME' (choose from: $ROOTFS_NAMES)" ;;
    esac
    BINFMT_CONF=/usr/lib/binfmt.d/qemu-$QEMU.conf
}

log() { echo "pi: $*" >&2; }
die() { echo "pi: error: $*" >&2; exit 1; }

rootfs_hash() {
    printf '%s\n' "$ROOTFS_SCRIPT_VERSION" "$SUITE" "$ARCH" "$VARIANT" "$ROOTFS_PACKAGES" | sha256sum | cut -c1-12
}

rootfs_path() { echo "$CACHE_ROOT/pi-rootfs-$SUITE-$ARCH-$(rootfs_hash)"; }

# Prints nothing and returns 0 when this machine can emulate; otherwise prints why, returns 1.
can_emulate() {
    if [ "$(id -u)" != 0 ]; then echo "not root: mounting /proc, /sys, /dev and binfmt_misc needs root"; return 1; fi
    if [ "$(uname -m)" = aarch64 ]; then return 0; fi
    if [ ! -d "$BINFMT_DIR" ]; then echo "no binfmt_misc in this kernel ($BINFMT_DIR missing)"; return 1; fi
    if [ ! -e "$BINFMT_DIR/register" ] && ! mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" 2>/dev/null; then
        echo "binfmt_misc cannot be mounted at $BINFMT_DIR"; return 1
    fi
    if ! command -v debootstrap >/dev/null && ! command -v apt-get >/dev/null; then
        echo "no debootstrap and no apt-get to install it"; return 1
    fi
    return 0
}

qemu_major() {
    local version
    version=$(qemu-$QEMU --version 2>/dev/null | sed -n 's/^qemu-[a-z0-9]* version \([0-9]*\)\..*/\1/p')
    echo "${version:-0}"
}

ensure_host_deps() {
    local need_debootstrap=0 need_qemu=0
    command -v debootstrap >/dev/null || need_debootstrap=1
    if [ "$(uname -m)" != aarch64 ] && { [ "$(qemu_major)" -lt "$QEMU_MIN_MAJOR" ] || [ ! -f "$BINFMT_CONF" ]; }; then
        need_qemu=1
    fi
    if [ $need_debootstrap = 0 ] && [ $need_qemu = 0 ]; then return 0; fi
    export DEBIAN_FRONTEND=noninteractive
    if [ $need_qemu = 1 ]; then
        # Debian 12's qemu 7.2 gives wrong int8 results (see above): take qemu 10 from backports.
        . /etc/os-release
        [ "${VERSION_CODENAME:-}" = bookworm ] || log "host is ${VERSION_CODENAME:-unknown}, not bookworm: trying its own qemu-user-static"
        if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding bookworm-backports to apt sources (for qemu-user-static 10)"
            echo "deb $MIRROR bookworm-backports main" > /etc/apt/sources.list.d/bookworm-backports.list
        fi
    fi
    log "installing host packages (debootstrap, qemu-user-static)"
    timeout "$SETUP_TIMEOUT" apt-get update -qq
    if [ $need_debootstrap = 1 ]; then
        timeout "$SETUP_TIMEOUT" apt-get install -y -qq debootstrap >/dev/null
    fi
    if [ $need_qemu = 1 ]; then
        local target=()
        [ "${VERSION_CODENAME:-}" = bookworm ] && target=(-t bookworm-backports)
        timeout "$SETUP_TIMEOUT" apt-get install -y -qq "${target[@]}" qemu-user-static qemu-user-binfmt >/dev/null
    fi
    [ "$(uname -m)" = aarch64 ] || [ "$(qemu_major)" -ge "$QEMU_MIN_MAJOR" ] \
        || die "qemu-$QEMU is version $(qemu_major), need >= $QEMU_MIN_MAJOR (Debian 12's 7.2 gives wrong int8 values)"
}

ensure_binfmt() {
    [ "$(uname -m)" != aarch64 ] || return 0
    [ -e "$BINFMT_DIR/register" ] || mount -t binfmt_misc binfmt_misc "$BINFMT_DIR" \
        || die "cannot mount binfmt_misc at $BINFMT_DIR"
    [ -f "$BINFMT_CONF" ] || die "$BINFMT_CONF missing: install qemu-user-binfmt"
    local line name
    line=$(grep -v '^#' "$BINFMT_CONF" | head -n1)
    name=$(echo "$line" | cut -d: -f2)
    case "$(echo "$line" | awk -F: '{print $NF}')" in
        *F*) ;;
        *) line="${line}F" ;;   # fix-binary: the interpreter is opened now, not looked up in the chroot
    esac
    # Always re-register: with F the kernel keeps the binary it opened at registration, which may
    # be an older qemu than the one installed now.
    if [ -e "$BINFMT_DIR/$name" ]; then echo -1 > "$BINFMT_DIR/$name"; fi
    echo "$line" > "$BINFMT_DIR/register"
    grep -q '^flags:.*F' "$BINFMT_DIR/$name" || die "binfmt_misc entry $name has no F flag"
    log "binfmt_misc: $name -> $(sed -n 's/^interpreter //p' "$BINFMT_DIR/$name") ($(grep '^flags' "$BINFMT_DIR/$name")), qemu $(qemu-$QEMU --version | head -n1 | awk '{print $3}')"
}

# Unmount everything mounted at or below $1, deepest first. Never fails.
unmount_below() {
    local root=$1 target
    [ -n "$root" ] || return 0
    root=$(realpath -m "$root")
    awk -v root="$root" '$2 == root || index($2, root "/") == 1 {print $2}' /proc/self/mounts \
        | sort -r | while read -r target; do
            umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || log "could not unmount $target"
        done
}

build_rootfs() {
    local final temporary
    final=$(rootfs_path)
    mkdir -p "$CACHE_ROOT"
    exec 8>"$final.build-lock"
    flock -w "$SETUP_TIMEOUT" 8 || die "timed out waiting for another build of $final"
    if [ -f "$final/etc/mnist-edge-rootfs" ]; then
        log "reusing $final"
        echo "$final"
        return 0
    fi
    # Leftovers of an interrupted build (we hold the lock, so nobody is using them).
    local stale
    for stale in "$CACHE_ROOT"/.pi-rootfs-"$(rootfs_hash)".partial.*; do
        [ -e "$stale" ] || continue
        unmount_below "$stale"
        rm -rf --one-file-system "$stale"
    done
    temporary=$(mktemp -d "$CACHE_ROOT/.pi-rootfs-$(rootfs_hash).partial.XXXXXX")
    # shellcheck disable=SC2064
    trap "unmount_below '$temporary'; rm -rf --one-file-system '$temporary'" EXIT
    trap 'exit 130' INT TERM
    log "building $SUITE $ARCH rootfs with debootstrap (a few minutes; log in $temporary.log)"
    local started=$SECONDS
    if ! timeout "$SETUP_TIMEOUT" debootstrap --arch="$ARCH" --variant="$VARIANT" --include="$ROOTFS_PACKAGES" \
            "$SUITE" "$temporary/rootfs" "$MIRROR" > "$temporary.log" 2>&1 < /dev/null; then
        tail -n 20 "$temporary.log" >&2
        rm -f "$temporary.log"
        die "debootstrap failed or timed out after ${SETUP_TIMEOUT}s (MNIST_EDGE_PI_SETUP_TIMEOUT)"
    fi
    rm -f "$temporary.log"
    unmount_below "$temporary"
    chroot "$temporary/rootfs" apt-get clean
    printf 'suite=%s arch=%s variant=%s packages=%s script_version=%s built=%s\n' \
        "$SUITE" "$ARCH" "$VARIANT" "$ROOTFS_PACKAGES" "$ROOTFS_SCRIPT_VERSION" "$(date -u +%FT%TZ)" \
        > "$temporary/rootfs/etc/mnist-edge-rootfs"
    mv -T "$temporary/rootfs" "$final"
    rm -rf --one-file-system "$temporary"
    trap - EXIT INT TERM
    log "built $final in $((SECONDS - started)) s"
    echo "$final"
}

# Make the rootfs usable for a run: /proc, /sys, /dev, the host's DNS and CA bundle (pip needs
# them), and a wheel cache shared across runs. Pair with unmount_rootfs (in a trap).
mount_rootfs() {
    local root=$1
    [ -f "$root/etc/mnist-edge-rootfs" ] || die "$root: not a rootfs built by pi/rootfs.sh"
    unmount_below "$root"   # from a run that was killed too hard for its trap
    mount -t proc proc "$root/proc"
    mount -t sysfs sysfs "$root/sys"
    mount --rbind /dev "$root/dev"
    mount --make-rslave "$root/dev"
    mkdir -p "$CACHE_ROOT/pip-$ARCH" "$root$ROOTFS_PIP_CACHE"
    mount --bind "$CACHE_ROOT/pip-$ARCH" "$root$ROOTFS_PIP_CACHE"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    cp -L /etc/hosts "$root/etc/hosts"
    # The host's CA bundle (it may hold a local proxy's certificate), kept beside Debian's own.
    cp -L "${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}" "$root/etc/ssl/host-ca-bundle.crt"
}

unmount_rootfs() {
    unmount_below "$1"
    if awk -v root="$(realpath -m "$1")" 'index($2, root "/") == 1 {found = 1} END {exit !found}' /proc/self/mounts; then
        log "warning: something is still mounted below $1"
        return 1
    fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    case "${1:-}" in
        can-emulate) reason=$(can_emulate) && exit 0; echo "$reason"; exit 1 ;;
        host-deps) select_rootfs; ensure_host_deps ;;
        binfmt) select_rootfs "${2:-}"; ensure_binfmt ;;
        build) select_rootfs "${2:-}"; ensure_host_deps; ensure_binfmt; build_rootfs ;;
        path) select_rootfs "${2:-}"; rootfs_path ;;
        list) printf '%s\n' $ROOTFS_NAMES ;;
        *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
    esac
fi
