#!/usr/bin/env bash
# Runs the kubelet's main job on a fresh Debian 12 machine: installs and starts containerd (and
# the local registry with the example images), builds the kubelet, and runs it standalone on the
# example static pods in examples/manifests. Run as root (a user with sudo: it re-runs itself
# under sudo). Watch the pods with:
#   curl -s localhost:10255/pods | python3 -m json.tool
# Stop with Ctrl-C: the pods keep running and are adopted when the kubelet starts again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source hack/lib.sh
run_as_root hack/run.sh "$@"

hack/env-up.sh
cargo build --release --bin kubelet
mkdir -p /etc/kubernetes/manifests
cp examples/manifests/*.yaml /etc/kubernetes/manifests/
exec target/release/kubelet --config examples/kubelet-config.yaml "$@"
