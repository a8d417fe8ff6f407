//! `Cmk`: the entry point that ties KMS, key registry, tenant configuration and events
//! together. Its async methods talk to the KMS; what they return (key handles) seals and
//! unseals synchronously.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::context::RequestContext;
use crate::crypto::aead::GcmKey;
use crate::error::{Error, Result};
use crate::event::{EventName, EventSink, Outcome, SecurityEvent, TracingSink};
use crate::format::MIN_FORMAT_VERSION;
use crate::keys::{LoadedKek, TenantKeys};
use crate::kms::{KeyRef, Kms};
use crate::policy::{Class, SearchMode};
use crate::registry::{
    InsertOutcome, KeyRegistry, KeyState, KeyVersionView, Purpose, RegistryEntry, entry_aad,
    fold_versions, kek_id,
};
use crate::secret::SecretKey;
use crate::tenant::{TenantConfig, TenantConfigStore};

/// Deployment settings, set in code (never read from the database).
#[derive(Debug, Clone)]
pub struct CmkSettings {
    /// Oldest stored format version accepted (default: 1).
    pub min_format_version: u8,
    /// Most KEK versions per class a key handle unwraps, newest first (default: 16). Rows
    /// sealed under older versions fail with `KeyUnavailable` until rekeyed.
    pub max_warm_versions: usize,
}

impl Default for CmkSettings {
    fn default() -> Self {
        CmkSettings {
            min_format_version: MIN_FORMAT_VERSION,
            max_warm_versions: 16,
        }
    }
}

/// The cmk service.
#[derive(Debug, Clone)]
pub struct Cmk {
    kms: Arc<dyn Kms>,
    registry: Arc<dyn KeyRegistry>,
    configs: Arc<dyn TenantConfigStore>,
    sink: Arc<dyn EventSink>,
    settings: CmkSettings,
}

/// Builds a [`Cmk`].
#[derive(Debug, Default)]
pub struct CmkBuilder {
    kms: Option<Arc<dyn Kms>>,
    registry: Option<Arc<dyn KeyRegistry>>,
    configs: Option<Arc<dyn TenantConfigStore>>,
    sink: Option<Arc<dyn EventSink>>,
    settings: CmkSettings,
}

impl CmkBuilder {
    /// The KMS (a single provider or a [`crate::kms::KmsRouter`]). Required.
    pub fn kms(mut self, kms: Arc<dyn Kms>) -> Self {
        self.kms = Some(kms);
        self
    }
    /// The key registry. Required.
    pub fn registry(mut self, registry: Arc<dyn KeyRegistry>) -> Self {
        self.registry = Some(registry);
        self
    }
    /// The tenant configuration store. Required.
    pub fn configs(mut self, configs: Arc<dyn TenantConfigStore>) -> Self {
        self.configs = Some(configs);
        self
    }
    /// The event sink (default: [`TracingSink`]).
    pub fn sink(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.sink = Some(sink);
        self
    }
    /// Deployment settings.
    pub fn settings(mut self, settings: CmkSettings) -> Self {
        self.settings = settings;
        self
    }
    /// Builds, naming what is missing.
    pub fn build(self) -> Result<Cmk> {
        let missing = |what: &str| Error::InvalidConfig(format!("Cmk::builder() needs {what}"));
        Ok(Cmk {
            kms: self.kms.ok_or_else(|| missing("a KMS (.kms(...))"))?,
            registry: self
                .registry
                .ok_or_else(|| missing("a key registry (.registry(...))"))?,
            configs: self
                .configs
                .ok_or_else(|| missing("a tenant configuration store (.configs(...))"))?,
            sink: self.sink.unwrap_or_else(|| Arc::new(TracingSink)),
            settings: self.settings,
        })
    }
}

