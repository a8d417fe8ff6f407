//! `Cmk`: the entry point that ties KMS, key registry, tenant configuration and events
//! together. Its async methods talk to the KMS; what they return (key handles) seals and
//! unseals synchronously.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod admin;
pub(crate) mod classic;
pub(crate) mod leasing;
pub mod sql;

use crate::clock::{Clock, MonotonicClock};
use crate::format::aad::RowId;
use crate::keys::lease::LeaseCache;
use crate::rows::handle::TenantKeys;
use crate::rows::schema::RowSchema;
use crate::rows::seal::{SealedRow, StoredRow, UnsealedRow};
use crate::service::leasing::TenantView;
use crate::tenant::context::TenantId;
use admin::{RotateReport, ShredReport};
use leasing::RenewReport;

use crate::audit::event::{EventName, EventSink, Outcome, SecurityEvent, TracingSink};
use crate::crypto::secret::SecretKey;
use crate::error::{Error, Result};
use crate::format::MIN_FORMAT_VERSION;
use crate::keys::registry::{
    InsertOutcome, KeyRegistry, KeyState, Purpose, RegistryEntry, entry_context, kek_id,
};
use crate::kms::{KeyRef, Kms};
use crate::tenant::config::{TenantConfig, TenantConfigStore};
use crate::tenant::context::RequestContext;
use crate::tenant::policy::Class;

/// Deployment settings, set in code (never read from the database): start from
/// `CmkSettings::default()` and change what the deployment needs with the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CmkSettings {
    /// Oldest stored format version accepted (default: 1).
    pub min_format_version: u8,
    /// Most KEK versions per class a key handle unwraps, newest first (default: 16). Rows
    /// sealed under older versions fail with `KeyUnavailable` until rekeyed.
    pub max_warm_versions: usize,
    /// How long a KMS refusal is remembered before the KMS is asked again (default: 60 s),
    /// so a re-enabled key recovers without a restart.
    pub denial_ttl: Duration,
    /// A KEK version older than this rolls over to a new version (default: 90 days).
    pub kek_max_age: Duration,
    /// A KEK version that wrapped this many DEKs in this process rolls over (default: 2^30;
    /// AES-GCM with random nonces must stay below 2^32 per key, so up to four instances
    /// writing with one version stay within the bound; lower it for more instances).
    pub kek_max_wraps: u64,
    /// The monotonic clock leases run on (tests pass a `ManualClock`).
    pub clock: Arc<dyn Clock>,
}

impl CmkSettings {
    /// Sets [`CmkSettings::min_format_version`].
    pub fn with_min_format_version(mut self, version: u8) -> Self {
        self.min_format_version = version;
        self
    }

    /// Sets [`CmkSettings::max_warm_versions`].
    pub fn with_max_warm_versions(mut self, versions: usize) -> Self {
        self.max_warm_versions = versions;
        self
    }

    /// Sets [`CmkSettings::denial_ttl`].
    pub fn with_denial_ttl(mut self, ttl: Duration) -> Self {
        self.denial_ttl = ttl;
        self
    }

    /// Sets [`CmkSettings::kek_max_age`].
    pub fn with_kek_max_age(mut self, age: Duration) -> Self {
        self.kek_max_age = age;
        self
    }

    /// Sets [`CmkSettings::kek_max_wraps`].
    pub fn with_kek_max_wraps(mut self, wraps: u64) -> Self {
        self.kek_max_wraps = wraps;
        self
    }

    /// Sets [`CmkSettings::clock`].
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }
}

impl Default for CmkSettings {
    fn default() -> Self {
        CmkSettings {
            min_format_version: MIN_FORMAT_VERSION,
            max_warm_versions: 16,
            denial_ttl: Duration::from_secs(60),
            kek_max_age: Duration::from_secs(90 * 24 * 3600),
            kek_max_wraps: 1 << 30,
            clock: Arc::new(MonotonicClock::default()),
        }
    }
}

