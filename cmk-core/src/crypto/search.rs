//! Searchable encryption: blind indexes (HMAC-SHA256) and deterministic encryption (AES-SIV),
//! under per-field keys derived with HKDF-SHA256 from the tenant's index and deterministic
//! roots. Both leak equality of values within a field; neither is a per-row envelope, so
//! rotating them is O(rows). docs/FORMAT.md §6 and §7 give the bytes.

use aes_siv::KeyInit;
use aes_siv::siv::Aes256Siv;
use hkdf::Hkdf;
use hmac::Mac;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::crypto::secret::SecretKey;
use crate::format::aad::Aad;

/// Length of the HMAC kept in a blind index (bytes).
pub const INDEX_MAC_LEN: usize = 16;
/// Length of a blind index value: key version byte plus truncated HMAC.
pub const INDEX_LEN: usize = 1 + INDEX_MAC_LEN;
/// Type byte of a deterministic field value.
pub const DETERMINISTIC_TYPE: u8 = 0x02;
/// Bytes a deterministic value adds to the plaintext: type, key version, SIV tag.
pub const DETERMINISTIC_OVERHEAD: usize = 2 + 16;

fn hkdf_info(purpose: &str, table: &str, column: &str, version: u8) -> Aad {
    Aad::new(purpose).text(table).text(column).u8(version)
}

/// The per-field blind-index key: HKDF-SHA256(salt = none, IKM = index root,
/// info = Aad("cmk/index-key") ‖ text(table) ‖ text(column) ‖ u8(version)), 32 bytes.
pub fn index_key(root: &SecretKey, table: &str, column: &str, version: u8) -> SecretKey {
    let mut okm = Zeroizing::new([0u8; 32]);
    let info = hkdf_info("cmk/index-key", table, column, version);
    // 32 bytes is far below HKDF-SHA256's 8160-byte limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(None, root.expose_secret()).expand(info.as_bytes(), &mut okm[..]);
    SecretKey::from_bytes(*okm)
}

/// The per-field deterministic key: as [`index_key`] with label `cmk/det-key`, 64 bytes
/// (AES-SIV with AES-256 takes a 512-bit key).
pub fn deterministic_key(
    root: &SecretKey,
    table: &str,
    column: &str,
    version: u8,
) -> Zeroizing<[u8; 64]> {
    let mut okm = Zeroizing::new([0u8; 64]);
    let info = hkdf_info("cmk/det-key", table, column, version);
    let _ = Hkdf::<Sha256>::new(None, root.expose_secret()).expand(info.as_bytes(), &mut okm[..]);
    okm
}

/// A blind index value: `version ‖ HMAC-SHA256(key, normalised)[..16]`.
pub fn blind_index(key: &SecretKey, version: u8, normalised: &[u8]) -> [u8; INDEX_LEN] {
    let mut out = [0u8; INDEX_LEN];
    out[0] = version;
    let mut mac = super::mac::hmac_sha256(key.expose_secret());
    mac.update(normalised);
    out[1..].copy_from_slice(&mac.finalize().into_bytes()[..INDEX_MAC_LEN]);
    out
}

fn siv_header(tenant: &str, table: &str, column: &str, version: u8) -> Aad {
    Aad::new("cmk/det")
        .u8(DETERMINISTIC_TYPE)
        .u8(version)
        .text(tenant)
        .text(table)
        .text(column)
}

/// Deterministic encryption: `0x02 ‖ version ‖ SIV (16) ‖ ciphertext`, AES-SIV (RFC 5297)
/// with one associated-data header binding tenant, table and column.
///
/// # Errors
/// [`crate::Error::InvalidInput`] when AES-SIV refuses the input (a value too large for it).
pub fn deterministic_encrypt(
    key: &[u8; 64],
    version: u8,
    tenant: &str,
    table: &str,
    column: &str,
    plaintext: &[u8],
) -> crate::Result<Vec<u8>> {
    let header = siv_header(tenant, table, column, version);
    let mut siv = Aes256Siv::new(key.into());
    let body = siv.encrypt([header.as_bytes()], plaintext).map_err(|_| {
        crate::Error::InvalidInput("value too large for deterministic encryption".into())
    })?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.push(DETERMINISTIC_TYPE);
    out.push(version);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The key version a deterministic value names, if it is well formed enough to say.
///
/// # Errors
/// [`crate::Error::Tampered`] when the value is not `0x02 ‖ version ‖ SIV ‖ ...`.
pub fn deterministic_version(value: &[u8]) -> crate::Result<u8> {
    match value {
        [DETERMINISTIC_TYPE, v, rest @ ..] if rest.len() >= 16 => Ok(*v),
        _ => Err(crate::Error::Tampered),
    }
}

/// Reverses [`deterministic_encrypt`]; any mismatch is `Tampered`.
///
/// # Errors
/// [`crate::Error::Tampered`] when the value is malformed or does not authenticate under
/// this key, tenant, table and column.
pub fn deterministic_decrypt(
    key: &[u8; 64],
    tenant: &str,
    table: &str,
    column: &str,
    value: &[u8],
) -> crate::Result<Zeroizing<Vec<u8>>> {
    let version = deterministic_version(value)?;
    let header = siv_header(tenant, table, column, version);
    let mut siv = Aes256Siv::new(key.into());
    siv.decrypt([header.as_bytes()], &value[2..])
        .map(Zeroizing::new)
        .map_err(|_| crate::Error::Tampered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_differ_per_field_and_version() {
        let root = SecretKey::from_bytes([1; 32]);
        let a = index_key(&root, "t", "email", 1);
        let b = index_key(&root, "t", "phone", 1);
        let c = index_key(&root, "t", "email", 2);
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_ne!(a.expose_secret(), c.expose_secret());
        let i = blind_index(&a, 1, b"x");
        assert_eq!(i[0], 1);
        assert_eq!(i, blind_index(&a, 1, b"x"));
        assert_ne!(i, blind_index(&a, 1, b"y"));
    }

    #[test]
    fn deterministic_round_trip_and_binding() {
        let key = deterministic_key(&SecretKey::from_bytes([2; 32]), "t", "c", 1);
        let v = deterministic_encrypt(&key, 1, "acme", "t", "c", b"hello").unwrap();
        assert_eq!(v.len(), 5 + DETERMINISTIC_OVERHEAD);
        assert_eq!(
            v,
            deterministic_encrypt(&key, 1, "acme", "t", "c", b"hello").unwrap()
        );
        assert_eq!(
            &*deterministic_decrypt(&key, "acme", "t", "c", &v).unwrap(),
            b"hello"
        );
        assert!(deterministic_decrypt(&key, "other", "t", "c", &v).is_err());
        assert!(deterministic_decrypt(&key, "acme", "t", "d", &v).is_err());
        for len in 0..v.len() {
            assert!(deterministic_decrypt(&key, "acme", "t", "c", &v[..len]).is_err());
        }
    }
}
