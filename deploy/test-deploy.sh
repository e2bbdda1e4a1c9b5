#!/usr/bin/env bash
# The packaging test (issue 7), run by deploy/test.sh after `cargo test`, as
# root: builds the .deb once (deploy/build-deb.sh), checks its contents,
# installs it with dpkg, checks files, modes, the unit (systemd-analyze
# verify), the shipped XDP object (bpftool) and the installed binary
# (`overpass check` finds the blockers of a configuration naming a missing
# NIC), then removes it (conffile and state kept) and purges it (everything
# gone). Also stages deploy/install.sh into a temporary root and back.
#
#   ./deploy/test-deploy.sh              # as root
#   OVERPASS_DEB=path.deb ./deploy/test-deploy.sh   # test an already built package
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "test-deploy: needs root, and CI=true forbids skipping" >&2
    exit 1
  fi
  echo "######## SKIPPED (needs root): deploy/test-deploy.sh ########" >&2
  exit 0
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
check() { # check DESCRIPTION COMMAND...
  local what="$1"; shift
  if "$@" >/tmp/test-deploy.last 2>&1; then ok "$what"; else fail "$what"; sed 's/^/       /' /tmp/test-deploy.last | tail -20; fi
}
mode_is() { [ "$(stat -c %a "$1")" = "$2" ]; }
absent() { [ ! -e "$1" ]; }

if dpkg -s overpass >/dev/null 2>&1; then
  echo "test-deploy: removing a previously installed overpass package first"
  dpkg --purge overpass >/dev/null
fi

deb="${OVERPASS_DEB:-}"
if [ -z "$deb" ]; then
  deb=$(./deploy/build-deb.sh | tail -n1)
fi
echo "test-deploy: package $deb"
check "package file exists" test -s "$deb"

contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/overpass ./etc/overpass/overpass.toml ./usr/lib/systemd/system/overpass.service \
         ./usr/lib/overpass/overpass.bpf.o ./usr/share/doc/overpass/GUIDE.md \
         ./opt/cni/bin/overpass-cni ./usr/lib/cni/overpass-cni \
         ./usr/share/doc/overpass/cni/10-overpass.conflist; do
  check "package contains $f" grep -qF " $f" <<<"$contents"
done
check "default config is a conffile" grep -qx "/etc/overpass/overpass.toml" \
  <(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)
check "package depends on iproute2" grep -q "^ *Depends:.*iproute2" <(dpkg-deb -I "$deb")

# --- install
check "dpkg -i" dpkg -i "$deb"
check "package is installed" dpkg -s overpass
check "binary installed and runs" /usr/bin/overpass --version
check "unit installed" test -f /usr/lib/systemd/system/overpass.service
for cni in /opt/cni/bin/overpass-cni /usr/lib/cni/overpass-cni; do
  check "CNI plugin $cni answers VERSION (spec 1.1.0)" \
    grep -q '"supportedVersions":\[.*"1.1.0"' <(echo '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION "$cni")
done
check "example conflist is JSON naming overpass-cni" \
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); assert c["plugins"][0]["type"]=="overpass-cni"' \
  /usr/share/doc/overpass/cni/10-overpass.conflist
check "systemd-analyze verify accepts the installed unit" \
  systemd-analyze verify /usr/lib/systemd/system/overpass.service
check "unit is not enabled by the package" absent /etc/systemd/system/multi-user.target.wants/overpass.service
check "/etc/overpass is 0750" mode_is /etc/overpass 750
check "config is 0640" mode_is /etc/overpass/overpass.toml 640
check "/var/lib/overpass is 0700" mode_is /var/lib/overpass 700
check "shipped default config validates" /usr/bin/overpass check-config --config /etc/overpass/overpass.toml
check "shipped XDP object is an eBPF ELF (magic, e_machine 247)" \
  test "$(od -An -tx1 -N4 /usr/lib/overpass/overpass.bpf.o | tr -d ' ')$(od -An -tu2 -j18 -N2 /usr/lib/overpass/overpass.bpf.o | tr -d ' ')" = "7f454c46247"
