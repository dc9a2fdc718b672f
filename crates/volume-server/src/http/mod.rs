//! The weed volume-server HTTP API on axum: every request to `/<fid>` paths goes to
//! `store_handler`, which dispatches by method like weed's `privateStoreHandler`;
//! `/status`, `/healthz`, `/metrics` and (standalone) `/dir/assign`, `/dir/lookup`
//! have their own routes. Every reply carries weed's common headers.
//!
//! Beside the handlers, what only the HTTP API needs: [`upload`] (a POST/PUT turned
//! into a needle), [`range`] (`Range` requests), [`mime`] (content types as weed
//! computes them) and [`throttle`] (the upload and download byte budgets).

mod admin;
mod error;
mod manifest;
pub mod master_api;
pub mod mime;
pub mod path;
mod payload;
mod peers;
pub(crate) mod query;
pub mod range;
mod read;
mod replicate;
mod reply;
pub mod throttle;
pub mod upload;
mod write;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use rand::Rng;

use self::throttle::Throttle;
use crate::metrics::Metrics;
use crate::security::Security;
use volume_store::clock::now_ns;
use volume_store::store::Store;

pub use error::ApiError;
use master_api::MasterApi;
pub use peers::VolumeLocations;
pub use query::percent_decode;
pub(crate) use query::query_params;
pub use replicate::ReadMode;

/// What every handler shares.
pub struct AppState {
    pub store: Arc<Store>,
    /// Largest file data an upload may carry (413 beyond).
    pub file_size_limit: u64,
    /// `Server:` header value.
    pub server_header: HeaderValue,
    /// The `Version` of `/status`.
    pub version: String,
    /// The embedded master API, when no `--mserver` is given.
    pub master: Option<MasterApi>,
    /// Where volumes are, from the `--mserver` masters: for chunks of a chunk manifest,
    /// replicas of a write or delete, and reads of volumes held elsewhere.
    pub locations: VolumeLocations,
    /// This server's `host:port` as the master lists it (left out of replica lists).
    pub public_url: String,
    /// What a read of a volume held elsewhere does.
    pub read_mode: ReadMode,
    pub metrics: Metrics,
    /// The RDMA read path, shown in `/status` and `/metrics`.
    pub rdma: rdma_transport::server::RdmaServer,
    /// The JWT keys guarding writes, deletes and reads (`security.toml`).
    pub security: Security,
    /// Bounds on upload and download bytes in flight (429 when no room comes free).
    pub throttle: Throttle,
    /// The heartbeat stream's state (never registered when standalone).
    pub heartbeat: Arc<crate::cluster::heartbeat::HeartbeatStatus>,
}

pub type SharedState = Arc<AppState>;

/// weed's version string: `<size limit> <version> <commit>`.
pub fn version_string(width: needle::OffsetWidth) -> String {
    let size = if width == needle::OffsetWidth::Five { "8000GB" } else { "30GB" };
    format!("{size} 4.48 seaweed-rdma-{}", env!("CARGO_PKG_VERSION"))
}

/// The router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`, as
/// the white list needs each connection's address (without it, a white list refuses
/// every upload and delete).
pub fn router(state: SharedState) -> Router {
    let mut router = Router::new()
        .route("/status", get(admin::status))
        .route("/healthz", get(admin::healthz).head(admin::healthz))
        .route("/readyz", get(admin::healthz).head(admin::healthz))
        .route("/metrics", get(admin::metrics));
    if state.master.is_some() {
        // weed master guards these with the white list too.
        let master = Router::new()
            .route("/dir/assign", get(master_api::assign).post(master_api::assign))
            .route("/dir/lookup", get(master_api::lookup).post(master_api::lookup))
            .route_layer(middleware::from_fn_with_state(Arc::clone(&state), white_listed));
        router = router.merge(master);
    }
    router
        .fallback(store_handler)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), common_headers))
        // Upload size is checked by the handler (413), not by axum's default 2 MB cap.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// weed's `privateStoreHandler`, with a last line of defence: a handler that panics
