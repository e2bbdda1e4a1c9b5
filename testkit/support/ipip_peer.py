"""A user-space IP-in-IP endpoint (RFC 2003), Calico-style, for the test bed.

There is no kernel ipip module on the test machines, so a remote IP-in-IP node
is this script: it bridges a TUN device (the node's `tunl0`, created by the
test bed, carrying the node's pod address) to a raw IPv4 socket of protocol 4.

  TUN → encapsulate (outer TOS copied from the inner, inner DF ⇒ outer DF,
        TTL 64, protocol 4, src = --local) → send to --remote;
  protocol-4 packets from --remote → strip the outer header → write to TUN.

A raw socket that receives the packet also keeps the kernel (which has no
handler for protocol 4 here) from answering with ICMP protocol unreachable.
Packets from any other source are ignored, as Felix ignores unknown hosts.

Standard library only. Prints `ready` once both ends are open, then runs
until killed (SIGTERM / SIGKILL); prints a one-line summary on SIGTERM.
"""

import argparse
import fcntl
import os
import select
import signal
import socket
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    ifr = struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI)
    fcntl.ioctl(fd, TUNSETIFF, ifr)
    os.set_blocking(fd, False)
    return fd


def outer_header(inner, local, remote):
    """RFC 2003 outer header; the kernel fills identification and checksum."""
    tos = inner[1]
    df = inner[6] & 0x40
    return struct.pack(
        "!BBHHBBBBH4s4s",
        0x45,
        tos,
        20 + len(inner),
        0,  # identification: filled by the kernel (IP_HDRINCL, id 0)
        df,
        0,
        64,  # TTL
        IPPROTO_IPIP,
        0,  # checksum: always filled by the kernel with IP_HDRINCL
        local,
        remote,
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", default="tunl0")
    ap.add_argument("--local", required=True)
    ap.add_argument("--remote", required=True)
    args = ap.parse_args()
    local = socket.inet_aton(args.local)
    remote = socket.inet_aton(args.remote)

    tun = open_tun(args.dev)
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    raw.setblocking(False)

    stats = {"encap": 0, "decap": 0, "ignored": 0, "errors": 0}

    def stop(_sig, _frame):
        print("ipip_peer: " + " ".join(f"{k}={v}" for k, v in stats.items()), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)

    poller = select.poll()
    poller.register(tun, select.POLLIN)
    poller.register(raw.fileno(), select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == tun:
                for _ in range(64):
                    try:
                        inner = os.read(tun, 65535)
                    except BlockingIOError:
                        break
                    if len(inner) < 20 or inner[0] >> 4 != 4:
                        stats["ignored"] += 1
                        continue
                    try:
                        raw.sendto(outer_header(inner, local, remote) + inner, (args.remote, 0))
                        stats["encap"] += 1
                    except OSError:
                        stats["errors"] += 1
            else:
                for _ in range(64):
                    try:
                        pkt, _addr = raw.recvfrom(65535)
                    except BlockingIOError:
                        break
                    ihl = (pkt[0] & 0x0F) * 4
                    if len(pkt) < ihl + 20 or pkt[9] != IPPROTO_IPIP or pkt[12:16] != remote:
                        stats["ignored"] += 1
                        continue
                    try:
                        os.write(tun, pkt[ihl:])
                        stats["decap"] += 1
                    except OSError:
                        stats["errors"] += 1


if __name__ == "__main__":
    sys.exit(main())
