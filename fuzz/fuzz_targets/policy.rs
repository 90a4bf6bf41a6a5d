//! Fuzz target `policy`: feeds raw bytes to `headscale_fuzz::check_policy`.
//! Run with `cargo +nightly fuzz run policy` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_policy(data);
});
