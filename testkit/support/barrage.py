"""A barrage of malformed and hostile tunnel frames at the gateway, in
families. gateway/tests/barrage.rs owns the expectations (how many frames of
each family, the drop reason each must be counted under, the XDP counter that
steers it); this script only builds and sends them.

Usage: python3 barrage.py '<spec JSON>'
The spec names the senders (namespace, interface, MAC, underlay address), the
gateway's addresses and the families to send with their counts. Prints one
JSON object: {"sent": {"<family>": n, ...}, "seconds": s}.

Every family is built with scapy from a seeded random generator: VARIANTS
distinct frames per family (ports, identifiers, VNIs, MACs, payloads vary),
repeated to the family's count, and sent with scapy's sendp over an AF_PACKET
socket opened inside the sender's namespace (setns, as scapy_check.py does).

Only frames the XDP program steers to the gateway's sockets are sent (IPv4
UDP to a VXLAN port with a full UDP header, or IPv4 protocol 4): frames it
passes to the kernel (truncated Ethernet or IPv4 headers, IHL < 5, later UDP
fragments, anything not a tunnel) are not the gateway's to count, and the XDP
tests (xdp-prog/tests/steering.rs) judge those. The inner source of every
frame from node 1 is node 1's pod (inside its podCIDR): the families test one
defect each, never the inner source.

Frames go out in chunks of CHUNK with a short pause between, so neither the
underlay veth's ring nor the AF_XDP RX ring can overflow while the worker
sleeps: the test checks xsk_rx_ring_full and xsk_rx_dropped stay 0 anyway.
"""

import json
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scapy.all import ARP, Dot1Q, Ether, IP, IPv6, UDP, Raw, conf, raw, sendp  # noqa: E402
from scapy.layers.inet import (  # noqa: E402
    IPOption_EOL,
    IPOption_NOP,
    IPOption_Router_Alert,
    IPOption_RR,
)
from scapy.layers.vxlan import VXLAN  # noqa: E402

from scapy_check import InNetns  # noqa: E402

conf.verb = 0
VARIANTS = 16
CHUNK = 256
PAUSE = 0.01
SEED = 15


class Ctx:
    """What the builders need: the spec and a random generator."""

    def __init__(self, spec, rnd):
        self.s = spec
        self.r = rnd

    # -- the senders ----------------------------------------------------
    def sender(self, name):
        return self.s["senders"][name]

    # -- randomised pieces ----------------------------------------------
    def sport(self):
        return self.r.randint(49152, 65535)

    def ident(self):
        return self.r.randint(0, 0xFFFF)

    def payload(self, lo=0, hi=48):
        return Raw(self.r.randbytes(self.r.randint(lo, hi)))

    def unicast_mac(self):
        b = [0x02] + [self.r.randint(0, 255) for _ in range(5)]
        return ":".join(f"{x:02x}" for x in b)

    # -- layers -----------------------------------------------------------
    def outer_eth(self, who):
        return Ether(src=self.sender(who)["mac"], dst=self.s["gw"]["mac"])

    def outer_ip(self, who, **kw):
        kw.setdefault("src", self.sender(who)["ip"])
        kw.setdefault("dst", self.s["gw"]["ip"])
        kw.setdefault("ttl", 64)
        kw.setdefault("id", self.ident())
        return IP(**kw)

    def udp(self, **kw):
        kw.setdefault("sport", self.sport())
        kw.setdefault("dport", self.s["vxlan_port"])
        return UDP(**kw)

    def vxlan(self, **kw):
        kw.setdefault("flags", 0x08)
        kw.setdefault("vni", self.s["vni"])
        return VXLAN(**kw)

    def inner_eth(self, **kw):
        kw.setdefault("src", self.s["n1"]["vtep"])
        kw.setdefault("dst", self.s["gw"]["vtep"])
        return Ether(**kw)

    def inner_ip(self, **kw):
        kw.setdefault("src", self.s["n1"]["pod"])
        kw.setdefault("dst", self.s["pod_a"])
        kw.setdefault("ttl", 64)
        kw.setdefault("id", self.ident())
        return IP(**kw)

    def inner_l4(self):
        return UDP(sport=self.r.randint(1024, 65535), dport=self.r.randint(1, 65535)) / self.payload()

    def inner_packet(self, **kw):
        return self.inner_ip(**kw) / self.inner_l4()

    def vxlan_frame(self, who="n1", ip=None, udp=None, vx=None, inner=None):
        """A complete VXLAN frame from `who`; any layer may be replaced."""
        return (
            self.outer_eth(who)
            / (ip if ip is not None else self.outer_ip(who))
            / (udp if udp is not None else self.udp())
            / (vx if vx is not None else self.vxlan())
            / (inner if inner is not None else self.inner_eth() / self.inner_packet())
        )

    def ipip_frame(self, who, ip=None, inner=None):
        return (
            self.outer_eth(who)
            / (ip if ip is not None else self.outer_ip(who, proto=4))
            / (inner if inner is not None else self.inner_packet())
        )