/// What onboarding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnboardReport {
    /// Master keys proven with a wrap/unwrap round trip.
    pub proven_keys: Vec<KeyRef>,
    /// Registry entries this call wrote (0 when the tenant was complete already).
    pub entries_written: usize,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cmk {
    /// A builder.
    pub fn builder() -> CmkBuilder {
        CmkBuilder::default()
    }

    /// The event sink.
    pub fn sink(&self) -> &Arc<dyn EventSink> {
        &self.sink
    }

    fn kms_error(&self, ctx: &RequestContext, key: &KeyRef, e: crate::kms::KmsError) -> Error {
        Error::Kms {
            tenant: ctx.tenant().to_string(),
            provider: key.provider().to_string(),
            source: e,
        }
    }

    fn emit(&self, ctx: &RequestContext, name: EventName, result: &Result<impl Sized>) {
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure {
                error: e.kind().to_string(),
            },
        };
        // Administrative events are best effort here; the delivery pipeline makes them durable.
        let _ = self.sink.emit(SecurityEvent::new(ctx, name, outcome));
    }

    /// Saves a tenant configuration (signed by the store); its revision must rise.
    pub async fn configure_tenant(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<()> {
        let result = async {
            if ctx.tenant() != &config.tenant {
                return Err(Error::TenantMismatch {
                    expected: ctx.tenant().to_string(),
                    found: config.tenant.to_string(),
                });
            }
            self.configs.save(config).await
        }
        .await;
        self.emit(ctx, EventName::AdminTenantConfigChanged, &result);
        result
    }

    /// Onboards the context's tenant: proves every master key of its configuration with a
    /// wrap/unwrap round trip, then provisions (insert-if-absent) version 1 of each class's
    /// KEK and of the index and deterministic roots that do not exist yet. Running it again
    /// after adding a class provisions just that class. Nothing else ever provisions keys.
    pub async fn onboard(&self, ctx: &RequestContext) -> Result<OnboardReport> {
        let result = self.onboard_inner(ctx).await;
        self.emit(ctx, EventName::AdminTenantOnboarded, &result);
        result
    }

    async fn onboard_inner(&self, ctx: &RequestContext) -> Result<OnboardReport> {
        let tenant = ctx.tenant();
        let config = self.configs.load(tenant).await?;
        let entries = self.registry.entries(tenant).await?;
        if entries.iter().any(|e| e.purpose == Purpose::Tombstone) {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
            });
        }
        let mut keys: Vec<KeyRef> = config
            .policies
            .values()
            .map(|p| p.kms_key.clone())
            .collect();
        keys.push(config.root_key.clone());
        keys.sort();
        keys.dedup();
        for key in &keys {
            let probe = SecretKey::random()?;
            let aad = crate::format::aad::Aad::new("cmk/probe").text(tenant.as_str());
            let wrapped = self
                .kms
                .wrap(key, probe.expose_secret(), aad.as_bytes())
                .await
                .map_err(|e| self.kms_error(ctx, key, e))?;
            let back = self
                .kms
                .unwrap(key, &wrapped, aad.as_bytes())
                .await
                .map_err(|e| self.kms_error(ctx, key, e))?;
            if back.expose_secret() != probe.expose_secret() {
                return Err(Error::Kms {
                    tenant: tenant.to_string(),
                    provider: key.provider().to_string(),
                    source: crate::kms::KmsError::new(
                        crate::kms::KmsErrorKind::Invalid,
                        "round trip returned other bytes",
                    ),
                });
            }
        }
        let has = |purpose: Purpose, policy: &str| {
            entries
                .iter()
                .any(|e| e.purpose == purpose && e.policy == policy)
        };
        let mut wanted: Vec<(Purpose, String, u32, KeyRef)> = Vec::new();
        for (class, policy) in &config.policies {
            if !has(Purpose::Kek, class.as_str()) {
                wanted.push((
                    Purpose::Kek,
                    class.to_string(),
                    kek_id(class.as_str()),
                    policy.kms_key.clone(),
                ));
            }
        }
        for purpose in [Purpose::IndexRoot, Purpose::DeterministicRoot] {
            if !has(purpose, "") {
                wanted.push((purpose, String::new(), 0, config.root_key.clone()));
            }
        }
        let mut written = 0;
        for (purpose, policy, id, cmk_ref) in wanted {
            let material = SecretKey::random()?;
            let aad = entry_aad(purpose, tenant, &policy, id, 1, &cmk_ref);
            let wrapped = self
                .kms
                .wrap(&cmk_ref, material.expose_secret(), aad.as_bytes())
                .await
                .map_err(|e| self.kms_error(ctx, &cmk_ref, e))?;
            let entry = RegistryEntry {
                tenant: tenant.clone(),
                purpose,
                policy,
                kek_id: id,
                version: 1,
                cmk_ref,
                state: KeyState::Active,
                wrapped,
                created_at: now_secs(),
            };
            if self.registry.insert_if_absent(entry).await? == InsertOutcome::Inserted {
                written += 1;
            }
        }
        Ok(OnboardReport {
            proven_keys: keys,
            entries_written: written,
        })
    }

    /// Fetches the keys of the context's tenant for `classes`: one KMS unwrap per distinct
    /// key version, never one per row. Fails for an unknown or shredded tenant, a class
    /// without policy or KEK, and a KMS that refuses.
    pub async fn keys_for<C: AsRef<str>>(
        &self,
        ctx: &RequestContext,
        classes: &[C],
    ) -> Result<TenantKeys> {
        let tenant = ctx.tenant();
        let entries = self.registry.entries(tenant).await?;
        if entries.is_empty() {
            return Err(Error::UnknownTenant {
                tenant: tenant.to_string(),
            });
        }
        if entries.iter().any(|e| e.purpose == Purpose::Tombstone) {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
            });
        }
        let config = Arc::new(self.configs.load(tenant).await?);
        let classes: Vec<Class> = classes
            .iter()
            .map(|c| Class::new(c.as_ref()))
            .collect::<Result<_>>()?;
        let wanted: HashSet<&Class> = classes.iter().collect();
        for class in &wanted {
            config.policy(class)?;
        }
        let trusted = |purpose: Purpose, policy: &str| match purpose {
            Purpose::Kek => Class::new(policy)
                .ok()
                .and_then(|c| config.policies.get(&c))
                .map(|p| p.kms_key.clone()),
            _ => Some(config.root_key.clone()),
        };
        let views = fold_versions(&entries, trusted);
        let searchable = wanted
            .iter()
            .any(|c| config.policy(c).is_ok_and(|p| p.search != SearchMode::None));

        let known_keks = views
            .iter()
            .filter(|v| v.purpose == Purpose::Kek)
            .map(|v| (v.kek_id, v.version))
            .collect();
        let known_roots = views
            .iter()
            .filter_map(|v| {
                let version = u8::try_from(v.version).ok()?;
                match v.purpose {
                    Purpose::IndexRoot => Some((false, version)),
                    Purpose::DeterministicRoot => Some((true, version)),
                    _ => None,
                }
            })
            .collect();
        let mut keks: Vec<((u32, u32), LoadedKek)> = Vec::new();
        let mut active: Vec<(Class, (u32, u32))> = Vec::new();
        let mut index_roots = BTreeMap::new();
        let mut deterministic_roots = BTreeMap::new();
        for class in &wanted {
            let mut versions: Vec<&KeyVersionView> = views
                .iter()
                .filter(|v| {
                    v.purpose == Purpose::Kek
                        && v.policy == class.as_str()
                        && v.state != KeyState::Destroyed
                })
                .collect();
            versions.sort_by_key(|v| std::cmp::Reverse(v.version));
            versions.truncate(self.settings.max_warm_versions);
            if versions.is_empty() {
                return Err(Error::InvalidConfig(format!(
                    "class `{class}` has no key for tenant `{tenant}`: run onboarding to provision it"
                )));
            }
            for v in versions {
                // A version without material under the configured master key is skipped:
                // rows naming it fail with `KeyUnavailable`, and it never becomes the write
                // key (an entry forged under another key must not be written with).
                if v.wrapped_by.is_none() {
                    continue;
                }
                let key = self.unwrap_view(ctx, v).await?;
                if v.state == KeyState::Active && !active.iter().any(|(c, _)| c == *class) {
                    active.push(((*class).clone(), (v.kek_id, v.version)));
                }
                let loaded = LoadedKek {
                    class: (*class).clone(),
                    key: GcmKey::new(&key),
                };
                keks.push(((v.kek_id, v.version), loaded));
            }
            if !active.iter().any(|(c, _)| c == *class) {
                return Err(Error::InvalidConfig(format!(
                    "class `{class}` of tenant `{tenant}` has no active key under its configured master key"
                )));
            }
        }
        if searchable {
            for v in views
                .iter()
                .filter(|v| v.state != KeyState::Destroyed && v.wrapped_by.is_some())
            {
                let Ok(version) = u8::try_from(v.version) else {
                    continue;
                };
                match v.purpose {
                    Purpose::IndexRoot => {
                        index_roots.insert(version, self.unwrap_view(ctx, v).await?);
                    }
                    Purpose::DeterministicRoot => {
                        deterministic_roots.insert(version, self.unwrap_view(ctx, v).await?);
                    }
                    _ => {}
                }
            }
        }
        Ok(TenantKeys {
            tenant: tenant.clone(),
            config,
            keks,
            active,
            known_keks,
            known_roots,
            index_roots,
            deterministic_roots,
            derived: Mutex::new(Default::default()),
            sink: Arc::clone(&self.sink),
            min_format_version: self.settings.min_format_version,
        })
    }

    async fn unwrap_view(&self, ctx: &RequestContext, v: &KeyVersionView) -> Result<SecretKey> {
        let tenant = ctx.tenant();
        let entry = v.wrapped_by.as_ref().ok_or_else(|| Error::KeyUnavailable {
            tenant: tenant.to_string(),
            kek_id: v.kek_id,
            version: v.version,
        })?;
        // Bound to the tenant of the request, not the entry's own column: an entry copied
        // to another tenant fails here.
        let aad = entry_aad(
            v.purpose,
            tenant,
            &v.policy,
            v.kek_id,
            v.version,
            &entry.cmk_ref,
        );
        let result = self
            .kms
            .unwrap(&entry.cmk_ref, &entry.wrapped, aad.as_bytes())
            .await
            .map_err(|e| self.kms_error(ctx, &entry.cmk_ref, e));
        self.emit(ctx, EventName::KmsUnwrap, &result);
        let bytes = result?;
        SecretKey::from_slice(bytes.expose_secret()).ok_or(Error::Tampered)
    }
}
