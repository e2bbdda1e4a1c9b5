#![no_main]
//! See `overpass_fuzz::encap_decap_roundtrip` for the input format and the invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    overpass_fuzz::encap_decap_roundtrip::run(data);
});
