//! The key registry: each tenant's KEKs and roots, wrapped by the tenant's master key.
//!
//! Append-only (DESIGN.md §2): a re-wrap, a state change or a shred tombstone is a new entry.
//! Entries are unique on (tenant, purpose, policy, version, master-key reference, state) and
//! written insert-if-absent, so two instances provisioning or rolling over at once agree on
//! one winner. The state is part of the uniqueness key because a state change is a new entry
//! of the same version under the same master key; DESIGN.md lists the other five. A
//! version's state only moves forward (active → decrypt-only → destroyed); its effective
//! state is the furthest any of its entries records. Only an operator purge deletes.
//!
//! Every wrap binds, as associated data, the purpose, tenant, policy, KEK id, version and
//! master-key reference ([`entry_aad`]): an entry copied to another tenant or purpose fails
//! to unwrap in the KMS.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::format::aad::Aad;
use crate::kms::KeyRef;
use crate::tenant::context::TenantId;

/// What a registry entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Purpose {
    /// A key-encryption key of one class.
    Kek,
    /// The tenant's blind-index root.
    IndexRoot,
    /// The tenant's deterministic-encryption root.
    DeterministicRoot,
    /// A shred tombstone: the tenant's keys are destroyed.
    Tombstone,
}

impl Purpose {
    /// Stable name, as stored and bound.
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Kek => "kek",
            Purpose::IndexRoot => "index-root",
            Purpose::DeterministicRoot => "deterministic-root",
            Purpose::Tombstone => "tombstone",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`crate::Error::Registry`] when `s` is no purpose name cmk knows (a row written by a
    /// newer version, or altered in the database).
    pub fn parse(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "kek" => Purpose::Kek,
            "index-root" => Purpose::IndexRoot,
            "deterministic-root" => Purpose::DeterministicRoot,
            "tombstone" => Purpose::Tombstone,
            _ => return Err(crate::Error::Registry(format!("unknown purpose `{s}`"))),
        })
    }
}

/// Lifecycle state of a key version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum KeyState {
    /// Used for new writes (the highest active version) and reads.
    Active,
    /// Used for reads only.
    DecryptOnly,
    /// Gone: never unwrapped again.
    Destroyed,
}

impl KeyState {
    /// Stable name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Active => "active",
            KeyState::DecryptOnly => "decrypt-only",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// Parses a stored name.
    ///
    /// # Errors
    /// [`crate::Error::Registry`] when `s` is no key state name cmk knows (a row written by a
    /// newer version, or altered in the database).
    pub fn parse(s: &str) -> crate::Result<Self> {
        Ok(match s {
            "active" => KeyState::Active,
            "decrypt-only" => KeyState::DecryptOnly,
            "destroyed" => KeyState::Destroyed,
            _ => return Err(crate::Error::Registry(format!("unknown key state `{s}`"))),
        })
    }
}

/// One registry entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
// Exhaustive by design: a stored record, one field per column: registry implementations build it.
#[allow(clippy::exhaustive_structs)]
pub struct RegistryEntry {
    /// Tenant.
    pub tenant: TenantId,
    /// Purpose.
    pub purpose: Purpose,
    /// Policy (class name) for KEKs; empty for roots and tombstones.
    pub policy: String,
    /// KEK id (see [`kek_id`]); 0 for roots and tombstones.
    pub kek_id: u32,
    /// Version, from 1.
    pub version: u32,
    /// The master key the material is wrapped under.
    pub cmk_ref: KeyRef,
    /// State this entry records.
    pub state: KeyState,
    /// The material as the KMS wrapped it (empty for tombstones and destroyed entries).
    pub wrapped: Vec<u8>,
    /// Seconds since the Unix epoch when the entry was written.
    pub created_at: u64,
}

impl RegistryEntry {
    /// The uniqueness key of DESIGN.md §2 (plus state, see the module docs).
    pub fn unique_key(&self) -> (String, Purpose, String, u32, String, KeyState) {
        (
            self.tenant.as_str().to_string(),
            self.purpose,
            self.policy.clone(),
            self.version,
            self.cmk_ref.as_str().to_string(),
            self.state,
        )
    }
}

pub use crate::tenant::policy::kek_id;

/// The associated data of a registry wrap (docs/FORMAT.md §3).
pub fn entry_aad(
    purpose: Purpose,
    tenant: &TenantId,
    policy: &str,
    kek_id: u32,
    version: u32,
    cmk_ref: &KeyRef,
) -> Aad {
    Aad::new("cmk/registry")
        .u8(1)
        .text(purpose.as_str())
        .text(tenant.as_str())
        .text(policy)
        .u32(kek_id)
        .u32(version)
        .text(cmk_ref.as_str())
}

