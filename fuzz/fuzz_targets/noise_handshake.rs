//! Fuzz target `noise_handshake`: feeds raw bytes to `headscale_fuzz::check_noise_handshake`.
//! Run with `cargo +nightly fuzz run noise_handshake` from the repository root (see fuzz/README.md).

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    headscale_fuzz::check_noise_handshake(data);
});
