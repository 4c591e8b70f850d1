#!/usr/bin/env bash
# Runs every test: the fresh-machine check (hack/fresh-machine.sh: env-up's install step and the
# release build in a new Debian 12 root), unit tests on the fake runtime and the e2e suite on real
# containerd. Installs and starts what the tests need first (hack/env-up.sh). The e2e suite never
# skips here: KUBELET_E2E_REQUIRED=1 turns a missing runtime into a failure. Run as root (a user
# with sudo: it re-runs itself under sudo). KRS_FRESH_CHECK=0 leaves the fresh-machine check out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=lib.sh
source hack/lib.sh
run_as_root hack/test.sh "$@"

hack/env-up.sh
export KUBELET_E2E_REQUIRED=1
export CARGO_TERM_COLOR=never

if [[ ${KRS_FRESH_CHECK:-1} != 0 ]]; then
    hack/fresh-machine.sh
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# One build of the test profile serves the unit tests and the kubelet binary the e2e suite runs.
cargo test --workspace --no-fail-fast
