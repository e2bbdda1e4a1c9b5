#!/usr/bin/env bash
# Installs dependencies, builds Overpass and runs `overpass demo`: a Flannel-style
# overlay in network namespaces with the gateway serving it. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/install-deps.sh
cargo build --release -p overpass -p overpass-testkit -p overpass-cni
exec ./target/release/overpass demo "$@"
