//! AES-256-GCM, the one AEAD of the envelope (field ciphertexts, wrapped DEKs, local KMS).
//!
//! Thin wrappers over the `aes-gcm` crate: detached tags so callers can lay bytes out as
//! docs/FORMAT.md says without extra copies, and a failed open wipes the buffer so no
//! unauthenticated plaintext survives.

use aes::Aes256Enc;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{AesGcm, Nonce, Tag};
use zeroize::Zeroize;

use crate::crypto::secret::SecretKey;

pub use crate::format::{NONCE_LEN, TAG_LEN};

/// AES-256-GCM over the encrypt-only AES-256 core: GCM never runs the block cipher backwards,
/// so expanding decryption round keys (as `aes_gcm::Aes256Gcm` does) would be wasted work on
/// every DEK. Same algorithm, same bytes.
type Aes256GcmEnc = AesGcm<Aes256Enc, U12>;

/// An AES-256-GCM key with its key schedule expanded once (zeroized on drop by `aes`).
pub struct GcmKey(Aes256GcmEnc);

impl GcmKey {
    /// Expands the key schedule.
    pub fn new(key: &SecretKey) -> Self {
        GcmKey(Aes256GcmEnc::new(key.expose_secret().into()))
    }

    /// Encrypts `buf` in place and returns the tag.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when AES-GCM refuses the input (over 64 GiB, which no
    /// caller produces: values are bounded by `MAX_VALUE_LEN`); the buffer is then wiped, so
    /// no plaintext is left where ciphertext was expected.
    pub fn seal(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
    ) -> crate::Result<[u8; TAG_LEN]> {
        self.0
            .encrypt_inout_detached(&Nonce::from(*nonce), aad, (&mut *buf).into())
            .map(Into::into)
            .map_err(|_| {
                buf.zeroize();
                crate::Error::InvalidInput("AES-GCM refused to encrypt the input".into())
            })
    }

    /// Decrypts `buf` in place; on failure the buffer is wiped and `Tampered` returned.
    ///
    /// # Errors
    /// [`crate::Error::Tampered`] when the tag does not verify under this key, nonce and
    /// associated data (one error for every cause, as RustCrypto's `aead` gives).
    pub fn open(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> crate::Result<()> {
        self.0
            .decrypt_inout_detached(
                &Nonce::from(*nonce),
                aad,
                (&mut *buf).into(),
                &Tag::from(*tag),
            )
            .map_err(|_| {
                buf.zeroize();
                crate::Error::Tampered
            })
    }
}

impl std::fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GcmKey(AES-256-GCM, redacted)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_as_the_standard_aes256gcm() {
        let key = SecretKey::from_bytes([3; 32]);
        let mut a = b"interoperable".to_vec();
        let tag = GcmKey::new(&key).seal(&[9; 12], b"aad", &mut a).unwrap();
        let std_gcm = aes_gcm::Aes256Gcm::new(key.expose_secret().into());
        let mut b = b"interoperable".to_vec();
        let std_tag = std_gcm
            .encrypt_inout_detached(&Nonce::from([9; 12]), b"aad", b.as_mut_slice().into())
            .unwrap();
        assert_eq!((a, tag.to_vec()), (b, std_tag.to_vec()));
    }

    #[test]
    fn open_rejects_wrong_aad_and_wipes() {
        let k = GcmKey::new(&SecretKey::from_bytes([7; 32]));
        let nonce = [1u8; 12];
        let mut buf = b"attack at dawn".to_vec();
        let tag = k.seal(&nonce, b"a", &mut buf).unwrap();
        let mut copy = buf.clone();
        assert!(k.open(&nonce, b"b", &mut copy, &tag).is_err());
        assert!(copy.iter().all(|&b| b == 0));
        k.open(&nonce, b"a", &mut buf, &tag).unwrap();
        assert_eq!(buf, b"attack at dawn");
    }
}
