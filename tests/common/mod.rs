//! Shared set-up of the facade's tests: a `Cmk` on the local KMS and in-memory stores, with
//! tenant `acme` onboarded.
#![allow(dead_code)]

pub(crate) mod db;
pub(crate) mod dump;
pub(crate) mod receivers;
pub(crate) mod web;

use std::sync::Arc;

use cmk::event::MemorySink;
use cmk::kms::KeyRef;
use cmk::kms::local::LocalKms;
use cmk::registry::MemoryRegistry;
use cmk::secret::SecretKey;
use cmk::tenant::{MemoryConfigStore, OperatorKey};
use cmk::{Cmk, RequestContext, SearchMode, TenantConfig, TenantId};

/// `acme` onboarded with every class allowing `search`; `adjust` may change the configuration
/// (it gets the tenant's master key) before it is saved. The context carries `roles`.
pub(crate) async fn onboarded(
    search: SearchMode,
    roles: &[&str],
    adjust: impl FnOnce(&mut TenantConfig, &KeyRef),
) -> (Cmk, RequestContext) {
    onboarded_with_sink(None, search, roles, adjust).await
}

/// As [`onboarded`], with security events going to `sink` when given.
pub(crate) async fn onboarded_with_sink(
    sink: Option<Arc<MemorySink>>,
    search: SearchMode,
    roles: &[&str],
    adjust: impl FnOnce(&mut TenantConfig, &KeyRef),
) -> (Cmk, RequestContext) {
    let kms = Arc::new(LocalKms::in_memory());
    let mut builder = Cmk::builder();
    if let Some(sink) = sink {
        builder = builder.sink(sink);
    }
    let cmk = builder
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::random().unwrap(),
        ))))
        .build()
        .unwrap();
    let mut ctx = RequestContext::new(TenantId::new("acme").unwrap());
    for role in roles {
        ctx = ctx.with_role(*role);
    }
    let key = kms.create_key("acme").unwrap();
    let mut cfg = TenantConfig::new(ctx.tenant().clone(), key.clone());
    for p in cfg.policies.values_mut() {
        p.search = search;
    }
    adjust(&mut cfg, &key);
    cmk.configure_tenant(&ctx, &cfg).await.unwrap();
    cmk.onboard(&ctx).await.unwrap();
    (cmk, ctx)
}
