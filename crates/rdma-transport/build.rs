//! Generates the control plane's messages and tonic client/server from
//! `proto/rdma_control.proto` with the pure-Rust `protox` compiler (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/rdma_control.proto");
    let fds = protox::compile(["rdma_control.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
