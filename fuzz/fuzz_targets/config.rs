//! Fuzz target `config`: feeds raw bytes to `headscale_fuzz::check_config`.
//! Run with `cargo +nightly fuzz run config` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_config(data);
});
