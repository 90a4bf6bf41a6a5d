//! Fuzz target `control_json`: feeds raw bytes to `headscale_fuzz::check_control_json`.
//! Run with `cargo +nightly fuzz run control_json` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_control_json(data);
});
