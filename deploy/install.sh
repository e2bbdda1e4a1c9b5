#!/usr/bin/env bash
# Installs (or uninstalls) Overpass on this host without the Debian package:
# the binary, the hardened systemd unit, the documented default configuration
# (never overwriting an existing one), and the directories with their modes.
#
#   ./deploy/install.sh [install]            # as root; builds the release binary if missing
#   ./deploy/install.sh uninstall            # keeps /etc/overpass and /var/lib/overpass
#   ./deploy/install.sh uninstall --purge    # removes them too
#
# Options (before or after the action):
#   --prefix DIR    where bin/ and share/ go (default /usr/local)
#   --destdir DIR   stage into DIR instead of / (packaging, tests): no systemctl, no chown
#   --binary FILE   the overpass binary to install (default target/release/overpass)
#
# Layout: PREFIX/bin/overpass, /etc/systemd/system/overpass.service (ExecStart
# pointing at PREFIX/bin/overpass), /etc/overpass/overpass.toml (0640, dir
# 0750), /var/lib/overpass (0700), PREFIX/share/doc/overpass/GUIDE.md,
# PREFIX/lib/overpass/overpass.bpf.o when deploy/build-deb.sh extracted it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(dirname "$here")"

action=install
prefix=/usr/local
destdir=""
binary=""
purge=0
while [ $# -gt 0 ]; do
  case "$1" in
    install|uninstall) action="$1" ;;
    --prefix) prefix="$2"; shift ;;
    --destdir) destdir="$2"; shift ;;
    --binary) binary="$2"; shift ;;
    --purge) purge=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
  echo "install.sh: run as root (or stage with --destdir DIR)" >&2
  exit 1
fi

root="${destdir%/}"
bin="$root$prefix/bin/overpass"
unit="$root/etc/systemd/system/overpass.service"
confdir="$root/etc/overpass"
conf="$confdir/overpass.toml"
statedir="$root/var/lib/overpass"
docdir="$root$prefix/share/doc/overpass"
libdir="$root$prefix/lib/overpass"

systemd_running() { [ -z "$destdir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

if [ "$action" = install ]; then
  if [ -z "$binary" ]; then
    binary="$repo/target/release/overpass"
    if [ ! -x "$binary" ]; then
      echo "install.sh: building the release binary"
      (cd "$repo" && cargo build --release -p overpass)
    fi
  fi
  [ -x "$binary" ] || { echo "install.sh: no binary at $binary" >&2; exit 1; }

  install -d -m 0755 "$(dirname "$bin")" "$(dirname "$unit")" "$docdir"
  install -m 0755 "$binary" "$bin"
  sed "s|/usr/bin/overpass|$prefix/bin/overpass|g" "$here/overpass.service" >"$unit.tmp"
  chmod 0644 "$unit.tmp"
  mv "$unit.tmp" "$unit"
  install -d -m 0750 "$confdir"
  if [ -e "$conf" ]; then
    install -m 0640 "$here/overpass.toml" "$conf.dist"
    echo "install.sh: kept the existing $conf (the new default is $conf.dist)"
  else
    install -m 0640 "$here/overpass.toml" "$conf"
  fi
  install -d -m 0700 "$statedir"
  install -m 0644 "$here/GUIDE.md" "$docdir/GUIDE.md"
  obj="$(dirname "$binary")/overpass.bpf.o"
  if [ -f "$obj" ]; then
    install -d -m 0755 "$libdir"
    install -m 0644 "$obj" "$libdir/overpass.bpf.o"
  fi
  if [ -z "$destdir" ]; then
    chown -R root:root "$confdir" "$statedir"
  fi
  if systemd_running; then
    systemctl daemon-reload
  fi
  echo "install.sh: installed $bin and overpass.service (not enabled)."
  echo "  edit $conf, run: $prefix/bin/overpass check --config /etc/overpass/overpass.toml"
  echo "  then: systemctl enable --now overpass"
else
  if systemd_running; then
    systemctl disable --now overpass.service 2>/dev/null || true
  fi
  rm -f "$bin" "$unit" "$docdir/GUIDE.md" "$libdir/overpass.bpf.o" "$conf.dist"
  rmdir "$docdir" "$libdir" 2>/dev/null || true
  if [ "$purge" = 1 ]; then
    rm -rf "$confdir" "$statedir"
  fi
  if systemd_running; then
    systemctl daemon-reload
  fi
  if [ "$purge" = 1 ]; then
    echo "install.sh: removed Overpass, its configuration and its state"
  else
    echo "install.sh: removed Overpass (kept $confdir and $statedir; --purge removes them)"
  fi
fi
