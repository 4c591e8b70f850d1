#!/usr/bin/env bash
# A real systemd for the systemd cgroup driver's tests, on a machine whose PID 1 is not systemd
# (called by hack/env-up.sh; idempotent, ~1 s when up):
#
#   1. install Debian's `systemd` and `dbus-daemon` packages if missing
#   2. start systemd 252 as PID 1 of its own PID + mount namespace (`unshare --pid --mount
#      --fork --mount-proc --propagation slave`), with the host's cgroup hierarchies (its root
#      cgroup is the host's, so its slices are /sys/fs/cgroup/<controller>/kubepods.slice/...),
#      the host's /run (sockets are shared) except /run/systemd, which is its own
#      ($KRS_SYSTEMD_RUN_DIR bound there; the host's /run/systemd/system is never created, so
#      nothing on the host believes systemd runs), and only our units ($KRS_SYSTEMD_UNITS):
#        - dbus.socket/.service: its own system bus, a dbus-daemon at $KRS_SYSTEMD_DIR/bus
#          (systemd joins it as org.freedesktop.systemd1 once units of exactly these names run;
#          its DBUS_SYSTEM_BUS_ADDRESS points there). The kubelet on the host talks to systemd
#          over this bus: systemd's private socket drops clients from outside its PID namespace
#          (their SO_PEERCRED pid is 0), and zbus cannot read its messages anyway;
#        - containerd-systemd.service: a second containerd ($KRS_SD_CONTAINERD_SOCKET, own root
#          and state) with runc's `SystemdCgroup = true`; it runs inside the namespace because
#          runc needs /run/systemd/system (and finds the bus from its environment). The shared
#          containerd and its config are not touched.
#   3. $KRS_SYSTEMD_DIR/system is made once systemd answers on the bus: the kubelet's
#      `--systemd-dir-for-tests=$KRS_SYSTEMD_DIR` reads it as "systemd runs".
#
# Usage: hack/env-systemd.sh [--down]   (--down: stop systemd, its containerd and their units)
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$HACK_DIR/lib.sh"
need_root

: "${KRS_SYSTEMD_DIR:=/run/krs-systemd}"                       # host side: bus, system
: "${KRS_SYSTEMD_RUN_DIR:=$KRS_RUN_DIR/systemd-run}"            # /run/systemd inside
: "${KRS_SYSTEMD_UNITS:=$KRS_ETC_DIR/systemd-units}"
: "${KRS_SYSTEMD_PIDFILE:=$KRS_RUN_DIR/systemd.pid}"            # systemd's pid on the host
: "${KRS_SYSTEMD_LOG:=/var/log/kubelet-rs-systemd.log}"
: "${KRS_SD_CONTAINERD_SOCKET:=/run/containerd-systemd/containerd.sock}"
: "${KRS_SD_CONTAINERD_CONFIG:=$KRS_ETC_DIR/containerd-systemd.toml}"
: "${KRS_SD_CONTAINERD_LOG:=/var/log/kubelet-rs-containerd-systemd.log}"
# containerd under another name, so `pgrep -x containerd` (env-up, env-down) never sees it.
SD_CONTAINERD_BIN=$KRS_LIB_DIR/bin/containerd-sd

systemd_pid() { pid_of_pidfile "$KRS_SYSTEMD_PIDFILE" systemd; }

# in_ns CMD...: run CMD inside systemd's namespaces.
in_ns() {
    local pid
    pid=$(systemd_pid) || return 1
    nsenter -t "$pid" -m -p -- "$@"
}

systemd_answers() { in_ns systemctl show -p Version --value >/dev/null 2>&1; }

sd_containerd_answers() {
    [[ -S "$KRS_SD_CONTAINERD_SOCKET" ]] &&
        timeout 5 "$KRS_CTR_BIN" --address "$KRS_SD_CONTAINERD_SOCKET" --connect-timeout 2s version >/dev/null 2>&1
}

