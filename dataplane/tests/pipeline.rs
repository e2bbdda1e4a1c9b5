//! The pipeline against the fixture table (exact output bytes, verdicts,
//! counters) and its cross-cutting properties: fragmentation, ICMP rate
//! limits, flow hashing, no panics. The same table runs through the XDP
//! program in the gateway's `xdp_fixtures` test.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use overpass_dataplane::counters::{CounterKind, Counters, DropReason, Event, Snapshot};
use overpass_dataplane::fib::{PortId, RouteTable, UNDERLAY_PORT};
use overpass_dataplane::io::{MemIo, NoSpare, PacketIo, Verdict};
use overpass_dataplane::pipeline::{
    ICMP_BURST, ICMP_RATE, ICMP_SOURCE_BURST, ICMP_SOURCE_RATE, Pipeline, RpFilter, SRC_PORT_MIN,
    VXLAN_INNER_IP,
};
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_testkit::fixtures::{self, Expect, Ip};

/// Buffer capacity an AF_XDP frame offers (2048 − 256 headroom).
const CAP: usize = 1792;

/// Ports [`run`]'s I/O offers (the fixtures use 0–2; tests probe up
/// to 9).
const PORTS: usize = 10;

/// Runs one frame through the pipeline over a [`MemIo`] with `spare`
/// free frames, as the worker does. Returns the verdict, every frame
/// sent on the verdict's port (spare frames first, in order), and the
/// counters.
fn run_spare(
    table: &RouteTable,
    port: PortId,
    input: &[u8],
    spare: usize,
) -> (Verdict, Vec<Vec<u8>>, Snapshot) {
    let counters = Counters::default();
    let mut p = Pipeline::new(0);
    let mut io = MemIo::new(PORTS, CAP);
    io.spare_frames = spare;
    io.push(port, input);
    io.poll(|port, buf, len, spare| p.process(table, &counters, port, buf, len, spare));
    let (_, v) = io.verdicts[0];
    let out = match v {
        Verdict::Tx { port, .. } => std::mem::take(&mut io.output[port as usize]),
        Verdict::Drop(_) => {
            let sent: usize = io.output.iter().map(Vec::len).sum();
            assert_eq!(sent, 0, "a dropped packet sent spare frames");
            vec![]
        }
    };
    (v, out, counters.snapshot())
}

fn run(table: &RouteTable, port: PortId, input: &[u8]) -> (Verdict, Vec<u8>, Snapshot) {
    let (v, mut out, snap) = run_spare(table, port, input, usize::MAX);
    assert!(out.len() <= 1, "{} frames out for one", out.len());
    (v, out.pop().unwrap_or_default(), snap)
}

/// Checks one fixture's output frame against the expected bytes.
fn check_frame(name: &str, got: &[u8], want: &[u8], sport_is_hash: bool) {
    let mut got = got.to_vec();
    if sport_is_hash {
        let sport = u16::from_be_bytes([got[34], got[35]]);
        assert!(sport >= SRC_PORT_MIN, "{name}: source port {sport}");
        got[34..36].copy_from_slice(&[0, 0]);
    }
    assert_eq!(got, want, "{name}: output bytes differ");
}

