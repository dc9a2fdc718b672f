//! Dialing a weed gRPC port, plaintext or with mutual TLS as a weed cluster sets it up in
//! `security.toml` (`[grpc] ca` and a component's certificate): used by the control-plane
//! client ([`crate::RdmaClientConfig::dialer`]), by the volume server for everything
//! it dials over gRPC, and by the SDK's filer client.
//!
//! weed's client rules, which we follow: the client presents its certificate, and the
//! server's certificate must chain to the CA, but its names are not compared with the
//! host dialed ("the host name is not checked, so the certificate files can be shared",
//! says weed's scaffold); the host (without port) is sent as SNI; ALPN `h2` is offered,
//! which grpc-go requires. Certificates are read once, when the [`Dialer`] is made.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

/// The PEM files a mutual-TLS gRPC client needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// The CA the server's certificate must chain to (weed's `[grpc] ca`).
    pub ca: PathBuf,
    /// The certificate (chain) presented to the server.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Why gRPC TLS settings or files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("security.toml: {0}")]
    Config(String),
    #[error("gRPC TLS: {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("gRPC TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsError {
    /// A [`TlsError::File`] about `path`.
    pub fn file(path: impl AsRef<Path>, e: impl std::fmt::Display) -> Self {
        TlsError::File { path: path.as_ref().to_owned(), message: e.to_string() }
    }
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::file(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

/// The (first) private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::file(path, e))
}

/// The certificates of a PEM file as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::file(path, e))?;
    }
    Ok(roots)
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

/// Longest a TLS handshake (with, when dialing, its TCP connect) may take.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Dials weed gRPC servers: plaintext HTTP/2 (the default), or TLS with our client
/// certificate.
#[derive(Clone, Default)]
pub struct Dialer {
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").field("tls", &self.tls.is_some()).finish()
    }
}

impl Dialer {
    /// A dialer presenting `files.cert`/`files.key` and trusting servers whose
    /// certificate chains to `files.ca`. Every file is read now.
    pub fn mutual_tls(files: &ClientTlsFiles) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(load_roots(&files.ca)?);
        let verifier = ChainOnly { roots, provider: Arc::clone(&provider) };
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(load_certs(&files.cert)?, load_key(&files.key)?)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self { tls: Some(TlsConnector::from(Arc::new(config))) })
    }

    /// Whether this dialer speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A channel to `endpoint` (an `http://host:port` URI: with TLS the scheme stays
    /// `http`, the TLS is this dialer's), with its timeouts and keepalive settings.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => endpoint.connect().await,
            Some(tls) => endpoint.connect_with_connector(TlsDial { tls: tls.clone() }).await,
        }
    }

    /// Like [`Dialer::connect`], but the channel connects on first use (and reconnects
    /// after failures); a failed connection or handshake fails the calls made on it.
    pub fn connect_lazy(&self, endpoint: Endpoint) -> Channel {
        match &self.tls {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(TlsDial { tls: tls.clone() }),
        }
    }
}

/// The connector tonic calls for each new connection of a TLS [`Dialer`].
#[derive(Clone)]
struct TlsDial {
    tls: TlsConnector,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tonic::codegen::Service<Uri> for TlsDial {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("no host in the gRPC address")?;
            let port = uri.port_u16().ok_or("no port in the gRPC address")?;
            // weed's clients send the host (without port) as SNI; brackets off an IPv6 literal.
            let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let name = ServerName::try_from(host.clone())?;
            let dial = async {
                let tcp = TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                tls.connect(name, tcp).await
            };
            let stream = tokio::time::timeout(HANDSHAKE_LIMIT, dial)
                .await
                .map_err(|_| format!("TLS connect to {host}:{port} took over {HANDSHAKE_LIMIT:?}"))??;
            Ok(TokioIo::new(stream))
        })
    }
}

/// weed's client-side check: the server's certificate must chain to `[grpc] ca`; its
/// names are not compared with the host dialed.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &ParsedCertificate::try_from(end_entity)?,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_addresses_follow_weeds_convention() {
        assert_eq!(grpc_address("127.0.0.1:9333").unwrap(), "127.0.0.1:19333");
        assert_eq!(grpc_address("master:9333.19999").unwrap(), "master:19999");
        assert!(grpc_address("9333").is_err());
        assert!(grpc_address("h:60000").is_err(), "no room for + 10000");
        assert!(grpc_address(":9333").is_err());
    }

    #[test]
    fn missing_or_empty_files_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let files = |ca: &Path| ClientTlsFiles {
            ca: ca.to_owned(),
            cert: dir.path().join("client.crt"),
            key: dir.path().join("client.key"),
        };
        for ca in [dir.path().join("nonexistent-ca.crt"), empty] {
            let error = Dialer::mutual_tls(&files(&ca)).unwrap_err();
            assert!(matches!(&error, TlsError::File { path, .. } if *path == ca), "{error}");
            assert!(error.to_string().contains(&ca.display().to_string()), "{error}");
        }
        assert!(!Dialer::default().is_tls());
        assert_eq!(format!("{:?}", Dialer::default()), "Dialer { tls: false }");
    }
}