if [[ "${1:-}" == "--down" ]]; then
    if pid=$(systemd_pid); then
        log "systemd: stopping containerd-systemd and systemd (pid $pid)"
        in_ns systemctl stop containerd-systemd.service >/dev/null 2>&1 || true
        # SIGRTMIN+3 is systemd's "halt": it stops its units and exits, ending the namespace.
        kill -s RTMIN+3 "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    fi
    rm -rf "$KRS_SYSTEMD_PIDFILE" "$KRS_SYSTEMD_DIR"
    exit 0
fi

# 1. the package
if ! [[ -x /lib/systemd/systemd && -x /usr/bin/dbus-daemon && -x /usr/bin/busctl ]]; then
    if [[ "${KRS_INSTALL:-1}" == 1 ]]; then
        log "systemd: installing Debian's systemd and dbus-daemon packages"
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends systemd dbus-daemon >/dev/null
    else
        die "systemd or dbus-daemon is not installed (apt-get install systemd dbus-daemon)"
    fi
fi
BUS="unix:path=$KRS_SYSTEMD_DIR/bus"
bus_has_systemd() {
    [[ -S "$KRS_SYSTEMD_DIR/bus" ]] && timeout 5 busctl --address="$BUS" get-property org.freedesktop.systemd1 \
        /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager Version >/dev/null 2>&1
}

# 2. units and configs (rewritten only when they differ; a change needs --down first)
write_if_changed() { # write_if_changed PATH CONTENT
    if [[ ! -f "$1" ]] || [[ "$(cat "$1")" != "$2" ]]; then
        mkdir -p "$(dirname "$1")"
        printf '%s\n' "$2" >"$1"
    fi
}
mkdir -p "$KRS_LIB_DIR/bin"
ln -sfn "$(command -v "$KRS_CONTAINERD_BIN")" "$SD_CONTAINERD_BIN"
# The shared containerd's config with our root, state and socket, and runc in systemd mode.
sd_config=$(sed -e 's|@CONTAINERD_ROOT@|/var/lib/containerd-systemd|' \
    -e 's|@CONTAINERD_STATE@|/run/containerd-systemd|' \
    -e "s|@CONTAINERD_SOCKET@|$KRS_SD_CONTAINERD_SOCKET|" \
    -e "s|@SANDBOX_IMAGE@|$KRS_SANDBOX_IMAGE|" \
    -e "s|@CNI_BIN_DIR@|$KRS_CNI_BIN_DIR|" -e "s|@CNI_CONF_DIR@|$KRS_CNI_CONF_DIR|" \
    -e "s|@AUTH_REGISTRY@|$KRS_AUTH_REGISTRY|g" -e "s|@REGISTRY@|$KRS_REGISTRY|g" \
    -e 's|SystemdCgroup = false|SystemdCgroup = true|' \
    -e 's|Root = "/run/runc-alt"|Root = "/run/containerd-systemd/runc-alt"|' \
    "$KRS_CONTAINERD_TEMPLATE")
