//! gRPC mutual TLS as a weed cluster configures it in `security.toml`:
//!
//! ```toml
//! [grpc]
//! ca = "ca.crt"                    # trusted for both directions
//! allowed_wildcard_domain = ""     # e.g. ".example.com": client CNs ending so are allowed
//! [grpc.volume]
//! cert = "volume.crt"              # served on our gRPC port, and presented when we dial
//! key = "volume.key"
//! client_cert = ""                 # presented when we dial instead of cert/key, if set
//! client_key = ""
//! allowed_commonNames = ""         # comma-separated client CNs allowed (empty: any)
//! ```
//!
//! weed's rules, which we follow: with `cert` and `key` set, the gRPC port speaks only
//! TLS and requires a client certificate that chains to `ca` (and, when
//! `allowed_commonNames` or `allowed_wildcard_domain` is set, whose subject CN is
//! listed or ends with the domain). When dialing (the master's heartbeat stream, other
//! volume servers for volume moves and pings) a volume server presents `[grpc.volume]`'s
//! client certificate (`client_cert`/`client_key`, else `cert`/`key`; not `[grpc.client]`,
//! which is for command-line clients such as `weed shell`) and checks that the server's
//! certificate chains to `ca`, but not the host name ("the host name is not checked, so
//! the certificate files can be shared", says weed's scaffold). Both sides offer ALPN
//! `h2`, which grpc-go requires.
//!
//! `[tls]` `min_version`, `max_version` and `cipher_suites` shape the serving side, as in
//! weed, within rustls' TLS 1.2 and 1.3.
//!
//! Where weed silently falls back to plaintext on a half or broken configuration (a
//! `cert` without `key`, no `ca`, an unreadable file, a bad `[tls]` value), we refuse to
//! start with a message instead. Certificates are read at startup; weed re-reads them
//! periodically, we need a restart to rotate them.

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
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme, SupportedProtocolVersion,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::{Channel, Endpoint, Uri};

/// The `security.toml` settings for our gRPC TLS (paths as written: weed opens them
/// relative to its working directory, and so do we).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcTlsSettings {
    /// `[grpc] ca`
    pub ca: String,
    /// `[grpc] allowed_wildcard_domain`
    pub allowed_wildcard_domain: String,
    /// `[grpc.volume] cert`, `key`
    pub cert: String,
    pub key: String,
    /// `[grpc.volume] client_cert`, `client_key`
    pub client_cert: String,
    pub client_key: String,
    /// `[grpc.volume] allowed_commonNames`
    pub allowed_common_names: String,
    /// `[tls] min_version`, `max_version` (Go's names: "TLS 1.2", ...) and
    /// `cipher_suites` (comma-separated Go/IANA names): weed applies them to the
    /// serving side only, and so do we.
    pub min_version: String,
    pub max_version: String,
    pub cipher_suites: String,
}

/// Why the gRPC TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("security.toml: {0}")]
    Config(String),
    #[error("gRPC TLS: {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("gRPC TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

/// How our gRPC port is served and how we dial other servers' gRPC ports.
pub struct GrpcTls {
    /// The TLS side of the gRPC port; None: plaintext, as without TLS settings.
    pub acceptor: Option<TlsAcceptor>,
    pub dialer: Dialer,
}

