#!/usr/bin/env bash
# Runs one command in a QEMU guest (TCG) whose NIC can do AF_XDP zero-copy, and
# returns its output and exit status. Run as root; deploy/guest/install.sh
# installs what it needs (QEMU, the guest kernel, busybox).
#
#   deploy/guest/run.sh [options] -- COMMAND [ARG...]
#
#   --nic virtio|igb    the guest's NIC (default virtio): virtio-net-pci with
#                       disable-legacy=on,iommu_platform=on (without it a
#                       zero-copy bind gets EINVAL), or QEMU's igb (82576)
#   --netns NS          an existing network namespace for the host end of the
#                       link, a tap device (default: a namespace of our own,
#                       deleted afterwards)
#   --tap NAME          the tap's name (default ovgtap<pid>)
#   --host-addr CIDR    an IPv4 address for the tap
#   --bridge BR         enslave the tap to bridge BR (in the tap's namespace),
#                       e.g. a test bed's underlay switch
#   --guest-addr CIDR   an IPv4 address for the guest's NIC
#   --mac MAC           the guest NIC's MAC (default 52:54:00:4f:56:02)
#   --queues N          virtio-net queue pairs (multiqueue tap, N vCPUs)
#   --smp N             vCPUs (default 1)
#   --mem MB            guest memory (default 512)
#   --timeout S         kill the guest after S seconds (default 300)
#   --console FILE      keep the guest kernel's console log in FILE
#   --env NAME=VALUE    set in the command's environment (repeatable)
#
# The guest boots the cache's kernel (install.sh) with an initramfs of busybox,
# the modules for virtio_net, igb, veth and 9p, and deploy/guest/init. The
# host's root filesystem is shared read-only over 9p and the command runs
# chrooted in it, in the current directory, with the guest's own /proc, /sys,
# /dev, bpffs and an empty tmpfs on /tmp and /run: host binaries (test
# binaries in target/, ip, ethtool, ...) run in the guest as they are; writes
# outside /tmp and /run fail. The NIC is eth0, up.
#
# Output: the command's stdout and stderr (merged), after the guest stops.
# Exit status: the command's; 124 when the guest timed out, 125 when the guest
# failed before or around the command (the console log goes to stderr then).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
CACHE=${OVERPASS_GUEST_CACHE:-/var/cache/overpass-guest}

nic=virtio netns= tap= host_addr= bridge= guest_addr= mac=52:54:00:4f:56:02
queues=1 smp= mem=512 timeout=300 console_keep=
envs=()
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --nic) nic=$2; shift 2 ;;
    --netns) netns=$2; shift 2 ;;
    --tap) tap=$2; shift 2 ;;
    --host-addr) host_addr=$2; shift 2 ;;
    --bridge) bridge=$2; shift 2 ;;
    --guest-addr) guest_addr=$2; shift 2 ;;
    --mac) mac=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --timeout) timeout=$2; shift 2 ;;
    --console) console_keep=$2; shift 2 ;;
    --env) envs+=("$2"); shift 2 ;;
    --) shift; break ;;
    -h | --help) usage ;;
    *) echo "guest/run: unknown option $1" >&2; usage ;;
  esac
done
[ $# -gt 0 ] || usage
[ "$(id -u)" -eq 0 ] || { echo "guest/run: needs root (tap devices, network namespaces)" >&2; exit 125; }
smp=${smp:-$queues}
tap=${tap:-ovgtap$$}

kdir=$CACHE/kernel/current
kver=$(readlink "$kdir" 2>/dev/null) || {
  echo "guest/run: no guest kernel in $CACHE/kernel: run deploy/guest/install.sh" >&2
  exit 125
}
command -v qemu-system-x86_64 >/dev/null || {
  echo "guest/run: qemu-system-x86_64 not found: run deploy/guest/install.sh" >&2
  exit 125
}

# ---- The initramfs, built once per (kernel, busybox, init script, module list).
modules=(virtio_net igb veth 9p 9pnet_virtio)
key=$(
  {
    echo "$kver ${modules[*]}"
    cat "$here/init" "$0"
    sha256sum </bin/busybox
  } | sha256sum | cut -c1-16
)
initrd=$CACHE/initramfs/$kver-$key.cpio
if [ ! -f "$initrd" ]; then
  mkdir -p "$CACHE/initramfs"
  exec 9>"$CACHE/initramfs/.lock"
  flock 9
  if [ ! -f "$initrd" ]; then
    build=$(mktemp -d "$CACHE/initramfs/.build.XXXXXX")
    mkdir -p "$build/bin" "$build/modules"
    cp /bin/busybox "$build/bin/busybox"
    install -m 0755 "$here/init" "$build/init"
    # Dependencies first, each once; decompressed, for busybox's insmod.
    for m in "${modules[@]}"; do modprobe -d "$kdir" -S "$kver" --show-depends "$m"; done |
      awk '$1 == "insmod" && !seen[$2]++ { print $2 }' |
      while read -r ko; do
        name=$(basename "$ko")
        name=${name%.xz}
        case "$ko" in
          *.xz) xz -dc "$ko" >"$build/modules/$name" ;;
          *) cp "$ko" "$build/modules/$name" ;;
        esac
        echo "$name" >>"$build/modules/order"
      done
    (cd "$build" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) >"$initrd.tmp"
    mv "$initrd.tmp" "$initrd"
    rm -rf "$build"
  fi
  exec 9>&-
