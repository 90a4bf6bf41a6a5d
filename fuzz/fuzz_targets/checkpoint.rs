//! Fuzz target `checkpoint`: feeds raw bytes to `headscale_fuzz::check_checkpoint`.
//! Run with `cargo +nightly fuzz run checkpoint` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_checkpoint(data);
});