/// The KMS context of a registry entry's wrap: [`entry_aad`], with the same facts as
/// readable pairs (`cmk:purpose`, `cmk:tenant`, `cmk:policy`, `cmk:kek-id`, `cmk:version`,
/// `cmk:key`) for KMSes that show them in the tenant's audit log.
pub fn entry_context(
    purpose: Purpose,
    tenant: &TenantId,
    policy: &str,
    kek_id: u32,
    version: u32,
    cmk_ref: &KeyRef,
) -> crate::kms::KmsContext {
    crate::kms::KmsContext::new(entry_aad(purpose, tenant, policy, kek_id, version, cmk_ref))
        .with("cmk:purpose", purpose.as_str())
        .with("cmk:tenant", tenant.as_str())
        .with("cmk:policy", policy)
        .with("cmk:kek-id", kek_id.to_string())
        .with("cmk:version", version.to_string())
        .with("cmk:key", cmk_ref.as_str())
}

/// Whether an insert-if-absent wrote the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertOutcome {
    /// This call wrote it.
    Inserted,
    /// An entry with the same uniqueness key existed; it is returned and wins.
    Existing(RegistryEntry),
}

/// Storage of registry entries. Implementations must be append-only apart from `purge`.
#[async_trait::async_trait]
pub trait KeyRegistry: Send + Sync + std::fmt::Debug {
    /// Inserts `entry` unless one with the same uniqueness key exists.
    ///
    /// # Errors
    /// [`crate::Error::Registry`] when the store cannot be written (unreachable database,
    /// constraint other than the uniqueness key, poisoned lock).
    async fn insert_if_absent(&self, entry: RegistryEntry) -> crate::Result<InsertOutcome>;

    /// Inserts each entry as [`KeyRegistry::insert_if_absent`] does; a store with
    /// transactions commits them together (one commit, one sync to disk), so that a
    /// master-key rotation costs one commit per tenant, not one per entry. The default
    /// inserts them one by one.
    ///
    /// # Errors
    /// As [`KeyRegistry::insert_if_absent`]; a transactional store then has written none.
    async fn insert_all_if_absent(
        &self,
        entries: Vec<RegistryEntry>,
    ) -> crate::Result<Vec<InsertOutcome>> {
        let mut outcomes = Vec::with_capacity(entries.len());
        for entry in entries {
            outcomes.push(self.insert_if_absent(entry).await?);
        }
        Ok(outcomes)
    }

    /// Every entry of a tenant, in insertion order.
    ///
    /// # Errors
    /// [`crate::Error::Registry`] when the store cannot be read, and an error when an entry
    /// does not parse (such an entry is never skipped).
    async fn entries(&self, tenant: &TenantId) -> crate::Result<Vec<RegistryEntry>>;

    /// Operator purge: deletes every entry of a tenant and returns how many. Never called by
    /// cmk itself.
    ///
    /// # Errors
    /// [`crate::Error::Registry`] when the store cannot be written.
    async fn purge(&self, tenant: &TenantId) -> crate::Result<usize>;
}

/// An in-memory registry for tests and single-process tools.
#[derive(Debug, Default)]
pub struct MemoryRegistry {
    /// Each tenant's entries in the order written: an insert compares with its own tenant's
    /// handful only, so many tenants cost no more per tenant than one.
    entries: Mutex<HashMap<TenantId, Vec<RegistryEntry>>>,
}

impl MemoryRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(
        &self,
    ) -> crate::Result<std::sync::MutexGuard<'_, HashMap<TenantId, Vec<RegistryEntry>>>> {
        self.entries
            .lock()
            .map_err(|_| crate::Error::Registry("memory registry lock poisoned".into()))
    }

    /// Stores an entry without any check, as an attacker with database write access could
    /// (tests of the trust boundary use this).
    ///
    /// # Errors
    /// [`crate::Error::Registry`] when the registry's lock is poisoned (a panic elsewhere while
    /// it was held).
    pub fn insert_raw(&self, entry: RegistryEntry) -> crate::Result<()> {
        self.lock()?
            .entry(entry.tenant.clone())
            .or_default()
            .push(entry);
        Ok(())
    }
}

#[async_trait::async_trait]
impl KeyRegistry for MemoryRegistry {
    async fn insert_if_absent(&self, entry: RegistryEntry) -> crate::Result<InsertOutcome> {
        let mut entries = self.lock()?;
        let tenant = entries.entry(entry.tenant.clone()).or_default();
        let key = entry.unique_key();
        if let Some(existing) = tenant.iter().find(|e| e.unique_key() == key) {
            return Ok(InsertOutcome::Existing(existing.clone()));
        }
        tenant.push(entry);
        Ok(InsertOutcome::Inserted)
    }

    async fn entries(&self, tenant: &TenantId) -> crate::Result<Vec<RegistryEntry>> {
        Ok(self.lock()?.get(tenant).cloned().unwrap_or_default())
    }

    async fn purge(&self, tenant: &TenantId) -> crate::Result<usize> {
        Ok(self.lock()?.remove(tenant).map_or(0, |e| e.len()))
    }
}

/// The registry's view of one key version of a tenant, folded from its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KeyVersionView {
    /// Purpose.
    pub purpose: Purpose,
    /// Policy (class) or empty.
    pub policy: String,
    /// KEK id.
    pub kek_id: u32,
    /// Version.
    pub version: u32,
    /// Effective state: the furthest any entry records.
    pub state: KeyState,
    /// The newest entry holding material wrapped under the trusted master key, if any.
    pub wrapped_by: Option<RegistryEntry>,
}

