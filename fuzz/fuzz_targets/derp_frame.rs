//! Fuzz target `derp_frame`: feeds raw bytes to `headscale_fuzz::check_derp_frame`.
//! Run with `cargo +nightly fuzz run derp_frame` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_derp_frame(data);
});
