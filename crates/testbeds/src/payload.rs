//! Test payloads: reproducible bytes, and the multipart body weed's uploader sends.

/// Deterministic pseudo-random bytes (splitmix64): incompressible, different at every
/// position and for every seed, and the same on every run, so a failure reproduces and a
/// read from a wrong offset cannot match by accident.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A `multipart/form-data` body with one file part, as weed's uploader sends it:
/// returns the request's `Content-Type` and the body. `part_headers` go into the part
/// (e.g. `Content-Encoding: gzip`, `Content-MD5`).
pub fn multipart_body(
    filename: &str,
    content_type: Option<&str>,
    part_headers: &[(&str, &str)],
    data: &[u8],
) -> (String, Vec<u8>) {
    let boundary = "sEaWeEdRdMaBoUnDaRy0123456789";
    let mut head =
        format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n");
    if let Some(content_type) = content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (name, value) in part_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut body = head.into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_is_reproducible_and_seed_dependent() {
        assert_eq!(pseudo_random(100, 1), pseudo_random(100, 1));
        assert_ne!(pseudo_random(100, 1), pseudo_random(100, 2));
        assert_eq!(pseudo_random(13, 1), pseudo_random(100, 1)[..13]);
    }

    #[test]
    fn multipart_body_frames_the_data() {
        let (content_type, body) =
            multipart_body("a.txt", Some("text/plain"), &[("Content-MD5", "x")], b"hi");
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(body).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(
            text.contains("filename=\"a.txt\"\r\nContent-Type: text/plain\r\nContent-MD5: x\r\n\r\nhi\r\n")
        );
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
    }
}
