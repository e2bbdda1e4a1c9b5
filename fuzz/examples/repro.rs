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
                if let Some((rx, cap, frame)) = overpass_fuzz::pipeline_rx::decode(&data) {
                    println!("rx port {rx}, buffer {cap} bytes, frame {} bytes:", frame.len());
                    for (i, chunk) in frame.chunks(16).enumerate() {
                        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                        println!("  {:04x}  {}", i * 16, hex.join(" "));
                    }
                }
                println!("verdict: {:?}", overpass_fuzz::pipeline_rx::run(&data));
            }
            "encap_decap_roundtrip" => {
                let p = overpass_fuzz::encap_decap_roundtrip::Packet::decode(&data);
                println!("{p:?}");
                let d = overpass_fuzz::encap_decap_roundtrip::roundtrip(&p);
                println!("delivered: {:?} bytes", d.map(|d| d.len()));
            }
            "wire_views" => overpass_fuzz::wire_views::run(&data),
            t => panic!("unknown target {t}"),
        }
    }
}
