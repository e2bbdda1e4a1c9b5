#!/usr/bin/env bash
# The whole test suite. `.ci/run` runs exactly this. Run as root: the dataplane
# tests attach XDP programs, bind AF_XDP sockets and build network namespaces
# (under CI=true they fail instead of skipping when they cannot).
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# Includes the guest tier (testkit/tests/guest.rs): AF_XDP zero-copy on virtio-net and igb in
# QEMU guests, installed by install-deps.sh (deploy/guest/install.sh).
cargo test --workspace
# Property-based API test against the served OpenAPI document (schemathesis from PyPI).
bash gateway/tests/schemathesis.sh
# Coverage-guided fuzzing of the pipeline and header views, 30 s per target (cargo-fuzz).
fuzz/run.sh all 30
# The Debian package: one release build, dpkg -i / -r / --purge (root).
./deploy/test-deploy.sh
