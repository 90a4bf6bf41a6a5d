//! Build script: compiles the headscale.v1 `.proto` files under `src/grpc/proto` with protox
//! (pure Rust, so no `protoc` is needed) and generates the prost messages and the tonic
//! server and client of `HeadscaleService` from the descriptors, which are also written out
//! for the reflection service (`OUT_DIR/headscale_v1_descriptor.bin`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = "src/grpc/proto";
    println!("cargo:rerun-if-changed={root}");
    let descriptors = protox::compile(["headscale/v1/headscale.proto"], [root])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("headscale_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // The client is generic over its transport (tests bring tonic's Channel).
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
