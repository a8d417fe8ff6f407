//! Secret byte containers: zeroized on drop, never printed.
//!
//! The one way to reach the bytes is `expose_secret`, easy to grep for in review.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 256-bit symmetric key (master, key-encryption, data or root key).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// Wraps key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// Copies a key from a slice, which must be 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let arr: [u8; 32] = bytes.try_into().ok()?;
        Some(SecretKey(arr))
    }

    /// A fresh random key from the operating system's CSPRNG.
    ///
    /// # Errors
    /// [`crate::Error::Random`] when the operating system's random number generator fails.
    pub fn random() -> crate::Result<Self> {
        // Filled in place: no copy of the key outside the zeroizing owner.
        let mut key = SecretKey([0u8; 32]);
        crate::crypto::rng::fill(&mut key.0)?;
        Ok(key)
    }

    /// The key bytes.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0
    }

    /// The key bytes, to decrypt a wrapped key in place.
    pub(crate) fn expose_secret_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(AES-256, redacted)")
    }
}

/// Secret bytes of any length (unwrapped key material, decrypted plaintext).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl Zeroize for SecretBytes {
    /// Wipes the whole allocation, used bytes and spare capacity, in one pass (`zeroize`'s
    /// `Vec` impl writes the used bytes one volatile byte at a time, a fence each).
    fn zeroize(&mut self) {
        self.0.clear();
        // An empty vector owns no memory: nothing to wipe, and `memset` on its dangling
        // pointer takes a slow path on AVX-512 machines.
        if self.0.capacity() > 0 {
            self.0.spare_capacity_mut().zeroize();
        }
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretBytes {}

impl SecretBytes {
    /// Takes ownership of bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    /// The bytes.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// The bytes, to decrypt or trim in place (they stay zeroized on drop).
    pub(crate) fn expose_secret_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Moves the bytes out; the caller takes over the duty to zeroize them.
    pub fn into_exposed(self) -> Vec<u8> {
        // The empty vector left behind owns no memory, so it needs no wiping; and wiping it
        // would cost: `memset` on its dangling pointer takes a slow path on AVX-512 machines.
        let mut this = std::mem::ManuallyDrop::new(self);
        std::mem::take(&mut this.0)
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_bytes() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        let s = SecretBytes::new(b"canary-secret".to_vec());
        let out = format!("{k:?} {s:?}");
        assert!(!out.contains("ab") && !out.contains("AB") && !out.contains("171"));
        assert!(!out.contains("canary"));
        assert!(out.contains("redacted"));
    }

    #[test]
    fn zeroize_wipes_used_bytes_and_spare_capacity() {
        let mut v = Vec::with_capacity(48);
        v.extend_from_slice(&[0xA5; 40]);
        v.truncate(33); // bytes 33..40 hold old plaintext in the spare capacity
        let mut s = SecretBytes::new(v);
        s.zeroize();
        assert!(s.is_empty());
        let cap = s.0.capacity();
        assert!(cap >= 48);
        // SAFETY: `zeroize` wrote every byte of the capacity, so all of it is initialised.
        #[allow(unsafe_code)]
        unsafe {
            s.0.set_len(cap);
        }
        assert!(s.0.iter().all(|&b| b == 0));
        SecretBytes::default().zeroize(); // no allocation, nothing to do
    }

    #[test]
    fn random_keys_differ() {
        let a = SecretKey::random().unwrap();
        let b = SecretKey::random().unwrap();
        assert_ne!(a.expose_secret(), b.expose_secret());
    }
}
