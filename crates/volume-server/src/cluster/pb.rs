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

/// The gRPC address of a weed server (`host:port` or `host:port.grpcPort`), shared with
/// the SDK's filer client.
pub use rdma_transport::grpc_tls::grpc_address;
