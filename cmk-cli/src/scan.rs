//! What the table jobs share: each tenant's keys, fetched once per chunk, and the stop flag
//! Ctrl-C raises between rows.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cmk_core::{Actor, TenantKeys};

use crate::cmd::tenant::{admin_context, tenant_id};
use crate::home::Deployment;

/// Raised by Ctrl-C (or SIGTERM): jobs stop after the row in hand, never inside one.
#[derive(Clone, Default)]
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag that SIGINT and SIGTERM raise.
    pub(crate) fn on_signals() -> Stop {
        let stop = Stop::default();
        let flag = stop.0.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            flag.store(true, Ordering::SeqCst);
        });
        stop
    }

    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Each tenant's keys for one chunk of rows, with every reader role of its configuration
/// (the tool reads every class), or the kind of error that refused them.
pub(crate) struct TenantKeysCache<'a> {
    d: &'a Deployment,
    classes: Vec<String>,
    purpose: &'static str,
    keys: HashMap<String, Result<Arc<TenantKeys>, &'static str>>,
}

impl<'a> TenantKeysCache<'a> {
    pub(crate) fn new(d: &'a Deployment, classes: Vec<String>, purpose: &'static str) -> Self {
        TenantKeysCache {
            d,
            classes,
            purpose,
            keys: HashMap::new(),
        }
    }

    /// Forgets the handles, so a long job takes renewed leases (and sees a revocation).
    pub(crate) fn next_chunk(&mut self) {
        self.keys.clear();
    }

    pub(crate) async fn get(&mut self, tenant: &str) -> Result<Arc<TenantKeys>, &'static str> {
        if let Some(keys) = self.keys.get(tenant) {
            return keys.clone();
        }
        let keys = self.fetch(tenant).await;
        self.keys.insert(tenant.to_string(), keys.clone());
        keys
    }

    async fn fetch(&self, tenant: &str) -> Result<Arc<TenantKeys>, &'static str> {
        let id = tenant_id(tenant).map_err(|_| "invalid_tenant")?;
        let ctx = admin_context(&id).with_purpose(self.purpose);
        let keys = self
            .d
            .cmk
            .keys_for(&ctx, &self.classes)
            .await
            .map_err(|e| e.kind())?;
        let roles: Vec<String> = keys
            .config()
            .policies
            .values()
            .flat_map(|p| p.readers.iter().cloned())
            .collect();
        Ok(keys.as_actor(Actor::Service("cmk-cli".into()), roles))
    }
}
