# shellcheck shell=bash
# Shared settings and helpers for hack/env-up.sh and hack/env-down.sh.
# Every setting can be overridden from the environment.

HACK_DIR=${HACK_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}

# --- where things live -------------------------------------------------------
: "${KRS_RUN_DIR:=/run/kubelet-rs}"                  # pid files, lock, config stamps
: "${KRS_ETC_DIR:=/etc/kubelet-rs}"                  # rendered configs
: "${KRS_LIB_DIR:=/var/lib/kubelet-rs}"              # image build output etc.
: "${KRS_WAIT_TIMEOUT:=60}"                          # seconds to wait for a daemon

# containerd
: "${KRS_CONTAINERD_BIN:=containerd}"
: "${KRS_CTR_BIN:=ctr}"
: "${KRS_CONTAINERD_TEMPLATE:=$HACK_DIR/containerd/config.toml}"
: "${KRS_CONTAINERD_CONFIG:=$KRS_ETC_DIR/containerd.toml}"
: "${KRS_CONTAINERD_SOCKET:=/run/containerd/containerd.sock}"
: "${KRS_CONTAINERD_ROOT:=/var/lib/containerd}"
: "${KRS_CONTAINERD_STATE:=/run/containerd}"
: "${KRS_CONTAINERD_LOG:=/var/log/kubelet-rs-containerd.log}"
: "${KRS_CONTAINERD_PIDFILE:=$KRS_RUN_DIR/containerd.pid}"
: "${KRS_CRI_NAMESPACE:=k8s.io}"

# registry (loopback only)
: "${KRS_REGISTRY:=127.0.0.1:5000}"                  # host:port, also the image name prefix
: "${KRS_REGISTRY_BIN:=docker-registry}"
: "${KRS_REGISTRY_TEMPLATE:=$HACK_DIR/registry/config.yml}"
: "${KRS_REGISTRY_CONFIG:=$KRS_ETC_DIR/registry.yml}"
: "${KRS_REGISTRY_ROOT:=/var/lib/kubelet-rs-registry}"
: "${KRS_REGISTRY_LOG:=/var/log/kubelet-rs-registry.log}"
: "${KRS_REGISTRY_PIDFILE:=$KRS_RUN_DIR/registry.pid}"
# a second loopback registry behind htpasswd basic auth (imagePullSecrets tests)
: "${KRS_AUTH_REGISTRY:=127.0.0.1:5001}"
: "${KRS_AUTH_REGISTRY_ROOT:=/var/lib/kubelet-rs-registry-auth}"
: "${KRS_AUTH_REGISTRY_LOG:=/var/log/kubelet-rs-registry-auth.log}"
: "${KRS_AUTH_REGISTRY_PIDFILE:=$KRS_RUN_DIR/registry-auth.pid}"
: "${KRS_AUTH_REGISTRY_USER:=kubelet}"
: "${KRS_AUTH_REGISTRY_PASSWORD:=e2e-secret}"

# CNI
: "${KRS_CNI_BIN_DIR:=/usr/lib/cni}"
: "${KRS_CNI_CONF_DIR:=/etc/cni/net.d}"
: "${KRS_CNI_TEMPLATE:=$HACK_DIR/cni/10-kubelet-rs.conflist}"
: "${KRS_CNI_CONFLIST:=$KRS_CNI_CONF_DIR/10-kubelet-rs.conflist}"
: "${KRS_CNI_NETWORK_NAME:=kubelet-rs}"              # must match "name" in the template
: "${KRS_CNI_BRIDGE:=kubeletrs0}"
: "${KRS_POD_CIDR:=10.88.0.0/16}"
: "${KRS_CNI_IPAM_DIR:=/var/lib/cni/networks/$KRS_CNI_NETWORK_NAME}"

# images
: "${KRS_SANDBOX_IMAGE:=$KRS_REGISTRY/pause:3.10}"
: "${KRS_BUSYBOX:=/bin/busybox}"
: "${KRS_IMAGE_BUILD_DIR:=$KRS_LIB_DIR/image-build}"
if [[ -z "${KRS_PYTHON:-}" ]]; then
    if [[ -x /usr/bin/python3 ]]; then KRS_PYTHON=/usr/bin/python3; else KRS_PYTHON=python3; fi
fi

# shellcheck disable=SC2034 # used by the scripts that source this file
CONTAINERD_COMM=$(basename "$KRS_CONTAINERD_BIN")
# shellcheck disable=SC2034
REGISTRY_COMM=$(basename "$KRS_REGISTRY_BIN")

# --- helpers -------------------------------------------------------------------
_krs_prog=$(basename "$0")
log()  { printf '[%s] %s\n' "$_krs_prog" "$*" >&2; }
warn() { printf '[%s] WARNING: %s\n' "$_krs_prog" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$_krs_prog" "$*" >&2; exit 1; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (containerd, CNI and /etc need it)"
}

# run_as_root SCRIPT ARGS...: a script's first step. As root it returns; otherwise it runs the
# script again under sudo, keeping the caller's environment and PATH (so the KRS_* settings and a
# rustup toolchain in the user's ~/.cargo/bin still apply), or says how to run it when there is no
# sudo (a minimal Debian root shell has none).
run_as_root() {
    local script=$1
    shift
    [[ $(id -u) -eq 0 ]] && return 0
    command -v sudo >/dev/null ||
        die "must run as root (containerd, CNI, cgroups and /etc need it) and sudo is not installed: run $script in a root shell"
    log "not root: running $script again under sudo"
    exec sudo --preserve-env env "PATH=$PATH" bash "$script" "$@"
}

