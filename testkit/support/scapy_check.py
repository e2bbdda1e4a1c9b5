"""Crafts tunnel packets with scapy, sends them at the gateway from a test-bed
namespace, sniffs what the gateway emits in another namespace, and checks it
with scapy's own dissection (byte-exact where the rules fix the bytes).

Usage: python3 scapy_check.py '<bed JSON>' [case ...]
(no case: every case of CASES; EXTRA_CASES run only when named)
The bed JSON (written by gateway/tests/interop.rs) names the namespaces,
addresses and MACs. Prints one JSON object:
  {"cases": {"<case>": {"ok": bool, "failures": [...], "seen": "<summary>"}}}

Sockets are opened inside the namespaces with setns(2) (one process, no
`ip netns exec`): an AF_PACKET socket keeps the namespace it was created in.
"""

import ctypes
import json
import os
import socket
import sys
import time

from scapy.all import IP, UDP, Ether, Raw, conf  # noqa: F401
from scapy.layers.vxlan import VXLAN
from scapy.utils import checksum

conf.verb = 0
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
libc = ctypes.CDLL(None, use_errno=True)


class InNetns:
    """`with InNetns(name):` runs the body in namespace /run/netns/<name>."""

    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.orig = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns({self.name}): {os.strerror(err)}")
        finally:
            os.close(fd)

    def __exit__(self, *exc):
        libc.setns(self.orig, CLONE_NEWNET)
        os.close(self.orig)


def l2_socket(ns, ifname):
    with InNetns(ns):
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.bind((ifname, 0))
    return s


