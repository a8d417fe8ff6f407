//! The envelope field ciphertext, one per classified (non-deterministic) field.
//!
//! ```text
//! 0       version   0x01
//! 1       flags     bit 0: padded (ISO/IEC 7816-4), bit 1: presence byte (hidden NULL);
//!                   other bits must be 0
//! 2..14   nonce     12 bytes
//! 14..    ciphertext of the inner plaintext, then the 16-byte GCM tag
//! ```
//!
//! Inner plaintext: `[presence byte, if flag 1: 0x00 NULL, 0x01 value] ‖ value ‖
//! [0x80 ‖ 0x00* up to a multiple of the block, if flag 0]`. 30 bytes of overhead without
//! padding. Deterministic values use type byte 0x02 instead (see `crypto::search`).

use super::FORMAT_V1;
use super::{NONCE_LEN, TAG_LEN};

/// Flag: inner plaintext is padded.
pub const FLAG_PADDED: u8 = 0x01;
/// Flag: inner plaintext starts with a presence byte (NULL hidden).
pub const FLAG_PRESENCE: u8 = 0x02;
/// Header length (version, flags, nonce).
pub const HEADER_LEN: usize = 2 + NONCE_LEN;
/// Bytes added to the inner plaintext.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// A parsed field ciphertext.
#[derive(Debug)]
#[non_exhaustive]
pub struct FieldCiphertext<'a> {
    /// The two header bytes (version, flags), bound into the associated data.
    pub version: u8,
    /// Flags.
    pub flags: u8,
    /// Nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext without tag.
    pub body: &'a [u8],
    /// Tag.
    pub tag: [u8; TAG_LEN],
}

/// Parses a field ciphertext; malformed input is `Tampered`.
///
/// # Errors
/// [`crate::Error::Tampered`] when the value is shorter than header and tag, its version is not
/// 1, or it sets an unknown flag.
pub fn parse(bytes: &[u8]) -> crate::Result<FieldCiphertext<'_>> {
    if bytes.len() < OVERHEAD
        || bytes[0] != FORMAT_V1
        || bytes[1] & !(FLAG_PADDED | FLAG_PRESENCE) != 0
    {
        return Err(crate::Error::Tampered);
    }
    let nonce: [u8; NONCE_LEN] = bytes[2..HEADER_LEN]
        .try_into()
        .map_err(|_| crate::Error::Tampered)?;
    let (body, tag) = bytes[HEADER_LEN..].split_at(bytes.len() - OVERHEAD);
    let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| crate::Error::Tampered)?;
    Ok(FieldCiphertext {
        version: bytes[0],
        flags: bytes[1],
        nonce,
        body,
        tag,
    })
}

/// Appends the inner plaintext to `out` (padding counts from where it starts).
pub fn inner_plaintext(out: &mut Vec<u8>, value: Option<&[u8]>, flags: u8, block: u16) {
    let start = out.len();
    if flags & FLAG_PRESENCE != 0 {
        out.push(u8::from(value.is_some()));
    }
    out.extend_from_slice(value.unwrap_or_default());
    if flags & FLAG_PADDED != 0 && block > 0 {
        out.push(0x80);
        let block = usize::from(block);
        while !(out.len() - start).is_multiple_of(block) {
            out.push(0);
        }
    }
}

/// Strips padding and presence byte from a decrypted inner plaintext, in place; returns
/// `None` for a hidden NULL. Malformed inner plaintext is `Tampered`.
///
/// # Errors
/// [`crate::Error::Tampered`] when the padding does not end in `0x80` or the presence byte is
/// neither a lone `0x00` nor `0x01`.
#[inline]
pub fn strip_inner(inner: &mut Vec<u8>, flags: u8) -> crate::Result<Option<()>> {
    if flags == 0 {
        return Ok(Some(()));
    }
    if flags & FLAG_PADDED != 0 {
        let end = inner
            .iter()
            .rposition(|&b| b != 0)
            .ok_or(crate::Error::Tampered)?;
        if inner[end] != 0x80 {
            return Err(crate::Error::Tampered);
        }
        inner.truncate(end);
    }
    if flags & FLAG_PRESENCE != 0 {
        match inner.first() {
            Some(0) if inner.len() == 1 => return Ok(None),
            Some(1) => {
                inner.remove(0);
            }
            _ => return Err(crate::Error::Tampered),
        }
    }
    Ok(Some(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_plaintext_round_trips() {
        for flags in 0..4u8 {
            for value in [
                None,
                Some(&b""[..]),
                Some(&b"abc"[..]),
                Some(&[0x80, 0][..]),
            ] {
                if value.is_none() && flags & FLAG_PRESENCE == 0 {
                    continue;
                }
                let mut inner = Vec::new();
                inner_plaintext(&mut inner, value, flags, 16);
                if flags & FLAG_PADDED != 0 {
                    assert_eq!(inner.len() % 16, 0);
                }
                let r = strip_inner(&mut inner, flags).unwrap();
                match value {
                    None => assert!(r.is_none()),
                    Some(v) => assert_eq!(inner, v),
                }
            }
        }
    }

    #[test]
    fn malformed_headers_are_tampered() {
        assert!(parse(&[1; OVERHEAD - 1]).is_err());
        let mut ok = vec![1, 0];
        ok.extend_from_slice(&[0; OVERHEAD - 2]);
        assert!(parse(&ok).is_ok());
        ok[1] = 4;
        assert!(parse(&ok).is_err());
        ok[1] = 0;
        ok[0] = 2;
        assert!(parse(&ok).is_err());
    }
}