/// Folds a tenant's entries into one view per (purpose, policy, version), sorted by purpose,
/// policy and ascending version.
///
/// `trusted` names, per purpose and policy, the master key that the MAC-checked tenant
/// configuration assigns. Only material wrapped under it is used: a database writer who
/// inserts an entry wrapped under a key of their own must not get new data sealed under a
/// KEK they know (DESIGN.md §4). State entries count whatever key they name, because a
/// state only moves forward: a forged one can deny service, never widen access.
pub fn fold_versions(
    entries: &[RegistryEntry],
    trusted: impl Fn(Purpose, &str) -> Option<KeyRef>,
) -> Vec<KeyVersionView> {
    let mut views: std::collections::BTreeMap<(Purpose, String, u32), KeyVersionView> =
        std::collections::BTreeMap::new();
    // Identity fields that no wrap authenticates must have their only valid values, or a
    // forged entry could steer which key id new rows are sealed under.
    let well_formed = |e: &&RegistryEntry| match e.purpose {
        Purpose::Tombstone => false,
        Purpose::Kek => e.kek_id == kek_id(&e.policy),
        Purpose::IndexRoot | Purpose::DeterministicRoot => e.kek_id == 0 && e.policy.is_empty(),
    };
    for e in entries.iter().filter(well_formed) {
        let view = views
            .entry((e.purpose, e.policy.clone(), e.version))
            .or_insert_with(|| KeyVersionView {
                purpose: e.purpose,
                policy: e.policy.clone(),
                kek_id: e.kek_id,
                version: e.version,
                state: e.state,
                wrapped_by: None,
            });
        view.state = view.state.max(e.state);
        let holds_material = e.state != KeyState::Destroyed && !e.wrapped.is_empty();
        if holds_material && trusted(e.purpose, &e.policy).as_ref() == Some(&e.cmk_ref) {
            view.wrapped_by = Some(e.clone());
        }
    }
    views.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(version: u32, state: KeyState, cmk: &str) -> RegistryEntry {
        RegistryEntry {
            tenant: TenantId::new("acme").unwrap(),
            purpose: Purpose::Kek,
            policy: "private".into(),
            kek_id: kek_id("private"),
            version,
            cmk_ref: KeyRef::new(cmk).unwrap(),
            state,
            wrapped: vec![1, 2, 3],
            created_at: 0,
        }
    }

    #[tokio::test]
    async fn insert_if_absent_keeps_the_first_writer() {
        let r = MemoryRegistry::new();
        let a = entry(1, KeyState::Active, "local:a");
        let mut b = a.clone();
        b.wrapped = vec![9];
        assert_eq!(
            r.insert_if_absent(a.clone()).await.unwrap(),
            InsertOutcome::Inserted
        );
        assert_eq!(
            r.insert_if_absent(b).await.unwrap(),
            InsertOutcome::Existing(a)
        );
        let t = TenantId::new("acme").unwrap();
        assert_eq!(r.entries(&t).await.unwrap().len(), 1);
        assert_eq!(r.purge(&t).await.unwrap(), 1);
        assert!(r.entries(&t).await.unwrap().is_empty());
    }

    #[test]
    fn folding_takes_the_furthest_state_and_only_trusted_material() {
        let entries = vec![
            entry(1, KeyState::Active, "local:a"),
            entry(1, KeyState::Active, "local:b"),
            entry(1, KeyState::DecryptOnly, "local:a"),
            entry(2, KeyState::Active, "local:a"),
            entry(2, KeyState::Destroyed, "local:a"),
        ];
        let trusted = |_: Purpose, _: &str| Some(KeyRef::new("local:b").unwrap());
        let v = fold_versions(&entries, trusted);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].state, KeyState::DecryptOnly);
        assert_eq!(
            v[0].wrapped_by.as_ref().unwrap().cmk_ref.as_str(),
            "local:b"
        );
        assert_eq!(v[1].state, KeyState::Destroyed);
        // Version 2 exists only under local:a, which the configuration does not trust.
        assert!(v[1].wrapped_by.is_none());
    }

    #[test]
    fn entries_with_a_forged_identity_are_ignored() {
        let mut wrong_id = entry(2, KeyState::Active, "local:b");
        wrong_id.kek_id = 7;
        let mut root_with_policy = entry(1, KeyState::Active, "local:b");
        root_with_policy.purpose = Purpose::IndexRoot;
        root_with_policy.kek_id = 0;
        let trusted = |_: Purpose, _: &str| Some(KeyRef::new("local:b").unwrap());
        assert!(fold_versions(&[wrong_id, root_with_policy], trusted).is_empty());
    }

    #[test]
    fn kek_ids_are_stable() {
        assert_eq!(kek_id("private"), kek_id("private"));
        assert_ne!(kek_id("private"), kek_id("restricted"));
    }
}
