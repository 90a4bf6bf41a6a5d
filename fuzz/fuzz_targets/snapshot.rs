//! Fuzz target `snapshot`: feeds raw bytes to `headscale_fuzz::check_snapshot`.
//! Run with `cargo +nightly fuzz run snapshot` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_snapshot(data);
});
