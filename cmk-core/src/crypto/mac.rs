//! HMAC-SHA256 keyed with a 256-bit key, constructed without a fallible path.

use hmac::Hmac;
use hmac::digest::KeyInit;
use sha2::Sha256;
use zeroize::Zeroizing;

/// HMAC-SHA256 under a 32-byte key. HMAC pads keys shorter than the 64-byte block with
/// zeros (RFC 2104), so padding here first is the same MAC and lets us use the infallible
/// fixed-size constructor.
pub fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..32].copy_from_slice(key);
    <Hmac<Sha256> as KeyInit>::new((&*block).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    #[test]
    fn same_as_the_slice_constructor() {
        let key = [5u8; 32];
        let mut a = hmac_sha256(&key);
        let mut b = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
        a.update(b"x");
        b.update(b"x");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }
}
