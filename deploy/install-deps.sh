#!/usr/bin/env bash
# Installs what building and testing Overpass needs on Debian 12 (run as root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail

packages=(
  # build: the XDP program (clang/llvm), libbpf-sys and libxdp-sys from source
  clang llvm m4 libelf-dev zlib1g-dev pkg-config make gcc
  # dataplane tests and demo: namespaces, veth, VXLAN peers, traffic
  iproute2 ethtool iputils-ping iputils-tracepath traceroute iperf3 tcpdump
  # packet crafting / dissection by a tool no one here wrote
  python3 python3-venv python3-scapy
  # packaging tests (deploy/test-deploy.sh): systemd-analyze verify, bpftool on the shipped
  # XDP object, PyYAML for the k8s manifests; cargo-deb comes from crates.io (build-deb.sh)
  systemd bpftool python3-yaml
  # dashboard browser tests (gateway/tests/dashboard.rs): Debian's Chromium, driven headless by
  # playwright-core from npm (web-ui/package-lock.json); no browser is ever downloaded
  chromium fonts-dejavu-core nodejs
  # cluster datastore tests (issue 12): a real etcd server and etcdctl, started and stopped by
  # the tests themselves (testkit), never as a system service
  etcd-server etcd-client
  # the TLS etcd of gateway/tests/cluster_tls.rs: a throw-away CA and certificates (openssl CLI)
  openssl
  # the etcd-client crate builds its gRPC protobufs with protoc
  protobuf-compiler
  # CNI plugin tests (issue 13): the reference plugins, host-local IPAM among them, in
  # /usr/lib/cni
  containernetworking-plugins
)
# npm: a separate Debian package, unless node came with its own (NodeSource's nodejs)
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages (${missing[*]}); run as root" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The guest tier (testkit/tests/guest.rs): QEMU from bookworm-backports and a trixie-backports
# kernel in /var/cache/overpass-guest, through private APT configurations (a no-op when present).
"$(dirname "$0")/guest/install.sh"
command -v cargo >/dev/null || { echo "install-deps: cargo (Rust toolchain) not found; install rustup first" >&2; exit 1; }
echo "install-deps: ok"