#[test]
fn fixture_table() {
    let table = fixtures::table();
    let all = fixtures::all();
    assert!(all.len() >= 40, "{} fixtures", all.len());
    for f in &all {
        let (verdict, out, snap) = run_spare(&table, f.port, &f.input, usize::MAX);
        match &f.expect {
            Expect::Drop(reason) => {
                assert_eq!(verdict, Verdict::Drop(*reason), "{}", f.name);
                assert_eq!(snap.drop_count(*reason), 1, "{}", f.name);
                assert_eq!(snap.total_drops(), 1, "{}", f.name);
            }
            Expect::Tx {
                port,
                frame,
                event,
                sport_is_hash,
                also_dropped,
            } => {
                assert_eq!(
                    verdict,
                    Verdict::Tx {
                        port: *port,
                        len: frame.len()
                    },
                    "{}",
                    f.name
                );
                assert_eq!(out.len(), 1, "{}", f.name);
                check_frame(f.name, &out[0], frame, *sport_is_hash);
                assert_eq!(snap.event_count(*event), 1, "{}", f.name);
                assert_eq!(snap.event_count(Event::Fragmented), 0, "{}", f.name);
                match also_dropped {
                    Some(r) => {
                        assert_eq!(snap.drop_count(*r), 1, "{}", f.name);
                        assert_eq!(snap.total_drops(), 1, "{}", f.name);
                    }
                    None => assert_eq!(snap.total_drops(), 0, "{}", f.name),
                }
            }
            Expect::Fragments {
                port,
                frames,
                event,
                sport_is_hash,
            } => {
                let last = frames.last().expect("fragments").len();
                assert_eq!(
                    verdict,
                    Verdict::Tx {
                        port: *port,
                        len: last
                    },
                    "{}",
                    f.name
                );
                assert_eq!(out.len(), frames.len(), "{}: fragment count", f.name);
                for (i, (got, want)) in out.iter().zip(frames).enumerate() {
                    check_frame(&format!("{} #{i}", f.name), got, want, *sport_is_hash);
                }
                let n = frames.len() as u64;
                assert_eq!(snap.event_count(*event), n, "{}", f.name);
                assert_eq!(snap.event_count(Event::Fragmented), 1, "{}", f.name);
                assert_eq!(snap.event_count(Event::FragmentsOut), n, "{}", f.name);
                assert_eq!(snap.total_drops(), 0, "{}", f.name);
            }
        }
    }
}

/// With too few free frames for every fragment, nothing is sent and the
/// packet counts once under `frag_no_frame`.
#[test]
fn fragmentation_without_enough_spare_frames_sends_nothing() {
    let table = fixtures::table();
    let frags: Vec<_> = fixtures::all()
        .into_iter()
        .filter_map(|f| match &f.expect {
            Expect::Fragments { frames, .. } => Some((f.clone(), frames.len())),
            _ => None,
        })
        .collect();
    assert!(!frags.is_empty());
    for (f, n) in frags {
        let (v, out, snap) = run_spare(&table, f.port, &f.input, n - 2);
        assert_eq!(v, Verdict::Drop(DropReason::FragNoFrame), "{}", f.name);
        assert!(out.is_empty());
        assert_eq!(snap.total_drops(), 1, "{}", f.name);
        assert_eq!(snap.event_count(Event::FragmentsOut), 0, "{}", f.name);
        let (v, out, _) = run_spare(&table, f.port, &f.input, n - 1);
        assert!(matches!(v, Verdict::Tx { .. }), "{}: {v:?}", f.name);
        assert_eq!(out.len(), n, "{}", f.name);
    }
}

/// A small tunnel MTU cuts a packet with options into several
/// fragments: the middle ones carry only the copied options, offsets
/// step by the 8-byte-aligned chunk, and each is encapsulated alone.
#[test]
fn fragments_into_many_pieces_with_options() {
    use fixtures::{Cut, Ip, N1, PA};
    let mut routes = fixtures::routes();
    routes[0].node.as_mut().unwrap().mtu = Some(576);
    let table = fixtures::table_of(&routes);
    // Router alert (copied), timestamp (not copied), end of list.
    let options = [0x94, 4, 0, 0, 0x44, 4, 5, 0];
    let ip = Ip::pods(PA.ip, N1.pod).df(false);
    let data = fixtures::pod_payload(1400);
    let input = &fixtures::fragments(&ip, &options, &data, Cut::mtu(1500))[0];
    let (v, out, snap) = run_spare(&table, PA.port, &fixtures::from_pod(&PA, input), 8);
    let want = fixtures::fragments(&ip.ttl(63), &options, &data, Cut::mtu(576));
    assert_eq!(want.len(), 3);
    assert!(matches!(v, Verdict::Tx { port: 0, .. }), "{v:?}");
    assert_eq!(out.len(), 3);
    for (i, (got, want)) in out.iter().zip(&want).enumerate() {
        // The inner packet byte for byte (checksum included); the
        // outer headers are the fixture table's business.
        assert_eq!(&got[VXLAN_INNER_IP..], &want[..], "fragment {i}");
        assert!(got.len() - VXLAN_INNER_IP <= 576);
    }
    assert_eq!(snap.event_count(Event::FragmentsOut), 3);
    assert_eq!(snap.event_count(Event::EncapToPeer), 3);
    // The later fragments' timestamp option is NOPs, router alert kept.
    assert_eq!(
        &out[1][VXLAN_INNER_IP + 20..VXLAN_INNER_IP + 28],
        &[0x94, 4, 0, 0, 1, 1, 1, 1]
    );
}

