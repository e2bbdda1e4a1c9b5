#![no_main]
//! See `overpass_fuzz::pipeline_rx` for the input format and the invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    overpass_fuzz::pipeline_rx::run(data);
});
