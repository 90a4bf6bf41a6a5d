//! Fuzz target `extra_records`: feeds raw bytes to `headscale_fuzz::check_extra_records`.
//! Run with `cargo +nightly fuzz run extra_records` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_extra_records(data);
});