/// The cmk service.
#[derive(Debug, Clone)]
pub struct Cmk {
    pub(crate) kms: Arc<dyn Kms>,
    pub(crate) registry: Arc<dyn KeyRegistry>,
    pub(crate) configs: Arc<dyn TenantConfigStore>,
    pub(crate) sink: Arc<dyn EventSink>,
    pub(crate) settings: CmkSettings,
    pub(crate) leases: Arc<LeaseCache>,
    pub(crate) views: Arc<Mutex<HashMap<TenantId, Arc<TenantView>>>>,
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
    /// The clock leases run on (default: the monotonic clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.settings.clock = clock;
        self
    }
    /// Builds, naming what is missing.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] when the KMS, the key registry or the tenant configuration
    /// store was not given.
    pub fn build(self) -> Result<Cmk> {
        let missing = |what: &str| Error::InvalidConfig(format!("Cmk::builder() needs {what}"));
        let leases = Arc::new(LeaseCache::new(
            Arc::clone(&self.settings.clock),
            self.settings.denial_ttl,
        ));
        Ok(Cmk {
            leases,
            views: Arc::new(Mutex::new(HashMap::new())),
            kms: Arc::new(crate::kms::metered::Metered::new(
                self.kms.ok_or_else(|| missing("a KMS (.kms(...))"))?,
            )),
            registry: self
                .registry
                .ok_or_else(|| missing("a key registry (.registry(...))"))?,
            configs: self
                .configs
                .ok_or_else(|| missing("a tenant configuration store (.configs(...))"))?,
            sink: self.sink.unwrap_or_else(|| {
                warn_if_events_go_nowhere();
                Arc::new(TracingSink)
            }),
            settings: self.settings,
        })
    }
}

/// Says once per process, on standard error, that the default event sink (`tracing`) has no
/// subscriber to reach: an application that logs another way would otherwise never see a
/// security event and never learn why.
fn warn_if_events_go_nowhere() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if tracing::dispatcher::has_been_set() {
        return;
    }
    ONCE.call_once(|| {
        eprintln!(
            "cmk: security events go to `tracing` (target `cmk::security`), but no tracing \
             subscriber is installed, so they reach nobody: install one before building Cmk, \
             or give Cmk::builder().sink(...) (docs/EVENTS.md)"
        );
    });
}

/// What onboarding did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OnboardReport {
    /// Master keys proven with a wrap/unwrap round trip.
    pub proven_keys: Vec<KeyRef>,
    /// Registry entries this call wrote (0 when the tenant was complete already).
    pub entries_written: usize,
}

/// What [`Cmk::ensure_tenant`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnsureReport {
    /// The configuration was saved (it was missing or differed).
    pub configured: bool,
    /// Onboarding ran (a key was missing, or the configuration changed), and what it did.
    pub onboarded: Option<OnboardReport>,
}

/// The registry entries `config` needs that `entries` lacks: version 1 of each class's KEK and
/// of the two roots. Only a live entry under the configured master key counts: a forged entry
/// must not stop onboarding from provisioning the real one.
fn missing_entries(
    config: &TenantConfig,
    entries: &[RegistryEntry],
) -> Vec<(Purpose, String, u32, KeyRef)> {
    let has = |purpose: Purpose, policy: &str| {
        let trusted = match purpose {
            Purpose::Kek => Class::new(policy)
                .ok()
                .and_then(|c| config.policies.get(&c))
                .map(|p| &p.kms_key),
            _ => Some(&config.root_key),
        };
        entries.iter().any(|e| {
            e.purpose == purpose
                && e.policy == policy
                && e.state != KeyState::Destroyed
                && !e.wrapped.is_empty()
                && Some(&e.cmk_ref) == trusted
        })
    };
    let mut wanted = Vec::new();
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
    wanted
}

