#![no_main]
//! See `overpass_fuzz::wire_views` for the input format and the invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    overpass_fuzz::wire_views::run(data);
});
