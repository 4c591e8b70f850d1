#!/usr/bin/env bash
# The fresh-machine check: proves that hack/env-up.sh installs everything the build needs.
#
# In a new Debian 12 root (debootstrap --variant=minbase bookworm, in a scratch directory) with the
# machine's Rust toolchain and the cargo registry made visible read-only, it runs env-up's install
# step (hack/env-up.sh --install-only: the package list and the check that every command the
# scripts and tests call is there), then the release build of the workspace, offline, into an empty
# target directory. A failure names the step and the missing piece (apt's, env-up's or cargo's own
# message is printed above it).
#
# Cached between runs (KRS_FRESH_CACHE, default /var/cache/kubelet-rs/fresh): the debootstrap
# tarball of the base system only. The packages env-up installs are downloaded anew every run
# (the root's apt cache is thrown away with it), and the build starts from nothing.
# The cargo registry is the host's (~/.cargo/registry, filled by `cargo fetch --locked` first).
#
# Run as root (a user with sudo: it re-runs itself under sudo). Takes about 8-10 minutes on the
# 2-core machine: ~1 min for the root and env-up's packages, the rest is the release build.
#
# Usage: hack/fresh-machine.sh [--keep] [-h]
#   --keep   leave the root in place (its path is printed) to look around
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$HACK_DIR/lib.sh"
run_as_root "$HACK_DIR/fresh-machine.sh" "$@"

KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

: "${KRS_FRESH_CACHE:=/var/cache/kubelet-rs/fresh}"
: "${KRS_FRESH_SUITE:=bookworm}"
: "${KRS_FRESH_MIRROR:=http://deb.debian.org/debian}"
: "${KRS_FRESH_SCRATCH:=/var/tmp}"

START_TS=$(date +%s)
command -v debootstrap >/dev/null || die "debootstrap is not installed (hack/env-up.sh installs it)"
command -v cargo >/dev/null || die "cargo is not on PATH (the machine's Rust toolchain)"
SYSROOT=$(rustc --print sysroot) || die "rustc --print sysroot failed"
[[ -x "$SYSROOT/bin/cargo" && -x "$SYSROOT/bin/rustc" ]] || die "no cargo/rustc in the toolchain at $SYSROOT"
CARGO_HOME_HOST=${CARGO_HOME:-$HOME/.cargo}

# --- the base system, cached as a debootstrap tarball ---------------------------------------------
mkdir -p "$KRS_FRESH_CACHE"
TARBALL=$KRS_FRESH_CACHE/$KRS_FRESH_SUITE-minbase.tgz
if [[ ! -s $TARBALL ]]; then
    log "debootstrap: downloading the $KRS_FRESH_SUITE minbase packages into $TARBALL (once; cached)"
    tmp=$(mktemp -d "$KRS_FRESH_SCRATCH/krs-debootstrap.XXXXXX")
    debootstrap --variant=minbase --make-tarball="$TARBALL.part" "$KRS_FRESH_SUITE" "$tmp" "$KRS_FRESH_MIRROR" \
        >"$KRS_FRESH_CACHE/make-tarball.log" 2>&1 ||
        {
            tail -n 20 "$KRS_FRESH_CACHE/make-tarball.log" >&2
            rm -rf "$tmp"
            die "debootstrap --make-tarball failed (log $KRS_FRESH_CACHE/make-tarball.log)"
        }
    rm -rf "$tmp"
    mv -f "$TARBALL.part" "$TARBALL"
fi

# --- the cargo registry, filled on the host (the build inside runs offline) -----------------------
log "cargo: fetching the locked dependencies into $CARGO_HOME_HOST/registry"
(cd "$REPO_DIR" && cargo fetch --locked -q) || die "cargo fetch --locked failed on the host"

# --- the root -------------------------------------------------------------------------------------
ROOT=$(mktemp -d "$KRS_FRESH_SCRATCH/krs-fresh.XXXXXX")
MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    if ((KEEP)); then
        log "kept the root at $ROOT (mounts removed)"
        return
    fi
    # Nothing may still be mounted in it before it goes.
    if grep -qF " $ROOT/" /proc/self/mounts; then
        warn "something is still mounted under $ROOT; leaving it in place"
        return
    fi
    rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT

# bind SRC DEST [ro]: bind-mount SRC at $ROOT/DEST.
bind() {
    local src=$1 dest=$ROOT/$2
    mkdir -p "$dest"
    mount --bind "$src" "$dest"
    MOUNTS+=("$dest")
    if [[ ${3:-} == ro ]]; then
        mount -o remount,bind,ro "$dest"
    fi
}

log "debootstrap: unpacking a new $KRS_FRESH_SUITE root in $ROOT"
debootstrap --variant=minbase --unpack-tarball="$TARBALL" "$KRS_FRESH_SUITE" "$ROOT" "$KRS_FRESH_MIRROR" \
    >"$ROOT.debootstrap.log" 2>&1 ||
    {
        tail -n 20 "$ROOT.debootstrap.log" >&2
        die "debootstrap into $ROOT failed (log $ROOT.debootstrap.log)"
    }
rm -f "$ROOT.debootstrap.log"
printf 'deb %s %s main\n' "$KRS_FRESH_MIRROR" "$KRS_FRESH_SUITE" >"$ROOT/etc/apt/sources.list"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"

mount -t proc proc "$ROOT/proc"
MOUNTS+=("$ROOT/proc")
bind /dev dev
bind /dev/pts dev/pts
bind "$REPO_DIR" src ro
bind "$SYSROOT" opt/rust ro
bind "$CARGO_HOME_HOST/registry" opt/cargo/registry ro
mkdir -p "$ROOT/build"

in_root() {
    chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/opt/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        CARGO_HOME=/opt/cargo CARGO_TARGET_DIR=/build/target CARGO_TERM_COLOR=never \
        "$@"
}

# --- env-up's install step --------------------------------------------------------------------------
# apt's output goes to a log (printed in part when the step fails); env-up's own lines are shown.
INSTALL_LOG=$KRS_FRESH_CACHE/env-up-install.log
log "fresh root: hack/env-up.sh --install-only (apt's output: $INSTALL_LOG)"
if ! in_root bash /src/hack/env-up.sh --install-only >"$INSTALL_LOG" 2>&1; then
    tail -n 40 "$INSTALL_LOG" >&2
    die "fresh-machine check: hack/env-up.sh --install-only failed in a new $KRS_FRESH_SUITE root" \
        "(the missing package or command is named above; full log $INSTALL_LOG)"
fi
grep -E '^\[env-up.sh\]|^env-up:' "$INSTALL_LOG" >&2 || true
INSTALL_TS=$(date +%s)

# --- the release build, offline, from nothing -------------------------------------------------------
log "fresh root: cargo build --release --workspace --locked --offline"
if ! in_root bash -c 'cd /src && cargo build --release --workspace --locked --offline'; then
    die "fresh-machine check: the release build failed in a new $KRS_FRESH_SUITE root after env-up's install step" \
        "(a program or file the build needs is not in hack/env-up.sh's PACKAGES; cargo's message is above)"
fi
[[ -x $ROOT/build/target/release/kubelet ]] || die "fresh-machine check: the build made no target/release/kubelet"

END_TS=$(date +%s)
echo "fresh-machine: ok in $((END_TS - START_TS))s (root + env-up install $((INSTALL_TS - START_TS))s, release build $((END_TS - INSTALL_TS))s)"
