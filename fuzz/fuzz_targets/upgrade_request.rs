//! Fuzz target `upgrade_request`: feeds raw bytes to `headscale_fuzz::check_upgrade_request`.
//! Run with `cargo +nightly fuzz run upgrade_request` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_upgrade_request(data);
});
