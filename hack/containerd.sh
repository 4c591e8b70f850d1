#!/usr/bin/env bash
# Stops, starts or restarts the containerd that hack/env-up.sh runs (same config, same pid file;
# running containers survive in their shims). The reliability e2e test uses it to take the runtime
# away from a running kubelet and bring it back.
#   hack/containerd.sh stop|start|restart
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
case "${1:-}" in
    stop) stop_pidfile containerd "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM" ;;
    start) containerd_answers || start_containerd ;;
    restart)
        stop_pidfile containerd "$KRS_CONTAINERD_PIDFILE" "$CONTAINERD_COMM"
        start_containerd
        ;;
    *) die "usage: $0 stop|start|restart" ;;
esac
