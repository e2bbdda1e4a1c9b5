#!/usr/bin/env bash
# Builds the Debian package from the workspace with cargo-deb (one release
# build) and prints the path of the .deb (last line of stdout).
#
#   ./deploy/build-deb.sh            # -> target/debian/overpass_<version>-1_<arch>.deb
#
# The XDP program is embedded in the binary through the libbpf skeleton
# (overpass-xdp's build.rs writes it into $OUT_DIR/overpass.skel.rs as the
# byte array DATA). The package also ships that exact object as
# /usr/lib/overpass/overpass.bpf.o for inspection with bpftool: this script
# finds overpass-xdp's OUT_DIR in cargo's build messages and extracts it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo-deb >/dev/null; then
  echo "build-deb: installing cargo-deb (crates.io)" >&2
  cargo install cargo-deb --locked
fi

target_dir=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
mkdir -p "$target_dir/release"
messages="$target_dir/release/overpass-build-messages.json"

# The one release build (the gateway and the CNI plugin). Diagnostics go to
# stderr, JSON messages to a file.
cargo build --release --locked -p overpass -p overpass-cni --message-format=json-render-diagnostics >"$messages"

out_dir=$(python3 - "$messages" <<'PY'
import json, sys
out = None
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "build-script-executed" and "overpass-xdp" in m.get("package_id", ""):
        out = m["out_dir"]
if not out:
    sys.exit("build-deb: no build-script-executed message for overpass-xdp")
print(out)
PY
)
bpf_obj="$target_dir/release/overpass.bpf.o"
python3 - "$out_dir/overpass.skel.rs" "$bpf_obj" <<'PY'
import re, sys
src = open(sys.argv[1]).read()
m = re.search(r"const DATA: &\[u8\] = &\[(.*?)\];", src, re.S)
if not m:
    sys.exit("build-deb: no `const DATA` byte array in " + sys.argv[1])
data = bytes(int(x) for x in m.group(1).replace("\n", " ").split(",") if x.strip())
# ELF, 64-bit, e_machine 247 (EM_BPF), little endian
if data[:4] != b"\x7fELF" or int.from_bytes(data[18:20], "little") != 247:
    sys.exit("build-deb: the skeleton's DATA is not an eBPF ELF object")
open(sys.argv[2], "wb").write(data)
print(f"build-deb: extracted {len(data)} bytes of XDP object to {sys.argv[2]}", file=sys.stderr)
PY

# Package what was just built (no second build). Debug info is split off
# into a .debug file inside the package, so the binary itself is stripped.
cargo deb -p overpass --no-build --separate-debug-symbols --compress-debug-symbols=zlib \
  --output "$target_dir/debian/" >&2
deb=$(ls -t "$target_dir"/debian/overpass_*.deb | head -n1)
echo "$deb"
