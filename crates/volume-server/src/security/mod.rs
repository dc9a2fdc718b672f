//! weed's `security.toml`: the `[jwt.signing]` (writes and deletes) and
//! `[jwt.signing.read]` (reads) keys for the HTTP API, the token a request carries,
//! the tokens the embedded master API issues, the `[guard] white_list`
//! ([`guard`]) and the gRPC TLS files ([`grpc_tls`]), whose modules live here too.
//!
//! The HS256 code is rdma-transport's [`JwtKey`] (one implementation for both planes);
//! what is HTTP-specific lives here: where weed looks for the token and its rule that a
//! token names exactly one file (`fid` claim == `<vid>,<fid>` with any `_N` suffix of
//! the URL's fid cut off).

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, header};
use rdma_transport::server::auth::JwtKey;
use serde::Deserialize;

pub mod grpc_tls;
pub mod guard;

use self::grpc_tls::GrpcTlsSettings;
use self::guard::WhiteList;

/// Where weed looks for `security.toml`, first found wins.
pub fn search_path() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("security.toml")];
    if let Some(home) = std::env::var_os("HOME") {
        paths.push(Path::new(&home).join(".seaweedfs/security.toml"));
    }
    paths.push(PathBuf::from("/usr/local/etc/seaweedfs/security.toml"));
    paths.push(PathBuf::from("/etc/seaweedfs/security.toml"));
    paths
}

/// weed's defaults for `expires_after_seconds` (master and volume server set them so).
const DEFAULT_WRITE_EXPIRES_AFTER: u64 = 10;
const DEFAULT_READ_EXPIRES_AFTER: u64 = 60;

/// One signing key and the lifetime of the tokens issued with it.
#[derive(Clone, Debug)]
pub struct SigningKey {
    key: JwtKey,
    /// Seconds an issued token lives; 0 issues tokens without `exp` (as weed does).
    pub expires_after: u64,
}

impl SigningKey {
    pub fn new(key: impl Into<Vec<u8>>, expires_after: u64) -> Self {
        Self { key: JwtKey::new(key), expires_after }
    }

    /// The raw key, for the RDMA control plane.
    pub fn jwt_key(&self) -> &JwtKey {
        &self.key
    }
}

/// What a request does, which decides the key that guards it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// GET, HEAD: `jwt.signing.read.key`.
    Read,
    /// POST, PUT, DELETE: `jwt.signing.key`.
    Write,
}

/// The keys in force (no key: that access is open, as in weed) and the white list.
#[derive(Clone, Debug, Default)]
pub struct Security {
    pub write: Option<SigningKey>,
    pub read: Option<SigningKey>,
    /// Who may upload and delete (empty: everyone).
    pub white_list: WhiteList,
    /// `[grpc]` and `[grpc.volume]`: mutual TLS on our gRPC port and when we dial.
    pub grpc: GrpcTlsSettings,
}

/// Why `security.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: &'static str, message: String },
}

/// The parts of `security.toml` we use; every other section is ignored.
#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    jwt: JwtSection,
    #[serde(default)]
    guard: GuardSection,
    #[serde(default)]
    grpc: GrpcSection,
    #[serde(default)]
    tls: TlsSection,
}

#[derive(Deserialize, Default)]
struct TlsSection {
    #[serde(default)]
    min_version: String,
    #[serde(default)]
    max_version: String,
    #[serde(default)]
    cipher_suites: String,
}

#[derive(Deserialize, Default)]
struct GrpcSection {
    #[serde(default)]
    ca: String,
    #[serde(default)]
    allowed_wildcard_domain: String,
    #[serde(default)]
    volume: GrpcVolume,
}

#[derive(Deserialize, Default)]
struct GrpcVolume {
    #[serde(default)]
    cert: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    client_cert: String,
    #[serde(default)]
    client_key: String,
    // viper's keys are case-insensitive; weed's scaffold spells it so.
    #[serde(default, rename = "allowed_commonNames", alias = "allowed_commonnames")]
    allowed_common_names: String,
}

#[derive(Deserialize, Default)]
struct GuardSection {
    #[serde(default)]
    white_list: String,
}

#[derive(Deserialize, Default)]
struct JwtSection {
    #[serde(default)]
    signing: Signing,
}

#[derive(Deserialize, Default)]
struct Signing {
    #[serde(default)]
    key: String,
    expires_after_seconds: Option<u64>,
    #[serde(default)]
    read: ReadSigning,
}

#[derive(Deserialize, Default)]
struct ReadSigning {
    #[serde(default)]
    key: String,
    expires_after_seconds: Option<u64>,
}

