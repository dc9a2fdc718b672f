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
//! `h2`, which grpc-go requires. This module is the serving side; the dialing side is
//! `rdma_transport::grpc_tls` (RDMA clients dial the control plane on this port with it).
//!
//! `[tls]` `min_version`, `max_version` and `cipher_suites` shape the serving side, as in
//! weed, within rustls' TLS 1.2 and 1.3.
//!
//! Where weed silently falls back to plaintext on a half or broken configuration (a
//! `cert` without `key`, no `ca`, an unreadable file, a bad `[tls]` value), we refuse to
//! start with a message instead. Certificates are read at startup; weed re-reads them
//! periodically, we need a restart to rotate them.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rdma_transport::grpc_tls::{ClientTlsFiles, Dialer, HANDSHAKE_LIMIT, load_certs, load_key, load_roots};
use rdma_transport::server::TlsPeer;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme, SupportedProtocolVersion};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

/// Why the settings cannot be used: one error type for both sides.
pub use rdma_transport::grpc_tls::TlsError;

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
        let acceptor = match server {
            Some((cert, key)) => {
                let roots = Arc::new(load_roots(Path::new(&settings.ca))?);
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let verifier = ClientNames::new(
                    WebPkiClientVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| TlsError::file(&settings.ca, e))?,
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
            Some((cert, key)) => Dialer::mutual_tls(&ClientTlsFiles {
                ca: PathBuf::from(&settings.ca),
                cert: PathBuf::from(cert),
                key: PathBuf::from(key),
            })?,
            None => Dialer::default(),
        };
        Ok(Self { acceptor, dialer })
    }

    /// One line for the startup log.
    pub fn describe(&self) -> &'static str {
        match (&self.acceptor, self.dialer.is_tls()) {
            (Some(_), true) => "gRPC: mutual TLS (serving and dialing)",
            (Some(_), false) => "gRPC: mutual TLS serving, plaintext dialing",
            (None, true) => "gRPC: plaintext serving, mutual TLS dialing",
            (None, false) => "gRPC: plaintext",
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
                        let certificates = stream.get_ref().1.peer_certificates();
                        let common_name = certificates.and_then(|c| c.first()).and_then(|c| common_name(c));
                        let peer = TlsPeer { tcp: info, common_name };
                        let _ = tx.send(Ok(TlsConnection { stream, peer })).await;
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

/// One TLS connection to our gRPC port; tonic sees its TCP addresses and its client
/// certificate's common name (RDMA's `--rdma-volume-cn` reads it).
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: TlsPeer,
}

impl Connected for TlsConnection {
    type ConnectInfo = TlsPeer;

    fn connect_info(&self) -> TlsPeer {
        self.peer.clone()
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