pub(crate) fn now_secs() -> u64 {
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

    pub(crate) fn kms_error(
        &self,
        ctx: &RequestContext,
        key: &KeyRef,
        e: crate::kms::KmsError,
    ) -> Error {
        Error::Kms {
            tenant: ctx.tenant().to_string(),
            provider: key.provider().to_string(),
            source: e,
        }
    }

    pub(crate) fn emit(&self, ctx: &RequestContext, name: EventName, result: &Result<impl Sized>) {
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
    ///
    /// # Errors
    /// [`crate::Error::TenantMismatch`] when `config` is another tenant's than `ctx`;
    /// [`crate::Error::InvalidConfig`] when the configuration fails validation or the event sink
    /// refuses its audit sink; [`crate::Error::ConfigRollback`] when its revision is not above
    /// every revision seen; [`crate::Error::Database`] when the store's database fails.
    pub async fn configure_tenant(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<()> {
        let result = async {
            self.check_config(ctx, config)?;
            self.configs.save(config).await?;
            // This instance sees its own change at once; others within one renewal interval.
            crate::service::leasing::forget_view(self, ctx.tenant());
            Ok(())
        }
        .await;
        self.emit(ctx, EventName::AdminTenantConfigChanged, &result);
        result
    }

    /// Loads and verifies the context's tenant's configuration, as a request does: a record
    /// that fails its MAC or rolls back a revision (in the database or the configuration file)
    /// also emits `ADMIN_INTEGRITY_FAILURE` to the tenant's sink and the operator's.
    ///
    /// # Errors
    /// [`crate::Error::UnknownTenant`] when none is stored; [`crate::Error::ConfigIntegrity`],
    /// [`crate::Error::ConfigRollback`] or [`crate::Error::ConfigFile`] when the stored record
    /// fails its checks; [`crate::Error::Database`] or [`crate::Error::Io`] when the store fails.
    pub async fn tenant_config(&self, ctx: &RequestContext) -> Result<TenantConfig> {
        let result = self.configs.load(ctx.tenant()).await;
        if let Err(e) = &result {
            crate::service::leasing::alert_integrity(self, ctx, e);
        }
        result
    }

    /// Onboards the context's tenant: proves every master key of its configuration with a
    /// wrap/unwrap round trip, then provisions (insert-if-absent) version 1 of each class's
    /// KEK and of the index and deterministic roots that do not exist yet. Running it again
    /// after adding a class provisions just that class. Nothing else ever provisions keys.
    ///
    /// # Errors
    /// [`crate::Error::UnknownTenant`] when the tenant has no stored configuration;
    /// [`crate::Error::TenantShredded`] for a shredded tenant; [`crate::Error::Kms`] when the KMS
    /// refuses or fails a master key's round trip (a KMS that ignores the associated data fails
    /// it too) or a new key's wrap; [`crate::Error::Random`] when the random number generator
    /// fails; [`crate::Error::ConfigIntegrity`] or [`crate::Error::ConfigRollback`] when the
    /// stored configuration fails its checks; [`crate::Error::Registry`] or
    /// [`crate::Error::Database`] when the key registry or the configuration store fails.
    pub async fn onboard(&self, ctx: &RequestContext) -> Result<OnboardReport> {
        let result = self.onboard_inner(ctx).await;
        self.emit(ctx, EventName::AdminTenantOnboarded, &result);
        result
    }

    async fn onboard_inner(&self, ctx: &RequestContext) -> Result<OnboardReport> {
        let config = self.configs.load(ctx.tenant()).await?;
        self.provision_config(ctx, &config).await
    }

    /// Saves `config` as the context's tenant's configuration and onboards it, with the
    /// configuration last: its master keys are proven and its missing keys provisioned first,
    /// so the tenant is never configured without the keys its configuration names. The
    /// configuration and the key registry may live in different stores (a file and a
    /// database), so no one transaction can hold both; the configuration's save is the commit
    /// point instead. A failure before it leaves only registry entries that nothing names yet,
    /// which the next attempt reuses (they are inserted if absent). Emits
    /// `ADMIN_TENANT_ONBOARDED` and `ADMIN_TENANT_CONFIG_CHANGED`.
    ///
    /// # Errors
    /// Every error of [`Cmk::configure_tenant`] and [`Cmk::onboard`]; nothing is saved when
    /// a master key fails its round trip.
    pub async fn configure_and_onboard(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<OnboardReport> {
        let report = self.onboard_config(ctx, config).await?;
        self.configure_tenant(ctx, config).await?;
        Ok(report)
    }

    /// What [`Cmk::configure_tenant`] checks before saving.
    fn check_config(&self, ctx: &RequestContext, config: &TenantConfig) -> Result<()> {
        if ctx.tenant() != &config.tenant {
            return Err(Error::TenantMismatch {
                expected: ctx.tenant().to_string(),
                found: config.tenant.to_string(),
            });
        }
        config.validate()?;
        // The event sink checks the tenant's sink (an endpoint on the allow-list).
        self.sink
            .configure_tenant(&config.tenant, config.audit_sink.as_deref())
            .map_err(|e| Error::InvalidConfig(e.to_string()))
    }

    /// Onboards `config` before it is saved: checks it, proves every master key it names and
    /// provisions the keys it needs that the registry lacks; the caller saves it afterwards
    /// (`cmk config sign` does, for a configuration file edited by hand). Emits
    /// `ADMIN_TENANT_ONBOARDED`.
    ///
    /// # Errors
    /// Those of [`Cmk::configure_and_onboard`] before its save.
    pub async fn onboard_config(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<OnboardReport> {
        let result = match self.check_config(ctx, config) {
            Ok(()) => self.provision_config(ctx, config).await,
            Err(e) => Err(e),
        };
        self.emit(ctx, EventName::AdminTenantOnboarded, &result);
        result
    }

    /// Proves every master key `config` names and provisions the keys it needs that the
    /// registry lacks.
    async fn provision_config(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<OnboardReport> {
        let tenant = ctx.tenant();
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
            self.prove_key(ctx, key).await?;
        }
        let wanted = missing_entries(config, &entries);
        let mut written = 0;
        for (purpose, policy, id, cmk_ref) in wanted {
            if self
                .provision(ctx, purpose, &policy, id, 1, &cmk_ref)
                .await?
                == InsertOutcome::Inserted
            {
                written += 1;
            }
        }
        crate::service::leasing::forget_view(self, tenant);
        Ok(OnboardReport {
            proven_keys: keys,
            entries_written: written,
        })
    }

    /// Makes sure the context's tenant is configured with `config` and onboarded, doing only
    /// what is missing, so that an application can call it at every start: the configuration
    /// is saved when none is stored or the stored one differs (as the next revision), and
    /// onboarding runs when the registry lacks a key the configuration needs. When both
    /// already match, it reads the configuration and the registry and calls no KMS.
    ///
    /// # Errors
    /// A stored configuration that fails its integrity check, a shredded tenant, and every
    /// error of [`Cmk::configure_tenant`] and [`Cmk::onboard`].
    pub async fn ensure_tenant(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<EnsureReport> {
        let result = self.ensure_tenant_once(ctx, config).await;
        if let Err(e) = &result {
            crate::service::leasing::alert_integrity(self, ctx, e);
        }
        result
    }

    /// [`Cmk::ensure_tenant`] without its alert.
    async fn ensure_tenant_once(
        &self,
        ctx: &RequestContext,
        config: &TenantConfig,
    ) -> Result<EnsureReport> {
        let tenant = ctx.tenant();
        let stored = match self.configs.load(tenant).await {
            Ok(stored) => Some(stored),
            Err(Error::UnknownTenant { .. }) => None,
            // A record that fails its MAC or rolls back is never written over silently.
            Err(e) => return Err(e),
        };
        let same = |stored: &TenantConfig| {
            &TenantConfig {
                revision: stored.revision,
                ..config.clone()
            } == stored
        };
        let entries = self.registry.entries(tenant).await?;
        if entries.iter().any(|e| e.purpose == Purpose::Tombstone) {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
            });
        }
        let (configured, onboarded) = match stored {
            Some(stored) if same(&stored) => {
                let onboarded = if missing_entries(config, &entries).is_empty() {
                    None
                } else {
                    Some(self.onboard(ctx).await?)
                };
                (false, onboarded)
            }
            stored => {
                let next = TenantConfig {
                    revision: stored
                        .map_or(config.revision, |s| s.revision.max(config.revision) + 1),
                    ..config.clone()
                };
                // Keys first, the configuration last (the commit point).
                match self.configure_and_onboard(ctx, &next).await {
                    Ok(report) => (true, Some(report)),
                    // Another instance starting at the same time saved that revision first:
                    // fine if it saved the same configuration.
                    Err(Error::ConfigRollback { .. })
                        if self.configs.load(tenant).await.is_ok_and(|s| same(&s)) =>
                    {
                        (false, None)
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(EnsureReport {
            configured,
            onboarded,
        })
    }

    /// Writes a fresh random key version to the registry, wrapped under `cmk_ref`
    /// (insert-if-absent: when another instance won, its entry stands).
    pub(crate) async fn provision(
        &self,
        ctx: &RequestContext,
        purpose: Purpose,
        policy: &str,
        id: u32,
        version: u32,
        cmk_ref: &KeyRef,
    ) -> Result<InsertOutcome> {
        let tenant = ctx.tenant();
        let material = SecretKey::random()?;
        let context = entry_context(purpose, tenant, policy, id, version, cmk_ref);
        let wrapped = self
            .kms
            .wrap(cmk_ref, material.expose_secret(), &context)
            .await
            .map_err(|e| self.kms_error(ctx, cmk_ref, e))?;
        let entry = RegistryEntry {
            tenant: tenant.clone(),
            purpose,
            policy: policy.to_string(),
            kek_id: id,
            version,
            cmk_ref: cmk_ref.clone(),
            state: KeyState::Active,
            wrapped,
            created_at: now_secs(),
        };
        self.registry.insert_if_absent(entry).await
    }

    /// Proves a master key with a wrap/unwrap round trip of random bytes, and that an
    /// unwrap with other associated data is refused.
    pub(crate) async fn prove_key(&self, ctx: &RequestContext, key: &KeyRef) -> Result<()> {
        let probe = SecretKey::random()?;
        let context = crate::kms::KmsContext::new(
            crate::format::aad::Aad::new("cmk/probe").text(ctx.tenant().as_str()),
        )
        .with("cmk:purpose", "probe")
        .with("cmk:tenant", ctx.tenant().as_str());
        let wrapped = self
            .kms
            .wrap(key, probe.expose_secret(), &context)
            .await
            .map_err(|e| self.kms_error(ctx, key, e))?;
        let back = self
            .kms
            .unwrap(key, &wrapped, &context)
            .await
            .map_err(|e| self.kms_error(ctx, key, e))?;
        if back.expose_secret() != probe.expose_secret() {
            let e = crate::kms::KmsError::new(
                crate::kms::KmsErrorKind::Invalid,
                "round trip returned other bytes",
            );
            return Err(self.kms_error(ctx, key, e));
        }
        // The binding must hold too: a KMS (or a misconfigured server) that ignores the
        // associated data would let registry entries move between tenants and purposes.
        let other = crate::kms::KmsContext::new(
            crate::format::aad::Aad::new("cmk/probe-other").text(ctx.tenant().as_str()),
        )
        .with("cmk:purpose", "probe-other")
        .with("cmk:tenant", ctx.tenant().as_str());
        match self.kms.unwrap(key, &wrapped, &other).await {
            Err(e) if !e.kind.is_transient() => Ok(()),
            Err(e) => Err(self.kms_error(ctx, key, e)),
            Ok(_) => {
                let e = crate::kms::KmsError::new(
                    crate::kms::KmsErrorKind::Invalid,
                    "the KMS unwrapped with other associated data: it does not bind the context",
                );
                Err(self.kms_error(ctx, key, e))
            }
        }
    }

    // Key handles through leases, and their renewal (the bodies are in service::leasing).

    /// Fetches the keys of the context's tenant for `classes` as a handle. With warm leases
    /// this makes no KMS call and no registry read; otherwise one KMS unwrap per distinct key
    /// version (concurrent callers share it), never one per row. Fails for an unknown or
    /// shredded tenant, a class without policy or KEK, and a KMS that refuses.
    ///
    /// # Errors
    /// [`crate::Error::UnknownTenant`] for a tenant never onboarded (or purged);
    /// [`crate::Error::TenantShredded`] for a shredded one; [`crate::Error::InvalidName`] for a
    /// malformed class name; [`crate::Error::UnknownClass`] for a class without policy;
    /// [`crate::Error::ClassNotProvisioned`] for a leased class with no usable KEK version;
    /// [`crate::Error::InvalidConfig`] when no active version of a class's KEK is wrapped under
    /// its configured master key; [`crate::Error::Kms`] when the KMS refuses an unwrap (a refusal
    /// is remembered for `denial_ttl`), or cannot be reached and no lease is still serving, or a
    /// due roll-over's wrap fails ([`crate::Error::Random`] when its random number generator
    /// does); [`crate::Error::Tampered`] when the KMS returns key material of the wrong length;
    /// [`crate::Error::ConfigIntegrity`] or [`crate::Error::ConfigRollback`] when the stored
    /// configuration fails its checks; [`crate::Error::Registry`] or
    /// [`crate::Error::Database`] when the key registry or the configuration store fails.
    pub async fn keys_for<C: AsRef<str>>(
        &self,
        ctx: &RequestContext,
        classes: &[C],
    ) -> Result<Arc<TenantKeys>> {
        crate::service::leasing::keys_for(self, ctx, classes).await
    }

    /// One renewal pass over this process's leases: re-reads each tenant's registry (shred
    /// tombstones, destroyed versions, re-wraps), renews leases whose renewal time has passed
    /// with a real unwrap, and wipes leases past hard expiry. The background renewer
    /// ([`Cmk::spawn_renewer`]) calls this; so do tests, with a controllable clock.
    pub async fn renew_due(&self) -> RenewReport {
        crate::service::leasing::renew_due(self).await
    }

    /// Starts the background renewer on the current tokio runtime: every `period` it runs
    /// [`Cmk::renew_due`]. Choose a period well below the shortest renewal interval (for
    /// example a tenth of it). Dropping the returned handle does not stop it; abort it.
    pub fn spawn_renewer(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        crate::service::leasing::spawn_renewer(self, period)
    }

    // Classic mode: one KMS call per row (service::classic).

    /// Seals one row whose schema has classic-mode classes: each classic class's DEK is
    /// wrapped by the KMS (one call per class), the rest as [`crate::TenantKeys::seal`] does.
    ///
    /// # Errors
    /// As [`Cmk::keys_for`] (for every class of the schema) and [`crate::TenantKeys::seal`];
    /// [`crate::Error::Kms`] when the KMS refuses or fails a classic class's wrap.
    pub async fn seal_classic(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row_id: Option<&RowId>,
        values: &[Option<&[u8]>],
    ) -> Result<SealedRow> {
        crate::service::classic::seal_classic(self, ctx, schema, row_id, values).await
    }

    /// Unseals one row whose schema has classic-mode classes: the KMS unwraps each classic
    /// key column's DEK (after the reader check, so a refused reader causes no KMS call).
    ///
    /// # Errors
    /// As [`Cmk::keys_for`] (for every class of the schema) and [`crate::TenantKeys::unseal`];
    /// [`crate::Error::Kms`] when the KMS refuses or fails a classic DEK's unwrap, which is also
    /// how a tampered classic key column shows (the KMS checks its associated data).
    pub async fn unseal_classic(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row: &StoredRow<'_>,
    ) -> Result<UnsealedRow> {
        crate::service::classic::unseal_classic(self, ctx, schema, row).await
    }

    // Key administration: master-key rotation, KEK roll-over, retirement and destruction,
    // crypto-shredding (service::admin).

    /// Re-wraps every live registry entry of the context's tenant under `new_key`, then
    /// switches the tenant configuration to it. O(registry entries), not O(rows): rows are
    /// untouched. Resumable: entries already re-wrapped are skipped. `new_key` is another key
    /// reference (another key, or another KMS); a KMS's own rotation of a key's backing
    /// version (AWS automatic rotation, `LocalKms::rotate`) needs no re-wrap, since the KMS
    /// still decrypts under earlier versions.
    ///
    /// # Errors
    /// [`crate::Error::UnknownTenant`] when the tenant has no stored configuration;
    /// [`crate::Error::TenantShredded`] for a shredded tenant; [`crate::Error::Kms`] when
    /// `new_key` fails its round trip, or the KMS refuses an unwrap under an old key or a wrap
    /// under the new one; [`crate::Error::Random`] when the random number generator fails;
    /// [`crate::Error::ConfigIntegrity`] when the stored configuration fails its check;
    /// [`crate::Error::ConfigRollback`] when it rolled back, or another revision was saved
    /// meanwhile (run the rotation again: it resumes); [`crate::Error::Registry`] or
    /// [`crate::Error::Database`] when the key registry or the configuration store fails.
    pub async fn rotate_master_key(
        &self,
        ctx: &RequestContext,
        new_key: &KeyRef,
    ) -> Result<RotateReport> {
        crate::service::admin::rotate_master_key(self, ctx, new_key).await
    }

    /// Rolls `class` over to a new KEK version now (keys_for also does this by age and wrap
    /// count). Returns the new version; when another instance rolled over at the same time,
    /// its version stands (insert-if-absent) and is returned.
    ///
    /// # Errors
    /// [`crate::Error::InvalidName`] for a malformed class name; [`crate::Error::UnknownClass`]
    /// for a class without policy; [`crate::Error::Kms`] when the KMS refuses or fails the wrap
    /// under the class's master key; [`crate::Error::Random`] when the random number generator
    /// fails; [`crate::Error::Registry`] when the class has no KEK version number left.
    /// Reading the tenant's state fails with [`crate::Error::UnknownTenant`] when it has no
    /// stored configuration, [`crate::Error::ConfigIntegrity`] or
    /// [`crate::Error::ConfigRollback`] when that fails its checks, and
    /// [`crate::Error::Registry`] or [`crate::Error::Database`] when the key registry or the
    /// configuration store fails.
    pub async fn roll_over_kek(&self, ctx: &RequestContext, class: &str) -> Result<u32> {
        crate::service::admin::roll_over_kek(self, ctx, class).await
    }

    /// Moves KEK `version` of `class` from active to decrypt-only. Refused unless a newer
    /// active version has existed for at least one renewal interval, so no instance still
    /// writes with the old one.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when `class` has no KEK `version`, the version is not
    /// active, or no newer active version has existed for one renewal interval;
    /// [`crate::Error::InvalidName`] for a malformed class name; [`crate::Error::UnknownClass`]
    /// for a class without policy.
    /// Reading the tenant's state fails with [`crate::Error::UnknownTenant`] when it has no
    /// stored configuration, [`crate::Error::ConfigIntegrity`] or
    /// [`crate::Error::ConfigRollback`] when that fails its checks, and
    /// [`crate::Error::Registry`] or [`crate::Error::Database`] when the key registry or the
    /// configuration store fails.
    pub async fn retire_kek(&self, ctx: &RequestContext, class: &str, version: u32) -> Result<()> {
        crate::service::admin::retire_kek(self, ctx, class, version).await
    }

    /// Destroys a decrypt-only KEK version: rows still under it become unreadable, so re-wrap
    /// their key columns first ([`TenantKeys::rekey_key_column`]; the adapters' retirement jobs
    /// find them by the key column's prefix).
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when `class` has no KEK `version`, or the version is not
    /// decrypt-only (retire it first); [`crate::Error::InvalidName`] for a malformed class name;
    /// [`crate::Error::UnknownClass`] for a class without policy.
    /// Reading the tenant's state fails with [`crate::Error::UnknownTenant`] when it has no
    /// stored configuration, [`crate::Error::ConfigIntegrity`] or
    /// [`crate::Error::ConfigRollback`] when that fails its checks, and
    /// [`crate::Error::Registry`] or [`crate::Error::Database`] when the key registry or the
    /// configuration store fails.
    pub async fn destroy_kek(&self, ctx: &RequestContext, class: &str, version: u32) -> Result<()> {
        crate::service::admin::destroy_kek(self, ctx, class, version).await
    }

    /// Crypto-shreds the context's tenant: every key version is marked destroyed, a tombstone
    /// is written (every renewal checks it, so other instances stop within one renewal
    /// interval), this process's leases are wiped, and the tenant's master keys (the ones its
    /// configuration names and every earlier one that wrapped a registry entry, so a backup from
    /// before a master-key rotation is covered too) are destroyed where the KMS allows it. Where it does not, the report names the keys the tenant must
    /// disable or delete: a backup taken before the shred stays decryptable until then.
    ///
    /// # Errors
    /// Reading the tenant's state fails with [`crate::Error::UnknownTenant`] when it has no
    /// stored configuration, [`crate::Error::ConfigIntegrity`] or
    /// [`crate::Error::ConfigRollback`] when that fails its checks, and
    /// [`crate::Error::Registry`] or [`crate::Error::Database`] when the key registry or the
    /// configuration store fails.
    /// A KMS that does not destroy a master key is no error: the report names the key in
    /// `operator_must_destroy`.
    pub async fn shred_tenant(&self, ctx: &RequestContext) -> Result<ShredReport> {
        crate::service::admin::shred_tenant(self, ctx).await
    }
}