def sniff_for(sock, marker, timeout=2.0):
    """The first frame received (not sent) on `sock` that contains `marker`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            return None
        if addr[2] == PACKET_OUTGOING:
            continue
        if marker in data:
            return data


def csum_ok(ip):
    """The IPv4 header checksum verifies (sums to zero)."""
    return checksum(bytes(ip)[: ip.ihl * 4]) == 0


def forwarded(inner, tos=None):
    """What a router must make of `inner` (a scapy IP): TTL − 1, checksum
    recomputed, optionally a new TOS; every other byte unchanged."""
    p = IP(bytes(inner))
    p.ttl -= 1
    if tos is not None:
        p.tos = tos
    del p.chksum
    return bytes(p)


class Case:
    def __init__(self, name):
        self.name = name
        self.failures = []
        self.seen = ""

    def check(self, cond, what):
        if not cond:
            self.failures.append(what)
        return cond

    def eq(self, what, got, want):
        return self.check(got == want, f"{what}: got {got!r}, want {want!r}")

    def result(self):
        r = {"ok": not self.failures, "failures": self.failures, "seen": self.seen}
        if hasattr(self, "sent"):
            r["sent"] = self.sent
        return r


def check_inner(c, got_ip, sent_inner, tos=None):
    """Byte-exact inner packet: the sent one, forwarded once."""
    want = forwarded(sent_inner, tos)
    got = bytes(got_ip)[: got_ip.len]
    if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        c.failures.append(
            f"inner IPv4 packet differs from the sent one forwarded once: first at byte {at} "
            f"(got {got[at:at + 8].hex()}, want {want[at:at + 8].hex()}; lengths {len(got)}/{len(want)})"
        )
    c.check(csum_ok(got_ip), "inner IPv4 checksum invalid")
    c.eq("inner TTL", got_ip.ttl, sent_inner.ttl - 1)


def check_outer_ip(c, outer, bed, dst, proto, tos, df):
    c.eq("outer version/IHL", (outer.version, outer.ihl), (4, 5))
    c.eq("outer src", outer.src, bed["ip"]["gw_ul"])
    c.eq("outer dst", outer.dst, dst)
    c.eq("outer protocol", outer.proto, proto)
    c.eq("outer TOS (copied from the inner)", outer.tos, tos)
    c.eq("outer DF (inner DF)", bool(outer.flags.DF), df)
    c.eq("outer MF/fragment offset", (bool(outer.flags.MF), outer.frag), (False, 0))
    c.eq("outer TTL", outer.ttl, 64)
    c.check(csum_ok(outer), "outer IPv4 checksum invalid")


def send_and_sniff(bed, case, send_ns, frame, sniff_ns, marker):
    rx = l2_socket(bed["ns"][sniff_ns], "eth0")
    tx = l2_socket(bed["ns"][send_ns], "eth0")
    try:
        tx.send(bytes(frame))
        data = sniff_for(rx, marker)
    finally:
        rx.close()
        tx.close()
    if data is None:
        case.failures.append(f"nothing containing the marker reached {sniff_ns} within 2 s")
        return None
    pkt = Ether(data)
    case.seen = pkt.summary()
    return pkt


def ipip_frame(bed, inner, outer_tos=0, outer_df=False):
    m, i = bed["mac"], bed["ip"]
    return (
        Ether(src=m["n3_ul"], dst=m["gw_ul"])
        / IP(src=i["n3_ul"], dst=i["gw_ul"], proto=4, tos=outer_tos, ttl=64, id=0x4242,
             flags="DF" if outer_df else 0)
        / inner
    )


def vxlan_frame(bed, node, inner, outer_tos=0):
    m, i = bed["mac"], bed["ip"]
    return (
        Ether(src=m[f"n{node}_ul"], dst=m["gw_ul"])
        / IP(src=i[f"n{node}_ul"], dst=i["gw_ul"], tos=outer_tos, ttl=64, id=0x4343)
        / UDP(sport=51234, dport=8472)
        / VXLAN(flags=0x08, vni=1)
        / Ether(src=m[f"n{node}_vtep"], dst=m["gw_vtep"])
        / inner
    )


def inner_ip(src, dst, tos, df, marker, ident):
    return (
        IP(src=src, dst=dst, tos=tos, ttl=64, id=ident, flags="DF" if df else 0)
        / UDP(sport=40000, dport=40001)
        / Raw(marker + b"." * 64)
    )


def case_ipip_to_pod(bed, name, outer_tos, inner_tos, want_tos):
    """(a) IP-in-IP from node 3 → decapsulated to local pod a."""
    c = Case(name)
    marker = f"ovp-{name}-{os.getpid()}".encode()
    inner = inner_ip("10.244.3.2", bed["ip"]["pa"], inner_tos, True, marker, 0x1001)
    pkt = send_and_sniff(bed, c, "n3", ipip_frame(bed, inner, outer_tos, True), "pa", marker)
    if pkt is None:
        return c
    m = bed["mac"]
    c.eq("Ethernet dst (pod MAC)", pkt.dst, m["pa"])
    c.eq("Ethernet src (host-end MAC)", pkt.src, m["pa_host"])
    c.eq("Ethernet type", pkt.type, 0x0800)
    if c.check(IP in pkt, "no IPv4 in the delivered frame"):
        check_inner(c, pkt[IP], inner, want_tos)
        c.eq("inner TOS after RFC 6040 decap", pkt[IP].tos, want_tos)
    return c


def case_pod_to_ipip(bed, name, tos, df):
    """(b) local pod a → IP-in-IP toward node 3."""
    c = Case(name)
    marker = f"ovp-{name}-{os.getpid()}".encode()
    m = bed["mac"]
    inner = inner_ip(bed["ip"]["pa"], "10.244.3.9", tos, df, marker, 0x2002)
    frame = Ether(src=m["pa"], dst=m["pa_host"]) / inner
    pkt = send_and_sniff(bed, c, "pa", frame, "n3", marker)
    if pkt is None:
        return c
    c.eq("Ethernet dst (node 3 underlay MAC)", pkt.dst, m["n3_ul"])
    c.eq("Ethernet src (gateway underlay MAC)", pkt.src, m["gw_ul"])
    if not c.check(IP in pkt, "no IPv4"):
        return c
    outer = pkt[IP]
    check_outer_ip(c, outer, bed, bed["ip"]["n3_ul"], 4, tos, df)
    c.eq("outer total length", outer.len, 20 + len(bytes(inner)))
    if c.check(isinstance(outer.payload, IP), "outer payload is not IPv4 (scapy)"):
        check_inner(c, outer.payload, inner)
    return c


def case_vxlan_to_ipip(bed, name):
    """(c) transit: VXLAN from node 1 → IP-in-IP toward node 3."""
    c = Case(name)
    marker = f"ovp-{name}-{os.getpid()}".encode()
    inner = inner_ip("10.244.1.2", "10.244.3.7", 0x48, True, marker, 0x3003)
    pkt = send_and_sniff(bed, c, "n1", vxlan_frame(bed, 1, inner, outer_tos=0x00), "n3", marker)
    if pkt is None:
        return c
    m = bed["mac"]
    c.eq("Ethernet dst (node 3 underlay MAC)", pkt.dst, m["n3_ul"])
    c.eq("Ethernet src (gateway underlay MAC)", pkt.src, m["gw_ul"])
    if not c.check(IP in pkt, "no IPv4"):
        return c
    outer = pkt[IP]
    check_outer_ip(c, outer, bed, bed["ip"]["n3_ul"], 4, 0x48, True)
    if c.check(isinstance(outer.payload, IP), "outer payload is not IPv4 (scapy)"):
        check_inner(c, outer.payload, inner)
    return c


def check_vxlan_out(c, pkt, bed, node, inner, tos, df):
    m = bed["mac"]
    c.eq("Ethernet dst (node underlay MAC)", pkt.dst, m[f"n{node}_ul"])
    c.eq("Ethernet src (gateway underlay MAC)", pkt.src, m["gw_ul"])
    if not c.check(UDP in pkt, "no UDP"):
        return
    outer = pkt[IP]
    check_outer_ip(c, outer, bed, bed["ip"][f"n{node}_ul"], 17, tos, df)
    udp = pkt[UDP]
    c.eq("UDP dport", udp.dport, 8472)
    c.check(49152 <= udp.sport <= 65535, f"UDP sport {udp.sport} outside 49152-65535")
    c.eq("UDP checksum", udp.chksum, 0)
    c.eq("UDP length", udp.len, outer.len - 20)
    if not c.check(VXLAN in pkt, "scapy sees no VXLAN"):
        return
    vx = pkt[VXLAN]
    c.eq("VXLAN header (bytes)", bytes(vx)[:8].hex(), "0800000000000100")
    c.eq("VXLAN flags (I)", int(vx.flags), 0x08)
    c.eq("VNI", vx.vni, 1)
    ie = vx.payload
    if not c.check(isinstance(ie, Ether), "VXLAN payload is not Ethernet"):
        return
    c.eq("inner src MAC (gateway VtepMAC)", ie.src, m["gw_vtep"])
    c.eq("inner dst MAC (node VtepMAC)", ie.dst, m[f"n{node}_vtep"])
    c.eq("inner ethertype", ie.type, 0x0800)
    if c.check(isinstance(ie.payload, IP), "inner frame has no IPv4"):
        check_inner(c, ie.payload, inner)


def case_ipip_to_vxlan(bed, name):
    """(d) transit: IP-in-IP from node 3 → VXLAN toward node 1."""
    c = Case(name)
    marker = f"ovp-{name}-{os.getpid()}".encode()
    inner = inner_ip("10.244.3.2", "10.244.1.7", 0x71, True, marker, 0x4004)
    pkt = send_and_sniff(bed, c, "n3", ipip_frame(bed, inner, 0x00, False), "n1", marker)
    if pkt is not None:
        check_vxlan_out(c, pkt, bed, 1, inner, 0x71, True)
    return c


def case_vxlan_to_vxlan(bed, name):
    """Transit VXLAN node 1 → VXLAN node 2."""
    c = Case(name)
    marker = f"ovp-{name}-{os.getpid()}".encode()
    inner = inner_ip("10.244.1.2", "10.244.2.7", 0x20, False, marker, 0x5005)
    pkt = send_and_sniff(bed, c, "n1", vxlan_frame(bed, 1, inner, outer_tos=0xb8), "n2", marker)
    if pkt is not None:
        check_vxlan_out(c, pkt, bed, 2, inner, 0x20, False)
    return c


def collect(socks, done, timeout=5.0):
    """Frames received (not sent) on any of `socks` until `done(frames)` is
    true or `timeout` passes: a list of (socket index, bytes)."""
    import select

    frames = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select(socks, [], [], left)
        for s in ready:
            data, addr = s.recvfrom(65535)
            if addr[2] != PACKET_OUTGOING:
                frames.append((socks.index(s), data))
    return frames


def case_spoofed_inner_sources(bed, name, per_kind=5):
    """Configured peers send inner sources that do not route back to them
    (another node's podCIDR, a local pod's address, addresses outside
    every route; to a local pod and in transit): the gateway must deliver
    none. Legitimate sentinels follow on the same paths; once they have
    arrived, anything spoofed would have arrived before them (one queue,
    one worker, in order), so the absence is checked without waiting out
    a timeout. `sent` in the result is the number of spoofed frames."""
    c = Case(name)
    tag = f"ovp-{name}-{os.getpid()}".encode()
    i = bed["ip"]
    vx = lambda inner: vxlan_frame(bed, 1, inner)  # noqa: E731
    ipip = lambda inner: ipip_frame(bed, inner)  # noqa: E731
    kinds = [
        # (sending node, frame builder, inner source, inner destination)
        ("n1", vx, "10.244.2.7", i["pa"]),  # node 2's podCIDR
        ("n1", vx, "192.0.2.1", i["pa"]),  # outside every route
        ("n1", vx, "10.244.0.3", i["pa"]),  # a local pod's address
        ("n1", vx, "10.244.2.7", "10.244.3.7"),  # in transit to node 3
        ("n3", ipip, "10.244.1.7", i["pa"]),  # node 1's podCIDR
        ("n3", ipip, "198.18.0.99", i["pa"]),  # outside every route
    ]
    sentinels = [
        ("n1", vx, "10.244.1.2", i["pa"], 0),
        ("n3", ipip, "10.244.3.2", i["pa"], 0),
        ("n1", vx, "10.244.1.2", "10.244.3.7", 1),
    ]
    rx = [l2_socket(bed["ns"]["pa"], "eth0"), l2_socket(bed["ns"]["n3"], "eth0")]
    tx = {n: l2_socket(bed["ns"][n], "eth0") for n in ("n1", "n3")}
    sent = 0
    try:
        for k, (node, build, src, dst) in enumerate(kinds):
            for j in range(per_kind):
                marker = tag + f"-spoof-{k}-{j}".encode()
                tx[node].send(bytes(build(inner_ip(src, dst, 0, True, marker, 0x6000 + sent))))
                sent += 1
        want = []
        for k, (node, build, src, dst, at) in enumerate(sentinels):
            marker = tag + f"-sentinel-{k}".encode()
            want.append((at, marker))
            tx[node].send(bytes(build(inner_ip(src, dst, 0, True, marker, 0x7000 + k))))

        def all_sentinels(frames):
            return all(any(at == w and m in f for w, f in frames) for at, m in want)

        frames = collect(rx, all_sentinels)
    finally:
        for s in rx + list(tx.values()):
            s.close()
    missing = [m.decode() for at, m in want if not any(at == w and m in f for w, f in frames)]
    c.check(not missing, f"legitimate sentinels not delivered: {missing}")
    leaked = sorted({f[f.index(tag):].split(b".")[0].decode() for _, f in frames
                     if tag + b"-spoof-" in f})
    c.check(not leaked, f"spoofed inner sources delivered: {leaked}")
    c.seen = f"{sent} spoofed sent, {len(leaked)} delivered; {len(want) - len(missing)} of {len(want)} sentinels delivered"
    c.sent = sent
    return c


# Run only when named: they need their own counter accounting.
EXTRA_CASES = {
    "spoofed_inner_sources": lambda b: case_spoofed_inner_sources(b, "spoofed_inner_sources"),
}

CASES = {
    # (a): DSCP/ECN kept; outer CE on an ECT(0) inner marks the inner CE (RFC 6040).
    "ipip_to_pod": lambda b: case_ipip_to_pod(b, "ipip_to_pod", 0xb8, 0xb8, 0xb8),
    "ipip_to_pod_ce": lambda b: case_ipip_to_pod(b, "ipip_to_pod_ce", 0xbb, 0xba, 0xbb),
    # (b): TOS and DF copied, both ways round.
    "pod_to_ipip_df": lambda b: case_pod_to_ipip(b, "pod_to_ipip_df", 0xba, True),
    "pod_to_ipip_nodf": lambda b: case_pod_to_ipip(b, "pod_to_ipip_nodf", 0x00, False),
    "vxlan_to_ipip": lambda b: case_vxlan_to_ipip(b, "vxlan_to_ipip"),
    "ipip_to_vxlan": lambda b: case_ipip_to_vxlan(b, "ipip_to_vxlan"),
    "vxlan_to_vxlan": lambda b: case_vxlan_to_vxlan(b, "vxlan_to_vxlan"),
}


def main():
    bed = json.loads(sys.argv[1])
    names = sys.argv[2:] or list(CASES)
    out = {}
    for n in names:
        try:
            out[n] = {**CASES, **EXTRA_CASES}[n](bed).result()
        except Exception as e:  # report, do not hide
            out[n] = {"ok": False, "failures": [f"exception: {e!r}"], "seen": ""}
    print(json.dumps({"cases": out}))


if __name__ == "__main__":
    main()
