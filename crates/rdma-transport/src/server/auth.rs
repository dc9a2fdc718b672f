//! weed-style JWTs: HS256 tokens signed with the volume server's key (weed's
//! `jwt.signing.read.key`). `exp`, when present, must be in the future (weed's tokens
//! always carry one); a `fid` claim limits the session to that one file id. The token is
//! checked when the session opens, and its `exp` on every later call: the session ends
//! then, or when it is closed or idle past the timeout. A volume-read grant
//! ([`VolumeGrant`]) is a token of the same kind naming volumes and collections. The volume server's HTTP checks (`volume_server::security`) use this
//! same implementation, with weed's stricter HTTP rule on the `fid` claim.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a token is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("a JWT is required")]
    Missing,
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    #[error("JWT algorithm {0:?} is not HS256")]
    Algorithm(String),
    #[error("JWT signature does not match")]
    Signature,
    #[error("JWT expired")]
    Expired,
}

/// What a valid token allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// Only this file id may be located, when set.
    pub fid: Option<String>,
    /// Unix seconds after which the token (and a session opened with it) is void.
    pub exp: Option<u64>,
}

/// A volume-read grant: the volumes (by id) and collections whose files a session may
/// READ whole under `volume` exposure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeGrant {
    pub volumes: Vec<u32>,
    pub collections: Vec<String>,
    pub exp: Option<u64>,
}

impl VolumeGrant {
    /// Whether volume `volume` of collection `collection` may be read whole.
    pub fn covers(&self, volume: u32, collection: &str) -> bool {
        self.volumes.contains(&volume) || self.collections.iter().any(|c| c == collection)
    }
}

/// An HS256 signing key.
#[derive(Clone)]
pub struct JwtKey(Vec<u8>);

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKey(..)")
    }
}

impl JwtKey {
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self(key.into())
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// Checks `token` at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        let claims = self.verified_claims(token, now)?;
        let fid = match claims.get("fid") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(f)) if f.is_empty() => None,
            Some(serde_json::Value::String(f)) => Some(f.clone()),
            Some(_) => return Err(JwtError::Malformed("fid is not a string")),
        };
        Ok(Claims { fid, exp: exp_of(&claims) })
    }

    /// Checks a volume-read grant at `now`: a valid token whose `volumes` (ids) and
    /// `collections` (names, `""` for the default one) name at least one thing.
    pub fn verify_grant(&self, token: &str, now: u64) -> Result<VolumeGrant, JwtError> {
        let claims = self.verified_claims(token, now)?;
        let list = |name: &str| claims.get(name).and_then(|v| v.as_array()).cloned().unwrap_or_default();
        let volumes = list("volumes")
            .iter()
            .map(|v| v.as_u64().and_then(|v| u32::try_from(v).ok()))
            .collect::<Option<Vec<u32>>>()
            .ok_or(JwtError::Malformed("volumes are not volume ids"))?;
        let collections = list("collections")
            .iter()
            .map(|c| c.as_str().map(str::to_owned))
            .collect::<Option<Vec<String>>>()
            .ok_or(JwtError::Malformed("collections are not strings"))?;
        if volumes.is_empty() && collections.is_empty() {
            return Err(JwtError::Malformed("a volume-read grant names no volume and no collection"));
        }
        Ok(VolumeGrant { volumes, collections, exp: exp_of(&claims) })
    }

    /// The claims of `token` once its signature and `exp` check out.
    fn verified_claims(&self, token: &str, now: u64) -> Result<serde_json::Value, JwtError> {
        if token.is_empty() {
            return Err(JwtError::Missing);
        }
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed("not three dot-separated parts"));
        };
        let decode =
            |part: &str| URL_SAFE_NO_PAD.decode(part).map_err(|_| JwtError::Malformed("bad base64url"));
        let json = |bytes: Vec<u8>| {
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|_| JwtError::Malformed("bad JSON"))
        };
        let header = json(decode(header)?)?;
        let alg = header.get("alg").and_then(|a| a.as_str()).unwrap_or_default();
        if alg != "HS256" {
            return Err(JwtError::Algorithm(alg.to_owned()));
        }
        let mut mac = self.mac();
        mac.update(&token.as_bytes()[..token.len() - signature.len() - 1]);
        mac.verify_slice(&decode(signature)?).map_err(|_| JwtError::Signature)?;

        let claims = json(decode(payload)?)?;
        if let Some(exp) = claims.get("exp") {
            let exp = exp.as_f64().ok_or(JwtError::Malformed("exp is not a number"))?;
            if exp <= now as f64 {
                return Err(JwtError::Expired);
            }
        }
        Ok(claims)
    }

    /// Signs `claims` (a JSON object) as weed does: for clients and tests.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let mut mac = self.mac();
        mac.update(format!("{header}.{payload}").as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{signature}")
    }
}

