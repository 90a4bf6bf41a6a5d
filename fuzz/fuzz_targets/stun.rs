//! Fuzz target `stun`: feeds raw bytes to `headscale_fuzz::check_stun`.
//! Run with `cargo +nightly fuzz run stun` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_stun(data);
});