# Take an exclusive lock so that two concurrent env-up/env-down runs don't race.
take_lock() {
    mkdir -p "$KRS_RUN_DIR"
    exec 9>"$KRS_RUN_DIR/env.lock"
    if ! flock -n 9; then
        log "another env-up/env-down run holds $KRS_RUN_DIR/env.lock; waiting (max 300 s)..."
        flock -w 300 9 || die "timed out waiting for $KRS_RUN_DIR/env.lock"
    fi
}

# pid_of_pidfile FILE EXPECTED_COMM -> prints the pid if FILE names a live
# process whose /proc/PID/comm is EXPECTED_COMM (guards against pid reuse).
pid_of_pidfile() {
    local file=$1 comm=$2 pid
    [[ -r "$file" ]] || return 1
    pid=$(tr -dc '0-9' <"$file")
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "${comm:0:15}" ]] || return 1
    printf '%s\n' "$pid"
}

containerd_answers() {
    [[ -S "$KRS_CONTAINERD_SOCKET" ]] || return 1
    timeout 5 "$KRS_CTR_BIN" --address "$KRS_CONTAINERD_SOCKET" --connect-timeout 2s version >/dev/null 2>&1
}

registry_answers() {
    curl -fsS -o /dev/null --max-time 3 "http://$KRS_REGISTRY/v2/" 2>/dev/null
}

ctr_k8s() {
    "$KRS_CTR_BIN" --address "$KRS_CONTAINERD_SOCKET" -n "$KRS_CRI_NAMESPACE" "$@"
}

# stop_pidfile NAME PIDFILE COMM: SIGTERM, wait, SIGKILL; removes the pid file.
stop_pidfile() {
    local name=$1 file=$2 comm=$3 pid i
    if ! pid=$(pid_of_pidfile "$file" "$comm"); then
        if [[ -e "$file" ]]; then
            log "$name: pid file $file is stale; removing it"
            rm -f "$file"
        else
            log "$name: no pid file $file; nothing to stop (a $name not started by env-up is left alone)"
        fi
        return 0
    fi
    log "$name: stopping pid $pid (SIGTERM)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        warn "$name: pid $pid still alive after 30 s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$file"
    log "$name: stopped"
}

# start_daemon NAME PIDFILE LOG CMD...: detached (own session), output appended to LOG.
start_daemon() {
    local name=$1 pidfile=$2 logfile=$3
    shift 3
    mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
    rm -f "$pidfile"
    printf '\n==== %s: %s starting: %s\n' "$(date -Is)" "$name" "$*" >>"$logfile"
    # the inner shell writes its own pid, closes every descriptor above 2 it inherited and then
    # execs the daemon (same pid): a daemon must not keep a caller's lock open (env.lock, or the
    # e2e suite's machine lock held by a test that restarts containerd), or it holds it forever
    # shellcheck disable=SC2016 # expanded by the inner shell
    setsid -f bash -c 'echo $$ >"$0"; for fd in $(ls /proc/$$/fd); do ((fd > 2)) && eval "exec $fd>&-"; done; exec "$@"' \
        "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&-
}

# wait_until NAME CHECK_FN PIDFILE COMM LOG
wait_until() {
    local name=$1 check=$2 pidfile=$3 comm=$4 logfile=$5 deadline pid
    deadline=$(($(date +%s) + KRS_WAIT_TIMEOUT))
    while ! "$check"; do
        if (($(date +%s) >= deadline)); then
            tail -n 30 "$logfile" >&2 || true
            die "$name did not answer within ${KRS_WAIT_TIMEOUT}s (log: $logfile)"
        fi
        # give the pid file a moment to appear, then notice an early exit
        if [[ -e "$pidfile" ]] && ! pid_of_pidfile "$pidfile" "$comm" >/dev/null; then
            sleep 0.3
            if ! pid_of_pidfile "$pidfile" "$comm" >/dev/null && ! "$check"; then
                tail -n 30 "$logfile" >&2 || true
                die "$name exited during startup (log: $logfile)"
            fi
        fi
        sleep 0.2
    done
    pid=$(pid_of_pidfile "$pidfile" "$comm" || echo '?')
    log "$name: answering (pid $pid)"
}

CONTAINERD_STAMP=$KRS_RUN_DIR/containerd.config.sha256

start_containerd() {
    local sock_dir
    sock_dir=$(dirname "$KRS_CONTAINERD_SOCKET")
    if [[ -S "$KRS_CONTAINERD_SOCKET" ]] && ! pgrep -x "$CONTAINERD_COMM" >/dev/null; then
        log "containerd: removing stale socket $KRS_CONTAINERD_SOCKET"
        rm -f "$KRS_CONTAINERD_SOCKET"
    fi
    mkdir -p "$sock_dir" "$KRS_CONTAINERD_ROOT"
    start_daemon containerd "$KRS_CONTAINERD_PIDFILE" "$KRS_CONTAINERD_LOG" \
        "$(command -v "$KRS_CONTAINERD_BIN")" --config "$KRS_CONTAINERD_CONFIG"
    sha256sum "$KRS_CONTAINERD_CONFIG" | awk '{print $1}' >"$CONTAINERD_STAMP"
    wait_until containerd containerd_answers "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM" "$KRS_CONTAINERD_LOG"
}