impl GrpcTls {
    /// The TLS in force for `settings`: none when no certificate is configured.
    pub fn load(settings: &GrpcTlsSettings) -> Result<Self, TlsError> {
        let pair = |cert: &str, key: &str, what: &str| match (cert.is_empty(), key.is_empty()) {
            (true, true) => Ok(None),
            (false, false) => Ok(Some((cert.to_owned(), key.to_owned()))),
            _ => Err(TlsError::Config(format!("[grpc.volume] {what} must be set together"))),
        };
        let server = pair(&settings.cert, &settings.key, "cert and key")?;
        let client = pair(&settings.client_cert, &settings.client_key, "client_cert and client_key")?
            .or(server.clone());
        if server.is_none() && client.is_none() {
            return Ok(Self { acceptor: None, dialer: Dialer::default() });
        }
        if settings.ca.is_empty() {
            return Err(TlsError::Config("a certificate is set but [grpc] ca is not".to_owned()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(load_roots(Path::new(&settings.ca))?);
        let acceptor = match server {
            Some((cert, key)) => {
                let verifier = ClientNames::new(
                    WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
                        .build()
                        .map_err(|e| file_error(&settings.ca, e))?,
                    &settings.allowed_common_names,
                    &settings.allowed_wildcard_domain,
                );
                let serving = serving_provider(&settings.cipher_suites)?;
                let versions = serving_versions(&settings.min_version, &settings.max_version)?;
                let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(serving))
                    .with_protocol_versions(&versions)?
                    .with_client_cert_verifier(Arc::new(verifier))
                    .with_single_cert(load_certs(Path::new(&cert))?, load_key(Path::new(&key))?)?;
                config.alpn_protocols = vec![b"h2".to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };
        let dialer = match client {
            Some((cert, key)) => {
                let verifier = ChainOnly { roots: Arc::clone(&roots), provider: Arc::clone(&provider) };
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_client_auth_cert(load_certs(Path::new(&cert))?, load_key(Path::new(&key))?)?;
                config.alpn_protocols = vec![b"h2".to_vec()];
                Dialer { tls: Some(TlsConnector::from(Arc::new(config))) }
            }
            None => Dialer::default(),
        };
        Ok(Self { acceptor, dialer })
    }

    /// One line for the startup log.
    pub fn describe(&self) -> &'static str {
        match (&self.acceptor, &self.dialer.tls) {
            (Some(_), Some(_)) => "gRPC: mutual TLS (serving and dialing)",
            (Some(_), None) => "gRPC: mutual TLS serving, plaintext dialing",
            (None, Some(_)) => "gRPC: plaintext serving, mutual TLS dialing",
            (None, None) => "gRPC: plaintext",
        }
    }
}

/// The protocol versions `[tls] min_version`/`max_version` allow. rustls speaks TLS 1.2
/// and 1.3 only: a lower minimum means 1.2 (the peers, weed's grpc-go, speak 1.2+), a
/// maximum below 1.2 cannot be served.
fn serving_versions(min: &str, max: &str) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    let rank = |name: &str, key: &str| match name.trim() {
        "" => Ok(None),
        "SSLv3" => Ok(Some(0)),
        "TLS 1.0" => Ok(Some(1)),
        "TLS 1.1" => Ok(Some(2)),
        "TLS 1.2" => Ok(Some(3)),
        "TLS 1.3" => Ok(Some(4)),
        other => Err(TlsError::Config(format!(
            "[tls] {key} {other:?} is none of \"SSLv3\", \"TLS 1.0\", \"TLS 1.1\", \"TLS 1.2\", \"TLS 1.3\""
        ))),
    };
    let low = rank(min, "min_version")?.unwrap_or(3).max(3);
    let high = rank(max, "max_version")?.unwrap_or(4);
    if high < 3 {
        return Err(TlsError::Config(format!(
            "[tls] max_version {max:?}: this server speaks TLS 1.2 and 1.3 only"
        )));
    }
    if low > high {
        return Err(TlsError::Config(format!("[tls] min_version {min:?} is above max_version {max:?}")));
    }
    Ok([(3, &rustls::version::TLS12), (4, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(rank, _)| (low..=high).contains(rank))
        .map(|(_, version)| version)
        .collect())
}

/// ring's suites, the TLS 1.2 ones cut to `[tls] cipher_suites` when it is set. As in
/// Go, the list does not touch TLS 1.3 (its suites are all on; their names are
/// accepted); a name this server does not have is an error.
fn serving_provider(cipher_suites: &str) -> Result<CryptoProvider, TlsError> {
    let mut provider = rustls::crypto::ring::default_provider();
    let names: Vec<&str> = cipher_suites.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    if names.is_empty() {
        return Ok(provider);
    }
    // Go's name of a suite: the IANA one, TLS 1.3's without rustls' "TLS13_".
    let go_name = |suite: &rustls::SupportedCipherSuite| {
        let name = suite.suite().as_str().unwrap_or_default();
        name.strip_prefix("TLS13_").map_or_else(|| name.to_owned(), |rest| format!("TLS_{rest}"))
    };
    if let Some(unknown) = names.iter().find(|n| !provider.cipher_suites.iter().any(|s| go_name(s) == **n)) {
        let known: Vec<String> = provider.cipher_suites.iter().map(go_name).collect();
        return Err(TlsError::Config(format!(
            "[tls] cipher_suites: {unknown:?} is not one of {}",
            known.join(", ")
        )));
    }
    provider.cipher_suites.retain(|s| s.tls13().is_some() || names.contains(&go_name(s).as_str()));
    Ok(provider)
}

fn file_error(path: impl AsRef<Path>, e: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.as_ref().to_owned(), message: e.to_string() }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// The connections of a TLS gRPC port, handshaken. Each handshake runs in its own task
/// (a slow or silent client holds up nobody) and is bounded; failed ones are logged and
/// dropped. Ends when the server drops the stream.
pub fn incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<std::io::Result<TlsConnection>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // E.g. out of file descriptors: wait for some to close.
                        tracing::warn!(error = %e, "gRPC accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = tx.closed() => return,
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let info = tcp.connect_info();
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(TlsConnection { stream, info })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "refused a gRPC connection: TLS handshake failed")
                    }
                    Err(_) => tracing::info!(%peer, "refused a gRPC connection: TLS handshake took too long"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// One TLS connection to our gRPC port; tonic sees its TCP addresses.
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    info: TcpConnectInfo,
}

impl Connected for TlsConnection {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Dials weed gRPC servers: plaintext HTTP/2, or TLS with our client certificate.
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
    /// A channel to `endpoint` (an `http://host:port` URI: with TLS the scheme stays
    /// `http`, the TLS is this dialer's), with its timeouts and keepalive settings.
    pub async fn connect(&self, endpoint: Endpoint) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            None => endpoint.connect().await,
            Some(tls) => endpoint.connect_with_connector(TlsDial { tls: tls.clone() }).await,
        }
    }
}

