//! Data classifications and the policy each one carries.
//!
//! A class (`public`, `private`, `restricted`, `secret`, or the application's own) maps, per
//! tenant, to a [`Policy`]: which master key of the tenant wraps its key-encryption key, how
//! long unwrapped keys may be leased, which search modes its fields may use, which roles may
//! read it, padding, NULL handling and whether auditing is fail-closed.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kms::KeyRef;

/// A data classification name: lower-case ASCII letters, digits, `_` and `-`, 1 to 32 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Class(String);

impl Class {
    /// Data anyone may see; still encrypted if a field is classified with it.
    pub const PUBLIC: &'static str = "public";
    /// Personal data of ordinary sensitivity.
    pub const PRIVATE: &'static str = "private";
    /// Regulated data (health, finance, national ids).
    pub const RESTRICTED: &'static str = "restricted";
    /// The most sensitive data (credentials, secrets).
    pub const SECRET: &'static str = "secret";
    /// The built-in class names.
    pub const BUILT_IN: [&'static str; 4] =
        [Self::PUBLIC, Self::PRIVATE, Self::RESTRICTED, Self::SECRET];

    /// Makes a class name, checking its spelling.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] when `name` is not 1 to 32 bytes of `a-z`, `0-9`, `_` or
    /// `-`.
    pub fn new(name: impl Into<String>) -> crate::Result<Self> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Ok(Class(name))
        } else {
            Err(crate::Error::invalid_name(
                "class name",
                &name,
                "1 to 32 bytes of a-z, 0-9, `_` or `-`",
            ))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Class {
    type Error = crate::Error;
    fn try_from(s: String) -> crate::Result<Self> {
        Class::new(s)
    }
}

impl From<Class> for String {
    fn from(c: Class) -> String {
        c.0
    }
}

impl fmt::Debug for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Class({})", self.0)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which equality search a class allows its fields to use. Both modes leak equality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SearchMode {
    /// No searchable fields in this class.
    None,
    /// Blind indexes (HMAC of the normalised value) allowed.
    BlindIndex,
    /// Blind indexes and deterministic encryption (AES-SIV) allowed.
    Deterministic,
}

/// How unwrapped keys of a class are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
#[non_exhaustive]
pub enum LeasePolicy {
    /// Keys are leased: cached until `hard_expiry_secs`, renewed every `renewal_secs`.
    Leased {
        /// Hard expiry of an unwrapped key, in seconds (default 3600).
        hard_expiry_secs: u64,
        /// Renewal interval, in seconds (default 1200); revocation takes effect within it.
        renewal_secs: u64,
        /// Optional cap on uses of one lease.
        max_uses: Option<u64>,
    },
    /// Classic mode: every data key is wrapped by the KMS itself, one call per row access.
    None,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy::Leased {
            hard_expiry_secs: 3600,
            renewal_secs: 1200,
            max_uses: None,
        }
    }
}

impl LeasePolicy {
    /// The hard expiry, if leased.
    pub fn hard_expiry(&self) -> Option<Duration> {
        match self {
            LeasePolicy::Leased {
                hard_expiry_secs, ..
            } => Some(Duration::from_secs(*hard_expiry_secs)),
            LeasePolicy::None => None,
        }
    }
    /// The renewal interval, if leased.
    pub fn renewal(&self) -> Option<Duration> {
        match self {
            LeasePolicy::Leased { renewal_secs, .. } => Some(Duration::from_secs(*renewal_secs)),
            LeasePolicy::None => None,
        }
    }
}

/// What happens to an operation when its security event cannot be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuditMode {
    /// The operation proceeds; the failure is counted.
    #[default]
    BestEffort,
    /// The operation fails unless the event was recorded first.
    FailClosed,
}

/// The policy of one class for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Policy {
    /// The tenant's master key that wraps this class's key-encryption keys.
    pub kms_key: KeyRef,
    /// Lease times and caps.
    #[serde(default)]
    pub lease: LeasePolicy,
    /// Search modes this class allows.
    #[serde(default = "default_search")]
    pub search: SearchMode,
    /// Roles that may read; empty means every actor of the tenant may read.
    #[serde(default)]
    pub readers: BTreeSet<String>,
    /// Minimum padding block in bytes for every field of the class (0: no padding).
    #[serde(default)]
    pub pad_to: u16,
    /// Hide NULL for every field of the class (a NULL is then encrypted like a value).
    #[serde(default)]
    pub hide_nulls: bool,
    /// Audit mode.
    #[serde(default)]
    pub audit: AuditMode,
}

fn default_search() -> SearchMode {
    SearchMode::None
}