write_if_changed "$KRS_SD_CONTAINERD_CONFIG" "$sd_config"
write_if_changed "$KRS_SYSTEMD_UNITS/kubelet-rs.target" "[Unit]
Description=kubelet-rs test systemd
Wants=dbus.socket dbus.service containerd-systemd.service"
write_if_changed "$KRS_SYSTEMD_UNITS/dbus.socket" "[Unit]
DefaultDependencies=no
[Socket]
ListenStream=$KRS_SYSTEMD_DIR/bus
SocketMode=0600"
write_if_changed "$KRS_SYSTEMD_UNITS/dbus.service" "[Unit]
DefaultDependencies=no
Requires=dbus.socket
[Service]
ExecStart=/usr/bin/dbus-daemon --nofork --nopidfile --address=systemd: --systemd-activation --config-file=$KRS_ETC_DIR/systemd-bus.conf"
# Root only, everything allowed: a test bus for systemd and the kubelet.
write_if_changed "$KRS_ETC_DIR/systemd-bus.conf" '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <auth>EXTERNAL</auth>
  <listen>unix:path=/run/krs-systemd/unused</listen>
  <policy user="root">
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>'
# runc reaches systemd over the system bus, else (as root) /run/systemd/private; the host's /run
# is shared, so a system bus another test runs at /run/dbus must not be taken for systemd's.
write_if_changed "$KRS_SYSTEMD_UNITS/containerd-systemd.service" "[Unit]
DefaultDependencies=no
[Service]
Environment=DBUS_SYSTEM_BUS_ADDRESS=$BUS
ExecStart=$SD_CONTAINERD_BIN --config $KRS_SD_CONTAINERD_CONFIG
Delegate=yes
KillMode=process
Restart=always
LimitNOFILE=1048576
StandardOutput=append:$KRS_SD_CONTAINERD_LOG
StandardError=inherit"
write_if_changed "$KRS_ETC_DIR/systemd-init.sh" "#!/bin/bash
# PID 1 of the test systemd's namespace (hack/env-systemd.sh).
set -e
mount --bind /run /run
mount --bind $KRS_SYSTEMD_RUN_DIR /run/systemd
export container=kubelet-rs SYSTEMD_UNIT_PATH=$KRS_SYSTEMD_UNITS DBUS_SYSTEM_BUS_ADDRESS=$BUS
exec /lib/systemd/systemd --system --unit=kubelet-rs.target"
chmod +x "$KRS_ETC_DIR/systemd-init.sh"

# 3. systemd
if systemd_answers; then
    log "systemd: already running (pid $(systemd_pid))"
else
    if pid=$(systemd_pid); then
        die "systemd pid $pid runs but does not answer; hack/env-systemd.sh --down first"
    fi
    mkdir -p "$KRS_SYSTEMD_RUN_DIR" "$KRS_SYSTEMD_DIR" /run/systemd "$(dirname "$KRS_SYSTEMD_PIDFILE")"
    rm -rf "${KRS_SYSTEMD_RUN_DIR:?}"/* "$KRS_SYSTEMD_DIR/system" "$KRS_SYSTEMD_DIR/bus"
    log "systemd: starting in its own PID and mount namespace"
    printf '\n==== %s: systemd starting\n' "$(date -Is)" >>"$KRS_SYSTEMD_LOG"
    # Detached, with no inherited descriptor above 2 (a caller's lock must not be held forever).
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid -f bash -c 'for fd in $(ls /proc/$$/fd); do ((fd > 2)) && eval "exec $fd>&-"; done; exec "$@"' _ \
        unshare --pid --mount --fork --mount-proc --propagation slave "$KRS_ETC_DIR/systemd-init.sh" \
        </dev/null >>"$KRS_SYSTEMD_LOG" 2>&1
    for ((i = 0; i < 100; i++)); do
        # systemd is the child of the unshare that runs the init script.
        pid=$(pgrep -f -x '/lib/systemd/systemd --system --unit=kubelet-rs.target' | head -n1 || true)
        [[ -n "$pid" ]] && { echo "$pid" >"$KRS_SYSTEMD_PIDFILE"; break; }
        sleep 0.1
    done
    [[ -s "$KRS_SYSTEMD_PIDFILE" ]] || die "systemd did not start (log: $KRS_SYSTEMD_LOG)"
    for ((i = 0; i < 300; i++)); do systemd_answers && break; sleep 0.1; done
    systemd_answers || die "systemd does not answer (log: $KRS_SYSTEMD_LOG)"
    log "systemd: answering (pid $(systemd_pid), version $(in_ns systemctl show -p Version --value))"
fi
in_ns systemctl start kubelet-rs.target
for ((i = 0; i < 300; i++)); do bus_has_systemd && sd_containerd_answers && break; sleep 0.2; done
bus_has_systemd || die "systemd is not on its bus $BUS (log: $KRS_SYSTEMD_LOG)"
sd_containerd_answers || die "containerd-systemd does not answer on $KRS_SD_CONTAINERD_SOCKET (log: $KRS_SD_CONTAINERD_LOG)"
mkdir -p "$KRS_SYSTEMD_DIR/system"
log "systemd: D-Bus $BUS; containerd (SystemdCgroup = true) $KRS_SD_CONTAINERD_SOCKET"
