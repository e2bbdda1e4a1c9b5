//! Replays the committed seed corpus and the reproducers of past findings
//! (`artifacts-found/<target>/`) through the targets' code: a regression
//! test that needs neither cargo-fuzz nor nightly flags. A finding that is
//! still open makes `findings_are_fixed` fail, as it should.
//!
//! `cargo test --manifest-path fuzz/Cargo.toml`

use std::fs;
use std::path::{Path, PathBuf};

use overpass_dataplane::counters::DropReason;
use overpass_dataplane::io::Verdict;

fn files(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut v: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p: &PathBuf| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .filter(|(name, _)| !name.starts_with('.'))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no seeds in {}", dir.display());
    v
}

#[test]
fn pipeline_rx_seeds() {
    let mut tx = 0;
    let mut fragmented = 0;
    for (name, data) in files("pipeline_rx") {
        let r = overpass_fuzz::pipeline_rx::run_detailed(&data);
        let v = r.as_ref().map(|r| r.verdict);
        let spare = r.as_ref().map_or(0, |r| r.spare.len());
        println!("{name}: {v:?}, {spare} spare frame(s)");
        if name.starts_with("tx-") || name.starts_with("icmp-") {
            assert!(
                matches!(v, Some(Verdict::Tx { .. })),
                "{name} must be forwarded: {v:?}"
            );
            tx += 1;
        }
        // `tx-frag-*`: fragmented (n − 1 spare frames and the verdict's);
        // any other forwarded seed: sent whole.
        if name.starts_with("tx-frag-") {
            assert!(spare > 0, "{name} must be fragmented");
            fragmented += 1;
        } else if name.starts_with("tx-") || name.starts_with("icmp-") {
            assert_eq!(spare, 0, "{name} must not be fragmented");
        }
        if name.starts_with("drop-") {
            assert!(
                matches!(v, Some(Verdict::Drop(_))),
                "{name} must be dropped: {v:?}"
            );
        }
        if name.starts_with("drop-frag-no-frame-") {
            assert_eq!(v, Some(Verdict::Drop(DropReason::FragNoFrame)), "{name}");
        }
        if name.starts_with("drop-") && name.contains("-inner-source-") {
            assert_eq!(
                v,
                Some(Verdict::Drop(DropReason::InnerSourceSpoofed)),
                "{name}"
            );
        }
    }
    assert!(tx >= 10, "only {tx} forwarding seeds");
    assert!(fragmented >= 5, "only {fragmented} fragmenting seeds");
}

#[test]
fn encap_decap_roundtrip_seeds() {
    for (name, data) in files("encap_decap_roundtrip") {
        let p = overpass_fuzz::encap_decap_roundtrip::Packet::decode(&data);
        let delivered = overpass_fuzz::encap_decap_roundtrip::roundtrip(&p);
        let lens = delivered.map(|d| d.iter().map(Vec::len).collect::<Vec<_>>());
        println!("{name}: delivered {lens:?} bytes");
    }
}

#[test]
fn wire_views_seeds() {
    for (name, data) in files("wire_views") {
        println!("{name}");
        overpass_fuzz::wire_views::run(&data);
    }
}

#[test]
fn findings_are_fixed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts-found");
    let Ok(targets) = fs::read_dir(&dir) else {
        return;
    };
    for t in targets {
        let t = t.unwrap().path();
        let target = t.file_name().unwrap().to_string_lossy().into_owned();
        for f in fs::read_dir(&t).unwrap() {
            let f = f.unwrap().path();
            let data = fs::read(&f).unwrap();
            println!("{}", f.display());
            match target.as_str() {
                "pipeline_rx" => drop(overpass_fuzz::pipeline_rx::run(&data)),
                "encap_decap_roundtrip" => overpass_fuzz::encap_decap_roundtrip::run(&data),
                "wire_views" => overpass_fuzz::wire_views::run(&data),
                other => panic!("unknown target directory {other}"),
            }
        }
    }
}
