//! Compiles the GoBGP-compatible API definition (src/api/proto) with protox, a protobuf compiler
//! written in Rust, so that building needs no `protoc` on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "src/api/proto/gobgp.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["src/api/proto"])?;
    // The descriptor set is also embedded in the binary: the CLI's `-j` output walks messages
    // by reflection to reproduce the field order and names of gobgp's JSON.
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("apipb_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
