//! Fuzz target `noise_frames`: feeds raw bytes to `headscale_fuzz::check_noise_frames`.
//! Run with `cargo +nightly fuzz run noise_frames` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_noise_frames(data);
});
