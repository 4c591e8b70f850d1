#!/usr/bin/env bash
# Bring up the kubelet-rs development/test environment on a Debian 12 machine
# without systemd (see /work/shared/ENVIRONMENT.md):
#
#   1. install the Debian packages (only the missing ones): everything the build and the tests
#      use, so a fresh Debian 12 root needs nothing else (hack/fresh-machine.sh proves it)
#   2. render the containerd config and start containerd in the background
#   3. write the CNI conflist (bridge kubeletrs0 + host-local + portmap)
#   4. start a loopback docker-registry on 127.0.0.1:5000
#   5. build the test images offline from busybox and push them there
#   6. pre-pull the pause (sandbox) image into containerd's k8s.io namespace
#
# Idempotent: a second run only checks that everything is in place.
# Settings: see hack/lib.sh (all KRS_* variables can be set in the environment).
#
# Runs as root; for a user with sudo it runs itself again under sudo.
#
# Usage: hack/env-up.sh [--no-install] [--install-only] [--no-images] [-h]
#   --install-only   step 1 and the check that every command is there, nothing started
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' in ${x//a/b} is literal

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$HACK_DIR/lib.sh"
run_as_root "$HACK_DIR/env-up.sh" "$@"

DO_INSTALL=${KRS_INSTALL:-1}
DO_IMAGES=${KRS_IMAGES:-1}
INSTALL_ONLY=0
for arg in "$@"; do
    case "$arg" in
        --no-install) DO_INSTALL=0 ;;
        --install-only) INSTALL_ONLY=1 ;;
        --no-images) DO_IMAGES=0 ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

START_TS=$(date +%s)
need_root
take_lock

