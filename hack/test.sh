#!/usr/bin/env bash
# Runs every test: unit tests on the fake runtime and the e2e suite on real containerd.
# Installs and starts what the tests need first (hack/env-up.sh). The e2e suite never skips
# here: KUBELET_E2E_REQUIRED=1 turns a missing runtime into a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

hack/env-up.sh
export KUBELET_E2E_REQUIRED=1
export CARGO_TERM_COLOR=never

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# One build of the test profile serves the unit tests and the kubelet binary the e2e suite runs.
cargo test --workspace --no-fail-fast
