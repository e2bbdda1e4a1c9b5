//! Writes the seed corpus: `cargo run --manifest-path fuzz/Cargo.toml
//! --example gen_corpus [DIR]` (DIR defaults to fuzz/corpus). Replaces the files it
//! owns (`tx-*`, `icmp-*`, `drop-*`, `seed-*`) and leaves anything else alone.
//!
//! Seeds named `tx-*` must be forwarded, `icmp-*` answered with an ICMP
//! error (also a Tx), `drop-*` dropped; the corpus test checks that, so the
//! seeds keep reaching the deep paths as the pipeline changes.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_fuzz::encap_decap_roundtrip::Packet;
use overpass_fuzz::fixture::{GW_UNDERLAY_IP, GW_UNDERLAY_MAC, GW_VTEP_MAC, NODES, NodeDef, PODS};
use overpass_fuzz::net::*;
use overpass_fuzz::pipeline_rx::{encode, encode_spare, encode_tight};

fn main() {
    let root: PathBuf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    write(&root.join("pipeline_rx"), pipeline_rx_seeds());
    write(&root.join("encap_decap_roundtrip"), roundtrip_seeds());
    write(&root.join("wire_views"), wire_views_seeds());
    // Hand-minimised reproducers of the findings (see README.md), next to
    // the corpus directory: fuzz/artifacts-found/TARGET/.
    // They are fixed, so they are regression seeds too (`drop-finding-*`
    // must be dropped; `seed-finding-*` must pass).
    let found = root.parent().unwrap().join("artifacts-found");
    for (target, name, bytes) in findings() {
        let dir = found.join(target);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(name), &bytes).unwrap();
        let seed = match target {
            "pipeline_rx" => format!("drop-finding-{name}"),
            _ => format!("seed-finding-{name}"),
        };
        fs::write(root.join(target).join(seed), bytes).unwrap();
    }
}

/// Minimal inputs for every finding, named after its ID.
fn findings() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let a = PODS[A].ip;
    // vxlan-udp-len: the UDP datagram ends 2 bytes before the inner IPv4
    // packet does; the outer IPv4 length covers both. The gateway delivers
    // the 2 bytes past the UDP datagram as part of the inner packet.
    let mut ip = inner(remote(N1, 8), a, 0);
    ip.ip.proto = 1;
    ip.payload = vec![8, 0, 0xf7, 0xfe, 0, 1, 0, 0];
    let mut f = vxlan_from(N1, &ip.bytes(), false);
    let ulen = be16(&f, 38);
    put16(&mut f, 38, ulen - 2);
    let udp_len_short = encode(0, &f);
    // pod-rxq-hairpin: pod a, on its second RX queue (port 2), to itself.
    let hairpin = encode(2, &pod_frame(A, &inner(a, a, 8).bytes()));
    // icmp-drop-double-count: TTL 1 whose ICMP error cannot be sent back:
    // the packet was counted as TtlExpired by the pipeline and as the
    // send's reason by the worker. (First found from node1 with the
    // unroutable inner source 192.0.2.1; the reverse-path filter now drops
    // that as spoofed first, so the reproducer comes from node4, whose
    // next-hop MAC is unresolved: NeighUnresolved on the way back.)
    let mut ip = inner(remote(N4, 8), a, 8);
    ip.ip.ttl = 1;
    let double = encode(0, &vxlan_from(N4, &ip.bytes(), false));
    // frag-events-on-drop: pod a sends 1451 bytes without DF to node1 (MTU
    // 1450) in a buffer (and spare frames) of exactly its 1465 bytes: the
    // first fragment (64 + 1444 bytes) does not fit a spare frame and the
    // packet is dropped as TooBig, but the gateway had already counted
    // `fragmented` and `fragments_out` (2).
    let mut ip = inner(a, remote(N1, 32), 1450 - 28 + 1);
    ip.ip.flags_frag = 0;
    let frag_events = encode_tight(1, 0, &pod_frame(A, &ip.bytes()));
    let mut mac = vec![0u8; 16];
    mac.extend_from_slice(b"+2:00:00:00:00:01");
    vec![
        ("pipeline_rx", "vxlan-udp-len", udp_len_short),
        ("pipeline_rx", "pod-rxq-hairpin", hairpin),
        ("pipeline_rx", "icmp-drop-double-count", double),
        ("pipeline_rx", "frag-events-on-drop", frag_events),
        ("wire_views", "mac-plus-sign", mac),
    ]
}