def checksum_of(pkt, layer):
    """The checksum scapy computes for (the first) `layer` of `pkt`."""
    return pkt.__class__(raw(pkt))[layer].chksum


def wrong(ck):
    """A checksum that does not verify: differs from `ck` by less than 0xffff
    (0x0000 and 0xffff are the same ones' complement zero), and never 0,
    which a UDP checksum field reads as "none"."""
    bad = ck ^ 0x00FF
    return bad if bad != 0 else ck ^ 0x0F0F


# -- the families: name -> (sender, builder(ctx) -> scapy packet or bytes) --


def outer_ipv4_truncated(c):
    # Total length past the end of the frame.
    f = c.vxlan_frame()
    f[IP].len = len(f[IP]) + c.r.randint(1, 400)
    return f


def outer_ipv4_length_below_header(c):
    return c.vxlan_frame(ip=c.outer_ip("n1", len=c.r.randint(0, 19)))


def outer_ipv4_bad_checksum(c):
    f = c.vxlan_frame()
    f[IP].chksum = wrong(checksum_of(f, IP))
    return f


def outer_ipv4_options(c):
    opts = c.r.choice(
        [
            [IPOption_NOP(), IPOption_NOP(), IPOption_NOP(), IPOption_EOL()],
            [IPOption_Router_Alert()],
            [IPOption_RR(routers=["0.0.0.0"] * 9), IPOption_EOL()],
        ]
    )
    return c.vxlan_frame(ip=c.outer_ip("n1", options=opts))


def outer_first_fragment(c):
    return c.vxlan_frame(ip=c.outer_ip("n1", flags=c.r.choice(["MF", "MF+DF"]), frag=0))


def outer_not_local(c):
    dst = c.r.choice(["198.18.0.77", "198.18.0.255", c.sender("n1")["ip"], "224.0.0.1", "10.244.0.2"])
    return c.vxlan_frame(ip=c.outer_ip("n1", dst=dst))


def udp_length_beyond_datagram(c):
    f = c.vxlan_frame()
    f[UDP].len = len(f[UDP]) + c.r.randint(1, 300)
    return f


def udp_length_below_header(c):
    return c.vxlan_frame(udp=c.udp(len=c.r.randint(0, 7)))


def udp_bad_checksum(c):
    f = c.vxlan_frame()
    f[UDP].chksum = wrong(checksum_of(f, UDP))
    return f


def vxlan_truncated(c):
    return c.outer_eth("n1") / c.outer_ip("n1") / c.udp() / c.payload(0, 7)


def vxlan_without_i_flag(c):
    return c.vxlan_frame(vx=c.vxlan(flags=c.r.choice([0x00, 0x01, 0x80, 0xF7])))


def vxlan_wrong_vni(c):
    vni = c.r.choice([0, 2, 0xFFFFFF, c.r.randint(3, 0xFFFFFE)])
    return c.vxlan_frame(vx=c.vxlan(vni=vni))


