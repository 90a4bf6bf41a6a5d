//! Fuzz target `event_record`: feeds raw bytes to `headscale_fuzz::check_event_record`.
//! Run with `cargo +nightly fuzz run event_record` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_event_record(data);
});
