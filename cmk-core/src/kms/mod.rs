//! The `Kms` trait: where tenants' master keys live, and the providers that speak to them.
//!
//! A master key never leaves its KMS: cmk asks it to wrap and unwrap key material (KEKs and
//! index roots, or DEKs in classic mode) with associated data that binds each wrap to its
//! purpose, tenant and key id. Providers classify failures into the five [`KmsErrorKind`]s
//! because the lease logic treats them differently: *unavailable* and *throttled* are ridden
//! out until a lease's hard expiry; *denied*, *not found* and *invalid* mean the tenant (or
//! its key) said no, and keys are evicted at once.

pub use crate::error::{KmsError, KmsErrorKind};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::crypto::secret::SecretBytes;

#[cfg(feature = "aws")]
pub mod aws;
mod context;
#[cfg(any(feature = "pkcs11", feature = "kmip"))]
mod gcm_blob;
#[cfg(feature = "kmip")]
pub mod kmip;
pub mod local;
pub(crate) mod metered;
#[cfg(feature = "pkcs11")]
pub mod pkcs11;

pub use context::{AAD_DIGEST_NAME, KmsContext};

/// A reference to a tenant's master key: `PROVIDER:KEY-ID` (for example `local:acme`,
/// `aws:arn:aws:kms:...`, `pkcs11:label`, `kmip:uid`).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyRef(String);

impl KeyRef {
    /// Parses `PROVIDER:KEY-ID`; both parts must be non-empty and the whole at most 2048 bytes.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when `s` breaks that rule.
    pub fn new(s: impl Into<String>) -> crate::Result<Self> {
        let s = s.into();
        match s.split_once(':') {
            Some((p, k)) if !p.is_empty() && !k.is_empty() && s.len() <= 2048 => Ok(KeyRef(s)),
            _ => Err(crate::Error::InvalidConfig(format!(
                "key reference `{s}` must look like `provider:key-id` (for example `local:acme`)"
            ))),
        }
    }

    /// The provider part.
    pub fn provider(&self) -> &str {
        self.0.split_once(':').map(|(p, _)| p).unwrap_or_default()
    }

    /// The provider-specific key id.
    pub fn key_id(&self) -> &str {
        self.0.split_once(':').map(|(_, k)| k).unwrap_or_default()
    }

    /// The whole reference.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyRef {
    type Error = crate::Error;
    fn try_from(s: String) -> crate::Result<Self> {
        KeyRef::new(s)
    }
}

impl From<KeyRef> for String {
    fn from(k: KeyRef) -> String {
        k.0
    }
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyRef({})", self.0)
    }
}

impl fmt::Display for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key management system holding master keys.
#[async_trait::async_trait]
pub trait Kms: Send + Sync + fmt::Debug {
    /// The provider name that key references use (`local`, `aws`, ...).
    fn provider(&self) -> &str;

    /// Encrypts `plaintext` (key material) under the master key `key`, bound to `context`.
    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError>;

    /// Decrypts what [`Kms::wrap`] returned; fails unless `key` and `context` match.
    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError>;

    /// Destroys a master key for crypto-shredding, if this provider may. `Ok(false)` means it
    /// cannot (the default): the operator must have the tenant disable or delete the key.
    async fn destroy_key(&self, key: &KeyRef) -> Result<bool, KmsError> {
        let _ = key;
        Ok(false)
    }
}

/// Routes each key reference to the provider it names, so tenants on different KMSes share one
/// deployment.
#[derive(Debug, Default, Clone)]
pub struct KmsRouter {
    providers: HashMap<String, Arc<dyn Kms>>,
}

impl KmsRouter {
    /// An empty router.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a provider under its own name.
    pub fn with(mut self, kms: Arc<dyn Kms>) -> Self {
        self.providers.insert(kms.provider().to_string(), kms);
        self
    }

    fn route(&self, key: &KeyRef) -> Result<&Arc<dyn Kms>, KmsError> {
        self.providers.get(key.provider()).ok_or_else(|| {
            KmsError::new(
                KmsErrorKind::NotFound,
                format!("no KMS provider `{}` is configured", key.provider()),
            )
        })
    }
}

#[async_trait::async_trait]
impl Kms for KmsRouter {
    fn provider(&self) -> &str {
        "router"
    }

    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        context: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.route(key)?.wrap(key, plaintext, context).await
    }

    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        context: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        self.route(key)?.unwrap(key, wrapped, context).await
    }

    async fn destroy_key(&self, key: &KeyRef) -> Result<bool, KmsError> {
        self.route(key)?.destroy_key(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs_are_parsed() {
        let k = KeyRef::new("aws:arn:aws:kms:us-east-1:1:key/x").unwrap();
        assert_eq!(k.provider(), "aws");
        assert_eq!(k.key_id(), "arn:aws:kms:us-east-1:1:key/x");
        for bad in ["", "local", ":x", "local:"] {
            assert!(KeyRef::new(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn router_refuses_unknown_providers() {
        let r = KmsRouter::new().with(Arc::new(local::LocalKms::in_memory()));
        let err = r
            .wrap(
                &KeyRef::new("aws:k").unwrap(),
                b"x",
                &KmsContext::from_bytes(b""),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, KmsErrorKind::NotFound);
    }
}
