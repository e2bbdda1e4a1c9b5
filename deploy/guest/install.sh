#!/usr/bin/env bash
# Installs what the guest test tier needs (run as root; idempotent, a no-op in
# well under a second when everything is in place):
#
#   - on the host: qemu-system-x86 from bookworm-backports (10.x: bookworm's 7.2
#     has no `-device igb`), busybox-static (the guest's userland in its
#     initramfs), kmod (depmod/modprobe to resolve the guest kernel's module
#     dependencies), cpio and xz-utils (the initramfs).
#   - in the cache directory: a Debian kernel of 6.13 or later from
#     trixie-backports (virtio_net has AF_XDP zero-copy from 6.13, igb from
#     6.14), downloaded with `apt-get download` and unpacked with dpkg-deb -x.
#     It is never installed on the host.
#
# The host's own APT sources are never touched: both sources (bookworm +
# bookworm-backports for the host packages, trixie-backports for the kernel)
# live in private APT configurations under the cache directory (their own
# sources list, package lists and archive cache), on the same Debian mirror as
# the host's configured sources.
#
# Cache directory: $OVERPASS_GUEST_CACHE, default /var/cache/overpass-guest. It
# survives between runs (and is shared by all checkouts on one machine):
#   apt/bookworm/, apt/trixie/   the private APT configurations and lists
#   kernel/<version>/            the unpacked kernel package(s): vmlinuz (a link to
#                                the image), usr/lib/modules/<version>/ with modules.dep
#   kernel/current -> <version>  the kernel deploy/guest/run.sh boots
#   initramfs/                   initramfs images run.sh builds (cached by content)
#
# $OVERPASS_GUEST_KERNEL_SERIES picks the kernel series (default 6.18: the newest
# 6.18.x in trixie-backports); changing it downloads that series next time.
set -euo pipefail

CACHE=${OVERPASS_GUEST_CACHE:-/var/cache/overpass-guest}
SERIES=${OVERPASS_GUEST_KERNEL_SERIES:-6.18}
# The oldest kernel with zero-copy AF_XDP on both virtio_net (6.13) and igb (6.14).
MIN_KERNEL=6.14

host_packages=(qemu-system-x86 busybox-static kmod cpio xz-utils iproute2)
# qemu 8.0 added `-device igb`; bookworm-backports has 10.x.
MIN_QEMU=1:8.0

say() { echo "guest/install: $*"; }
die() {
  echo "guest/install: $*" >&2
  exit 1
}

installed_version() {
  dpkg-query -W -f='${Status} ${Version}' "$1" 2>/dev/null |
    awk '$1 == "install" && $3 == "installed" { print $4 }'
}

kernel_ok() {
  local cur
  cur=$(readlink "$CACHE/kernel/current" 2>/dev/null) || return 1
  [ -f "$CACHE/kernel/$cur/.complete" ] && [ -f "$CACHE/kernel/$cur/vmlinuz" ] || return 1
  [[ "$cur" == "$SERIES".* ]] || return 1
  dpkg --compare-versions "${cur%%+*}" ge "$MIN_KERNEL"
}

missing=()
for p in "${host_packages[@]}"; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done
qemu_old=
if v=$(installed_version qemu-system-x86) && [ -n "$v" ] && dpkg --compare-versions "$v" lt "$MIN_QEMU"; then
  qemu_old=$v
fi
if [ "${#missing[@]}" -eq 0 ] && [ -z "$qemu_old" ] && kernel_ok; then
  say "ok (qemu $(installed_version qemu-system-x86), kernel $(readlink "$CACHE/kernel/current"))"
  exit 0
fi
[ "$(id -u)" -eq 0 ] || die "needs root (missing: ${missing[*]:-} ${qemu_old:+qemu-system-x86 $qemu_old is too old} $(kernel_ok || echo "guest kernel $SERIES"))"

# One installer at a time (checkouts on one machine share the cache); whoever
# waited finds the work done.
mkdir -p "$CACHE"
exec 8>"$CACHE/.install.lock"
flock 8
missing=()
for p in "${host_packages[@]}"; do
  [ -n "$(installed_version "$p")" ] || missing+=("$p")
done

