//! Criterion micro-benchmarks of the pure packet path: header parsing with
//! the `overpass_dataplane::wire` views, `Pipeline::process` for decap / encap /
//! transit on prepared frames, and longest-prefix match at 10k and 1M
//! random prefixes against the `prefix-trie` crate on the same set.
//!
//! ICMP generation: a VXLAN frame whose inner TTL is 1 becomes an ICMP
//! time-exceeded message back to the sender (the pipeline's clock is
//! advanced 1 ms per packet so its rate limiter always has a token).
//!
//! `cargo bench -p overpass-micro --bench micro`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ipnet::Ipv4Net;
use overpass_dataplane::counters::Counters;
use overpass_dataplane::fib::{Encap, Lpm};
use overpass_dataplane::io::{NoSpare, Verdict};
use overpass_dataplane::pipeline::Pipeline;
use overpass_dataplane::wire::{ethernet, ipv4, udp, vxlan};
use overpass_micro::micro::{self, Direction};

/// Parses a VXLAN frame down to the inner IPv4 header the way the pipeline
/// does (checked views, checksum verification of both IPv4 headers).
fn parse_vxlan(frame: &[u8]) -> Option<u32> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if !ip.verify_checksum() {
        return None;
    }
    let u = udp::Packet::new_checked(ip.payload()).ok()?;
    let vx = vxlan::Header::new_checked(u.payload()).ok()?;
    if !vx.has_vni_flag() {
        return None;
    }
    let inner = ethernet::Frame::new_checked(&u.payload()[8..]).ok()?;
    let iip = ipv4::Packet::new_checked(inner.payload()).ok()?;
    iip.verify_checksum()
        .then(|| u32::from(iip.dst_addr()) ^ vx.vni())
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Elements(1));
    let (_, vx) = Direction::DecapVxlan.frame(64);
    g.bench_function("vxlan_to_inner_ipv4_64B", |b| {
        b.iter(|| parse_vxlan(black_box(&vx.bytes)))
    });
    let (_, pod) = Direction::EncapVxlan.frame(64);
    g.bench_function("pod_ethernet_ipv4_64B", |b| {
        b.iter(|| {
            let eth = ethernet::Frame::new_checked(black_box(&pod.bytes[..])).ok()?;
            let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
            ip.verify_checksum().then(|| ip.dst_addr())
        })
    });
    g.finish();
}

fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(1));
    for (name, dir, n2) in [
        ("decap_vxlan", Direction::DecapVxlan, Encap::Vxlan),
        ("decap_ipip", Direction::DecapIpip, Encap::Ipip),
        ("encap_vxlan", Direction::EncapVxlan, Encap::Vxlan),
        ("encap_ipip", Direction::EncapIpip, Encap::Ipip),
        ("transit_vxlan_vxlan", Direction::Transit, Encap::Vxlan),
    ] {
        for size in [64usize, 1400] {
            let table = micro::table(n2, 0);
            let counters = Counters::default();
            let mut p = Pipeline::new(0);
            let (port, t) = dir.frame(size);
            // Sanity: the prepared frame really is forwarded.
            let mut buf = vec![0u8; 2048];
            let v = micro::process(&mut p, &table, &counters, port, &t, &mut buf);
            assert!(matches!(v, Verdict::Tx { .. }), "{name}: {v:?}");
            g.bench_function(format!("{name}_{size}B"), |b| {
                b.iter_batched_ref(
                    || {
                        let mut buf = vec![0u8; 2048];
                        buf[..t.bytes.len()].copy_from_slice(&t.bytes);
                        buf
                    },
                    |buf| p.process(&table, &counters, port, buf, t.bytes.len(), &mut NoSpare),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

fn icmp(c: &mut Criterion) {
    let mut g = c.benchmark_group("icmp");
    g.throughput(Throughput::Elements(1));
    let table = micro::table(Encap::Vxlan, 0);
    let counters = Counters::default();
    let mut p = Pipeline::new(0);
    for size in [64usize, 1400] {
        let (port, mut t) = Direction::DecapVxlan.frame(size);
        // Inner TTL 1 (and a fixed-up inner header checksum).
        let ip = t.inner_ip;
        t.bytes[ip + 8] = 1;
        t.bytes[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        let sum = overpass_micro::frames::ip_checksum(&t.bytes[ip..ip + 20]);
        t.bytes[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
        let mut now = 0u64;
        let mut buf = vec![0u8; 2048];
        p.set_clock(now);
        let v = micro::process(&mut p, &table, &counters, port, &t, &mut buf);
        assert!(
            matches!(v, Verdict::Tx { port: 0, .. }),
            "TTL 1 must produce an ICMP error back: {v:?}"
        );
        g.bench_function(format!("time_exceeded_from_vxlan_{size}B"), |b| {
            b.iter_batched_ref(
                || {
                    let mut buf = vec![0u8; 2048];
                    buf[..t.bytes.len()].copy_from_slice(&t.bytes);
                    buf
                },
                |buf| {
                    now += 1_000_000;
                    p.set_clock(now);
                    p.process(&table, &counters, port, buf, t.bytes.len(), &mut NoSpare)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn lpm(c: &mut Criterion) {
    let mut g = c.benchmark_group("lpm");
    g.throughput(Throughput::Elements(1));
    for n in [10_000usize, 1_000_000] {
        let prefixes = micro::random_prefixes(n, 42);
        let addrs = micro::lookups_in(&prefixes, 1 << 16, 7);
        let mask = addrs.len() - 1;
        let ours = Lpm::build(prefixes.iter().enumerate().map(|(i, p)| (*p, i as u32)));
        let mut theirs: prefix_trie::PrefixMap<Ipv4Net, u32> = prefix_trie::PrefixMap::new();
        for (i, p) in prefixes.iter().enumerate() {
            theirs.insert(*p, i as u32);
        }
        let nets: Vec<Ipv4Net> = addrs
            .iter()
            .map(|a| Ipv4Net::new(Ipv4Addr::from(*a), 32).expect("/32"))
            .collect();
        // Both agree on every lookup address (same prefix set, same answer).
        for (a, n) in addrs.iter().zip(&nets).take(4096) {
            assert_eq!(ours.lookup(*a), theirs.get_lpm(n).map(|(_, v)| *v));
        }
        let mut i = 0usize;
        g.bench_function(format!("overpass_dir16_8_8_{n}"), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                ours.lookup(black_box(addrs[i]))
            })
        });
        let mut i = 0usize;
        g.bench_function(format!("prefix_trie_{n}"), |b| {
            b.iter(|| {
                i = (i + 1) & mask;
                theirs.get_lpm(black_box(&nets[i])).map(|(_, v)| *v)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, parse, pipeline, icmp, lpm);
criterion_main!(benches);
