//! The server as a member of a weed cluster: the gRPC listener ([`grpc`]) and weed's
//! `VolumeServer` service on it ([`volume_grpc`], with [`volume_move`] for moving
//! volumes between servers), the heartbeat stream to the master ([`heartbeat`], kept
//! alive by [`supervise`]), and the protos they speak ([`pb`]).

pub mod grpc;
pub mod heartbeat;
pub mod pb;
pub mod supervise;
pub mod volume_grpc;
pub mod volume_move;
