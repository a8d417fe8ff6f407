//! The wrapped-blob layout of the providers that run AES-GCM inside the KMS (PKCS#11, KMIP):
//! `0x01 ‖ IV (12) ‖ ciphertext ‖ tag (16)` (docs/FORMAT.md §8b, §8c).

use super::{KmsError, KmsErrorKind};
use crate::crypto::aead::{NONCE_LEN, TAG_LEN};

const VERSION: u8 = 0x01;

/// A blob's parts (PKCS#11 takes ciphertext and tag as one slice, KMIP apart).
#[cfg_attr(not(feature = "kmip"), allow(dead_code))]
pub(crate) struct Parts<'a> {
    pub(crate) iv: [u8; NONCE_LEN],
    pub(crate) ciphertext: &'a [u8],
    pub(crate) tag: &'a [u8],
}

impl Parts<'_> {
    /// Ciphertext and tag as one slice, as PKCS#11's `C_Decrypt` takes them.
    pub(crate) fn sealed(&self, blob: &[u8]) -> Vec<u8> {
        blob[1 + NONCE_LEN..].to_vec()
    }
}

/// Lays out a blob; `sealed` is the ciphertext followed by its tag.
pub(crate) fn frame(iv: &[u8; NONCE_LEN], sealed: &[&[u8]]) -> Vec<u8> {
    let len = 1 + NONCE_LEN + sealed.iter().map(|p| p.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.push(VERSION);
    out.extend_from_slice(iv);
    for part in sealed {
        out.extend_from_slice(part);
    }
    out
}

/// Splits a blob, refusing one too short or of another version (*invalid*).
pub(crate) fn parse(blob: &[u8]) -> Result<Parts<'_>, KmsError> {
    let invalid = || {
        KmsError::new(
            KmsErrorKind::Invalid,
            "ciphertext or associated data invalid",
        )
    };
    if blob.len() < 1 + NONCE_LEN + TAG_LEN || blob[0] != VERSION {
        return Err(invalid());
    }
    let (iv, rest) = blob[1..].split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok(Parts {
        iv: iv.try_into().map_err(|_| invalid())?,
        ciphertext,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_parses_and_refuses_short_or_other_blobs() {
        let blob = frame(&[7; NONCE_LEN], &[b"ciphertext", &[9; TAG_LEN]]);
        let parts = parse(&blob).unwrap();
        assert_eq!(parts.iv, [7; NONCE_LEN]);
        assert_eq!(parts.ciphertext, b"ciphertext");
        assert_eq!(parts.tag, [9; TAG_LEN]);
        for len in 0..1 + NONCE_LEN + TAG_LEN {
            assert!(parse(&blob[..len]).is_err());
        }
        let mut other = blob.clone();
        other[0] = 2;
        assert!(parse(&other).is_err());
    }
}
