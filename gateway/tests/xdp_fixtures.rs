//! The pipeline's fixture table run against the real XDP steering program
//! through BPF_PROG_TEST_RUN: every frame the pipeline is tested on gets
//! the steering decision the table says (steered to the socket, or passed
//! to the kernel), counted under the expected counter.

use overpass_testkit::fixtures;
use overpass_testkit::testbed::require_root;
use overpass_xdp::{PortRole, SteerCounter, Steering};

/// Loopback: BPF_PROG_TEST_RUN resolves `ingress_ifindex` to a real device.
const LO: u32 = 1;

#[test]
fn fixtures_through_the_xdp_program() {
    if !require_root("XDP fixture test (BPF_PROG_TEST_RUN)") {
        return;
    }
    let steering = Steering::load(&[8472, 4789]).expect("loading the XDP program");
    let all = fixtures::all();
    let mut checked = 0;
    for f in &all {
        let role = if f.port == overpass_dataplane::fib::UNDERLAY_PORT {
            PortRole::Underlay
        } else {
            PortRole::Pod
        };
        steering.set_port(LO, role, 0, 1).unwrap();
        let before = steering.counters().unwrap();
        let result = steering.test_run(&f.input, LO, 0);
        if f.input.len() < 14 {
            // The kernel refuses frames shorter than an Ethernet header
            // before the program runs.
            assert!(
                result.is_err(),
                "{}: kernel accepted a {}-byte frame",
                f.name,
                f.input.len()
            );
            continue;
        }
        let action = result.unwrap_or_else(|e| panic!("{}: test_run: {e}", f.name));
        let after = steering.counters().unwrap();
        let moved: Vec<&str> = SteerCounter::ALL
            .iter()
            .filter(|c| after[c.index()] != before[c.index()])
            .map(|c| c.name())
            .collect();
        assert!(
            moved.contains(&f.xdp),
            "{}: expected {}, counters moved: {moved:?}",
            f.name,
            f.xdp
        );
        // Nothing is bound in the XSK map here, so a steered frame falls
        // back to XDP_PASS and also counts no_socket; nothing is dropped.
        assert_eq!(action, overpass_xdp::abi::XDP_PASS, "{}", f.name);
        if f.xdp.starts_with("steer_") {
            assert!(moved.contains(&"no_socket"), "{}: {moved:?}", f.name);
        }
        checked += 1;
    }
    eprintln!(
        "{checked} of {} fixtures ran through the XDP program",
        all.len()
    );
    assert!(
        checked >= 40,
        "only {checked} fixtures ran through the program"
    );
}
