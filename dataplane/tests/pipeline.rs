//! The pipeline against the fixture table (exact output bytes, verdicts,
//! counters) and its cross-cutting properties: fragmentation, ICMP rate
//! limits, flow hashing, no panics. The same table runs through the XDP
//! program in the gateway's `xdp_fixtures` test.

use std::collections::HashSet;

use overpass_dataplane::counters::{CounterKind, Counters, DropReason, Event, Snapshot};
use overpass_dataplane::fib::{PortId, RouteTable, UNDERLAY_PORT};
use overpass_dataplane::io::{MemIo, NoSpare, PacketIo, Verdict};
use overpass_dataplane::pipeline::{ICMP_BURST, Pipeline, SRC_PORT_MIN, VXLAN_INNER_IP};
use overpass_testkit::fixtures::{self, Expect};

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

/// An ICMP error with no route back: the offending packet is counted
/// once, under its own reason (found by the fuzzer).
#[test]
fn unroutable_icmp_error_counts_the_drop_once() {
    let table = fixtures::table();
    let payload = fixtures::pod_payload(40);
    let inner = fixtures::Ip::pods(std::net::Ipv4Addr::new(192, 0, 2, 1), fixtures::PA.ip)
        .ttl(1)
        .packet(&payload);
    let frame = fixtures::vxlan_from(
        &fixtures::N1,
        1,
        0x08,
        &fixtures::inner_eth_from(&fixtures::N1, &inner),
    );
    let (v, _, snap) = run(&table, UNDERLAY_PORT, &frame);
    assert_eq!(v, Verdict::Drop(DropReason::TtlExpired));
    assert_eq!(snap.total_drops(), 1, "{}", snap.render());
    assert_eq!(snap.event_count(Event::IcmpUnroutable), 1);
    assert_eq!(snap.event_count(Event::IcmpTimeExceeded), 0);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let table = fixtures::table();
    let counters = Counters::default();
    let mut p = Pipeline::new(0);
    p.set_clock(1_000_000_000);
    let payload = fixtures::pod_payload(40);
    let frame = fixtures::from_pod(
        &fixtures::PA,
        &fixtures::Ip::pods(fixtures::PA.ip, fixtures::N1.pod)
            .ttl(1)
            .packet(&payload),
    );
    let send = |p: &mut Pipeline| {
        let mut buf = vec![0u8; CAP];
        buf[..frame.len()].copy_from_slice(&frame);
        let spare = &mut NoSpare;
        matches!(
            p.process(
                &table,
                &counters,
                fixtures::PA.port,
                &mut buf,
                frame.len(),
                spare
            ),
            Verdict::Tx { .. }
        )
    };
    let sent = (0..ICMP_BURST + 20).filter(|_| send(&mut p)).count();
    assert_eq!(sent, ICMP_BURST as usize, "a burst, then the limit");
    assert_eq!(counters.events(Event::IcmpRateLimited), 20);
    // 10 ms later, 10 more tokens at 1000/s.
    p.set_clock(1_010_000_000);
    let sent = (0..20).filter(|_| send(&mut p)).count();
    assert_eq!(sent, 10);
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
