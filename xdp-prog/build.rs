//! Compiles `src/bpf/overpass.bpf.c` with clang and generates the libbpf-rs
//! skeleton (`$OUT_DIR/overpass.skel.rs`) that `src/steering.rs` includes.

use std::env;
use std::fs;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const BPF_DIR: &str = "src/bpf";
const SRC: &str = "src/bpf/overpass.bpf.c";

fn main() {
    // Every header counts, not just the entry file: a change to abi.h must
    // rebuild the object.
    println!("cargo:rerun-if-changed={BPF_DIR}");
    for entry in fs::read_dir(BPF_DIR).expect("read src/bpf") {
        let path = entry.expect("read src/bpf entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"))
        .join("overpass.skel.rs");

    // libbpf-cargo already adds -I for libbpf's own bpf/*.h (extracted from
    // libbpf-sys) and -D__TARGET_ARCH_*. What it does not add is the
    // multiarch include dir: <linux/types.h> pulls in <asm/types.h>, which
    // Debian keeps under /usr/include/<triple>/ and clang's BPF target does
    // not search.
    // (-g -O2 -target bpf come from libbpf-cargo itself.) Compiler output
    // is only logged by libbpf-cargo, never shown by cargo, so warnings are
    // made errors rather than lost.
    let mut clang_args = vec!["-Wall".to_string(), "-Werror".to_string()];
    if let Some(dir) = multiarch_include_dir() {
        clang_args.push(format!("-I{dir}"));
    }

    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(clang_args)
        .build_and_generate(&out)
        .unwrap_or_else(|err| panic!("building {SRC} and its skeleton failed: {err:#}"));
}

/// `/usr/include/<gnu triple>` for the target, when it exists.
fn multiarch_include_dir() -> Option<String> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").ok()?;
    let os = env::var("CARGO_CFG_TARGET_OS").ok()?;
    let env_ = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let triple = format!(
        "{arch}-{os}-{}",
        if env_.is_empty() { "gnu" } else { &env_ }
    );
    let dir = format!("/usr/include/{triple}");
    std::path::Path::new(&dir).is_dir().then_some(dir)
}