#[test]
fn every_drop_reason_is_produced_by_some_fixture() {
    let produced: HashSet<DropReason> = fixtures::all()
        .iter()
        .filter_map(|f| match f.expect {
            Expect::Drop(r) => Some(r),
            Expect::Tx { .. } | Expect::Fragments { .. } => None,
        })
        .collect();
    let excused: HashSet<DropReason> = fixtures::UNREACHABLE_IN_FIXTURES
        .iter()
        .map(|(r, _)| *r)
        .collect();
    for r in DropReason::all() {
        assert!(
            produced.contains(&r) || excused.contains(&r),
            "no fixture produces drop reason {} ({})",
            r.name(),
            r.description()
        );
    }
}

/// A pod whose veth has several RX queues sends to itself on a queue
/// other than the first: still a hairpin (found by the fuzzer).
#[test]
fn hairpin_from_any_rx_queue_of_the_pod() {
    let mut ctx = fixtures::context();
    ctx.pod_ports.get_mut("gwp-a").unwrap().rx_ports = vec![fixtures::PA.port, 9];
    let table = overpass::control::rib::build_fib(
        &ctx,
        &fixtures::routes(),
        &Default::default(),
        &mut Default::default(),
        1,
    )
    .unwrap();
    let payload = fixtures::pod_payload(40);
    let frame = fixtures::from_pod(
        &fixtures::PA,
        &fixtures::Ip::pods(fixtures::PA.ip, fixtures::PA.ip).packet(&payload),
    );
    for port in [fixtures::PA.port, 9] {
        let (v, _, _) = run(&table, port, &frame);
        assert_eq!(v, Verdict::Drop(DropReason::Hairpin), "rx port {port}");
    }
}

/// An ICMP error with no way back: the offending packet is counted once,
/// under its own reason (found by the fuzzer). Two ways: a source with no
/// route at all (only possible with the reverse-path filter off), and a
/// source behind a node whose underlay MAC is unresolved (n4).
#[test]
fn unroutable_icmp_error_counts_the_drop_once() {
    let table = fixtures::table();
    let payload = fixtures::pod_payload(40);
    let cases = [
        (RpFilter::Off, &fixtures::N1, Ipv4Addr::new(192, 0, 2, 1)),
        (RpFilter::Strict, &fixtures::N4, fixtures::N4.pod),
    ];
    for (rp_filter, node, src) in cases {
        let inner = Ip::pods(src, fixtures::PA.ip).ttl(1).packet(&payload);
        let frame = fixtures::vxlan_from(node, 1, 0x08, &fixtures::inner_eth_from(node, &inner));
        let mut w = Gateway::new(&table).rp_filter(rp_filter);
        let v = w.send(UNDERLAY_PORT, &frame);
        let snap = w.counters.snapshot();
        assert_eq!(v, Verdict::Drop(DropReason::TtlExpired), "{src}");
        assert_eq!(snap.total_drops(), 1, "{src}: {}", snap.render());
        assert_eq!(snap.event_count(Event::IcmpUnroutable), 1, "{src}");
        assert_eq!(snap.event_count(Event::IcmpTimeExceeded), 0, "{src}");
    }
}

