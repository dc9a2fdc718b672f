//! weed-style JWTs: HS256 tokens signed with the volume server's key (weed's
//! `jwt.signing.read.key`). `exp`, when present, must be in the future (weed's tokens
//! always carry one); a `fid` claim limits the session to that one file id. The token is
//! checked when the session opens; the session then lives until it is closed or idle
//! past the timeout. The volume server's HTTP checks (`volume_server::security`) use this
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
        let fid = match claims.get("fid") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(f)) if f.is_empty() => None,
            Some(serde_json::Value::String(f)) => Some(f.clone()),
            Some(_) => return Err(JwtError::Malformed("fid is not a string")),
        };
        Ok(Claims { fid })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn valid_tokens_and_their_fid() {
        let key = JwtKey::new("secret");
        let token = key.sign(&json!({ "exp": NOW + 10, "fid": "3,01637037d6" }));
        assert_eq!(key.verify(&token, NOW), Ok(Claims { fid: Some("3,01637037d6".into()) }));
        let any = key.sign(&json!({ "exp": NOW + 10 }));
        assert_eq!(key.verify(&any, NOW), Ok(Claims { fid: None }));
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
