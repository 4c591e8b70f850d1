#!/usr/bin/env bash
# Stop what hack/env-up.sh started: containerd and the loopback registry, each
# through its pid file (processes not started by env-up are left alone).
# Configs, the CNI conflist, images and registry storage are kept.
#
# Without --purge, running containers keep running in their containerd shims.
#
# --purge   before stopping containerd, kill and delete every task and container
#           in its k8s.io namespace (pods/sandboxes the kubelet left behind);
#           afterwards remove leftover CRI network namespaces (/run/netns/cni-*),
#           CRI's orphaned sandbox/container state directories, the host-local
#           IP allocations of our CNI network and the bridge kubeletrs0.
#           Images are kept.
#
# Usage: hack/env-down.sh [--purge] [-h]
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$HACK_DIR/lib.sh"
run_as_root "$HACK_DIR/env-down.sh" "$@"

PURGE=0
for arg in "$@"; do
    case "$arg" in
        --purge) PURGE=1 ;;
        -h | --help)
            sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *) die "unknown argument: $arg (try --help)" ;;
    esac
done

need_root
take_lock

purge_cri_namespace() {
    if ! containerd_answers; then
        warn "purge: containerd does not answer on $KRS_CONTAINERD_SOCKET; cannot delete its containers"
        return 0
    fi
    local tasks containers id i
    tasks=$(ctr_k8s tasks ls -q 2>/dev/null || true)
    for id in $tasks; do
        ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    done
    for id in $tasks; do
        for ((i = 0; i < 50; i++)); do
            ctr_k8s tasks delete "$id" >/dev/null 2>&1 && break
            sleep 0.1
        done
        ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true
    done
    containers=$(ctr_k8s containers ls -q 2>/dev/null || true)
    for id in $containers; do
        ctr_k8s containers rm "$id" >/dev/null 2>&1 ||
            warn "purge: could not remove container $id"
    done
    log "purge: removed $(wc -w <<<"$tasks") task(s), $(wc -w <<<"$containers") container(s) from namespace $KRS_CRI_NAMESPACE"
}

purge_cri_state() {
    if containerd_answers; then
        warn "purge: containerd still answers; leaving its CRI state directories alone"
        return 0
    fi
    # every k8s.io container is gone, so CRI's per-sandbox/per-container
    # directories (hosts, resolv.conf, shm mounts, fifos) are orphans now
    local d m n=0
    for d in "$KRS_CONTAINERD_ROOT/io.containerd.grpc.v1.cri" "$KRS_CONTAINERD_STATE/io.containerd.grpc.v1.cri"; do
        [[ -d "$d" ]] || continue
        # unmount sandbox /dev/shm mounts, deepest first
        while read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || warn "purge: cannot unmount $m"
        done < <(awk -v p="$d/" 'index($2, p) == 1 {print $2}' /proc/mounts | sort -r)
        for sub in sandboxes containers; do
            [[ -d "$d/$sub" ]] || continue
            n=$((n + $(find "$d/$sub" -mindepth 1 -maxdepth 1 | wc -l)))
            find "$d/$sub" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
        done
    done
    log "purge: removed $n orphaned CRI sandbox/container state directories"
}

purge_network() {
    local ns n=0
    # network namespaces pinned by containerd's CRI plugin
    for ns in /run/netns/cni-* /var/run/netns/cni-*; do
        [[ -e "$ns" ]] || continue
        [[ "$ns" == /var/run/* && /var/run -ef /run ]] && continue
        umount "$ns" 2>/dev/null || true
        rm -f "$ns" 2>/dev/null && n=$((n + 1))
    done
    log "purge: removed $n CRI network namespace(s)"
    if [[ -d "$KRS_CNI_IPAM_DIR" ]]; then
        rm -rf "$KRS_CNI_IPAM_DIR"
        log "purge: removed host-local IPAM state $KRS_CNI_IPAM_DIR"
    fi
    if ip link show "$KRS_CNI_BRIDGE" >/dev/null 2>&1; then
        ip link del "$KRS_CNI_BRIDGE"
        log "purge: deleted bridge $KRS_CNI_BRIDGE"
    fi
}

if ((PURGE)); then
    purge_cri_namespace
fi

stop_pidfile containerd "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM"
rm -f "$KRS_RUN_DIR/containerd.config.sha256"
stop_pidfile registry "$KRS_REGISTRY_PIDFILE" "$REGISTRY_COMM"
stop_pidfile registry-auth "$KRS_AUTH_REGISTRY_PIDFILE" "$REGISTRY_COMM"

if ((PURGE)); then
    purge_cri_state
    purge_network
fi

left=()
containerd_answers && left+=("containerd still answers on $KRS_CONTAINERD_SOCKET")
registry_answers && left+=("a registry still answers on http://$KRS_REGISTRY")
if ((${#left[@]})); then
    echo "env-down: done; not started by env-up, left running: ${left[*]}"
else
    msg="env-down: done; containerd and registry stopped"
    ((PURGE)) && msg+="; k8s.io tasks/containers, CRI netns, IPAM state and bridge $KRS_CNI_BRIDGE purged"
    echo "$msg"
fi