/// RFC 1812 §4.3.2.7: no ICMP error to an address that is not a unicast
/// host. Tunnel packets from such a source are dropped as spoofed before
/// (they route back to no node); with the filter off the rule still holds.
#[test]
fn no_icmp_error_to_a_non_unicast_source() {
    let table = fixtures::table();
    let payload = fixtures::pod_payload(1480 - 20);
    for src in [
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 5),
        Ipv4Addr::LOCALHOST,
    ] {
        let frame = fixtures::ipip_from(
            &fixtures::N3,
            &Ip::pods(src, fixtures::PA.ip).packet(&payload),
        );
        let mut strict = Gateway::new(&table);
        let v = strict.send(UNDERLAY_PORT, &frame);
        assert_eq!(v, Verdict::Drop(DropReason::InnerSourceSpoofed), "{src}");
        let mut off = Gateway::new(&table).rp_filter(RpFilter::Off);
        let v = off.send(UNDERLAY_PORT, &frame);
        assert_eq!(v, Verdict::Drop(DropReason::TooBig), "{src}");
        let snap = off.counters.snapshot();
        assert_eq!(snap.event_count(Event::IcmpNotAllowed), 1, "{src}");
        assert_eq!(snap.total_drops(), 1, "{src}");
    }
}

/// With the reverse-path filter off, tunnel traffic is trusted on its outer
/// source alone: the spoofed fixtures are forwarded.
#[test]
fn rp_filter_off_forwards_spoofed_inner_sources() {
    let table = fixtures::table();
    let spoofed: Vec<_> = fixtures::all()
        .into_iter()
        .filter(|f| f.expect == Expect::Drop(DropReason::InnerSourceSpoofed))
        .collect();
    assert!(spoofed.len() >= 6);
    for f in spoofed {
        let mut w = Gateway::new(&table).rp_filter(RpFilter::Off);
        let v = w.send(f.port, &f.input);
        assert_ne!(
            v,
            Verdict::Drop(DropReason::InnerSourceSpoofed),
            "{}",
            f.name
        );
        assert_eq!(
            w.counters.drops(DropReason::InnerSourceSpoofed),
            0,
            "{}",
            f.name
        );
    }
}

/// One worker's pipeline and counters, fed one frame at a time at the time
/// the test sets (the worker sets its clock once per poll round).
struct Gateway<'t> {
    table: &'t RouteTable,
    p: Pipeline,
    counters: Counters,
    buf: Vec<u8>,
}

impl<'t> Gateway<'t> {
    fn new(table: &'t RouteTable) -> Gateway<'t> {
        let mut p = Pipeline::new(0);
        p.set_clock(1_000_000_000);
        Gateway {
            table,
            p,
            counters: Counters::default(),
            buf: vec![0; CAP],
        }
    }

    fn rp_filter(mut self, rp_filter: RpFilter) -> Gateway<'t> {
        self.p = std::mem::take(&mut self.p).with_rp_filter(rp_filter);
        self.p.set_clock(1_000_000_000);
        self
    }

    /// Sets the clock to `ns` after the start.
    fn at(&mut self, ns: u64) {
        self.p.set_clock(1_000_000_000 + ns);
    }

    fn send(&mut self, port: PortId, frame: &[u8]) -> Verdict {
        self.buf[..frame.len()].copy_from_slice(frame);
        self.p.process(
            self.table,
            &self.counters,
            port,
            &mut self.buf,
            frame.len(),
            &mut NoSpare,
        )
    }

    /// Sends `frame`; true if it was answered (an ICMP error went out).
    fn answered(&mut self, port: PortId, frame: &[u8]) -> bool {
        matches!(self.send(port, frame), Verdict::Tx { .. })
    }
}

/// A pod's UDP packet to n1's pod with TTL 1: answered with time exceeded.
fn ttl1_from(pod: &fixtures::LocalPod) -> Vec<u8> {
    let payload = fixtures::pod_payload(40);
    fixtures::from_pod(pod, &Ip::pods(pod.ip, N1_POD).ttl(1).packet(&payload))
}

