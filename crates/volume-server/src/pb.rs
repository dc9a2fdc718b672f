//! Code generated from `proto/` (SeaweedFS's wire protocol, the subset we use): the
//! `master_pb` client for heartbeats and the `volume_server_pb` service.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `weed master`'s `Seaweed` service (we are a client).
pub mod master_pb {
    tonic::include_proto!("master_pb");
}

/// weed's `VolumeServer` service (we serve it; also a client for pings).
pub mod volume_server_pb {
    tonic::include_proto!("volume_server_pb");
}

/// The gRPC address of a weed server given as `host:port` (gRPC on port + 10000, weed's
/// convention) or `host:port.grpcPort` (weed's explicit form).
pub fn grpc_address(server: &str) -> Result<String, String> {
    let bad = || format!("{server:?} is not host:port or host:port.grpcPort");
    let (host, ports) = server.rsplit_once(':').ok_or_else(bad)?;
    let grpc_port = match ports.split_once('.') {
        Some((_, grpc)) => grpc.parse::<u16>().map_err(|_| bad())?,
        None => ports.parse::<u16>().ok().and_then(|p| p.checked_add(10_000)).ok_or_else(bad)?,
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(format!("{host}:{grpc_port}"))
}

#[cfg(test)]
mod tests {
    use super::grpc_address;

    #[test]
    fn grpc_addresses_follow_weeds_convention() {
        assert_eq!(grpc_address("127.0.0.1:9333").unwrap(), "127.0.0.1:19333");
        assert_eq!(grpc_address("master:9333.19999").unwrap(), "master:19999");
        assert!(grpc_address("9333").is_err());
        assert!(grpc_address("h:60000").is_err(), "no room for + 10000");
        assert!(grpc_address(":9333").is_err());
    }
}
