//! A small, deterministic driver of `Pipeline::process` over fixed frames,
//! for `valgrind --tool=callgrind` (instruction counts per function):
//!
//! ```text
//! cargo build --profile bench -p overpass-micro --bin pipeline-prof
//! valgrind --tool=callgrind --callgrind-out-file=benches/results/callgrind.decap \
//!     target/release/pipeline-prof decap-vxlan 100000
//! callgrind_annotate benches/results/callgrind.decap
//! ```
//!
//! Directions: decap-vxlan, decap-ipip, encap-vxlan, encap-ipip, transit.
//!
//! `pipeline-prof DIRECTION ITERATIONS [SIZE] [split]`: with `split`, each
//! forwarded frame that crosses between the underlay's port and a pod's is
//! also copied into a frame of the other UMEM class with the AF_XDP layer's
//! own `cross_umem_copy`, as it is when the underlay binds zero-copy and the
//! pods have a UMEM of their own (transit stays in its class: no copy).

use overpass_dataplane::counters::Counters;
use overpass_dataplane::fib::Encap;
use overpass_dataplane::io::{Verdict, cross_umem_copy};
use overpass_dataplane::pipeline::Pipeline;
use overpass_micro::micro::{self, Direction};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "decap-vxlan".into());
    let iters: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let split = args.next().as_deref() == Some("split");
    let (d, n2) = match dir.as_str() {
        "decap-vxlan" => (Direction::DecapVxlan, Encap::Vxlan),
        "decap-ipip" => (Direction::DecapIpip, Encap::Ipip),
        "encap-vxlan" => (Direction::EncapVxlan, Encap::Vxlan),
        "encap-ipip" => (Direction::EncapIpip, Encap::Ipip),
        "transit" => (Direction::Transit, Encap::Vxlan),
        other => {
            eprintln!("unknown direction {other:?}");
            std::process::exit(2);
        }
    };
    let table = micro::table(n2, 0);
    let counters = Counters::default();
    let mut p = Pipeline::new(0);
    let (port, t) = d.frame(size);
    let mut buf = vec![0u8; 2048];
    // A frame of the other UMEM class (the pods' are 2048 bytes, less the
    // kernel's 256-byte headroom; the zero-copy underlay's 4096).
    let mut other = vec![0u8; 4096 - 256];
    let mut tx = 0u64;
    let mut copied = 0u64;
    for _ in 0..iters {
        let v = micro::process(&mut p, &table, &counters, port, &t, &mut buf);
        if let Verdict::Tx { port: out, len } = v {
            tx += 1;
            if split && (out == 0) != (port == 0) {
                let other = std::hint::black_box(&mut other[..]);
                if cross_umem_copy(other, &buf[..len]) {
                    copied += 1;
                }
            }
        }
    }
    if split {
        println!("{dir}: {copied} frames copied across UMEM classes");
    }
    println!("{dir}: {tx} of {iters} frames forwarded");
    if tx != iters {
        std::process::exit(1);
    }
}