/// A pod's DF packet to n1's pod, one byte over the 1450-byte tunnel MTU:
/// answered with fragmentation needed.
fn too_big_from(pod: &fixtures::LocalPod) -> Vec<u8> {
    let payload = fixtures::pod_payload(1451 - 20);
    fixtures::from_pod(pod, &Ip::pods(pod.ip, N1_POD).packet(&payload))
}

/// A VXLAN packet from n1, from `src` (in n1's podCIDR) to pod a, TTL 1.
fn ttl1_from_n1(src: Ipv4Addr) -> Vec<u8> {
    let payload = fixtures::pod_payload(40);
    let inner = Ip::pods(src, fixtures::PA.ip).ttl(1).packet(&payload);
    fixtures::vxlan_from(
        &fixtures::N1,
        1,
        0x08,
        &fixtures::inner_eth_from(&fixtures::N1, &inner),
    )
}

const N1_POD: Ipv4Addr = fixtures::N1.pod;

/// One source alone: a burst, then its own rate; refilled by the clock.
#[test]
fn icmp_errors_are_rate_limited_per_source() {
    let table = fixtures::table();
    let mut w = Gateway::new(&table);
    let frame = ttl1_from(&fixtures::PA);
    let sent = (0..ICMP_SOURCE_BURST + 20)
        .filter(|_| w.answered(fixtures::PA.port, &frame))
        .count();
    assert_eq!(sent, ICMP_SOURCE_BURST as usize, "a burst, then the limit");
    assert_eq!(w.counters.events(Event::IcmpRateLimited), 20);
    // 100 ms later, 10 more tokens at 100/s.
    w.at(100_000_000);
    let sent = (0..20)
        .filter(|_| w.answered(fixtures::PA.port, &frame))
        .count();
    assert_eq!(sent, (ICMP_SOURCE_RATE / 10) as usize);
    // A partial token is kept: 15 ms then 5 ms make two, not one.
    w.at(115_000_000);
    assert!(w.answered(fixtures::PA.port, &frame));
    assert!(!w.answered(fixtures::PA.port, &frame));
    w.at(120_000_000);
    assert!(w.answered(fixtures::PA.port, &frame));
    assert!(!w.answered(fixtures::PA.port, &frame));
}

/// Many sources at once: each gets its own share, the worker no more than
/// its global limit per kind.
#[test]
fn icmp_errors_have_a_global_cap_per_kind() {
    let table = fixtures::table();
    let mut w = Gateway::new(&table);
    let frames: Vec<Vec<u8>> = (10..250)
        .map(|h| ttl1_from_n1(Ipv4Addr::new(10, 244, 1, h)))
        .collect();
    // 1 s at 240 sources × 1000 packets/s.
    let mut sent = 0u64;
    for step in 0..1000u64 {
        w.at(step * 1_000_000);
        for f in &frames {
            sent += u64::from(w.answered(UNDERLAY_PORT, f));
        }
    }
    let cap = u64::from(ICMP_BURST + ICMP_RATE);
    assert!(sent <= cap, "{sent} time exceeded sent in 1 s, cap {cap}");
    assert!(
        sent >= cap - 2,
        "{sent} time exceeded sent in 1 s, cap {cap}"
    );
    // Frag needed has a budget of its own.
    assert!(w.answered(fixtures::PB.port, &too_big_from(&fixtures::PB)));
}