def vxlan_wrong_port(c):
    # 4789 is one of the gateway's VXLAN ports (the XDP program steers it),
    # but node 1 is configured with 8472.
    return c.vxlan_frame(udp=c.udp(dport=c.s["other_vxlan_port"]))


def inner_frame_truncated(c):
    return c.vxlan_frame(inner=c.payload(0, 13))


def inner_wrong_vtep_mac(c):
    dst = c.r.choice(
        [c.unicast_mac(), "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", c.s["n1"]["vtep"], c.s["gw"]["mac"]]
    )
    return c.vxlan_frame(inner=c.inner_eth(dst=dst) / c.inner_packet())


def inner_vlan_tag(c):
    tpid = c.r.choice([0x8100, 0x88A8])
    tag = Dot1Q(vlan=c.r.randint(0, 4095))
    return c.vxlan_frame(inner=c.inner_eth(type=tpid) / tag / c.inner_packet())


def inner_not_ipv4(c):
    pick = c.r.randint(0, 2)
    if pick == 0:
        body = ARP(op=1, psrc=c.s["n1"]["pod"], pdst=c.s["pod_a"], hwsrc=c.s["n1"]["vtep"])
        return c.vxlan_frame(inner=c.inner_eth() / body)
    if pick == 1:
        return c.vxlan_frame(inner=c.inner_eth() / IPv6(src="fd00::1:2", dst="fd00::2") / c.inner_l4())
    return c.vxlan_frame(inner=c.inner_eth(type=0x88CC) / c.payload(14, 48))


def inner_ipv4_malformed(c):
    pick = c.r.randint(0, 3)
    if pick == 0:
        # Total length past the end of the VXLAN datagram.
        inner = c.inner_packet()
        inner.len = len(inner) + c.r.randint(1, 300)
        return c.vxlan_frame(inner=c.inner_eth() / inner)
    if pick == 1:
        ip = c.inner_ip(len=c.r.randint(0, 19))
    elif pick == 2:
        ip = c.inner_ip(version=c.r.choice([0, 5, 6, 15]))
    else:
        ip = c.inner_ip(ihl=c.r.randint(0, 4))
    return c.vxlan_frame(inner=c.inner_eth() / ip / c.inner_l4())


def inner_ipv4_bad_checksum(c):
    ip = c.inner_ip()
    l4 = c.inner_l4()
    good = IP(raw(ip / l4)).chksum
    ip.chksum = wrong(good)
    # The outer UDP checksum is computed over the final bytes, so only the
    # inner header's checksum is wrong.
    return c.vxlan_frame(inner=c.inner_eth() / ip / l4)


def inner_ttl_0_or_1(c):
    return c.vxlan_frame(inner=c.inner_eth() / c.inner_packet(ttl=c.r.choice([0, 1])))


def inner_no_route(c):
    net = c.r.choice(["10.244.9", "192.0.2", "198.51.100"])
    dst = f"{net}.{c.r.randint(1, 254)}"
    return c.vxlan_frame(inner=c.inner_eth() / c.inner_packet(dst=dst))


def inner_hairpin(c):
    # Back into node 1's own podCIDR: the route leads out where it came in.
    dst = f"{c.s['n1']['pod_net']}.{c.r.randint(2, 254)}"
    return c.vxlan_frame(inner=c.inner_eth() / c.inner_packet(dst=dst))


def ecn_ce_over_not_ect(c):
    dscp = c.r.randint(0, 63) << 2
    return c.vxlan_frame(
        ip=c.outer_ip("n1", tos=dscp | 0b11),
        inner=c.inner_eth() / c.inner_packet(tos=dscp),
    )


def ipip_from_vxlan_node(c):
    return c.ipip_frame("n1")


def vxlan_from_ipip_node(c):
    inner = c.inner_eth() / c.inner_packet(src=c.s["n3"]["pod"])
    return c.vxlan_frame(who="n3", inner=inner)


def ipip_later_fragment(c):
    ip = c.outer_ip("n3", proto=4, flags=c.r.choice([0, "MF"]), frag=c.r.randint(1, 8000))
    return c.outer_eth("n3") / ip / c.payload(8, 64)


