#!/usr/bin/env bash
# D-Bus for the graceful node shutdown tests (called by hack/env-up.sh; may run alone).
#
# The kubelet talks to logind over the system D-Bus. A real logind would power the machine off,
# so the tests (crates/kubelet/tests/e2e/shutdown.rs) start their own private dbus-daemon with a
# system-bus-like configuration (socket in a temporary directory) and a fake logind on it
# (crates/login1-test), and point the kubelet at it with DBUS_SYSTEM_BUS_ADDRESS. This script
# installs Debian's dbus-daemon when it is missing and checks that a private bus starts here.
#
# Settings: KRS_INSTALL=0 installs nothing (env-up.sh --no-install); --install-only skips the check.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$HACK_DIR/lib.sh"
run_as_root "$HACK_DIR/env-dbus.sh" "$@"
need_root

if ! command -v dbus-daemon >/dev/null; then
    [[ ${KRS_INSTALL:-1} == 1 ]] || die "dbus-daemon not found (package dbus-daemon) and installing is off"
    log "dbus: installing dbus-daemon"
    # No daemon starts during the install (there is no service manager here).
    policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    rc=0
    {
        apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dbus-daemon
    } || rc=$?
    ((own_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install dbus-daemon failed (exit $rc)"
fi
command -v dbus-daemon >/dev/null || die "required command 'dbus-daemon' not found"
[[ " $* " == *" --install-only "* ]] && exit 0

# A private system-like bus starts and answers, as the tests will start theirs.
dir=$(mktemp -d /tmp/krs-dbus-check.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/bus.conf" <<CONF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$dir/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <policy context="default"><allow user="*"/><allow own="*"/></policy>
</busconfig>
CONF
out=$(timeout 10 dbus-daemon --config-file="$dir/bus.conf" --fork --nopidfile --print-address=1 --print-pid=1) ||
    die "dbus-daemon did not start"
address=$(sed -n 1p <<<"$out")
pid=$(sed -n 2p <<<"$out")
[[ $address == unix:path=$dir/system_bus_socket* && $pid =~ ^[0-9]+$ ]] || die "dbus-daemon said: $out"
kill "$pid"
log "dbus: dbus-daemon $(dbus-daemon --version | head -n1 | awk '{print $NF}') starts a private system bus"