fi

# ---- The run directory: the command script, the serial outputs.
run=$(mktemp -d /tmp/overpass-guest.XXXXXX)
own_ns=
qemu_pid=
cleanup() {
  # `timeout` runs QEMU in a process group of its own, out of reach of a
  # signal to ours: stop it here (timeout passes the TERM on to QEMU).
  if [ -n "$qemu_pid" ]; then
    kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  fi
  if [ -n "$netns" ] && ip netns exec "$netns" true 2>/dev/null; then
    ip -n "$netns" link del "$tap" 2>/dev/null || true
  fi
  [ -n "$own_ns" ] && ip netns del "$own_ns" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
# A signal ends the script through `exit`, so the EXIT trap removes the tap.
trap 'exit 143' TERM INT HUP

quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
{
  echo "cd $(quote "$PWD") 2>/dev/null || cd /"
  echo "export HOME=/tmp PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  for v in RUST_BACKTRACE RUST_LOG; do
    [ -n "${!v:-}" ] && echo "export $v=$(quote "${!v}")"
  done
  for e in "${envs[@]}"; do echo "export ${e%%=*}=$(quote "${e#*=}")"; done
  printf 'exec'
  for a in "$@"; do printf ' %s' "$(quote "$a")"; done
  echo
} >"$run/cmd"

# ---- The link: a tap in the host-side namespace.
if [ -z "$netns" ]; then
  netns=ovg-run-$$
  own_ns=$netns
  ip netns add "$netns"
  ip -n "$netns" link set lo up
fi
mq=
[ "$queues" -gt 1 ] && mq=multi_queue
ip -n "$netns" tuntap add dev "$tap" mode tap $mq
[ -n "$bridge" ] && ip -n "$netns" link set "$tap" master "$bridge"
ip -n "$netns" link set "$tap" up
[ -n "$host_addr" ] && ip -n "$netns" addr add "$host_addr" dev "$tap"

netdev="tap,id=n0,ifname=$tap,script=no,downscript=no,vhost=off"
case "$nic" in
  virtio)
    device="virtio-net-pci,netdev=n0,mac=$mac,disable-legacy=on,iommu_platform=on,romfile="
    if [ "$queues" -gt 1 ]; then
      netdev+=",queues=$queues"
      device+=",mq=on,vectors=$((2 * queues + 2))"
    fi
    ;;
  igb) device="igb,netdev=n0,mac=$mac,romfile=" ;;
  *) echo "guest/run: --nic virtio or igb, not $nic" >&2; exit 2 ;;
esac

append="console=ttyS0 panic=-1 loglevel=4 mitigations=off ovg.cmd=$run/cmd"
[ -n "$guest_addr" ] && append+=" ovg.addr=$guest_addr"

rc=0
timeout --kill-after=10 "$timeout" \
  ip netns exec "$netns" qemu-system-x86_64 \
  -machine q35 -accel tcg,thread=multi -cpu max -smp "$smp" -m "$mem" \
  -nodefaults -display none -no-reboot -no-user-config \
  -kernel "$kdir/vmlinuz" -initrd "$initrd" -append "$append" \
  -serial "file:$run/console.log" -serial "file:$run/out.log" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -netdev "$netdev" -device "$device" \
  </dev/null >"$run/qemu.log" 2>&1 &
# In the background and waited for: bash runs a trap (TERM from a test that
# gives up on the guest) during `wait`, but only after a foreground command.
qemu_pid=$!
wait "$qemu_pid" || rc=$?
qemu_pid=

[ -n "$console_keep" ] && cp "$run/console.log" "$console_keep"
out=$run/out.log
touch "$out"
status=$(grep -ao '@@OVERPASS-GUEST-EXIT [0-9]*@@' "$out" | tail -n1 | tr -dc 0-9) || true
grep -av '@@OVERPASS-GUEST-EXIT [0-9]*@@' "$out" || true
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
  echo "guest/run: the guest did not finish within ${timeout}s; its console:" >&2
  tail -n 40 "$run/console.log" >&2 || true
  exit 124
fi
if [ -z "$status" ]; then
  echo "guest/run: the guest stopped without reporting an exit status (qemu exit $rc)" >&2
  cat "$run/qemu.log" >&2 || true
  tail -n 40 "$run/console.log" >&2 || true
  exit 125
fi
exit "$status"