def vxlan_from_unknown_peer(c):
    src = c.r.choice([c.sender("x")["ip"], c.s["gw"]["ip"], "198.18.0.200", "203.0.113.7"])
    return c.vxlan_frame(who="x", ip=c.outer_ip("x", src=src))


def ipip_from_unknown_peer(c):
    return c.ipip_frame("x")


FAMILIES = {
    "outer_ipv4_truncated": ("n1", outer_ipv4_truncated),
    "outer_ipv4_length_below_header": ("n1", outer_ipv4_length_below_header),
    "outer_ipv4_bad_checksum": ("n1", outer_ipv4_bad_checksum),
    "outer_ipv4_options": ("n1", outer_ipv4_options),
    "outer_first_fragment": ("n1", outer_first_fragment),
    "outer_not_local": ("n1", outer_not_local),
    "udp_length_beyond_datagram": ("n1", udp_length_beyond_datagram),
    "udp_length_below_header": ("n1", udp_length_below_header),
    "udp_bad_checksum": ("n1", udp_bad_checksum),
    "vxlan_truncated": ("n1", vxlan_truncated),
    "vxlan_without_i_flag": ("n1", vxlan_without_i_flag),
    "vxlan_wrong_vni": ("n1", vxlan_wrong_vni),
    "vxlan_wrong_port": ("n1", vxlan_wrong_port),
    "inner_frame_truncated": ("n1", inner_frame_truncated),
    "inner_wrong_vtep_mac": ("n1", inner_wrong_vtep_mac),
    "inner_vlan_tag": ("n1", inner_vlan_tag),
    "inner_not_ipv4": ("n1", inner_not_ipv4),
    "inner_ipv4_malformed": ("n1", inner_ipv4_malformed),
    "inner_ipv4_bad_checksum": ("n1", inner_ipv4_bad_checksum),
    "inner_ttl_0_or_1": ("n1", inner_ttl_0_or_1),
    "inner_no_route": ("n1", inner_no_route),
    "inner_hairpin": ("n1", inner_hairpin),
    "ecn_ce_over_not_ect": ("n1", ecn_ce_over_not_ect),
    "ipip_from_vxlan_node": ("n1", ipip_from_vxlan_node),
    "vxlan_from_ipip_node": ("n3", vxlan_from_ipip_node),
    "ipip_later_fragment": ("n3", ipip_later_fragment),
    "vxlan_from_unknown_peer": ("x", vxlan_from_unknown_peer),
    "ipip_from_unknown_peer": ("x", ipip_from_unknown_peer),
}


def frames_of(spec, name, count):
    """`count` frames of family `name`: VARIANTS distinct ones, repeated."""
    rnd = random.Random(f"{SEED}/{name}")
    ctx = Ctx(spec, rnd)
    _, build = FAMILIES[name]
    variants = [raw(build(ctx)) for _ in range(VARIANTS)]
    return [variants[i % VARIANTS] for i in range(count)]


def main():
    spec = json.loads(sys.argv[1])
    unknown = sorted(set(spec["families"]) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"unknown families: {unknown}")
    # Build everything first, so sending is not paced by scapy's builders.
    plan = [(name, FAMILIES[name][0], frames_of(spec, name, n)) for name, n in spec["families"].items()]
    sockets = {}
    for who in {who for _, who, _ in plan}:
        s = spec["senders"][who]
        # The socket is bound inside the sender's namespace and stays there.
        with InNetns(s["ns"]):
            sockets[who] = conf.L2socket(iface=s["iface"], promisc=False)
    sent = {}
    start = time.monotonic()
    try:
        for name, who, frames in plan:
            for at in range(0, len(frames), CHUNK):
                chunk = frames[at : at + CHUNK]
                sendp(chunk, socket=sockets[who], verbose=False)
                sent[name] = sent.get(name, 0) + len(chunk)
                time.sleep(PAUSE)
    finally:
        for s in sockets.values():
            s.close()
    print(json.dumps({"sent": sent, "seconds": round(time.monotonic() - start, 2)}))


if __name__ == "__main__":
    main()
