//! The volume server's gRPC listener. weed serves gRPC on its HTTP port + 10000 and the
//! master and `weed shell` dial that port, so we do the same unless `--grpc-port` says
//! otherwise. Services (SeaweedFS's `VolumeServer`, the RDMA control plane) are added
//! to one [`Routes`]; calls nobody implements answer `Unimplemented`. With
//! `security.toml`'s gRPC TLS, the port speaks mutual TLS only ([`crate::security::grpc_tls`]).
//!
//! Also what every service's calls share: `status`, the store error to gRPC status
//! mapping weed's callers act on, and `blocking` for file work.

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::Status;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;

use volume_store::error::Error;

/// weed's convention for the gRPC port of a server on `http_port`.
pub fn default_port(http_port: u16) -> Option<u16> {
    http_port.checked_add(10_000)
}

/// How long calls under way may take to finish after shutdown starts. Bounded because
/// a graceful stop otherwise waits for every client to hang up, and the master keeps
/// its connection to us open.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Serves `routes` on `listener` (over TLS with `tls`) until `shutdown` completes, then
/// lets calls under way finish for at most two seconds.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping.send(());
    };
    let router = tonic::transport::Server::builder().add_routes(routes);
    match tls {
        None => {
            let server = router.serve_with_incoming_shutdown(TcpIncoming::from(listener), signal);
            finish(server, stopped).await
        }
        Some(acceptor) => {
            let server = router.serve_with_incoming_shutdown(
                crate::security::grpc_tls::incoming(listener, acceptor),
                signal,
            );
            finish(server, stopped).await
        }
    }
}

/// Runs `server` to its end, or once `stopped` fires, for at most [`SHUTDOWN_GRACE`].
async fn finish(
    server: impl Future<Output = Result<(), tonic::transport::Error>>,
    stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), tonic::transport::Error> {
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => return result,
        _ = stopped => {}
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("gRPC clients still connected after {SHUTDOWN_GRACE:?}; closing");
            Ok(())
        }
    }
}

/// Maps a store error to the gRPC status weed's callers act on.
pub(crate) fn status(e: Error) -> Status {
    match e {
        Error::VolumeNotFound(_) | Error::NeedleNotFound(_) | Error::AlreadyDeleted(_) => {
            Status::not_found(e.to_string())
        }
        Error::VolumeExists(_) => Status::already_exists(e.to_string()),
        Error::BadCollection(_) => Status::invalid_argument(e.to_string()),
        Error::NoFreeSlot => Status::resource_exhausted(e.to_string()),
        Error::NotEmpty(_) | Error::NotCompacted(_) | Error::ReadOnly(_) => {
            Status::failed_precondition(e.to_string())
        }
        Error::VolumeRetired(_) | Error::Busy(_) => Status::unavailable(e.to_string()),
        e => {
            tracing::error!(error = %e, "gRPC call failed");
            Status::internal(e.to_string())
        }
    }
}

/// Runs blocking file work off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(work).await.map_err(|e| Status::internal(e.to_string()))?.map_err(status)
}
