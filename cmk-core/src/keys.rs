//! Key handles: the unwrapped keys of one tenant that a request needs.
//!
//! [`crate::Cmk::keys_for`] fetches them asynchronously (through the KMS); sealing and
//! unsealing with a handle is then synchronous CPU work (DESIGN.md §5). A handle holds every
//! non-destroyed version of the requested classes' KEKs (newest first, at most
//! [`crate::CmkSettings::max_warm_versions`] per class), so rows sealed before a roll-over
//! still read, and the index and deterministic roots when a requested class is searchable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::context::TenantId;
use crate::crypto::aead::GcmKey;
use crate::crypto::search;
use crate::event::EventSink;
use crate::policy::{Class, Policy};
use crate::secret::SecretKey;
use crate::tenant::TenantConfig;

/// An unwrapped KEK with its key schedule expanded.
pub(crate) struct LoadedKek {
    pub(crate) class: Class,
    pub(crate) key: GcmKey,
}

/// Keys derived per field from a root, cached for the handle's life.
#[derive(Default)]
pub(crate) struct DerivedKeys {
    pub(crate) index: HashMap<FieldKeyId, Arc<SecretKey>>,
    pub(crate) deterministic: HashMap<FieldKeyId, Arc<Zeroizing<[u8; 64]>>>,
}

/// (table, column, root version) of a derived per-field key.
pub(crate) type FieldKeyId = (String, String, u8);

/// The keys of one tenant for one request (or one batch).
pub struct TenantKeys {
    pub(crate) tenant: TenantId,
    pub(crate) config: Arc<TenantConfig>,
    /// Loaded KEKs by (id, version). A handful per handle: a linear scan beats hashing.
    pub(crate) keks: Vec<((u32, u32), LoadedKek)>,
    /// Write KEK per class.
    pub(crate) active: Vec<(Class, (u32, u32))>,
    /// Every (KEK id, version) the registry records for the tenant, requested, destroyed or
    /// not: a value naming one of these that is not loaded is `KeyUnavailable`; a value
    /// naming anything else is `Tampered`.
    pub(crate) known_keks: HashSet<(u32, u32)>,
    /// Every index and deterministic root version the registry records.
    pub(crate) known_roots: HashSet<(bool, u8)>,
    pub(crate) index_roots: BTreeMap<u8, SecretKey>,
    pub(crate) deterministic_roots: BTreeMap<u8, SecretKey>,
    pub(crate) derived: Mutex<DerivedKeys>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) min_format_version: u8,
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut versions: Vec<_> = self.keks.iter().map(|(k, _)| k).collect();
        versions.sort();
        f.debug_struct("TenantKeys")
            .field("tenant", &self.tenant)
            .field("kek_versions", &versions)
            .field(
                "index_root_versions",
                &self.index_roots.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl TenantKeys {
    /// The tenant these keys belong to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant configuration the handle was built from.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// Classes with an active KEK in this handle.
    pub fn classes(&self) -> Vec<&Class> {
        let mut c: Vec<&Class> = self.active.iter().map(|(c, _)| c).collect();
        c.sort();
        c
    }

    /// The (KEK id, version) new writes of `class` use.
    pub fn active_kek(&self, class: &Class) -> Option<(u32, u32)> {
        self.active
            .iter()
            .find(|(c, _)| c == class)
            .map(|(_, k)| *k)
    }

    pub(crate) fn kek(&self, id: u32, version: u32) -> Option<&LoadedKek> {
        self.keks
            .iter()
            .find(|(k, _)| *k == (id, version))
            .map(|(_, kek)| kek)
    }

    pub(crate) fn policy(&self, class: &Class) -> crate::Result<&Policy> {
        self.config.policy(class)
    }

    pub(crate) fn check_tenant(&self, tenant: &str) -> crate::Result<()> {
        if tenant == self.tenant.as_str() {
            Ok(())
        } else {
            Err(crate::Error::TenantMismatch {
                expected: self.tenant.to_string(),
                found: tenant.to_string(),
            })
        }
    }

    /// The error for a KEK a stored value names but the handle does not hold.
    pub(crate) fn missing_kek(&self, kek_id: u32, version: u32) -> crate::Error {
        if self.known_keks.contains(&(kek_id, version)) {
            crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id,
                version,
            }
        } else {
            crate::Error::Tampered
        }
    }

    fn missing_root(&self, deterministic: bool, version: u8) -> crate::Error {
        if self.known_roots.contains(&(deterministic, version)) {
            crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id: 0,
                version: u32::from(version),
            }
        } else {
            crate::Error::Tampered
        }
    }

    pub(crate) fn current_index_version(&self) -> crate::Result<u8> {
        self.index_roots
            .keys()
            .next_back()
            .copied()
            .ok_or_else(|| crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id: 0,
                version: 0,
            })
    }

    pub(crate) fn index_key(
        &self,
        table: &str,
        column: &str,
        version: u8,
    ) -> crate::Result<Arc<SecretKey>> {
        let root = self
            .index_roots
            .get(&version)
            .ok_or_else(|| self.missing_root(false, version))?;
        let mut cache = self
            .derived
            .lock()
            .map_err(|_| crate::Error::Io("key cache poisoned".into()))?;
        let k = cache
            .index
            .entry((table.to_string(), column.to_string(), version))
            .or_insert_with(|| Arc::new(search::index_key(root, table, column, version)));
        Ok(Arc::clone(k))
    }

    pub(crate) fn current_deterministic_version(&self) -> crate::Result<u8> {
        self.deterministic_roots
            .keys()
            .next_back()
            .copied()
            .ok_or_else(|| crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id: 0,
                version: 0,
            })
    }

    pub(crate) fn deterministic_key(
        &self,
        table: &str,
        column: &str,
        version: u8,
    ) -> crate::Result<Arc<Zeroizing<[u8; 64]>>> {
        let root = self
            .deterministic_roots
            .get(&version)
            .ok_or_else(|| self.missing_root(true, version))?;
        let mut cache = self
            .derived
            .lock()
            .map_err(|_| crate::Error::Io("key cache poisoned".into()))?;
        let k = cache
            .deterministic
            .entry((table.to_string(), column.to_string(), version))
            .or_insert_with(|| Arc::new(search::deterministic_key(root, table, column, version)));
        Ok(Arc::clone(k))
    }
}