/// (a bug) answers 500 and logs the panic instead of dropping the connection.
async fn store_handler(State(state): State<SharedState>, request: Request) -> Response {
    // Kept for the panic log only: clones share the request's bytes, unlike a formatted string.
    let (method, uri) = (request.method().clone(), request.uri().clone());
    let handling: Pin<Box<dyn Future<Output = Response> + Send>> = Box::pin(dispatch(state, request));
    match (CatchUnwind { inner: handling }).await {
        Ok(response) => response,
        Err(panic) => {
            let message = crate::cluster::supervise::panic_message(panic.as_ref());
            let request = format!("{method} {}", uri.path());
            tracing::error!(%request, panic = %message, "handler panicked");
            ApiError::json(StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Polls a future, turning a panic into an error value.
struct CatchUnwind {
    inner: Pin<Box<dyn Future<Output = Response> + Send>>,
}

impl Future for CatchUnwind {
    type Output = std::thread::Result<Response>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(response)) => Poll::Ready(Ok(response)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

async fn dispatch(state: SharedState, request: Request) -> Response {
    let state = state.as_ref();
    match *request.method() {
        Method::GET | Method::HEAD => read::get_or_head(state, request).await,
        Method::POST | Method::PUT => write::post(state, request).await,
        Method::DELETE => write::delete(state, request).await,
        Method::OPTIONS => Response::builder()
            .status(StatusCode::OK)
            .header("Access-Control-Allow-Methods", "PUT, POST, GET, DELETE, OPTIONS")
            .header("Access-Control-Allow-Headers", "*")
            .body(Body::empty())
            .expect("static headers are valid"),
        ref other => ApiError::bad_request(format!("unsupported method {other}")).into_response(),
    }
}

/// weed's `Guard.WhiteList` around uploads, deletes and the master API: a bare 401 when a white list is
/// in force and the connection's address is not on it. Only the TCP peer counts (weed
/// ignores `X-Forwarded-For` and the like, which clients can forge).
fn refused_by_white_list(state: &AppState, request: &Request) -> Option<Response> {
    let list = &state.security.white_list;
    if list.is_empty() {
        return None;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0.ip());
    if peer.is_some_and(|ip| list.allows(ip)) {
        return None;
    }
    tracing::info!(peer = ?peer, method = %request.method(), "refused: not in the white list");
    Some(ApiError::empty(StatusCode::UNAUTHORIZED).into_response())
}

/// [`refused_by_white_list`] as a layer.
async fn white_listed(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    match refused_by_white_list(&state, &request) {
        Some(refused) => refused,
        None => next.run(request).await,
    }
}

/// `Server`, `X-Amz-Request-Id` and CORS headers on every reply, and the metrics.
async fn common_headers(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let has_origin = request.headers().contains_key(header::ORIGIN);
    let route = crate::metrics::route_of(request.method(), request.uri().path(), state.master.is_some());
    let received = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::SERVER, state.server_header.clone());
    let id = format!("{:016X}{:08X}", now_ns(), rand::rng().random::<u32>());
    headers.insert("x-amz-request-id", HeaderValue::from_str(&id).expect("hex is a valid header value"));
    if has_origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
    let sent = response.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse().ok());
    state.metrics.observe(
        route,
        response.status(),
        received.unwrap_or(0),
        sent.unwrap_or(0),
        started.elapsed(),
    );
    response
}

/// A JSON reply as weed's `writeJson` sends it.
pub(crate) fn json_response(status: StatusCode, json: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-content-type-options", "nosniff")
        .header(header::CONTENT_LENGTH, json.len())
        .body(Body::from(json))
        .expect("static headers are valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_becomes_an_error_value() {
        let quiet = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let panicking = CatchUnwind { inner: Box::pin(async { panic!("boom") }) };
        let caught = panicking.await;
        std::panic::set_hook(quiet);
        assert_eq!(
            caught.err().and_then(|p| p.downcast_ref::<&str>().map(|s| s.to_string())),
            Some("boom".into())
        );
        let fine = CatchUnwind { inner: Box::pin(async { Response::new(Body::empty()) }) };
        assert!(fine.await.is_ok());
    }
}
