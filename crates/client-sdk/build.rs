//! Generates the filer client (feature `filer`) from `proto/filer.proto`, SeaweedFS's
//! `filer_pb` subset, with the pure-Rust protox parser (no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "filer")]
    {
        println!("cargo:rerun-if-changed=proto/filer.proto");
        let descriptors = protox::compile(["proto/filer.proto"], ["proto"])?;
        tonic_prost_build::configure().build_client(true).build_server(false).compile_fds(descriptors)?;
    }
    Ok(())
}
