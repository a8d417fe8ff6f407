//! What one wrap under a master key is bound to.
//!
//! Every wrap carries the canonical associated data of docs/FORMAT.md §2 (typed,
//! length-prefixed parts: injective), which providers with an AEAD interface (local, PKCS#11,
//! KMIP) authenticate as is. KMSes whose binding is a map of strings (the AWS KMS encryption
//! context) get the same facts as readable pairs, so that they appear in the tenant's own
//! KMS audit log (CloudTrail names the purpose, tenant, class and key version of every
//! unwrap), plus the SHA-256 of the canonical associated data, so that the map binds
//! everything the associated data binds, whatever the pairs show.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest, Sha256};

use crate::format::aad::Aad;

/// The name of the encryption-context entry that holds the SHA-256 (lower-case hex) of the
/// canonical associated data.
pub const AAD_DIGEST_NAME: &str = "cmk:aad-sha256";

/// What a wrap is bound to: the canonical associated data and its readable pairs.
#[derive(Clone, PartialEq, Eq)]
pub struct KmsContext {
    aad: Vec<u8>,
    pairs: Vec<(&'static str, String)>,
}

impl KmsContext {
    /// A context binding `aad`, with no readable pairs yet.
    pub fn new(aad: Aad) -> Self {
        KmsContext {
            aad: aad.into_buffer(),
            pairs: Vec::new(),
        }
    }

    /// A context binding raw associated-data bytes (for callers outside cmk's hierarchy).
    pub fn from_bytes(aad: &[u8]) -> Self {
        KmsContext {
            aad: aad.to_vec(),
            pairs: Vec::new(),
        }
    }

    /// Adds a readable pair (`cmk:tenant` = `acme`). Pairs only describe: the binding is the
    /// associated data, whose digest every map-style context carries.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.pairs.push((name, value.into()));
        self
    }

    /// The canonical associated data, for providers that authenticate bytes.
    pub fn aad(&self) -> &[u8] {
        &self.aad
    }

    /// The readable pairs, in the order they were added.
    pub fn pairs(&self) -> &[(&'static str, String)] {
        &self.pairs
    }

    /// The map-style form (AWS KMS encryption context): the readable pairs plus
    /// [`AAD_DIGEST_NAME`] = SHA-256 of the associated data in lower-case hex.
    pub fn encryption_context(&self) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = self
            .pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        map.insert(
            AAD_DIGEST_NAME.to_string(),
            crate::hex::encode(&Sha256::digest(&self.aad)),
        );
        map
    }
}

impl fmt::Debug for KmsContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names and ids only: no key material ever travels in a context.
        f.debug_map()
            .entries(self.pairs.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_form_binds_the_whole_associated_data() {
        let a = KmsContext::new(Aad::new("cmk/x").text("acme")).with("cmk:tenant", "acme");
        let b = KmsContext::new(Aad::new("cmk/x").text("acme2")).with("cmk:tenant", "acme");
        let (ma, mb) = (a.encryption_context(), b.encryption_context());
        assert_eq!(ma["cmk:tenant"], "acme");
        assert_eq!(ma[AAD_DIGEST_NAME].len(), 64);
        assert_ne!(ma, mb, "same pairs, other associated data: other contexts");
        assert_eq!(format!("{a:?}"), r#"{"cmk:tenant": "acme"}"#);
    }
}
