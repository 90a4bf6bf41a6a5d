//! Fuzz target `jsonl_export`: feeds raw bytes to `headscale_fuzz::check_jsonl_export`.
//! Run with `cargo +nightly fuzz run jsonl_export` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_jsonl_export(data);
});