# The Debian mirror the host uses (deb822 `URIs:` or one-line `deb URI suite`),
# without the security archive.
mirror() {
  local f u
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    u=$(awk '
      /^[[:space:]]*#/ { next }
      $1 == "URIs:" { for (i = 2; i <= NF; i++) print $i }
      $1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i ~ /:\/\//) { print $i; break } }
    ' "$f" | grep -v -e security -e '^$' | grep '/debian/\?$' | head -n1) || true
    if [ -n "$u" ]; then
      echo "${u%/}"
      return
    fi
  done
  echo http://deb.debian.org/debian
}
MIRROR=$(mirror)
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

# A private APT configuration in $CACHE/apt/$1: its own sources list, lists and
# archive cache. $2: the source lines. $3: "own-status" for an empty dpkg status
# (downloads only), anything else to use the host's (installs).
private_apt() {
  local dir=$CACHE/apt/$1 sources=$2 status=$3
  mkdir -p "$dir/etc/sources.list.d" "$dir/lists/partial" "$dir/cache/archives/partial"
  printf '%s\n' "$sources" >"$dir/etc/sources.list"
  {
    echo "Dir::Etc::SourceList \"$dir/etc/sources.list\";"
    echo "Dir::State::Lists \"$dir/lists\";"
    echo "Dir::Cache \"$dir/cache\";"
    echo "APT::Sandbox::User \"root\";"
    echo "Acquire::Languages \"none\";"
    if [ "$status" = own-status ]; then
      : >"$dir/status"
      echo "Dir::Etc::SourceParts \"$dir/etc/sources.list.d\";"
      echo "Dir::State::status \"$dir/status\";"
      echo "APT::Architecture \"amd64\";"
    fi
  } >"$dir/etc/apt.conf"
  echo "$dir/etc/apt.conf"
}

if [ "${#missing[@]}" -gt 0 ] || [ -n "$qemu_old" ]; then
  # The host's sources (sources.list.d stays as it is; a one-line sources.list
  # is copied, since the private list replaces that file) plus bookworm-backports.
  host_list=$([ -f /etc/apt/sources.list ] && cat /etc/apt/sources.list || true)
  conf=$(private_apt bookworm "$host_list
deb [signed-by=$KEYRING] $MIRROR bookworm-backports main" host-status)
  say "installing ${missing[*]:-} ${qemu_old:+qemu-system-x86 (have $qemu_old)} (qemu from bookworm-backports, private APT config $conf)"
  APT_CONFIG=$conf apt-get update -qq
  others=()
  for p in "${missing[@]}"; do [ "$p" = qemu-system-x86 ] || others+=("$p"); done
  if [ "${#others[@]}" -gt 0 ]; then
    APT_CONFIG=$conf DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${others[@]}" >/dev/null
  fi
  if [ -z "$(installed_version qemu-system-x86)" ] || [ -n "$qemu_old" ]; then
    APT_CONFIG=$conf DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  fi
  v=$(installed_version qemu-system-x86)
  dpkg --compare-versions "$v" ge "$MIN_QEMU" || die "qemu-system-x86 $v installed, $MIN_QEMU or later needed"
fi

if ! kernel_ok; then
  conf=$(private_apt trixie "deb [signed-by=$KEYRING] $MIRROR trixie-backports main" own-status)
  say "fetching the newest linux-image-$SERIES.*-amd64 from trixie-backports (private APT config $conf)"
  APT_CONFIG=$conf apt-get update -qq
  # Signed images of one series: linux-image-6.18.15+deb13-amd64. Newest first.
  pkg=$(APT_CONFIG=$conf apt-cache search --names-only "^linux-image-${SERIES//./\\.}\.[0-9]+\+[a-z0-9]+-amd64\$" |
    awk '{ print $1 }' | sort -V | tail -n1)
  [ -n "$pkg" ] || die "no linux-image-$SERIES.*-amd64 in trixie-backports on $MIRROR"
  kver=${pkg#linux-image-}
  # From 6.19 on, Debian splits the image into linux-binary-* and linux-modules-*.
  parts=("$pkg")
  while read -r dep; do parts+=("$dep"); done < <(
    APT_CONFIG=$conf apt-cache depends "$pkg" |
      awk '$1 == "Depends:" && $2 ~ /^linux-(binary|modules)-/ { print $2 }'
  )
  mkdir -p "$CACHE/kernel"
  work=$(mktemp -d "$CACHE/kernel/.new.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && APT_CONFIG=$conf apt-get download -qq "${parts[@]}")
  for deb in "$work"/*.deb; do
    dpkg-deb -x "$deb" "$work/root"
    rm -f "$deb"
  done
  # boot/vmlinuz-V up to 6.18, usr/lib/modules/V/vmlinuz from 6.19: one name for run.sh.
  for v in "boot/vmlinuz-$kver" "usr/lib/modules/$kver/vmlinuz"; do
    if [ -f "$work/root/$v" ]; then
      ln -s "$v" "$work/root/vmlinuz"
      break
    fi
  done
  [ -e "$work/root/vmlinuz" ] || die "${parts[*]} hold no vmlinuz for $kver"
  # depmod -b looks under BASE/lib/modules; the package ships usr/lib/modules.
  [ -e "$work/root/lib" ] || ln -s usr/lib "$work/root/lib"
  depmod -b "$work/root" "$kver"
  touch "$work/root/.complete"
  rm -rf "${CACHE:?}/kernel/$kver"
  mv "$work/root" "$CACHE/kernel/$kver"
  ln -sfn "$kver" "$CACHE/kernel/current.new"
  mv -T "$CACHE/kernel/current.new" "$CACHE/kernel/current"
  # Earlier kernels and stale initramfs images are of no further use.
  for old in "$CACHE"/kernel/* "$CACHE"/kernel/.new.*; do
    [ -L "$old" ] || [ "$old" = "$CACHE/kernel/$kver" ] || [ "$old" = "$work" ] || rm -rf "$old"
  done
  rm -rf "$CACHE/initramfs"
fi
kernel_ok || die "the guest kernel in $CACHE/kernel is not usable"
say "ok (qemu $(installed_version qemu-system-x86), kernel $(readlink "$CACHE/kernel/current"))"