/// Finding 3 of issue 15 (a): a TTL-1 flood from one pod must not silence
/// fragmentation-needed, neither for another pod nor for itself: each
/// kind has its own budget.
#[test]
fn ttl_flood_does_not_starve_frag_needed() {
    let table = fixtures::table();
    let mut w = Gateway::new(&table);
    let flood = ttl1_from(&fixtures::PA);
    for _ in 0..1000 {
        w.send(fixtures::PA.port, &flood);
    }
    assert!(
        w.counters.events(Event::IcmpRateLimited) > 0,
        "the flood is limited"
    );
    assert!(
        w.answered(fixtures::PB.port, &too_big_from(&fixtures::PB)),
        "frag needed to another pod after a TTL-1 flood"
    );
    assert!(
        w.answered(fixtures::PA.port, &too_big_from(&fixtures::PA)),
        "frag needed to the flooding pod itself"
    );
    // And the other way round.
    let mut w = Gateway::new(&table);
    for _ in 0..1000 {
        w.send(fixtures::PA.port, &too_big_from(&fixtures::PA));
    }
    assert!(w.answered(fixtures::PB.port, &ttl1_from(&fixtures::PB)));
    assert!(w.answered(fixtures::PA.port, &ttl1_from(&fixtures::PA)));
}

/// Finding 3 of issue 15 (b): an error that cannot be sent takes no token.
/// n4's next-hop MAC is unresolved: time exceeded to its pod cannot leave;
/// once it is resolved, the same source gets its whole burst.
#[test]
fn unsendable_icmp_errors_take_no_token() {
    let unresolved = fixtures::table();
    let mut neigh = std::collections::HashMap::new();
    for n in fixtures::NODES {
        neigh.insert(n.ip, n.mac.unwrap_or(MacAddr([2, 1, 0xc6, 0x12, 0, 0x0e])));
    }
    let resolved = overpass::control::rib::build_fib(
        &fixtures::context(),
        &fixtures::routes(),
        &neigh,
        &mut Default::default(),
        1,
    )
    .unwrap();
    let payload = fixtures::pod_payload(40);
    let n4 = fixtures::N4;
    let inner = Ip::pods(n4.pod, fixtures::PA.ip).ttl(1).packet(&payload);
    let frame = fixtures::vxlan_from(&n4, 1, 0x08, &fixtures::inner_eth_from(&n4, &inner));
    let counters = Counters::default();
    let mut p = Pipeline::new(0);
    p.set_clock(1_000_000_000);
    let send = |p: &mut Pipeline, t: &RouteTable| {
        let mut buf = vec![0u8; CAP];
        buf[..frame.len()].copy_from_slice(&frame);
        p.process(
            t,
            &counters,
            UNDERLAY_PORT,
            &mut buf,
            frame.len(),
            &mut NoSpare,
        )
    };
    for _ in 0..200 {
        assert_eq!(
            send(&mut p, &unresolved),
            Verdict::Drop(DropReason::TtlExpired)
        );
    }
    assert_eq!(counters.events(Event::IcmpUnroutable), 200);
    assert_eq!(counters.events(Event::IcmpRateLimited), 0);
    // Same instant, n4 resolved: the source's budget is untouched.
    let answered = (0..10)
        .filter(|_| matches!(send(&mut p, &resolved), Verdict::Tx { .. }))
        .count();
    assert_eq!(answered, 10, "{}", counters.snapshot().render());
}

/// Finding 3 of issue 15 (c): two pods flooding TTL 1 at 100k and 10k
/// packets/s for a second get the same number of time exceeded.
#[test]
fn two_flooding_sources_get_the_same_share() {
    let table = fixtures::table();
    let mut w = Gateway::new(&table);
    let (a, b) = (ttl1_from(&fixtures::PA), ttl1_from(&fixtures::PB));
    let (mut got_a, mut got_b) = (0u32, 0u32);
    for step in 0..100_000u64 {
        w.at(step * 10_000);
        got_a += u32::from(w.answered(fixtures::PA.port, &a));
        if step % 10 == 0 {
            got_b += u32::from(w.answered(fixtures::PB.port, &b));
        }
    }
    assert!(
        got_a.abs_diff(got_b) <= 1 && got_b >= 100,
        "time exceeded in 1 s: pod a (100k/s) {got_a}, pod b (10k/s) {got_b}"
    );
}

