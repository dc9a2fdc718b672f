//! Generates the gRPC code for SeaweedFS's `master_pb` and `volume_server_pb` subsets in
//! `proto/`. The `.proto` files are parsed by protox (pure Rust), so building needs no
//! `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/master.proto", "proto/volume_server.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        // We call the master (client) and are called by it and by weed's tools (server).
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