fn write(dir: &Path, seeds: Vec<(String, Vec<u8>)>) {
    fs::create_dir_all(dir).unwrap();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if ["tx-", "icmp-", "drop-", "seed-"]
            .iter()
            .any(|s| name.starts_with(s))
        {
            fs::remove_file(&p).unwrap();
        }
    }
    let n = seeds.len();
    for (name, bytes) in seeds {
        fs::write(dir.join(name), bytes).unwrap();
    }
    println!("{}: {n} seeds", dir.display());
}

const N1: usize = 0;
const N2: usize = 1;
const N3: usize = 2;
const N4: usize = 3;
const N5: usize = 4;
const A: usize = 0;
const B: usize = 1;

fn remote(n: usize, host: u8) -> Ipv4Addr {
    let net: ipnet::Ipv4Net = NODES[n].prefixes[0].parse().unwrap();
    let o = net.network().octets();
    Ipv4Addr::new(o[0], o[1], o[2], host)
}

fn from_node(n: &NodeDef) -> Outer {
    Outer {
        src_mac: n.next_hop_mac.unwrap_or(MacAddr([2, 0, 0, 0, 0xbb, 0xbb])),
        dst_mac: GW_UNDERLAY_MAC,
        src_ip: n.ip,
        dst_ip: GW_UNDERLAY_IP,
    }
}

/// An inner UDP packet `src → dst` with `n` payload bytes.
fn inner(src: Ipv4Addr, dst: Ipv4Addr, n: usize) -> Ip4Packet {
    Ip4Packet {
        ip: Ip4::new(src, dst, PROTO_UDP),
        payload: inner_udp(&(0..n).map(|i| i as u8).collect::<Vec<_>>()),
    }
}

struct Ip4Packet {
    ip: Ip4,
    payload: Vec<u8>,
}

impl Ip4Packet {
    fn bytes(&self) -> Vec<u8> {
        self.ip.packet(&self.payload)
    }
}

/// VXLAN from node `n` carrying `p` in an inner frame to our VTEP.
fn vxlan_from(n: usize, p: &[u8], csum: bool) -> Vec<u8> {
    let node = &NODES[n];
    let inner_frame = eth(GW_VTEP_MAC, node.vtep_mac, ETHERTYPE_IPV4, p);
    vxlan_frame(
        &from_node(node),
        51000,
        node.port,
        node.vni,
        &inner_frame,
        csum,
    )
}

fn pod_frame(pod: usize, p: &[u8]) -> Vec<u8> {
    eth(PODS[pod].host_mac, PODS[pod].mac, ETHERTYPE_IPV4, p)
}