/// The `exp` claim in whole seconds (checked to be a number by `verified_claims`).
fn exp_of(claims: &serde_json::Value) -> Option<u64> {
    claims.get("exp").and_then(|e| e.as_f64()).map(|e| e.max(0.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn valid_tokens_and_their_fid() {
        let key = JwtKey::new("secret");
        let token = key.sign(&json!({ "exp": NOW + 10, "fid": "3,01637037d6" }));
        assert_eq!(
            key.verify(&token, NOW),
            Ok(Claims { fid: Some("3,01637037d6".into()), exp: Some(NOW + 10) })
        );
        let any = key.sign(&json!({ "exp": NOW + 10 }));
        assert_eq!(key.verify(&any, NOW), Ok(Claims { fid: None, exp: Some(NOW + 10) }));
    }

    #[test]
    fn volume_read_grants() {
        let key = JwtKey::new("secret");
        let grant = key.sign(&json!({ "exp": NOW + 10, "volumes": [3], "collections": ["pics", ""] }));
        let grant = key.verify_grant(&grant, NOW).unwrap();
        assert!(grant.covers(3, "other") && grant.covers(9, "pics") && grant.covers(1, ""));
        assert!(!grant.covers(4, "docs"));
        assert_eq!(grant.exp, Some(NOW + 10));
        let empty = key.sign(&json!({ "exp": NOW + 10 }));
        assert!(matches!(key.verify_grant(&empty, NOW), Err(JwtError::Malformed(_))));
        let bad = key.sign(&json!({ "volumes": ["3"] }));
        assert!(matches!(key.verify_grant(&bad, NOW), Err(JwtError::Malformed(_))));
        let expired = key.sign(&json!({ "exp": NOW, "volumes": [3] }));
        assert_eq!(key.verify_grant(&expired, NOW), Err(JwtError::Expired));
        let forged = JwtKey::new("other").sign(&json!({ "volumes": [3] }));
        assert_eq!(key.verify_grant(&forged, NOW), Err(JwtError::Signature));
    }

    #[test]
    fn refusals() {
        let key = JwtKey::new("secret");
        assert_eq!(key.verify("", NOW), Err(JwtError::Missing));
        assert_eq!(key.verify("a.b", NOW), Err(JwtError::Malformed("not three dot-separated parts")));
        let expired = key.sign(&json!({ "exp": NOW }));
        assert_eq!(key.verify(&expired, NOW), Err(JwtError::Expired));
        let other = JwtKey::new("other").sign(&json!({ "exp": NOW + 10 }));
        assert_eq!(key.verify(&other, NOW), Err(JwtError::Signature));

        // A payload swapped under a valid signature.
        let good = key.sign(&json!({ "exp": NOW + 10, "fid": "3,01" }));
        let forged_payload = URL_SAFE_NO_PAD.encode(json!({ "exp": NOW + 10, "fid": "3,02" }).to_string());
        let parts: Vec<&str> = good.split('.').collect();
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(key.verify(&forged, NOW), Err(JwtError::Signature));

        // alg=none is refused before any signature check.
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let none = format!("{none_header}.{}.", parts[1]);
        assert_eq!(key.verify(&none, NOW), Err(JwtError::Algorithm("none".into())));
    }
}
