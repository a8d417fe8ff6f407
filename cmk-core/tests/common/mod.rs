//! Shared fixture: a local KMS (counted), in-memory registry, configuration store and event
//! sink, two onboarded tenants and a patients schema with three classes.
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use cmk_core::crypto::normalize::Normalizer;
use cmk_core::event::MemorySink;
use cmk_core::kms::local::LocalKms;
use cmk_core::kms::{KeyRef, Kms, KmsContext, KmsError};
use cmk_core::registry::MemoryRegistry;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::seal::{SealedRow, StoredRow};
use cmk_core::secret::{SecretBytes, SecretKey};
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Class, Cmk, Policy, RequestContext, SearchMode, TenantConfig, TenantId};

/// Counts calls into an inner KMS and can simulate outages and hold calls.
#[derive(Debug)]
pub(crate) struct CountingKms {
    pub inner: Arc<LocalKms>,
    pub wraps: AtomicUsize,
    pub unwraps: AtomicUsize,
    /// 0: pass through; 1: unavailable; 2: throttled.
    pub fault: std::sync::atomic::AtomicU8,
    /// When armed, every unwrap waits for a permit.
    pub gate: tokio::sync::Semaphore,
    pub gated: std::sync::atomic::AtomicBool,
}

impl CountingKms {
    pub(crate) fn calls(&self) -> usize {
        self.wraps.load(Ordering::SeqCst) + self.unwraps.load(Ordering::SeqCst)
    }
    pub(crate) fn reset(&self) {
        self.wraps.store(0, Ordering::SeqCst);
        self.unwraps.store(0, Ordering::SeqCst);
    }
    pub(crate) fn set_fault(&self, fault: u8) {
        self.fault.store(fault, Ordering::SeqCst);
    }
    fn fault(&self) -> Result<(), KmsError> {
        match self.fault.load(Ordering::SeqCst) {
            1 => Err(KmsError::new(
                cmk_core::kms::KmsErrorKind::Unavailable,
                "connection refused (simulated)",
            )),
            2 => Err(KmsError::new(
                cmk_core::kms::KmsErrorKind::Throttled,
                "rate exceeded (simulated)",
            )),
            _ => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Kms for CountingKms {
    fn provider(&self) -> &str {
        "local"
    }
    async fn wrap(&self, key: &KeyRef, p: &[u8], aad: &KmsContext) -> Result<Vec<u8>, KmsError> {
        self.wraps.fetch_add(1, Ordering::SeqCst);
        self.fault()?;
        self.inner.wrap(key, p, aad).await
    }
    async fn unwrap(
        &self,
        key: &KeyRef,
        w: &[u8],
        aad: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        if self.gated.load(Ordering::SeqCst) {
            let _permit = self.gate.acquire().await;
        }
        self.fault()?;
        self.inner.unwrap(key, w, aad).await
    }
    async fn destroy_key(&self, key: &KeyRef) -> Result<bool, KmsError> {
        self.inner.destroy_key(key).await
    }
}

pub(crate) struct Fixture {
    pub clock: Arc<cmk_core::clock::ManualClock>,
    pub local: Arc<LocalKms>,
    pub kms: Arc<CountingKms>,
    pub registry: Arc<MemoryRegistry>,
    pub configs: Arc<MemoryConfigStore>,
    pub sink: Arc<MemorySink>,
    pub cmk: Cmk,
}

pub(crate) fn ctx(tenant: &str) -> RequestContext {
    RequestContext::new(TenantId::new(tenant).unwrap())
}

/// A configuration whose classes all allow search; `restricted` is readable by `doctor` only.
pub(crate) fn config_for(tenant: &str, key: KeyRef) -> TenantConfig {
    let mut cfg = TenantConfig::new(TenantId::new(tenant).unwrap(), key.clone());
    for policy in cfg.policies.values_mut() {
        policy.search = SearchMode::Deterministic;
    }
    cfg.policies.insert(
        Class::new("restricted").unwrap(),
        Policy::new(key).with_readers(["doctor"]),
    );
    cfg
}

impl Fixture {
    pub(crate) async fn new(tenants: &[&str]) -> Fixture {
        let local = Arc::new(LocalKms::in_memory());
        let kms = Arc::new(CountingKms {
            inner: local.clone(),
            wraps: 0.into(),
            unwraps: 0.into(),
            fault: 0.into(),
            gate: tokio::sync::Semaphore::new(0),
            gated: false.into(),
        });
        let clock = Arc::new(cmk_core::clock::ManualClock::new());
        let registry = Arc::new(MemoryRegistry::new());
        let configs = Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([42; 32]),
        )));
        let sink = Arc::new(MemorySink::new());
        let cmk = Cmk::builder()
            .clock(clock.clone())
            .kms(kms.clone())
            .registry(registry.clone())
            .configs(configs.clone())
            .sink(sink.clone())
            .build()
            .unwrap();
        for t in tenants {
            let key = local.create_key(t).unwrap();
            let c = ctx(t);
            cmk.configure_tenant(&c, &config_for(t, key)).await.unwrap();
            cmk.onboard(&c).await.unwrap();
        }
        kms.reset();
        sink.take();
        Fixture {
            clock,
            local,
            kms,
            registry,
            configs,
            sink,
            cmk,
        }
    }
}

pub(crate) fn class(s: &str) -> Class {
    Class::new(s).unwrap()
}

/// patients: email (private, blind index), name (private), ssn (restricted),
/// code (secret, deterministic).
pub(crate) fn patients() -> RowSchema {
    RowSchema::new(
        "patients",
        vec![
            FieldSpec::new("email", class("private")).blind_index(Normalizer::Casefold),
            FieldSpec::new("name", class("private")),
            FieldSpec::new("ssn", class("restricted")),
            FieldSpec::new("code", class("secret")).deterministic(),
        ],
    )
    .unwrap()
}

pub(crate) const ALL: [&str; 3] = ["private", "restricted", "secret"];

pub(crate) fn doctor(tenant: &str) -> RequestContext {
    ctx(tenant).with_role("doctor")
}

/// Owned copy of a sealed row that tests can tamper with, viewed as a `StoredRow`.
#[derive(Clone, Debug)]
pub(crate) struct Stored {
    pub tenant: String,
    pub key_columns: Vec<Option<Vec<u8>>>,
    pub fields: Vec<Option<Vec<u8>>>,
    pub indexes: Vec<Option<Vec<u8>>>,
}

impl Stored {
    pub(crate) fn from_sealed(tenant: &str, s: &SealedRow) -> Stored {
        Stored {
            tenant: tenant.into(),
            key_columns: s.key_columns.clone(),
            fields: s.fields.clone(),
            indexes: s.indexes.clone(),
        }
    }

    pub(crate) fn with<T>(
        &self,
        row_id: Option<&cmk_core::format::aad::RowId>,
        f: impl FnOnce(&StoredRow<'_>) -> T,
    ) -> T {
        let k: Vec<Option<&[u8]>> = self.key_columns.iter().map(|v| v.as_deref()).collect();
        let v: Vec<Option<&[u8]>> = self.fields.iter().map(|v| v.as_deref()).collect();
        let x: Vec<Option<&[u8]>> = self.indexes.iter().map(|v| v.as_deref()).collect();
        f(&StoredRow {
            tenant: &self.tenant,
            row_id,
            key_columns: &k,
            fields: &v,
            indexes: &x,
        })
    }
}