impl Security {
    /// The keys from `explicit` (which must exist), else from the first `security.toml`
    /// on weed's [`search_path`], then weed's `WEED_JWT_SIGNING_*` environment
    /// variables over them. Also returns the file used, if any.
    pub fn load(explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), SecurityError> {
        let path = match explicit {
            Some(path) => Some(path.to_owned()),
            None => search_path().into_iter().find(|p| p.is_file()),
        };
        let mut security = match &path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| SecurityError::Read { path: path.clone(), source })?;
                Self::parse(&text).map_err(|message| SecurityError::Parse { path: path.clone(), message })?
            }
            None => Self::default(),
        };
        security.apply_env(|name| std::env::var(name).ok())?;
        Ok((security, path))
    }

    /// The keys of a `security.toml` text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let signing = file.jwt.signing;
        let key = |key: String, expires: Option<u64>, default: u64| {
            (!key.is_empty()).then(|| SigningKey::new(key, expires.unwrap_or(default)))
        };
        Ok(Self {
            write: key(signing.key, signing.expires_after_seconds, DEFAULT_WRITE_EXPIRES_AFTER),
            read: key(signing.read.key, signing.read.expires_after_seconds, DEFAULT_READ_EXPIRES_AFTER),
            white_list: WhiteList::parse(&file.guard.white_list).map_err(|e| format!("[guard] {e}"))?,
            grpc: GrpcTlsSettings {
                ca: file.grpc.ca,
                allowed_wildcard_domain: file.grpc.allowed_wildcard_domain,
                cert: file.grpc.volume.cert,
                key: file.grpc.volume.key,
                client_cert: file.grpc.volume.client_cert,
                client_key: file.grpc.volume.client_key,
                allowed_common_names: file.grpc.volume.allowed_common_names,
                min_version: file.tls.min_version,
                max_version: file.tls.max_version,
                cipher_suites: file.tls.cipher_suites,
            },
        })
    }

    /// weed's environment overrides (a set variable wins over the file).
    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), SecurityError> {
        // viper, weed's config reader, takes an empty variable for an unset one.
        let set = |name: &str| var(name).filter(|value| !value.is_empty());
        if let Some(list) = set("WEED_GUARD_WHITE_LIST") {
            self.white_list = WhiteList::parse(&list)
                .map_err(|e| SecurityError::Env { name: "WEED_GUARD_WHITE_LIST", message: e.to_string() })?;
        }
        let grpc = &mut self.grpc;
        for (slot, name) in [
            (&mut grpc.ca, "WEED_GRPC_CA"),
            (&mut grpc.allowed_wildcard_domain, "WEED_GRPC_ALLOWED_WILDCARD_DOMAIN"),
            (&mut grpc.cert, "WEED_GRPC_VOLUME_CERT"),
            (&mut grpc.key, "WEED_GRPC_VOLUME_KEY"),
            (&mut grpc.client_cert, "WEED_GRPC_VOLUME_CLIENT_CERT"),
            (&mut grpc.client_key, "WEED_GRPC_VOLUME_CLIENT_KEY"),
            (&mut grpc.allowed_common_names, "WEED_GRPC_VOLUME_ALLOWED_COMMONNAMES"),
            (&mut grpc.min_version, "WEED_TLS_MIN_VERSION"),
            (&mut grpc.max_version, "WEED_TLS_MAX_VERSION"),
            (&mut grpc.cipher_suites, "WEED_TLS_CIPHER_SUITES"),
        ] {
            if let Some(value) = set(name) {
                *slot = value;
            }
        }
        for (slot, key_var, expires_var, default) in [
            (
                &mut self.write,
                "WEED_JWT_SIGNING_KEY",
                "WEED_JWT_SIGNING_EXPIRES_AFTER_SECONDS",
                DEFAULT_WRITE_EXPIRES_AFTER,
            ),
            (
                &mut self.read,
                "WEED_JWT_SIGNING_READ_KEY",
                "WEED_JWT_SIGNING_READ_EXPIRES_AFTER_SECONDS",
                DEFAULT_READ_EXPIRES_AFTER,
            ),
        ] {
            let expires = match set(expires_var) {
                Some(text) => Some(text.trim().parse::<u64>().map_err(|e| SecurityError::Env {
                    name: expires_var,
                    message: format!("{text:?} is not a number of seconds: {e}"),
                })?),
                None => None,
            };
            match set(key_var) {
                Some(key) => {
                    let expires = expires.or(slot.as_ref().map(|s| s.expires_after));
                    *slot = Some(SigningKey::new(key, expires.unwrap_or(default)));
                }
                None => {
                    if let (Some(slot), Some(expires)) = (slot.as_mut(), expires) {
                        slot.expires_after = expires;
                    }
                }
            }
        }
        Ok(())
    }

    fn key(&self, access: Access) -> Option<&SigningKey> {
        match access {
            Access::Read => self.read.as_ref(),
            Access::Write => self.write.as_ref(),
        }
    }

    /// One line for the startup log, naming no key.
    pub fn describe(&self) -> String {
        let state = |key: &Option<SigningKey>| if key.is_some() { "signed" } else { "open" };
        let mut line = format!("JWT: writes {}, reads {}", state(&self.write), state(&self.read));
        if !self.white_list.is_empty() {
            line += &format!("; uploads and deletes only from {}", self.white_list);
        }
        line
    }

    /// weed's `maybeCheckJwtAuthorization`: whether a request for `vid`,`fid` (the URL's
    /// text, extension cut off) may do `access`. Always true when no key guards it.
    pub fn allows(
        &self,
        access: Access,
        query: Option<&str>,
        headers: &HeaderMap,
        vid: &str,
        fid: &str,
    ) -> bool {
        let Some(signing) = self.key(access) else { return true };
        let Some(token) = token_of(query, headers) else { return false };
        match signing.key.verify(&token, volume_store::clock::now_seconds()) {
            Ok(claims) => claims.fid.is_some_and(|claim| names_file(&claim, vid, fid)),
            Err(e) => {
                tracing::debug!(error = %e, "refused a request's JWT");
                false
            }
        }
    }

    /// A token for `fid` as weed master issues one (`GenJwtForVolumeServer`), or None
    /// when no key signs this access.
    pub fn issue(&self, access: Access, fid: &str) -> Option<String> {
        let signing = self.key(access)?;
        let mut claims = serde_json::json!({ "fid": fid });
        if signing.expires_after > 0 {
            claims["exp"] = (volume_store::clock::now_seconds() + signing.expires_after).into();
        }
        Some(signing.key.sign(&claims))
    }
}

