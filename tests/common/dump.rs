//! Searching a database dump for plaintext: raw, hex (either case) and base64 at every
//! alignment. `the_dump_scan_finds_each_rendering` proves on planted cases that it can fail.
#![allow(dead_code)]

// A lowercase-hex and a base64 rendering of `bytes`, for the dump scan.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64_variants(bytes: &[u8]) -> Vec<String> {
    // The canary may start at any of three offsets inside a base64-encoded blob; the inner
    // characters that depend only on the canary are searched for each alignment.
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    (0..3)
        .map(|pad| {
            let mut buf = vec![0u8; pad];
            buf.extend_from_slice(bytes);
            let mut out = String::new();
            for chunk in buf.chunks(3) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
                for i in 0..=chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            // Drop the characters mixed with the padding bytes or the unknown next byte.
            let skip = if pad == 0 { 0 } else { pad + 1 };
            out[skip..out.len() - 2].to_string()
        })
        .collect()
}

/// Where in `dump` a rendering of `needle` occurs (raw, hex either case, base64).
pub(crate) fn find_in_dump(dump: &[u8], needle: &str) -> Option<&'static str> {
    find_bytes_in_dump(dump, needle.as_bytes())
}

/// Where in `dump` a rendering of the bytes `needle` occurs: raw, hex either case, or base64
/// (standard or URL-safe alphabet) at every alignment.
pub(crate) fn find_bytes_in_dump(dump: &[u8], needle: &[u8]) -> Option<&'static str> {
    if needle.is_empty() {
        return None;
    }
    if dump.windows(needle.len()).any(|w| w == needle) {
        return Some("raw");
    }
    let lower = String::from_utf8_lossy(dump).to_lowercase();
    if lower.contains(&hex(needle)) {
        return Some("hex");
    }
    let text = String::from_utf8_lossy(dump);
    let found = base64_variants(needle).iter().any(|b| {
        let url_safe = b.replace('+', "-").replace('/', "_");
        text.contains(b.as_str()) || text.contains(url_safe.as_str())
    });
    found.then_some("base64")
}

#[test]
pub(crate) fn the_dump_scan_finds_each_rendering() {
    let planted = "Planted-Canary-0042";
    assert_eq!(
        find_in_dump(format!("x{planted}y").as_bytes(), planted),
        Some("raw")
    );
    assert_eq!(
        find_in_dump(hex(planted.as_bytes()).to_uppercase().as_bytes(), planted),
        Some("hex")
    );
    for prefix in [&b""[..], b"a", b"ab"] {
        let mut blob = prefix.to_vec();
        blob.extend_from_slice(planted.as_bytes());
        blob.extend_from_slice(b"tail");
        let encoded = base64_variants(&blob)[0].clone() + "==";
        assert_eq!(
            find_in_dump(encoded.as_bytes(), planted),
            Some("base64"),
            "{prefix:?}"
        );
    }
    assert_eq!(find_in_dump(b"nothing here", planted), None);
}