fn pipeline_rx_seeds() -> Vec<(String, Vec<u8>)> {
    let (a, b) = (PODS[A].ip, PODS[B].ip);
    let mut s: Vec<(String, Vec<u8>)> = vec![];
    let mut add = |name: &str, bytes: Vec<u8>| s.push((name.to_string(), bytes));

    // Underlay → pod (decap).
    let p = inner(remote(N1, 5), a, 32).bytes();
    add(
        "tx-vxlan-node1-to-pod-a",
        encode(0, &vxlan_from(N1, &p, false)),
    );
    let p = inner(remote(N2, 6), b, 100).bytes();
    add(
        "tx-vxlan-node2-vni4096-udpcsum-to-pod-b",
        encode(0, &vxlan_from(N2, &p, true)),
    );
    let mut ip = inner(remote(N1, 7), a, 12);
    ip.ip.options = vec![1, 1, 1, 0];
    ip.ip.tos = 0xb9;
    add(
        "tx-vxlan-node1-inner-options-to-pod-a",
        encode(0, &vxlan_from(N1, &ip.bytes(), false)),
    );
    let mut ip = inner(remote(N1, 8), a, 0);
    ip.ip.proto = 1;
    ip.payload = vec![8, 0, 0xf7, 0xfe, 0, 1, 0, 0];
    add(
        "tx-vxlan-node1-icmp-echo-to-pod-a",
        encode(0, &vxlan_from(N1, &ip.bytes(), false)),
    );
    let p = inner(remote(N3, 9), b, 64).bytes();
    add(
        "tx-ipip-node3-to-pod-b",
        encode(0, &ipip_frame(&from_node(&NODES[N3]), &p)),
    );
    // Padded to the 60-byte Ethernet minimum: padding must be ignored.
    let p = inner(remote(N3, 10), a, 0).bytes();
    let mut f = ipip_frame(&from_node(&NODES[N3]), &p);
    f.resize(60.max(f.len() + 4), 0);
    add("tx-ipip-node3-padded-to-pod-a", encode(0, &f));

    let mut ip = inner(remote(N1, 15), a, 16);
    ip.ip.ttl = 1;
    add(
        "icmp-vxlan-node1-ttl1-time-exceeded",
        encode(0, &vxlan_from(N1, &ip.bytes(), false)),
    );
    let mut ip = inner(remote(N2, 16), remote(N3, 17), 1400);
    ip.ip.ttl = 9;
    add(
        "icmp-vxlan-node2-to-node3-frag-needed",
        encode(0, &vxlan_from(N2, &ip.bytes(), false)),
    );
    // RFC 6040: outer CE over inner ECT(0) → CE; over Not-ECT → drop.
    let mut ip = inner(remote(N1, 18), b, 16);
    ip.ip.tos = 0x2a;
    let mut f = vxlan_from(N1, &ip.bytes(), false);
    f[ETH_LEN + 1] = 0x03;
    fix_ip_checksum(&mut f, ETH_LEN);
    add("tx-vxlan-outer-ce-inner-ect0", encode(0, &f));
    let ip = inner(remote(N1, 19), b, 16);
    let mut f = vxlan_from(N1, &ip.bytes(), false);
    f[ETH_LEN + 1] = 0x03;
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-vxlan-outer-ce-inner-not-ect", encode(0, &f));

    // Strict reverse path: the inner source must route back to the sender.
    let p = inner(remote(N2, 40), a, 16).bytes();
    add(
        "drop-vxlan-node1-inner-source-of-node2",
        encode(0, &vxlan_from(N1, &p, false)),
    );
    let p = inner(Ipv4Addr::new(192, 0, 2, 1), a, 16).bytes();
    add(
        "drop-vxlan-node1-inner-source-unrouted",
        encode(0, &vxlan_from(N1, &p, false)),
    );
    let p = inner(remote(N1, 41), a, 16).bytes();
    add(
        "drop-ipip-node3-inner-source-of-node1",
        encode(0, &ipip_frame(&from_node(&NODES[N3]), &p)),
    );
    // 172.16.5.0/24 (node3) is more specific than node2's 172.16.0.0/12.
    let p = inner(Ipv4Addr::new(172, 16, 5, 1), a, 16).bytes();
    add(
        "drop-vxlan-node2-inner-source-in-node3-more-specific",
        encode(0, &vxlan_from(N2, &p, false)),
    );
    let p = inner(Ipv4Addr::new(172, 16, 6, 1), a, 16).bytes();
    add(
        "tx-vxlan-node2-inner-source-in-its-12-to-pod-a",
        encode(0, &vxlan_from(N2, &p, false)),
    );
    let p = inner(Ipv4Addr::new(172, 16, 5, 1), b, 16).bytes();
    add(
        "tx-ipip-node3-inner-source-in-its-24-to-pod-b",
        encode(0, &ipip_frame(&from_node(&NODES[N3]), &p)),
    );

    // Underlay → underlay (transit).
    let p = inner(remote(N1, 11), remote(N2, 12), 40).bytes();
    add(
        "tx-vxlan-node1-transit-node2",
        encode(0, &vxlan_from(N1, &p, false)),
    );
    let p = inner(remote(N2, 13), Ipv4Addr::new(172, 16, 5, 9), 40).bytes();
    add(
        "tx-vxlan-node2-transit-node3-ipip",
        encode(0, &vxlan_from(N2, &p, false)),
    );
    let p = inner(remote(N3, 14), Ipv4Addr::new(10, 245, 3, 4), 40).bytes();
    add(
        "tx-ipip-node3-transit-node1-vxlan",
        encode(0, &ipip_frame(&from_node(&NODES[N3]), &p)),
    );

    // Pod → node (encap), pod → pod.
    add(
        "tx-pod-a-to-node1",
        encode(1, &pod_frame(A, &inner(a, remote(N1, 20), 56).bytes())),
    );
    add(
        "tx-pod-a-queue2-to-node2",
        encode(2, &pod_frame(A, &inner(a, remote(N2, 21), 200).bytes())),
    );
    add(
        "tx-pod-b-to-node3-ipip",
        encode(3, &pod_frame(B, &inner(b, remote(N3, 22), 80).bytes())),
    );
    add(
        "tx-pod-b-queue4-to-node2-via-12",
        encode(
            4,
            &pod_frame(B, &inner(b, Ipv4Addr::new(172, 20, 1, 1), 8).bytes()),
        ),
    );
    add(
        "tx-pod-a-to-pod-b",
        encode(1, &pod_frame(A, &inner(a, b, 30).bytes())),
    );
    add(
        "tx-pod-b-queue4-to-pod-a",
        encode(4, &pod_frame(B, &inner(b, a, 30).bytes())),
    );
    let full = 1450 - 28;
    add(
        "tx-pod-a-to-node1-mtu",
        encode(1, &pod_frame(A, &inner(a, remote(N1, 23), full).bytes())),
    );
    let f = pod_frame(A, &inner(a, remote(N1, 24), 64).bytes());
    add("tx-pod-a-to-node1-tight-buffer", encode_tight(1, 7, &f));
    add("drop-pod-a-to-node1-no-room", encode_tight(1, 1, &f));

    // Drops: pod side.
    add(
        "icmp-pod-a-to-node1-frag-needed",
        encode(
            1,
            &pod_frame(A, &inner(a, remote(N1, 25), full + 1).bytes()),
        ),
    );
    add(
        "icmp-pod-b-to-node3-frag-needed",
        encode(
            3,
            &pod_frame(B, &inner(b, remote(N3, 25), 1400 - 27).bytes()),
        ),
    );
    add(
        "drop-pod-a-to-node4-unresolved",
        encode(1, &pod_frame(A, &inner(a, remote(N4, 26), 8).bytes())),
    );
    add(
        "drop-pod-a-no-route",
        encode(
            1,
            &pod_frame(A, &inner(a, Ipv4Addr::new(10, 244, 0, 99), 8).bytes()),
        ),
    );
    add(
        "drop-pod-a-to-itself",
        encode(1, &pod_frame(A, &inner(a, a, 8).bytes())),
    );
    let mut ip = inner(a, remote(N1, 27), 8);
    ip.ip.ttl = 1;
    add(
        "icmp-pod-a-ttl1-time-exceeded",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    let mut ip = inner(a, remote(N1, 32), full + 1);
    ip.ip.flags_frag = 0;
    let f = pod_frame(A, &ip.bytes());
    add("tx-frag-pod-a-to-node1-no-df", encode(1, &f));
    add(
        "tx-frag-pod-a-to-node1-one-spare-frame",
        encode_spare(1, 1, &f),
    );
    add("drop-frag-no-frame-pod-a-to-node1", encode_spare(1, 0, &f));
    // Tight buffers: the spare frames are as small as the received one.
    add(
        "tx-frag-pod-a-to-node1-tight-buffer",
        encode_tight(1, 7, &f),
    );

    // Fragmentation (no DF, over the next hop's MTU).
    // Pod → node5 (MTU 576): 4 pieces, a copied option (router alert), an
    // uncopied one (record route), a NOP.
    let mut ip = inner(a, remote(N5, 2), 1700);
    ip.ip.flags_frag = 0;
    ip.ip.options = vec![0x94, 4, 0, 0, 7, 7, 4, 0, 0, 0, 0, 1];
    let f = pod_frame(A, &ip.bytes());
    add(
        "tx-frag-pod-a-to-node5-options-4-pieces",
        encode_spare(1, 3, &f),
    );
    add(
        "drop-frag-no-frame-pod-a-to-node5-2-of-3",
        encode_spare(1, 2, &f),
    );
    // A malformed option list: ends at the bad option past the first piece.
    let mut ip = inner(a, remote(N5, 3), 1200);
    ip.ip.flags_frag = 0;
    ip.ip.options = vec![7, 3, 4, 0x44, 0x20, 0, 0, 0];
    add(
        "tx-frag-pod-a-to-node5-malformed-options",
        encode(2, &pod_frame(A, &ip.bytes())),
    );
    // 2 pieces with options: the last (the received buffer) loses the
    // uncopied one.
    let mut ip = inner(a, remote(N1, 5), 1480);
    ip.ip.flags_frag = 0;
    ip.ip.options = vec![0x44, 8, 5, 0, 0, 0, 0, 0, 0x94, 4, 0, 0];
    add(
        "tx-frag-pod-a-to-node1-options-2-pieces",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    // Pod → IP-in-IP node3 (MTU 1400).
    let mut ip = inner(b, remote(N3, 4), 1500);
    ip.ip.flags_frag = 0;
    add(
        "tx-frag-pod-b-to-node3-ipip",
        encode(3, &pod_frame(B, &ip.bytes())),
    );
    // Over a pod's veth MTU (a 1500, b 1480): decap and pod → pod.
    let mut ip = inner(remote(N1, 44), a, 1600);
    ip.ip.flags_frag = 0;
    add(
        "tx-frag-vxlan-node1-to-pod-a",
        encode(0, &vxlan_from(N1, &ip.bytes(), false)),
    );
    ip.ip.flags_frag = 0x4000;
    add(
        "icmp-vxlan-node1-to-pod-a-frag-needed",
        encode(0, &vxlan_from(N1, &ip.bytes(), false)),
    );
    let mut ip = inner(remote(N3, 45), b, 1490);
    ip.ip.flags_frag = 0;
    add(
        "tx-frag-ipip-node3-to-pod-b",
        encode(0, &ipip_frame(&from_node(&NODES[N3]), &ip.bytes())),
    );
    let mut ip = inner(a, b, 1460);
    ip.ip.flags_frag = 0;
    add(
        "tx-frag-pod-a-to-pod-b",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    ip.ip.flags_frag = 0x4000;
    add(
        "icmp-pod-a-to-pod-b-frag-needed",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    // Transit of a middle fragment (MF, offset 2960) with options,
    // IP-in-IP → VXLAN node5: offsets continue from 2960, MF stays.
    let mut ip = inner(remote(N3, 46), remote(N5, 47), 1300);
    ip.ip.flags_frag = 0x2000 | (2960 / 8);
    ip.ip.options = vec![0x94, 4, 0, 0, 0x44, 4, 5, 0];
    add(
        "tx-frag-ipip-node3-transit-node5-middle-fragment",
        encode(0, &ipip_frame(&from_node(&NODES[N3]), &ip.bytes())),
    );
    // Too big, no DF, but TTL 1: time exceeded, not fragments.
    let mut ip = inner(a, remote(N1, 48), full + 1);
    ip.ip.flags_frag = 0;
    ip.ip.ttl = 1;
    add(
        "icmp-pod-a-no-df-too-big-ttl1-time-exceeded",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    // A fragment whose pieces would reach past 65535 bytes: malformed.
    let mut ip = inner(a, remote(N1, 49), 1448);
    ip.ip.flags_frag = ((65528 - 1448) / 8) as u16;
    add(
        "drop-frag-past-64k-pod-a-to-node1",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    let mut ip = inner(a, remote(N1, 33), 8);
    ip.ip.ttl = 1;
    ip.ip.flags_frag = 0x2000 | 0x10;
    add(
        "drop-pod-a-ttl1-non-initial-fragment",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    let mut ip = inner(a, remote(N1, 34), 0);
    ip.ip.ttl = 1;
    ip.ip.proto = 1;
    ip.payload = vec![11, 0, 0xf4, 0xff, 0, 0, 0, 0];
    add(
        "drop-pod-a-ttl1-icmp-error-about-icmp-error",
        encode(1, &pod_frame(A, &ip.bytes())),
    );
    add(
        "drop-pod-a-spoofed",
        encode(1, &pod_frame(A, &inner(b, remote(N1, 28), 8).bytes())),
    );
    add(
        "drop-port5-no-pod",
        encode(5, &pod_frame(A, &inner(a, remote(N1, 29), 8).bytes())),
    );
    let mut f = pod_frame(A, &inner(a, remote(N1, 30), 8).bytes());
    f[ETH_LEN + 10] ^= 0x55;
    add("drop-pod-a-bad-checksum", encode(1, &f));
    let mut f = pod_frame(A, &inner(a, remote(N1, 31), 8).bytes());
    put16(&mut f, 12, 0x0806);
    add("drop-pod-a-arp", encode(1, &f));
    add("drop-short", encode(1, &[0xff; 10]));
    add("drop-empty-on-underlay", encode(0, &[]));

    // Drops: underlay side.
    let p = inner(remote(N1, 40), a, 8).bytes();
    let good = vxlan_from(N1, &p, false);
    let mut f = good.clone();
    f[ETH_LEN + 10] ^= 0xff;
    add("drop-vxlan-bad-outer-checksum", encode(0, &f));
    let f = vxlan_from(N1, &p, true);
    let mut g = f.clone();
    g[f.len() - 1] ^= 1;
    add("drop-vxlan-bad-udp-checksum", encode(0, &g));
    let mut f = good.clone();
    f[42] = 0;
    add("drop-vxlan-no-i-flag", encode(0, &f));
    let mut f = good.clone();
    f[42] = 0xff;
    f[49] = 0xff;
    add("tx-vxlan-reserved-bits-set", encode(0, &f));
    let mut f = good.clone();
    f[48] = 2;
    add("drop-vxlan-wrong-vni", encode(0, &f));
    let mut f = good.clone();
    put16(&mut f, 36, 4789);
    add("drop-vxlan-wrong-port", encode(0, &f));
    let mut f = good.clone();
    f[50..56].copy_from_slice(&[2, 0, 0, 0, 0, 0x99]);
    add("drop-vxlan-inner-dst-mac", encode(0, &f));
    let mut f = good.clone();
    put16(&mut f, 62, 0x8100);
    add("drop-vxlan-inner-vlan", encode(0, &f));
    let mut f = good.clone();
    f[26..30].copy_from_slice(&[198, 18, 0, 99]);
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-vxlan-unknown-peer", encode(0, &f));
    let mut f = good.clone();
    f[30..34].copy_from_slice(&[198, 18, 0, 2]);
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-vxlan-not-for-us", encode(0, &f));
    let mut f = good.clone();
    put16(&mut f, 20, 0x2000);
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-vxlan-outer-fragment", encode(0, &f));
    let ipip_from_vxlan_node = ipip_frame(&from_node(&NODES[N1]), &p);
    add(
        "drop-ipip-from-vxlan-node",
        encode(0, &ipip_from_vxlan_node),
    );
    let p2 = inner(remote(N2, 41), a, 8).bytes();
    let mut f = vxlan_from(N2, &p2, false);
    // Made to look like it came from the IP-in-IP node.
    f[26..30].copy_from_slice(&NODES[N3].ip.octets());
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-vxlan-from-ipip-node", encode(0, &f));
    let p3 = inner(remote(N1, 42), remote(N1, 43), 8).bytes();
    add(
        "drop-vxlan-node1-hairpin",
        encode(0, &vxlan_from(N1, &p3, false)),
    );
    let mut f = good.clone();
    let outer_len = be16(&f, 16);
    put16(&mut f, 16, outer_len + 4);
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-vxlan-outer-length-past-frame", encode(0, &f));
    let mut f = good.clone();
    put16(&mut f, 38, 4);
    add("drop-vxlan-udp-length-below-header", encode(0, &f));
    let mut f = good.clone();
    f[ETH_LEN + 9] = 6;
    fix_ip_checksum(&mut f, ETH_LEN);
    add("drop-underlay-tcp", encode(0, &f));
    let mut f = good.clone();
    put16(&mut f, 12, 0x86dd);
    add("drop-underlay-ipv6", encode(0, &f));
    s
}

fn roundtrip_seeds() -> Vec<(String, Vec<u8>)> {
    let mut s = vec![];
    let base = Packet {
        src_pod: 0,
        rx_queue: 0,
        prefix: 0,
        host: 5,
        ip: Ip4 {
            tos: 0,
            ident: 0x1234,
            flags_frag: 0x4000,
            ttl: 64,
            proto: PROTO_UDP,
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            options: vec![],
        },
        payload: inner_udp(b"overpass round trip"),
        reply_pod: 0,
        reply_sport: 50000,
        reply_udp_csum: false,
    };
    // Prefix order: node1 ×2, node2 ×2, node3 ×2, node5 (see remote_prefixes).
    for prefix in 0..6 {
        let mut p = base.clone();
        p.prefix = prefix;
        p.host = 0x0102_0304 * prefix as u32 + 7;
        p.src_pod = prefix % 2;
        p.reply_pod = (prefix / 2) % 2;
        p.rx_queue = (prefix / 3) % 2;
        s.push((format!("seed-prefix{prefix}"), p.encode()));
    }
    let mut p = base.clone();
    p.ip.ttl = 2;
    s.push(("seed-ttl2-expires-on-return".into(), p.encode()));
    let mut p = base.clone();
    p.ip.ttl = 3;
    p.ip.tos = 0xff;
    p.ip.flags_frag = 0x2000 | 0x0123;
    p.ip.proto = 1;
    p.ip.options = vec![0x94, 0x04, 0, 0, 1, 1, 1, 0];
    p.reply_udp_csum = true;
    p.prefix = 2;
    s.push(("seed-ttl3-options-fragment-udpcsum".into(), p.encode()));
    let mut p = base.clone();
    p.payload = (0..1600).map(|i| (i * 7) as u8).collect();
    p.prefix = 4;
    s.push(("seed-ipip-max-payload".into(), p.encode()));
    // Without DF, over the tunnel MTU: fragmented out, each fragment back.
    let mut p = base.clone();
    p.prefix = 6;
    p.host = 77;
    s.push(("seed-prefix6".into(), p.encode()));
    p.ip.flags_frag = 0;
    p.ip.options = vec![0x94, 4, 0, 0, 7, 3, 4, 1];
    p.payload = (0..1800).map(|i| (i * 11) as u8).collect();
    p.reply_pod = 1;
    s.push(("seed-no-df-node5-4-fragments".into(), p.encode()));
    let mut p = base.clone();
    p.ip.flags_frag = 0x2000 | 0x100;
    p.payload = (0..1700).map(|i| (i * 3) as u8).collect();
    p.prefix = 4;
    s.push(("seed-no-df-ipip-middle-fragment".into(), p.encode()));
    let mut p = base.clone();
    p.ip.flags_frag = 0;
    p.ip.ttl = 2;
    p.payload = (0..1500).map(|i| (i * 5) as u8).collect();
    s.push(("seed-no-df-fragmented-ttl2".into(), p.encode()));
    let mut p = base.clone();
    p.ip.flags_frag = ((65528 - 1448) / 8) as u16;
    p.payload = vec![0x5a; 1456];
    s.push(("seed-fragment-past-64k".into(), p.encode()));
    let mut p = base;
    p.payload = (0..1600).map(|i| (i * 13) as u8).collect();
    p.ip.ttl = 255;
    s.push(("seed-vxlan-max-payload".into(), p.encode()));
    s
}

fn wire_views_seeds() -> Vec<(String, Vec<u8>)> {
    let params = |tail: &[u8]| {
        let mut v = vec![
            10, 0, 0, 1, 10, 0, 0, 2, 64, 0xb8, 3, 0x81, 0x05, 0xd0, 0x10, 0x00,
        ];
        v.extend_from_slice(tail);
        v
    };
    let (a, b) = (PODS[A].ip, remote(N1, 9));
    let ip = inner(a, b, 16).bytes();
    let mut opts = inner(a, b, 4);
    opts.ip.options = vec![1, 1, 1, 1, 0x94, 4, 0, 0];
    let vx = vxlan_from(N1, &ip, true);
    vec![
        ("seed-ipv4-udp".into(), params(&ip)),
        ("seed-ipv4-options".into(), params(&opts.bytes())),
        ("seed-udp".into(), params(&ip[IP_LEN..])),
        ("seed-vxlan-header".into(), params(&vx[42..])),
        ("seed-ethernet-frame".into(), params(&vx)),
        ("seed-mac-string".into(), params(b"02:00:00:00:00:0A")),
        ("seed-short".into(), params(&[0x45, 0, 0])),
    ]
}
