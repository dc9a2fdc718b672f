//! JWT verification (HTTP reads and writes, and RDMA sessions share one HS256 code).
//!
//! Input: the key, a newline, a token, a newline, a file id (`3,01637037d6`).
//! - any token is verified or refused with a typed error, never a panic;
//! - a token signed for the file id verifies with its `fid` claim, and the HTTP check
//!   lets a request for that file through (issue and allows agree);
//! - changing any one byte of a valid token makes it fail;
//! - an `exp` at or before now is refused.
#![no_main]

use http::HeaderMap;
use libfuzzer_sys::fuzz_target;
use rdma_transport::server::auth::{Claims, JwtError, JwtKey};
use volume_server::security::{Access, Security, SigningKey};

const NOW: u64 = 1_700_000_000;

fuzz_target!(|input: &[u8]| {
    let mut lines = input.splitn(3, |&b| b == b'\n');
    let key = lines.next().unwrap_or_default();
    let token = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let fid = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let jwt = JwtKey::new(key);
    let _ = jwt.verify(&token, NOW);

    let signed = jwt.sign(&serde_json::json!({ "fid": fid, "exp": NOW + 10 }));
    let expected = Claims { fid: (!fid.is_empty()).then(|| fid.to_string()), exp: Some(NOW + 10) };
    assert_eq!(jwt.verify(&signed, NOW), Ok(expected));
    let expired = jwt.sign(&serde_json::json!({ "fid": fid, "exp": NOW }));
    assert_eq!(jwt.verify(&expired, NOW), Err(JwtError::Expired));

    // One byte changed anywhere (the input says where and to what): refused.
    if let Some(&twist) = input.last() {
        let at = usize::from(twist) * 7 % signed.len();
        let mut bytes = signed.clone().into_bytes();
        let replacement = b"AZaz09-_."[usize::from(twist) % 9];
        if bytes[at] != replacement {
            bytes[at] = replacement;
            let tampered = String::from_utf8(bytes).unwrap();
            assert!(jwt.verify(&tampered, NOW).is_err(), "{signed} -> {tampered}");
        }
    }

    // The HTTP side: a token the embedded master issues lets that file's requests in.
    if let Some((vid, file)) = fid.split_once(',') {
        if !key.is_empty() && !file.contains('_') {
            let security = Security { write: Some(SigningKey::new(key, 60)), ..Security::default() };
            let token = security.issue(Access::Write, &fid).expect("a write key issues");
            let query = format!("jwt={token}");
            assert!(security.allows(Access::Write, Some(&query), &HeaderMap::new(), vid, file), "{fid}");
        }
    }
});
