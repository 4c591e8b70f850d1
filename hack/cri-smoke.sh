#!/usr/bin/env bash
# Real CRI round trip against the containerd started by hack/env-up.sh
# (there is no crictl on this machine): pull, RunPodSandbox, containers, logs,
# cleanup. See hack/cri-smoke.py for the steps.
#
# Needs grpcio + grpcio-tools from PyPI (installed once into a venv under
# $KRS_LIB_DIR/cri-smoke; python3-venv is not in env-up's list: this is a by-hand tool, not part
# of the tests) and the CRI v1 proto: $KRS_CRI_PROTO, else the one the kubelet's build vendors
# (crates/kubelet/proto/cri-api/runtime/v1/api.proto).
#
# Usage: hack/cri-smoke.sh [--keep]
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$HACK_DIR/lib.sh"

: "${KRS_CRI_SMOKE_DIR:=$KRS_LIB_DIR/cri-smoke}"
VENV=$KRS_CRI_SMOKE_DIR/venv
GEN=$KRS_CRI_SMOKE_DIR/gen

containerd_answers || die "containerd does not answer on $KRS_CONTAINERD_SOCKET; run hack/env-up.sh first"

: "${KRS_CRI_PROTO:=$HACK_DIR/../crates/kubelet/proto/cri-api/runtime/v1/api.proto}"
[[ -r "$KRS_CRI_PROTO" ]] || die "CRI v1 proto not found at $KRS_CRI_PROTO; set KRS_CRI_PROTO=/path/to/api.proto"

if ! "$VENV/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; then
    log "creating venv $VENV with grpcio grpcio-tools (PyPI)"
    "$KRS_PYTHON" -m venv "$VENV" || die "python venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q grpcio grpcio-tools
fi

mkdir -p "$GEN"
if [[ ! -f "$GEN/api_pb2_grpc.py" ]] || ! cmp -s "$KRS_CRI_PROTO" "$GEN/api.proto"; then
    log "generating CRI stubs from $KRS_CRI_PROTO"
    cp "$KRS_CRI_PROTO" "$GEN/api.proto"
    (cd "$GEN" && "$VENV/bin/python" -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. api.proto)
fi

PYTHONPATH=$GEN exec "$VENV/bin/python" "$HACK_DIR/cri-smoke.py" \
    --socket "$KRS_CONTAINERD_SOCKET" --registry "$KRS_REGISTRY" --pod-cidr "$KRS_POD_CIDR" \
    --busybox "$KRS_BUSYBOX" "$@"