# -----------------------------------------------------------------------------
# 1. packages
# -----------------------------------------------------------------------------
# Every package the scripts, the build and the tests use. Essential packages (bash, coreutils,
# util-linux, bsdutils for `script`, mount, tar, gzip, sed, grep) are on every Debian root.
PACKAGES=(
    containerd runc containernetworking-plugins
    busybox-static docker-registry skopeo iproute2
    iptables        # the portmap CNI plugin calls iptables
    apache2-utils   # htpasswd (bcrypt) for the authenticated test registry
    curl python3 util-linux coreutils
    procps          # pgrep, here and in hack/lib.sh
    gcc libc6-dev   # the Rust toolchain links with cc; ring builds C (no protoc: build.rs uses protox)
    ca-certificates # cargo fetching crates over https
    debootstrap     # hack/fresh-machine.sh, which the test command runs
    systemd dbus-daemon # the test systemd (hack/env-systemd.sh) and the private buses (hack/env-dbus.sh)
)
# kubectl is the tests' client. Debian 12 has no current one: the machine image's kubectl (1.32)
# is used when present, Debian's kubernetes-client (kubectl 1.20) otherwise.
command -v kubectl >/dev/null || PACKAGES+=(kubernetes-client)

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$p")
        fi
    done
    if ((${#missing[@]} == 0)); then
        log "packages: all present (${#PACKAGES[@]})"
        return 0
    fi
    log "packages: installing ${missing[*]}"
    command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
    # Without systemd, package maintainer scripts may try to start daemons via
    # /etc/init.d (docker-registry ships one and would grab :5000 on all
    # addresses). Forbid service starts during the install.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        own_policy=1
    fi
    local rc=0
    {
        apt-get update -q &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || rc=$?
    ((own_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get failed (exit $rc)"
    log "packages: installed ${missing[*]}"
}

if ((DO_INSTALL)); then
    install_packages
else
    log "packages: skipped (--no-install)"
fi

for bin in "$KRS_CONTAINERD_BIN" "$KRS_CTR_BIN" runc "$KRS_REGISTRY_BIN" skopeo curl ip iptables flock pgrep \
    htpasswd script cc kubectl debootstrap "$KRS_PYTHON"; do
    command -v "$bin" >/dev/null || die "required command '$bin' not found"
done
[[ -x "$KRS_CNI_BIN_DIR/bridge" && -x "$KRS_CNI_BIN_DIR/host-local" && -x "$KRS_CNI_BIN_DIR/portmap" ]] ||
    die "CNI plugins bridge/host-local/portmap not found in $KRS_CNI_BIN_DIR"
[[ -x "$KRS_BUSYBOX" ]] || die "busybox not found at $KRS_BUSYBOX (package busybox-static)"
# The tests use kubectl >= 1.24 (`patch --subresource`); Debian 12's own is 1.20.
kubectl_minor=$(kubectl version --client -o json 2>/dev/null | "$KRS_PYTHON" -c \
    'import json,sys; print(int("".join(c for c in json.load(sys.stdin)["clientVersion"]["minor"] if c.isdigit())))' 2>/dev/null || echo 0)
if ((kubectl_minor < 24)); then
    warn "kubectl is 1.$kubectl_minor: the tests that run 'kubectl patch --subresource' (testapi's kubectl test, the CSI attach e2e) need 1.24 or later"
fi
# D-Bus for the graceful node shutdown tests (dbus-daemon; see hack/env-dbus.sh).
KRS_INSTALL=$DO_INSTALL "$HACK_DIR/env-dbus.sh" $( ((INSTALL_ONLY)) && echo --install-only) || die "hack/env-dbus.sh failed"
if ((INSTALL_ONLY)); then
    echo "env-up: every package and command is there (--install-only: nothing started)"
    exit 0
fi
[[ "$KRS_REGISTRY" =~ ^(127\.[0-9.]+|localhost|\[::1\]):[0-9]+$ ]] ||
    die "KRS_REGISTRY=$KRS_REGISTRY must be a loopback host:port (tests may only talk to loopback)"

mkdir -p "$KRS_RUN_DIR" "$KRS_ETC_DIR" "$KRS_LIB_DIR"

# install_file SRC_CONTENT DEST: write DEST only if its content differs.
# Prints "unchanged" / "written" on stdout.
install_content() {
    local content=$1 dest=$2 tmp
    if [[ -f "$dest" ]] && [[ "$(cat "$dest")" == "$content" ]]; then
        echo unchanged
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$dest.XXXXXX")
    printf '%s\n' "$content" >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$dest"
    echo written
}

# -----------------------------------------------------------------------------
# 2. CNI conflist (written before containerd starts so CRI finds it at once)
# -----------------------------------------------------------------------------
check_pod_cidr() {
    "$KRS_PYTHON" - "$KRS_POD_CIDR" "$KRS_CNI_BRIDGE" <<'PY'
import ipaddress, subprocess, sys
cidr, bridge = sys.argv[1], sys.argv[2]
try:
    net = ipaddress.ip_network(cidr, strict=True)
except ValueError as e:
    sys.exit(f"KRS_POD_CIDR={cidr} is not a valid network: {e}")
if net.version != 4 or net.prefixlen > 28:
    sys.exit(f"KRS_POD_CIDR={cidr}: want an IPv4 network of /28 or larger")
out = subprocess.run(["ip", "-o", "-4", "route", "show", "table", "all"],
                     capture_output=True, text=True, check=True).stdout
clashes = []
for line in out.splitlines():
    f = line.split()
    if not f:
        continue
    dst = f[0]
    if f[0] in ("local", "broadcast", "unicast", "multicast", "blackhole", "unreachable", "prohibit"):
        dst = f[1] if len(f) > 1 else ""
    if dst in ("default", "0.0.0.0/0", ""):
        continue
    dev = f[f.index("dev") + 1] if "dev" in f else ""
    if dev == bridge:
        continue  # our own bridge, from an earlier run
    try:
        other = ipaddress.ip_network(dst, strict=False)
    except ValueError:
        continue
    if other.is_loopback:
        continue
    if net.overlaps(other):
        clashes.append(line.strip())
if clashes:
    sys.exit(f"KRS_POD_CIDR={cidr} overlaps existing routes:\n  " + "\n  ".join(clashes)
             + "\nchoose another one, e.g. KRS_POD_CIDR=10.123.0.0/16")
PY
}

write_cni() {
    check_pod_cidr || die "pod CIDR check failed"
    local tpl result
    tpl=$(<"$KRS_CNI_TEMPLATE")
    tpl=${tpl//@BRIDGE@/$KRS_CNI_BRIDGE}
    tpl=${tpl//@POD_CIDR@/$KRS_POD_CIDR}
    "$KRS_PYTHON" -c 'import json,sys; json.loads(sys.stdin.read())' <<<"$tpl" ||
        die "rendered CNI conflist is not valid JSON"
    result=$(install_content "$tpl" "$KRS_CNI_CONFLIST")
    log "cni: $KRS_CNI_CONFLIST $result (network $KRS_CNI_NETWORK_NAME, bridge $KRS_CNI_BRIDGE, subnet $KRS_POD_CIDR)"

    # containerd uses only the lexically first config file in the directory.
    local first
    first=$(find "$KRS_CNI_CONF_DIR" -maxdepth 1 -type f \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) \
        -printf '%f\n' | LC_ALL=C sort | head -n1)
    if [[ "$first" != "$(basename "$KRS_CNI_CONFLIST")" ]]; then
        warn "cni: $KRS_CNI_CONF_DIR/$first sorts before our conflist; containerd will use IT, not ours." \
            "Set KRS_CNI_CONFLIST=$KRS_CNI_CONF_DIR/00-kubelet-rs.conflist (nothing was removed)."
    fi
    # A bridge left over from a run with another subnet would keep its old address.
    if ip link show "$KRS_CNI_BRIDGE" >/dev/null 2>&1; then
        local addrs
        addrs=$(ip -o -4 addr show dev "$KRS_CNI_BRIDGE" | awk '{print $4}')
        # shellcheck disable=SC2086 # one argument per address
        if [[ -n "$addrs" ]] && ! "$KRS_PYTHON" - "$KRS_POD_CIDR" $addrs <<'PY'; then
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1])
sys.exit(0 if all(ipaddress.ip_interface(a).ip in net for a in sys.argv[2:]) else 1)
PY
            warn "cni: bridge $KRS_CNI_BRIDGE has addresses outside $KRS_POD_CIDR ($addrs); run hack/env-down.sh --purge"
        fi
    fi
}
write_cni

# -----------------------------------------------------------------------------
# 3. containerd
# -----------------------------------------------------------------------------
render_containerd_config() {
    local tpl
    tpl=$(<"$KRS_CONTAINERD_TEMPLATE")
    tpl=${tpl//@CONTAINERD_ROOT@/$KRS_CONTAINERD_ROOT}
    tpl=${tpl//@CONTAINERD_STATE@/$KRS_CONTAINERD_STATE}
    tpl=${tpl//@CONTAINERD_SOCKET@/$KRS_CONTAINERD_SOCKET}
    tpl=${tpl//@SANDBOX_IMAGE@/$KRS_SANDBOX_IMAGE}
    tpl=${tpl//@CNI_BIN_DIR@/$KRS_CNI_BIN_DIR}
    tpl=${tpl//@CNI_CONF_DIR@/$KRS_CNI_CONF_DIR}
    tpl=${tpl//@REGISTRY@/$KRS_REGISTRY}
    tpl=${tpl//@AUTH_REGISTRY@/$KRS_AUTH_REGISTRY}
    if grep -v '^[[:space:]]*#' <<<"$tpl" | grep -qE '@[A-Z_]+@'; then
        die "unrendered placeholder left in $KRS_CONTAINERD_TEMPLATE"
    fi
    printf '%s' "$tpl"
}


setup_containerd() {
    local cfg result pid want have
    cfg=$(render_containerd_config)
    result=$(install_content "$cfg" "$KRS_CONTAINERD_CONFIG")
    log "containerd: config $KRS_CONTAINERD_CONFIG $result"

    if containerd_answers; then
        if pid=$(pid_of_pidfile "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM"); then
            want=$(sha256sum "$KRS_CONTAINERD_CONFIG" | awk '{print $1}')
            have=$(cat "$CONTAINERD_STAMP" 2>/dev/null || true)
            if [[ "$want" != "$have" ]]; then
                log "containerd: config changed since pid $pid started; restarting it (running containers survive in their shims)"
                stop_pidfile containerd "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM"
                start_containerd
            else
                log "containerd: already running (pid $pid, socket $KRS_CONTAINERD_SOCKET)"
            fi
        else
            pid=$(pgrep -x "$CONTAINERD_COMM" | head -n1 || true)
            log "containerd: socket $KRS_CONTAINERD_SOCKET already answers (pid ${pid:-?}, not started by env-up); leaving it alone"
            if [[ -n "$pid" ]] && ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$KRS_CONTAINERD_CONFIG"; then
                warn "containerd: pid $pid was not started with --config $KRS_CONTAINERD_CONFIG;" \
                    "sandboxes may fail (restrict_oom_score_adj, sandbox_image, registry mirror)." \
                    "Stop it and rerun env-up to use the project config."
            fi
        fi
        return 0
    fi

    if pid=$(pid_of_pidfile "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM"); then
        log "containerd: pid $pid exists but does not answer yet; waiting"
        wait_until containerd containerd_answers "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM" "$KRS_CONTAINERD_LOG"
        return 0
    fi
    if pgrep -x "$CONTAINERD_COMM" >/dev/null; then
        die "a containerd process ($(pgrep -x "$CONTAINERD_COMM" | tr '\n' ' ')) runs but $KRS_CONTAINERD_SOCKET does not answer; stop it first"
    fi
    log "containerd: starting (log $KRS_CONTAINERD_LOG)"
    start_containerd
}
setup_containerd

if ! timeout 10 "$KRS_CTR_BIN" --address "$KRS_CONTAINERD_SOCKET" plugins ls 2>/dev/null |
    awk '$2 == "cri" && $4 == "ok" {found = 1} END {exit !found}'; then
    "$KRS_CTR_BIN" --address "$KRS_CONTAINERD_SOCKET" plugins ls 2>&1 | grep -i cri >&2 || true
    die "containerd's CRI plugin (io.containerd.grpc.v1.cri) is not 'ok'; see $KRS_CONTAINERD_LOG"
fi
log "containerd: CRI plugin ok"

# -----------------------------------------------------------------------------
# 4. registry
# -----------------------------------------------------------------------------
setup_registry() {
    local result pid
    result=$(install_content "$(<"$KRS_REGISTRY_TEMPLATE")" "$KRS_REGISTRY_CONFIG")
    log "registry: config $KRS_REGISTRY_CONFIG $result"
    if registry_answers; then
        if pid=$(pid_of_pidfile "$KRS_REGISTRY_PIDFILE" "$REGISTRY_COMM"); then
            log "registry: already running (pid $pid, http://$KRS_REGISTRY)"
        else
            log "registry: http://$KRS_REGISTRY/v2/ already answers (not started by env-up); using it"
        fi
        return 0
    fi
    if pid=$(pid_of_pidfile "$KRS_REGISTRY_PIDFILE" "$REGISTRY_COMM"); then
        log "registry: pid $pid exists but does not answer yet; waiting"
    else
        mkdir -p "$KRS_REGISTRY_ROOT"
        log "registry: starting on $KRS_REGISTRY (storage $KRS_REGISTRY_ROOT, log $KRS_REGISTRY_LOG)"
        REGISTRY_HTTP_ADDR=$KRS_REGISTRY \
            REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$KRS_REGISTRY_ROOT \
            start_daemon registry "$KRS_REGISTRY_PIDFILE" "$KRS_REGISTRY_LOG" \
            "$(command -v "$KRS_REGISTRY_BIN")" serve "$KRS_REGISTRY_CONFIG"
    fi
    wait_until registry registry_answers "$KRS_REGISTRY_PIDFILE" "$REGISTRY_COMM" "$KRS_REGISTRY_LOG"
}
setup_registry

# -----------------------------------------------------------------------------
# 5. test images
# -----------------------------------------------------------------------------
# remote_digest REPO TAG -> manifest digest in the registry, or nothing
remote_digest() {
    curl -fsS --max-time 10 -o /dev/null -D - \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        -H 'Accept: application/vnd.oci.image.index.v1+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
        "http://$KRS_REGISTRY/v2/$1/manifests/$2" 2>/dev/null |
        tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" {print $2}'
}

PUSHED=0
# image REPO TAG [build-image.py args...]: build the OCI layout, push unless the
# registry already has exactly that manifest. Extra tags: EXTRA_TAGS="a b".
image() {
    local repo=$1 tag=$2 dir local_digest t have
    shift 2
    dir=$KRS_IMAGE_BUILD_DIR/${repo//\//_}-$tag
    local_digest=$("$KRS_PYTHON" "$HACK_DIR/build-image.py" --busybox "$KRS_BUSYBOX" --out "$dir" --ref "$tag" "$@") ||
        die "building $repo:$tag failed"
    for t in "$tag" ${EXTRA_TAGS:-}; do
        have=$(remote_digest "$repo" "$t" || true)
        if [[ "$have" == "$local_digest" ]]; then
            log "image: $KRS_REGISTRY/$repo:$t present ($local_digest)"
            continue
        fi
        log "image: pushing $KRS_REGISTRY/$repo:$t ($local_digest${have:+, registry had $have})"
        skopeo --insecure-policy copy -q --dest-tls-verify=false \
            "oci:$dir:$tag" "docker://$KRS_REGISTRY/$repo:$t" >/dev/null ||
            die "skopeo push of $repo:$t failed"
        have=$(remote_digest "$repo" "$t" || true)
        [[ "$have" == "$local_digest" ]] ||
            warn "image: registry digest of $repo:$t is '$have', built '$local_digest' (skopeo converted it?)"
        PUSHED=$((PUSHED + 1))
    done
}

IMAGES=()
if ((DO_IMAGES)); then
    # sandbox ("pause") image: PID 1 sleeps forever
    image pause 3.10 --entrypoint '["/bin/sleep","2147483647"]'
    # plain busybox shell image
    EXTRA_TAGS=latest image busybox 1.36 --cmd '["sh"]'
    # same as busybox:1.36 plus /etc/image-version (different digest, for pull-policy tests)
    image busybox 2 --cmd '["sh"]' --file "/etc/image-version=2"
    # image Entrypoint/Cmd/WorkingDir/Env semantics
    image argecho 1 --entrypoint '["/bin/echo","entry"]' --cmd '["default-arg"]' \
        --workdir /tmp --env IMAGE_ENV=from-image
    # images whose config names a non-root User: numeric, and a name (runAsNonRoot tests)
    image user 1000 --cmd '["sh"]' --user 1000
    image user nobody --cmd '["sh"]' --user nobody
    IMAGES=("$KRS_REGISTRY/pause:3.10" "$KRS_REGISTRY/busybox:1.36" "$KRS_REGISTRY/busybox:latest"
        "$KRS_REGISTRY/busybox:2" "$KRS_REGISTRY/argecho:1" "$KRS_REGISTRY/user:1000" "$KRS_REGISTRY/user:nobody")
else
    log "images: skipped (--no-images)"
fi

# -----------------------------------------------------------------------------
# 5b. a second registry behind htpasswd auth, holding private:1 (imagePullSecrets tests)
# -----------------------------------------------------------------------------
auth_registry_code() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 3 "http://$KRS_AUTH_REGISTRY/v2/" 2>/dev/null || true
}
setup_auth_registry() {
    local htpasswd=$KRS_ETC_DIR/registry-auth.htpasswd config=$KRS_ETC_DIR/registry-auth.yml creds i
    creds="$KRS_AUTH_REGISTRY_USER:$KRS_AUTH_REGISTRY_PASSWORD"
    if [[ "$(auth_registry_code)" != 401 ]]; then
        mkdir -p "$KRS_ETC_DIR" "$KRS_AUTH_REGISTRY_ROOT"
        htpasswd -Bbc "$htpasswd" "$KRS_AUTH_REGISTRY_USER" "$KRS_AUTH_REGISTRY_PASSWORD" 2>/dev/null ||
            die "htpasswd failed (apache2-utils)"
        sed -e "s|service: kubelet-rs-registry|service: kubelet-rs-registry-auth|" "$KRS_REGISTRY_TEMPLATE" >"$config"
        printf 'auth:\n  htpasswd:\n    realm: kubelet-rs\n    path: %s\n' "$htpasswd" >>"$config"
        log "auth registry: starting on $KRS_AUTH_REGISTRY (htpasswd user $KRS_AUTH_REGISTRY_USER, log $KRS_AUTH_REGISTRY_LOG)"
        REGISTRY_HTTP_ADDR=$KRS_AUTH_REGISTRY \
            REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY=$KRS_AUTH_REGISTRY_ROOT \
            start_daemon registry-auth "$KRS_AUTH_REGISTRY_PIDFILE" "$KRS_AUTH_REGISTRY_LOG" \
            "$(command -v "$KRS_REGISTRY_BIN")" serve "$config"
        for ((i = 0; i < KRS_WAIT_TIMEOUT * 10; i++)); do
            [[ "$(auth_registry_code)" == 401 ]] && break
            sleep 0.1
        done
        [[ "$(auth_registry_code)" == 401 ]] ||
            die "auth registry did not answer 401 on http://$KRS_AUTH_REGISTRY/v2/; see $KRS_AUTH_REGISTRY_LOG"
    else
        log "auth registry: already running (http://$KRS_AUTH_REGISTRY, 401 without credentials)"
    fi
    if curl -fsS -o /dev/null --max-time 5 -u "$creds" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
        "http://$KRS_AUTH_REGISTRY/v2/private/manifests/1" 2>/dev/null; then
        log "auth registry: private:1 present"
    else
        log "auth registry: pushing private:1 (busybox:1.36)"
        skopeo copy --quiet --src-tls-verify=false --dest-tls-verify=false --dest-creds "$creds" \
            "docker://$KRS_REGISTRY/busybox:1.36" "docker://$KRS_AUTH_REGISTRY/private:1" >/dev/null ||
            die "skopeo push to the auth registry failed"
    fi
}
if ((DO_IMAGES)); then
    setup_auth_registry
fi

# -----------------------------------------------------------------------------
# 6. pre-pull the sandbox image into the CRI namespace
# -----------------------------------------------------------------------------
prepull_sandbox() {
    local img=$KRS_SANDBOX_IMAGE repo_tag repo tag want have
    repo_tag=${img#"$KRS_REGISTRY"/}
    repo=${repo_tag%:*}
    tag=${repo_tag##*:}
    want=$(remote_digest "$repo" "$tag" || true)
    [[ -n "$want" ]] || die "sandbox image $img is not in the registry"
    have=$(ctr_k8s images ls "name==$img" 2>/dev/null | awk 'NR > 1 {print $3}')
    if [[ "$have" == "$want" ]]; then
        log "sandbox image: $img already in containerd namespace $KRS_CRI_NAMESPACE ($want)"
        return 0
    fi
    log "sandbox image: pulling $img into namespace $KRS_CRI_NAMESPACE"
    local plain=()
    [[ "$img" == "$KRS_REGISTRY"/* ]] && plain=(--plain-http)
    ctr_k8s images pull "${plain[@]}" "$img" >/dev/null || die "ctr pull of $img failed"
    have=$(ctr_k8s images ls "name==$img" 2>/dev/null | awk 'NR > 1 {print $3}')
    [[ "$have" == "$want" ]] || die "after pull, $img has digest '$have', registry has '$want'"
}
prepull_sandbox
KRS_INSTALL=$DO_INSTALL "$HACK_DIR/env-systemd.sh" # a test systemd + containerd (systemd cgroup driver)

cpid=$(pid_of_pidfile "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM" || echo external)
rpid=$(pid_of_pidfile "$KRS_REGISTRY_PIDFILE" "$REGISTRY_COMM" || echo external)
echo "env-up: ready in $(($(date +%s) - START_TS))s; containerd pid $cpid ($KRS_CONTAINERD_SOCKET, log $KRS_CONTAINERD_LOG);" \
    "registry pid $rpid (http://$KRS_REGISTRY, log $KRS_REGISTRY_LOG); CNI $KRS_CNI_NETWORK_NAME $KRS_POD_CIDR on $KRS_CNI_BRIDGE;" \
    "sandbox $KRS_SANDBOX_IMAGE; images ${IMAGES[*]:-(skipped)}; pushed $PUSHED"
