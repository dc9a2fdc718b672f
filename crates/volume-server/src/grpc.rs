//! The volume server's gRPC listener. weed serves gRPC on its HTTP port + 10000 and the
//! master and `weed shell` dial that port, so we do the same unless `--grpc-port` says
//! otherwise. Services (SeaweedFS's `VolumeServer`, the RDMA control plane) are added
//! to one [`Routes`]; calls nobody implements answer `Unimplemented`.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

/// weed's convention for the gRPC port of a server on `http_port`.
pub fn default_port(http_port: u16) -> Option<u16> {
    http_port.checked_add(10_000)
}

/// Serves `routes` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown)
        .await
}