/// The ICMP rate a well-behaved flow sees while another floods, over one
/// simulated second (printed; `cargo test -p overpass-dataplane --test
/// pipeline icmp_rate_seen -- --nocapture`): pod b sends 100 packets/s
/// that need an ICMP error while a flood of 100k packets/s comes from pod a
/// or from a remote pod.
#[test]
fn icmp_rate_seen_by_a_well_behaved_flow_while_another_floods() {
    let table = fixtures::table();
    let scenarios: [(&str, PortId, Vec<u8>, Vec<u8>); 4] = [
        (
            "TTL-1 flood from pod a | pod b's DF packets over the MTU (frag needed)",
            fixtures::PA.port,
            ttl1_from(&fixtures::PA),
            too_big_from(&fixtures::PB),
        ),
        (
            "TTL-1 flood from a pod behind n1 | pod b's DF packets over the MTU (frag needed)",
            UNDERLAY_PORT,
            ttl1_from_n1(N1_POD),
            too_big_from(&fixtures::PB),
        ),
        (
            "DF-over-MTU flood from pod a | pod b's DF packets over the MTU (frag needed)",
            fixtures::PA.port,
            too_big_from(&fixtures::PA),
            too_big_from(&fixtures::PB),
        ),
        (
            "TTL-1 flood from pod a | pod b's TTL-1 probes (time exceeded)",
            fixtures::PA.port,
            ttl1_from(&fixtures::PA),
            ttl1_from(&fixtures::PB),
        ),
    ];
    let mut worst = u32::MAX;
    println!("ICMP errors a well-behaved flow gets while another floods (1 simulated second):");
    for (name, flood_port, flood, good) in &scenarios {
        let mut w = Gateway::new(&table);
        let (mut flood_got, mut good_got) = (0u32, 0u32);
        // 100k flood packets 10 µs apart; the good flow's every 10 ms.
        for step in 0..100_000u64 {
            w.at(step * 10_000);
            flood_got += u32::from(w.answered(*flood_port, flood));
            if step % 1000 == 500 {
                good_got += u32::from(w.answered(fixtures::PB.port, good));
            }
        }
        println!("  {name}: well-behaved {good_got}/100, flooder {flood_got}/100000");
        worst = worst.min(good_got);
    }
    assert_eq!(
        worst, 100,
        "a well-behaved flow lost ICMP errors to a flood"
    );
}

#[test]
fn flow_hash_is_per_flow() {
    let table = fixtures::table();
    let pod = fixtures::PA;
    let payload = fixtures::pod_payload(40);
    let frame = |dst| fixtures::from_pod(&pod, &fixtures::Ip::pods(pod.ip, dst).packet(&payload));
    let sport = |f: &[u8]| {
        let (_, out, _) = run(&table, pod.port, f);
        u16::from_be_bytes([out[34], out[35]])
    };
    let a = frame(fixtures::N1.pod);
    assert_eq!(sport(&a), sport(&a), "same flow, same source port");
    let ports: HashSet<u16> = (2..40u8)
        .map(|h| sport(&frame(std::net::Ipv4Addr::new(10, 244, 1, h))))
        .collect();
    assert!(
        ports.len() > 30,
        "source ports spread over flows: {} distinct",
        ports.len()
    );
}

/// Every fixture input, truncated at every length and with bytes
/// flipped, goes through the pipeline without a panic; every Tx stays
/// within the buffer.
#[test]
fn no_input_panics() {
    let table = fixtures::table();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for f in fixtures::all() {
        for len in 0..=f.input.len() {
            for port in [0, 1, 2, 7] {
                let (v, out, _) = run_spare(&table, port, &f.input[..len], usize::MAX);
                if let Verdict::Tx { len, .. } = v {
                    assert!(len <= CAP);
                    assert!(out.iter().all(|f| f.len() <= CAP));
                }
            }
        }
        for _ in 0..200 {
            let mut m = f.input.clone();
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng as usize) % m.len().max(1);
                if let Some(b) = m.get_mut(i) {
                    *b ^= (rng >> 32) as u8 | 1;
                }
            }
            let _ = run_spare(&table, f.port, &m, usize::MAX);
        }
    }
}
