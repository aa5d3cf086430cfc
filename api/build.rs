//! Generates the protocol's Rust types and tonic client and server from the `.proto`
//! file. protox parses it in Rust, so no `protoc` needs to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/weft/control/v1/control.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // Ordered maps, as the config and the mesh model use: no conversion at each
        // message, and a stable order on the wire.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