impl Policy {
    /// A policy with defaults: 1 h lease renewed every 20 min, no search, any reader of the
    /// tenant, no padding, NULL visible, best-effort audit.
    pub fn new(kms_key: KeyRef) -> Self {
        Policy {
            kms_key,
            lease: LeasePolicy::default(),
            search: SearchMode::None,
            readers: BTreeSet::new(),
            pad_to: 0,
            hide_nulls: false,
            audit: AuditMode::BestEffort,
        }
    }

    /// Allows a search mode.
    pub fn with_search(mut self, search: SearchMode) -> Self {
        self.search = search;
        self
    }

    /// Restricts reading to actors holding one of `roles`.
    pub fn with_readers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.readers = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Pads every field of the class to a multiple of `block` bytes.
    pub fn with_padding(mut self, block: u16) -> Self {
        self.pad_to = block;
        self
    }

    /// Hides NULL for every field of the class.
    pub fn with_hidden_nulls(mut self) -> Self {
        self.hide_nulls = true;
        self
    }

    /// Sets the audit mode.
    pub fn with_audit(mut self, audit: AuditMode) -> Self {
        self.audit = audit;
        self
    }

    /// Sets the lease policy.
    pub fn with_lease(mut self, lease: LeasePolicy) -> Self {
        self.lease = lease;
        self
    }

    /// True when an actor with `roles` may read this class.
    pub fn may_read(&self, roles: &[String]) -> bool {
        self.readers.is_empty() || roles.iter().any(|r| self.readers.contains(r))
    }

    /// Checks the policy's own consistency.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when the lease's hard expiry exceeds 30 days, its
    /// renewal is zero or not shorter than the hard expiry, its use cap is 0, or the padding
    /// block exceeds 4096 bytes.
    pub fn validate(&self, class: &Class) -> crate::Result<()> {
        if let LeasePolicy::Leased {
            hard_expiry_secs,
            renewal_secs,
            max_uses,
        } = self.lease
        {
            if hard_expiry_secs > 30 * 24 * 3600 {
                return Err(crate::Error::InvalidConfig(format!(
                    "class `{class}`: a lease hard expiry of {hard_expiry_secs} s exceeds the maximum of 30 days"
                )));
            }
            if renewal_secs == 0 || renewal_secs >= hard_expiry_secs {
                return Err(crate::Error::InvalidConfig(format!(
                    "class `{class}`: the lease renewal ({renewal_secs} s) must be positive and \
                     shorter than the hard expiry ({hard_expiry_secs} s)"
                )));
            }
            if max_uses == Some(0) {
                return Err(crate::Error::InvalidConfig(format!(
                    "class `{class}`: a lease use cap of 0 would refuse every use; omit it instead"
                )));
            }
        }
        if self.pad_to > 4096 {
            return Err(crate::Error::InvalidConfig(format!(
                "class `{class}`: padding block {} is larger than the maximum 4096",
                self.pad_to
            )));
        }
        Ok(())
    }
}

/// The KEK id of a class: the first four bytes of SHA-256(`cmk/kek-id` ‖ class), big-endian.
/// Deterministic, so every instance computes the same id; collisions between a tenant's
/// classes are refused when the configuration is validated.
pub fn kek_id(class: &str) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"cmk/kek-id")
        .chain_update(class.as_bytes())
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyRef {
        KeyRef::new("local:k").unwrap()
    }

    #[test]
    fn class_names_are_checked() {
        for ok in Class::BUILT_IN {
            assert!(Class::new(ok).is_ok());
        }
        assert!(Class::new("pii-eu_2").is_ok());
        for bad in ["", "Private", "a b", &"x".repeat(33)] {
            assert!(Class::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_policy_has_documented_lease_times() {
        let p = Policy::new(key());
        assert_eq!(p.lease.hard_expiry(), Some(Duration::from_secs(3600)));
        assert_eq!(p.lease.renewal(), Some(Duration::from_secs(1200)));
        assert_eq!(p.search, SearchMode::None);
        assert_eq!(p.audit, AuditMode::BestEffort);
    }

    #[test]
    fn readers_gate_access() {
        let open = Policy::new(key());
        assert!(open.may_read(&[]));
        let closed = Policy::new(key()).with_readers(["doctor"]);
        assert!(!closed.may_read(&["nurse".into()]));
        assert!(closed.may_read(&["nurse".into(), "doctor".into()]));
    }

    #[test]
    fn inconsistent_lease_is_rejected() {
        let c = Class::new("private").unwrap();
        let p = Policy::new(key()).with_lease(LeasePolicy::Leased {
            hard_expiry_secs: 60,
            renewal_secs: 60,
            max_uses: None,
        });
        assert!(p.validate(&c).is_err());
        let p = Policy::new(key()).with_padding(5000);
        assert!(p.validate(&c).is_err());
    }
}