/// The token a request carries, where weed's `GetJwt` looks: the `jwt` query parameter,
/// then `Authorization: Bearer <t>` (scheme in any case), then the cookie `AT`.
pub fn token_of(query: Option<&str>, headers: &HeaderMap) -> Option<String> {
    if let Some(query) = query {
        let from_query = query
            .split('&')
            .find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == "jwt").map(|(_, v)| v))
            .map(crate::http::query::percent_decode);
        if let Some(token) = from_query.filter(|t| !t.is_empty()) {
            return Some(token);
        }
    }
    if let Some(value) = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) {
        // Go: `len(bearer) > 7 && strings.ToUpper(bearer[0:6]) == "BEARER"`, then bearer[7:].
        if value.len() > 7 && value[..6].eq_ignore_ascii_case(b"bearer") {
            return Some(String::from_utf8_lossy(&value[7..]).into_owned());
        }
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == "AT").then(|| value.trim_matches('"').to_owned())
        })
        .filter(|t| !t.is_empty())
}

/// Whether a token's `fid` claim names the file at `vid`,`fid`: weed compares the text,
/// after cutting the URL's fid at its last `_` (the `_N` of a `count=N` assignment
/// shares the token of the base fid).
pub fn names_file(claim: &str, vid: &str, fid: &str) -> bool {
    let base = match fid.rfind('_') {
        Some(i) if i > 0 => &fid[..i],
        _ => fid,
    };
    claim == format!("{vid},{base}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_query_then_the_header_then_the_cookie() {
        let all = headers(&[
            (header::AUTHORIZATION, "Bearer from-header"),
            (header::COOKIE, "x=1; AT=from-cookie"),
        ]);
        assert_eq!(token_of(Some("a=1&jwt=from%2Equery"), &all).as_deref(), Some("from.query"));
        assert_eq!(token_of(Some("jwt="), &all).as_deref(), Some("from-header"));
        assert_eq!(token_of(None, &all).as_deref(), Some("from-header"));
        let cookie_only = headers(&[(header::COOKIE, "x=1; AT=from-cookie")]);
        assert_eq!(token_of(Some("a=1"), &cookie_only).as_deref(), Some("from-cookie"));
        assert_eq!(token_of(None, &HeaderMap::new()), None);
    }

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case_and_nothing_else_is() {
        for scheme in ["Bearer", "BEARER", "bearer", "bEaReR"] {
            let h = headers(&[(header::AUTHORIZATION, &format!("{scheme} t.o.k"))]);
            assert_eq!(token_of(None, &h).as_deref(), Some("t.o.k"), "{scheme}");
        }
        for value in ["Basic dXNlcjpw", "Bearer ", "Bearer", "token t.o.k"] {
            let h = headers(&[(header::AUTHORIZATION, value)]);
            assert_eq!(token_of(None, &h), None, "{value:?}");
        }
        // A foreign header does not hide the cookie.
        let h = headers(&[(header::AUTHORIZATION, "Basic dXNlcjpw"), (header::COOKIE, "AT=c")]);
        assert_eq!(token_of(None, &h).as_deref(), Some("c"));
    }

    #[test]
    fn the_fid_claim_names_one_file_and_its_underscore_siblings() {
        assert!(names_file("3,01637037d6", "3", "01637037d6"));
        assert!(names_file("3,01637037d6", "3", "01637037d6_1"));
        assert!(names_file("3,01637037d6", "3", "01637037d6_12"));
        assert!(!names_file("3,01637037d6", "3", "01637037d7"));
        assert!(!names_file("3,01637037d6", "4", "01637037d6"));
        assert!(!names_file("3,01637037d6", "33", "01637037d6"));
        assert!(!names_file("3,01637037d6_1", "3", "01637037d6_1"));
        assert!(!names_file("", "3", "01637037d6"));
        // Only the last `_` is cut; a leading one is not a suffix.
        assert!(names_file("3,ab_1", "3", "ab_1_2"));
        assert!(!names_file("3,", "3", "_1"));
    }

    #[test]
    fn requests_are_checked_with_the_key_of_their_access() {
        let security = Security { write: Some(SigningKey::new("w", 10)), ..Security::default() };
        let token = security.issue(Access::Write, "3,01637037d6").unwrap();
        let bearer = headers(&[(header::AUTHORIZATION, &format!("Bearer {token}"))]);
        assert!(security.allows(Access::Write, None, &bearer, "3", "01637037d6"));
        assert!(security.allows(Access::Write, None, &bearer, "3", "01637037d6_2"));
        assert!(!security.allows(Access::Write, None, &bearer, "3", "02637037d6"));
        assert!(!security.allows(Access::Write, None, &HeaderMap::new(), "3", "01637037d6"));
        // Reads are open: no key guards them.
        assert!(security.allows(Access::Read, None, &HeaderMap::new(), "3", "01637037d6"));
        assert_eq!(security.issue(Access::Read, "3,01637037d6"), None);

        // A token without a fid claim names no file; another key's token is refused.
        let no_fid = security.write.as_ref().unwrap().jwt_key().sign(&serde_json::json!({ "exp": u32::MAX }));
        assert!(!security.allows(
            Access::Write,
            Some(&format!("jwt={no_fid}")),
            &HeaderMap::new(),
            "3",
            "01"
        ));
        let other = Security { write: Some(SigningKey::new("other", 10)), ..Security::default() };
        let foreign = other.issue(Access::Write, "3,01637037d6").unwrap();
        assert!(!security.allows(
            Access::Write,
            Some(&format!("jwt={foreign}")),
            &HeaderMap::new(),
            "3",
            "01637037d6"
        ));
    }

    #[test]
    fn security_toml_keys_and_lifetimes() {
        let text = r#"
            [cors.allowed_origins]
            values = "*"
            [jwt.signing]
            key = "write-secret"
            expires_after_seconds = 30
            [access]
            ui = false
            [jwt.signing.read]
            key = "read-secret"
            [grpc]
            ca = ""
        "#;
        let security = Security::parse(text).unwrap();
        assert_eq!(security.write.as_ref().map(|k| k.expires_after), Some(30));
        assert_eq!(security.read.as_ref().map(|k| k.expires_after), Some(DEFAULT_READ_EXPIRES_AFTER));
        let defaults = Security::parse("[jwt.signing]\nkey = \"w\"\n").unwrap();
        assert_eq!(defaults.write.map(|k| k.expires_after), Some(DEFAULT_WRITE_EXPIRES_AFTER));
        assert_eq!(security.describe(), "JWT: writes signed, reads signed");

        let empty_keys =
            Security::parse("[jwt.signing]\nkey = \"\"\n[jwt.signing.read]\nkey = \"\"\n").unwrap();
        assert_eq!(empty_keys.describe(), "JWT: writes open, reads open");
        assert!(Security::parse("[jwt.signing]\nkey = 3\n").is_err());
    }

    #[test]
    fn weed_environment_variables_win_over_the_file() {
        let mut security = Security::parse("[jwt.signing]\nkey = \"file\"\n").unwrap();
        let env = |name: &str| match name {
            // Empty is unset to viper, weed's config reader: the file's key stays.
            "WEED_JWT_SIGNING_KEY" => Some(String::new()),
            "WEED_JWT_SIGNING_READ_KEY" => Some("env-read".to_owned()),
            "WEED_JWT_SIGNING_READ_EXPIRES_AFTER_SECONDS" => Some("60".to_owned()),
            _ => None,
        };
        security.apply_env(env).unwrap();
        assert!(security.write.is_some(), "the file's write key stays");
        assert_eq!(security.read.as_ref().map(|k| k.expires_after), Some(60));
        let bad = |name: &str| (name == "WEED_JWT_SIGNING_EXPIRES_AFTER_SECONDS").then(|| "soon".to_owned());
        assert!(matches!(security.apply_env(bad), Err(SecurityError::Env { .. })));
    }

    #[test]
    fn the_guard_white_list_comes_from_the_file_or_weeds_variable() {
        let text = "[guard]\nwhite_list = \"127.0.0.1,10.0.0.0/8\"\n";
        let mut security = Security::parse(text).unwrap();
        assert_eq!(security.white_list.to_string(), "127.0.0.1,10.0.0.0/8");
        assert_eq!(
            security.describe(),
            "JWT: writes open, reads open; uploads and deletes only from 127.0.0.1,10.0.0.0/8"
        );
        // weed's scaffold ships `white_list = ""`: no list.
        assert!(Security::parse("[guard]\nwhite_list = \"\"\n").unwrap().white_list.is_empty());
        let err = Security::parse("[guard]\nwhite_list = \"127.0.0.1,localhost\"\n").err().unwrap();
        assert!(err.contains("[guard]") && err.contains("\"localhost\""), "{err}");

        // The variable wins over the file; an empty one is unset, as viper reads it.
        let env = |name: &str| (name == "WEED_GUARD_WHITE_LIST").then(|| "192.168.0.0/16".to_owned());
        security.apply_env(env).unwrap();
        assert_eq!(security.white_list.to_string(), "192.168.0.0/16");
        security.apply_env(|name| (name == "WEED_GUARD_WHITE_LIST").then(String::new)).unwrap();
        assert_eq!(security.white_list.to_string(), "192.168.0.0/16");
        let bad = |name: &str| (name == "WEED_GUARD_WHITE_LIST").then(|| "10.0.0.0/40".to_owned());
        assert!(matches!(
            security.apply_env(bad),
            Err(SecurityError::Env { name: "WEED_GUARD_WHITE_LIST", .. })
        ));
    }

    #[test]
    fn grpc_tls_files_come_from_the_volume_section_and_weeds_variables() {
        // The scaffold's layout: other components' sections are not ours.
        let text = r#"
            [grpc]
            ca = "ca.crt"
            allowed_wildcard_domain = ""
            [grpc.volume]
            cert = "volume.crt"
            key = "volume.key"
            client_cert = ""
            client_key = ""
            allowed_commonNames = "master,shell"
            [grpc.master]
            cert = "master.crt"
            key = "master.key"
            [grpc.client]
            cert = "client.crt"
            key = "client.key"
            [tls]
            min_version = "TLS 1.3"
        "#;
        let mut security = Security::parse(text).unwrap();
        let expected = GrpcTlsSettings {
            ca: "ca.crt".into(),
            cert: "volume.crt".into(),
            key: "volume.key".into(),
            allowed_common_names: "master,shell".into(),
            min_version: "TLS 1.3".into(),
            ..GrpcTlsSettings::default()
        };
        assert_eq!(security.grpc, expected);
        let lower = Security::parse("[grpc.volume]\nallowed_commonnames = \"a\"\n").unwrap();
        assert_eq!(lower.grpc.allowed_common_names, "a");
        assert_eq!(Security::parse("").unwrap().grpc, GrpcTlsSettings::default());

        let env = |name: &str| match name {
            "WEED_GRPC_CA" => Some("/etc/ca.pem".to_owned()),
            "WEED_GRPC_VOLUME_CLIENT_CERT" => Some("c.crt".to_owned()),
            "WEED_GRPC_VOLUME_KEY" => Some(String::new()),
            "WEED_GRPC_ALLOWED_WILDCARD_DOMAIN" => Some(".example.com".to_owned()),
            _ => None,
        };
        security.apply_env(env).unwrap();
        assert_eq!(security.grpc.ca, "/etc/ca.pem");
        assert_eq!(security.grpc.client_cert, "c.crt");
        assert_eq!(security.grpc.key, "volume.key", "an empty variable is unset");
        assert_eq!(security.grpc.allowed_wildcard_domain, ".example.com");
    }
}
