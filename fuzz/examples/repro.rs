//! Runs inputs through a target's code outside libFuzzer (plain build, full
//! panic message and backtrace), e.g. for a reproducer:
//!
//! `cargo run --manifest-path fuzz/Cargo.toml --example repro -- pipeline_rx fuzz/artifacts-found/pipeline_rx/FILE`
//!
//! Prints the decoded input and the verdict; exits non-zero on a violation.

fn main() {
    let mut args = std::env::args().skip(1);
    let target = args.next().expect("usage: repro TARGET FILE...");
    for path in args {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        println!("== {path} ({} bytes)", data.len());
        match target.as_str() {
            "pipeline_rx" => {
                if let Some(inp) = overpass_fuzz::pipeline_rx::decode(&data) {
                    let spare = match inp.spare {
                        overpass_fuzz::pipeline_rx::UNLIMITED => "unlimited".to_string(),
                        n => n.to_string(),
                    };
                    println!(
                        "rx port {}, buffer {} bytes, spare frames {spare}, frame {} bytes:",
                        inp.rx,
                        inp.cap,
                        inp.frame.len()
                    );
                    for (i, chunk) in inp.frame.chunks(16).enumerate() {
                        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                        println!("  {:04x}  {}", i * 16, hex.join(" "));
                    }
                }
                let r = overpass_fuzz::pipeline_rx::run_detailed(&data);
                println!("verdict: {:?}", r.as_ref().map(|r| r.verdict));
                for (port, f) in r.iter().flat_map(|r| &r.spare) {
                    println!("  spare frame: {} bytes on port {port}", f.len());
                }
            }
            "encap_decap_roundtrip" => {
                let p = overpass_fuzz::encap_decap_roundtrip::Packet::decode(&data);
                println!("{p:?}");
                let d = overpass_fuzz::encap_decap_roundtrip::roundtrip(&p);
                let lens = d.map(|d| d.iter().map(Vec::len).collect::<Vec<_>>());
                println!("delivered: {lens:?} bytes");
            }
            "wire_views" => overpass_fuzz::wire_views::run(&data),
            t => panic!("unknown target {t}"),
        }
    }
}