if command -v bpftool >/dev/null; then
  check "bpftool reads the shipped object's BTF (overpass_steer)" \
    grep -q "overpass_steer" <(bpftool btf dump file /usr/lib/overpass/overpass.bpf.o)
fi
if [ -d /sys/kernel/btf ] && command -v llvm-objdump >/dev/null; then
  check "shipped object has the xdp section" grep -q " xdp" <(llvm-objdump -h /usr/lib/overpass/overpass.bpf.o)
fi

# The installed preflight against a configuration naming a NIC that does not exist.
tmp=$(mktemp -d)
sed 's/^interface = "eth1"/interface = "ovpnonic0"/' /etc/overpass/overpass.toml >"$tmp/missing.toml"
set +e
/usr/bin/overpass check --config "$tmp/missing.toml" >"$tmp/check.out" 2>&1
rc=$?
set -e
check "overpass check exits non-zero on blockers" test "$rc" -ne 0
check "overpass check names the missing NIC as a BLOCKER with a fix" \
  grep -qE "^BLOCKER +nic.exists +ovpnonic0: .*fix:" "$tmp/check.out"
check "overpass check prints a summary" grep -qE "^summary: [0-9]+ ok, [0-9]+ warn, [1-9][0-9]* BLOCKER" "$tmp/check.out"

# --- remove: conffile (edited) and state stay
echo "# local edit" >>/etc/overpass/overpass.toml
echo '{}' >/var/lib/overpass/marker.json
check "dpkg -r" dpkg -r overpass
check "binary gone after remove" absent /usr/bin/overpass
check "CNI plugin gone after remove" absent /opt/cni/bin/overpass-cni
check "unit gone after remove" absent /usr/lib/systemd/system/overpass.service
check "XDP object gone after remove" absent /usr/lib/overpass/overpass.bpf.o
check "edited conffile kept after remove" grep -q "# local edit" /etc/overpass/overpass.toml
check "state kept after remove" test -f /var/lib/overpass/marker.json

# --- purge: nothing left
check "dpkg --purge" dpkg --purge overpass
check "package gone" bash -c '! dpkg -s overpass >/dev/null 2>&1'
check "/etc/overpass gone after purge" absent /etc/overpass
check "/var/lib/overpass gone after purge" absent /var/lib/overpass
check "/usr/lib/overpass gone after purge" absent /usr/lib/overpass

# --- deploy/install.sh, staged into a temporary root
stage="$tmp/root"
bin=$(dirname "$deb")/../release/overpass
check "install.sh install (staged)" ./deploy/install.sh install --destdir "$stage" --binary "$bin"
check "install.sh: binary" test -x "$stage/usr/local/bin/overpass"
check "install.sh: unit points at /usr/local/bin" grep -q "^ExecStart=/usr/local/bin/overpass run" "$stage/etc/systemd/system/overpass.service"
check "install.sh: config 0640 in a 0750 dir" bash -c "[ \$(stat -c %a '$stage/etc/overpass') = 750 ] && [ \$(stat -c %a '$stage/etc/overpass/overpass.toml') = 640 ]"
check "install.sh: state dir 0700" mode_is "$stage/var/lib/overpass" 700
check "install.sh uninstall (staged) keeps config" bash -c "./deploy/install.sh uninstall --destdir '$stage' && [ ! -e '$stage/usr/local/bin/overpass' ] && [ ! -e '$stage/etc/systemd/system/overpass.service' ] && [ -f '$stage/etc/overpass/overpass.toml' ]"
check "install.sh uninstall --purge (staged)" bash -c "./deploy/install.sh uninstall --purge --destdir '$stage' && [ ! -e '$stage/etc/overpass' ] && [ ! -e '$stage/var/lib/overpass' ]"
rm -rf "$tmp"

echo "test-deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