/// Longest a TLS handshake (with, when dialing, its TCP connect) may take.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

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

/// weed's server-side check: a client certificate chaining to `[grpc] ca` (the inner
/// verifier), and, when names are configured, a subject CN that is listed or ends with
/// the wildcard domain.
#[derive(Debug)]
struct ClientNames {
    chain: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
    wildcard_domain: String,
}

impl ClientNames {
    /// weed splits the names on commas without trimming (so `"a, b"` never admits `b`);
    /// we trim, and an empty entry admits nobody (weed's admits certificates without CN).
    fn new(chain: Arc<dyn ClientCertVerifier>, names: &str, wildcard_domain: &str) -> Self {
        let names = names.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
        Self { chain, names, wildcard_domain: wildcard_domain.trim().to_owned() }
    }

    fn admits(&self, common_name: &str) -> bool {
        if self.names.is_empty() && self.wildcard_domain.is_empty() {
            return true;
        }
        (!self.wildcard_domain.is_empty() && common_name.ends_with(&self.wildcard_domain))
            || self.names.iter().any(|n| n == common_name)
    }
}

impl ClientCertVerifier for ClientNames {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.chain.verify_client_cert(end_entity, intermediates, now)?;
        let common_name = common_name(end_entity).unwrap_or_default();
        if self.admits(&common_name) {
            Ok(verified)
        } else {
            tracing::warn!(common_name, "refused a gRPC client: common name not allowed");
            Err(rustls::Error::General(format!("client common name {common_name:?} is not allowed")))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// The subject common name of a DER X.509 certificate (the last CN attribute, as Go
/// reads it); None if there is none or the DER is malformed. Called only on
/// certificates whose chain has already been verified.
fn common_name(cert: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const VERSION: u8 = 0xa0;
    const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03]; // 2.5.4.3
    let (SEQUENCE, certificate, _) = der(cert)? else { return None };
    let (SEQUENCE, tbs, _) = der(certificate)? else { return None };
    let (tag, _, after_first) = der(tbs)?;
    // [0] version is optional; then serial, signature algorithm, issuer, validity, subject.
    let mut rest = if tag == VERSION { after_first } else { tbs };
    for _ in 0..4 {
        rest = der(rest)?.2;
    }
    let (SEQUENCE, mut subject, _) = der(rest)? else { return None };
    let mut found = None;
    while !subject.is_empty() {
        let (SET, mut names, after) = der(subject)? else { return None };
        subject = after;
        while !names.is_empty() {
            let (SEQUENCE, attribute, after) = der(names)? else { return None };
            names = after;
            let (OID, oid, value) = der(attribute)? else { return None };
            if oid == COMMON_NAME {
                found = Some(directory_string(der(value)?)?);
            }
        }
    }
    found
}

/// The text of an X.520 DirectoryString (UTF8, Printable, IA5, Teletex or BMP string).
fn directory_string((tag, bytes, _): (u8, &[u8], &[u8])) -> Option<String> {
    const BMP_STRING: u8 = 0x1e;
    if tag == BMP_STRING {
        let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        return String::from_utf16(&units).ok();
    }
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// One DER element: (tag, contents, what follows); None if truncated or its length is
/// not DER's.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let width = usize::from(first & 0x7f);
        if width == 0 || width > 4 || rest.len() < width {
            return None;
        }
        let len = rest[..width].iter().fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, &rest[width..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Certificates openssl made (`openssl req -x509 -newkey ec ... -outform DER`), base64
    /// of their DER: subject `/O=Org/CN=first/CN=volume-1/OU=unit`, and `/O=NoName`.
    const TWO_CNS: &str = concat!(
        "MIIB1TCCAXugAwIBAgIUS9fgUTCRGs34ETh2E4pbQ6+3kD8wCgYIKoZIzj0EAwIwQDEMMAoGA1UECgwDT3JnMQ4wDAYD",
        "VQQDDAVmaXJzdDERMA8GA1UEAwwIdm9sdW1lLTExDTALBgNVBAsMBHVuaXQwHhcNMjYxMTIxMTI0MjExWhcNMzYxMTE4",
        "MTI0MjExWjBAMQwwCgYDVQQKDANPcmcxDjAMBgNVBAMMBWZpcnN0MREwDwYDVQQDDAh2b2x1bWUtMTENMAsGA1UECwwE",
        "dW5pdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABDJCqxA94bvaeUMTuR7n2PIn+rljpe6iX03xV7mO1LkVhURqw62Q",
        "p7Vmwmrq9ADDTeqnNhXZGOd3WFXWfu3m/RmjUzBRMB0GA1UdDgQWBBSIB2gZ0ZGmtUAoggn1VEpnaIimZzAfBgNVHSME",
        "GDAWgBSIB2gZ0ZGmtUAoggn1VEpnaIimZzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCICiUsb3QWsXi",
        "0bHLUVMbJFXmKqSwI+kYxVH9GktM8PhmAiEAibCrvisuD8b2LhsLtT/ZThf3mYwlE60mT7BPDwjdDJY=",
    );
    const NO_CN: &str = concat!(
        "MIIBeDCCAR2gAwIBAgIUdT2XFKHFW8mC0FeCOTPBbbXkIqwwCgYIKoZIzj0EAwIwETEPMA0GA1UECgwGTm9OYW1lMB4X",
        "DTI2MTEyMTEyNDIxMVoXDTM2MTExODEyNDIxMVowETEPMA0GA1UECgwGTm9OYW1lMFkwEwYHKoZIzj0CAQYIKoZIzj0D",
        "AQcDQgAEKfQaKWl/p7C4/R30U6yloUOce+SV/j7sDAruqihsaGS9JFvDBvXzcpwG/TLXSujJyUBEoCLy3qH+JexVcul4",
        "LKNTMFEwHQYDVR0OBBYEFEEF/gn8POTILckpEGUpFtPrjixzMB8GA1UdIwQYMBaAFEEF/gn8POTILckpEGUpFtPrjixz",
        "MA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSQAwRgIhAOSzinhFlFjVxozM/aCLuhPZdRTLfnB/rCAKpl50jInq",
        "AiEAllwcPvwMozjUwnwl4Cq8FyBvKoTUR89+hnyRCRwWBEc=",
    );

    fn decode(text: &str) -> Vec<u8> {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.decode(text).unwrap()
    }

    #[test]
    fn the_common_name_is_the_last_cn_of_the_subject() {
        assert_eq!(common_name(&decode(TWO_CNS)).as_deref(), Some("volume-1"));
        assert_eq!(common_name(&decode(NO_CN)), None);
        // Malformed or truncated DER is no name, never a panic.
        let cert = decode(TWO_CNS);
        for cut in 0..cert.len() {
            let _ = common_name(&cert[..cut]);
        }
        assert_eq!(common_name(b"not a certificate"), None);
    }

    #[test]
    fn der_lengths_are_bounded() {
        assert_eq!(der(&[0x30, 0x02, 1, 2, 9]), Some((0x30, &[1u8, 2][..], &[9u8][..])));
        assert_eq!(der(&[0x30, 0x81, 0x02, 1, 2]), Some((0x30, &[1u8, 2][..], &[][..])));
        assert_eq!(der(&[0x30, 0x03, 1, 2]), None, "truncated");
        assert_eq!(der(&[0x30, 0x80]), None, "indefinite length is not DER");
        assert_eq!(der(&[0x30, 0x85, 0, 0, 0, 0, 1]), None, "over 4 length bytes");
        assert_eq!(der(&[0x30]), None);
        assert_eq!(der(&[]), None);
    }

    #[test]
    fn names_are_allowed_by_list_or_domain() {
        #[derive(Debug)]
        struct Nobody;
        impl ClientCertVerifier for Nobody {
            fn root_hint_subjects(&self) -> &[DistinguishedName] {
                &[]
            }
            fn verify_client_cert(
                &self,
                _: &CertificateDer<'_>,
                _: &[CertificateDer<'_>],
                _: UnixTime,
            ) -> Result<ClientCertVerified, rustls::Error> {
                Err(rustls::Error::General("not used".into()))
            }
            fn verify_tls12_signature(
                &self,
                _: &[u8],
                _: &CertificateDer<'_>,
                _: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                Err(rustls::Error::General("not used".into()))
            }
            fn verify_tls13_signature(
                &self,
                _: &[u8],
                _: &CertificateDer<'_>,
                _: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                Err(rustls::Error::General("not used".into()))
            }
            fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
                Vec::new()
            }
        }
        let names = |list: &str, domain: &str| ClientNames::new(Arc::new(Nobody), list, domain);
        let open = names("", "");
        assert!(open.admits("anything") && open.admits(""));
        let listed = names("master, shell ,", "");
        assert!(listed.admits("master") && listed.admits("shell"));
        assert!(!listed.admits("") && !listed.admits("mallory") && !listed.admits("master "));
        let domain = names("", ".example.com");
        assert!(
            domain.admits("vol1.example.com") && !domain.admits("vol1.example.org") && !domain.admits("")
        );
        let both = names("shell", ".example.com");
        assert!(both.admits("shell") && both.admits("m.example.com") && !both.admits("other"));
    }

    #[test]
    fn half_configurations_are_refused() {
        let files = |cert: &str, key: &str, ca: &str| GrpcTlsSettings {
            cert: cert.into(),
            key: key.into(),
            ca: ca.into(),
            ..GrpcTlsSettings::default()
        };
        let plain = GrpcTls::load(&GrpcTlsSettings::default()).unwrap();
        assert_eq!(plain.describe(), "gRPC: plaintext");
        assert!(matches!(GrpcTls::load(&files("v.crt", "", "ca.crt")), Err(TlsError::Config(_))));
        assert!(matches!(GrpcTls::load(&files("v.crt", "v.key", "")), Err(TlsError::Config(_))));
        let missing = GrpcTls::load(&files("v.crt", "v.key", "/nonexistent/ca.crt")).err().unwrap();
        assert!(missing.to_string().contains("/nonexistent/ca.crt"), "{missing}");
    }

    #[test]
    fn tls_versions_follow_weeds_names_within_what_rustls_speaks() {
        let names = |min: &str, max: &str| {
            serving_versions(min, max)
                .map(|v| v.iter().map(|v| format!("{:?}", v.version)).collect::<Vec<_>>())
        };
        let both = vec!["TLSv1_2".to_owned(), "TLSv1_3".to_owned()];
        assert_eq!(names("", "").unwrap(), both);
        assert_eq!(names("TLS 1.0", "").unwrap(), both, "a lower minimum is 1.2");
        assert_eq!(names("TLS 1.3", "").unwrap(), vec!["TLSv1_3".to_owned()]);
        assert_eq!(names("", "TLS 1.2").unwrap(), vec!["TLSv1_2".to_owned()]);
        assert!(names("", "TLS 1.1").is_err(), "cannot serve below 1.2");
        assert!(names("TLS 1.3", "TLS 1.2").is_err());
        assert!(names("TLSv1.2", "").is_err(), "not Go's spelling");
    }

    #[test]
    fn cipher_suites_cut_tls12_only_and_unknown_names_are_errors() {
        let all = rustls::crypto::ring::default_provider().cipher_suites.len();
        assert_eq!(serving_provider("").unwrap().cipher_suites.len(), all);
        let one =
            serving_provider(" TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 ,TLS_AES_128_GCM_SHA256").unwrap();
        let tls12: Vec<_> = one.cipher_suites.iter().filter(|s| s.tls13().is_none()).collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(tls12[0].suite().as_str(), Some("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"));
        assert_eq!(one.cipher_suites.iter().filter(|s| s.tls13().is_some()).count(), 3, "TLS 1.3 untouched");
        let unknown = serving_provider("TLS_RSA_WITH_RC4_128_SHA").err().unwrap().to_string();
        assert!(
            unknown.contains("TLS_RSA_WITH_RC4_128_SHA") && unknown.contains("is not one of"),
            "{unknown}"
        );
    }
}
