//! The client certificate a weed cluster's `security.toml` gives its gRPC clients:
//!
//! ```toml
//! [grpc]
//! ca = "ca.crt"              # the servers' certificates must chain to it
//! [grpc.client]
//! cert = "client.crt"        # presented to every gRPC server
//! key = "client.key"
//! ```
//!
//! `[grpc.client]` is the section weed's own clients dial with (`weed shell`, `mount`,
//! `backup`, `filer.copy`, ...: weed's `security.LoadClientTLS(config, "grpc.client")`),
//! so a cluster that lets them in lets this SDK in. As in weed, `client_cert`/`client_key`
//! win over `cert`/`key` when both are set, relative paths are taken from the file's
//! directory (as weed's `LoadClientTLSFromFile` does for a file named on its command
//! line), and a file without a client certificate means plaintext. Where weed silently
//! falls back to plaintext on a half configuration (a `cert` without `key`, or no `ca`),
//! this is an error.

use std::path::Path;

use rdma_transport::grpc_tls::{ClientTlsFiles, TlsError};
use serde::Deserialize;

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    grpc: Grpc,
}

#[derive(Deserialize, Default)]
struct Grpc {
    #[serde(default)]
    ca: String,
    #[serde(default)]
    client: Section,
}

#[derive(Deserialize, Default)]
struct Section {
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    client_cert: String,
    #[serde(default)]
    client_key: String,
}

/// The files `[grpc] ca` and `[grpc.client]` of `security_toml` name; `None` when it
/// sets no client certificate (the cluster's gRPC is plaintext).
pub fn grpc_client_files(security_toml: &Path) -> Result<Option<ClientTlsFiles>, TlsError> {
    let text = std::fs::read_to_string(security_toml).map_err(|e| TlsError::file(security_toml, e))?;
    let file: File =
        toml::from_str(&text).map_err(|e| TlsError::Config(format!("{}: {}", security_toml.display(), e)))?;
    let half = |what: &str| {
        TlsError::Config(format!("{}: [grpc.client] {what} must be set together", security_toml.display()))
    };
    let client = file.grpc.client;
    let (cert, key) = match (client.client_cert.is_empty(), client.client_key.is_empty()) {
        (false, false) => (client.client_cert, client.client_key),
        (true, true) => (client.cert, client.key),
        _ => return Err(half("client_cert and client_key")),
    };
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, false) => {}
        _ => return Err(half("cert and key")),
    }
    if file.grpc.ca.is_empty() {
        return Err(TlsError::Config(format!(
            "{}: [grpc.client] sets a certificate but [grpc] ca is not set",
            security_toml.display()
        )));
    }
    let dir = security_toml.parent().unwrap_or(Path::new(""));
    Ok(Some(ClientTlsFiles { ca: dir.join(file.grpc.ca), cert: dir.join(cert), key: dir.join(key) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<ClientTlsFiles>, TlsError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("security.toml");
        std::fs::write(&path, text).unwrap();
        grpc_client_files(&path).map(|files| {
            files.map(|f| ClientTlsFiles {
                ca: f.ca.strip_prefix(dir.path()).unwrap_or(&f.ca).to_owned(),
                cert: f.cert.strip_prefix(dir.path()).unwrap_or(&f.cert).to_owned(),
                key: f.key.strip_prefix(dir.path()).unwrap_or(&f.key).to_owned(),
            })
        })
    }

    fn files(ca: &str, cert: &str, key: &str) -> ClientTlsFiles {
        ClientTlsFiles { ca: ca.into(), cert: cert.into(), key: key.into() }
    }

    #[test]
    fn the_client_section_and_the_ca_name_the_files() {
        // Relative paths from the file's directory (shown here stripped of it), absolute ones as written.
        let both = "[grpc]\nca = \"ca.crt\"\n[grpc.client]\ncert = \"c.crt\"\nkey = \"/etc/c.key\"\n";
        assert_eq!(parse(both).unwrap(), Some(files("ca.crt", "c.crt", "/etc/c.key")));
        // client_cert/client_key win when both are set; other sections are not ours.
        let dedicated = "[grpc]\nca = \"ca.crt\"\n[grpc.volume]\ncert = \"v.crt\"\nkey = \"v.key\"\n\
                         [grpc.client]\ncert = \"c.crt\"\nkey = \"c.key\"\n\
                         client_cert = \"cc.crt\"\nclient_key = \"cc.key\"\n[jwt.signing]\nkey = \"k\"\n";
        assert_eq!(parse(dedicated).unwrap(), Some(files("ca.crt", "cc.crt", "cc.key")));
    }

    #[test]
    fn no_client_certificate_means_plaintext() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(
            parse("[grpc]\nca = \"ca.crt\"\n[grpc.volume]\ncert = \"v.crt\"\nkey = \"v.key\"\n").unwrap(),
            None
        );
        assert_eq!(parse("[grpc.client]\ncert = \"\"\nkey = \"\"\n").unwrap(), None);
    }

    #[test]
    fn half_configurations_and_bad_files_are_errors() {
        let config_error = |text: &str, says: &str| match parse(text) {
            Err(TlsError::Config(message)) => assert!(message.contains(says), "{message}"),
            other => panic!("{text:?}: {other:?}"),
        };
        config_error("[grpc]\nca = \"ca.crt\"\n[grpc.client]\ncert = \"c.crt\"\n", "cert and key");
        config_error(
            "[grpc]\nca = \"ca.crt\"\n[grpc.client]\nclient_key = \"c.key\"\n",
            "client_cert and client_key",
        );
        config_error("[grpc.client]\ncert = \"c.crt\"\nkey = \"c.key\"\n", "[grpc] ca is not set");
        config_error("[grpc\nca = ", "security.toml");
        let missing = Path::new("/nonexistent/security.toml");
        let error = grpc_client_files(missing).unwrap_err();
        assert!(matches!(&error, TlsError::File { path, .. } if path == missing), "{error}");
    }
}
