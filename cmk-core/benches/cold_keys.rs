//! A cold `keys_for` (three classes and the two search roots: five unwraps) against a KMS
//! that adds 20 ms to every call, as a real KMS does, compared with one round trip.
//!
//! `cargo bench -p cmk-core --bench cold_keys`
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cmk_core::kms::local::LocalKms;
use cmk_core::kms::{KeyRef, Kms, KmsContext, KmsError};
use cmk_core::registry::MemoryRegistry;
use cmk_core::secret::{SecretBytes, SecretKey};
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Cmk, RequestContext, SearchMode, TenantConfig, TenantId};

const LATENCY: Duration = Duration::from_millis(20);
const ROUNDS: usize = 15;

/// The local KMS behind a network round trip of [`LATENCY`].
#[derive(Debug)]
struct Distant(LocalKms);

#[async_trait::async_trait]
impl Kms for Distant {
    fn provider(&self) -> &str {
        "local"
    }
    async fn wrap(&self, k: &KeyRef, p: &[u8], c: &KmsContext) -> Result<Vec<u8>, KmsError> {
        tokio::time::sleep(LATENCY).await;
        self.0.wrap(k, p, c).await
    }
    async fn unwrap(&self, k: &KeyRef, w: &[u8], c: &KmsContext) -> Result<SecretBytes, KmsError> {
        tokio::time::sleep(LATENCY).await;
        self.0.unwrap(k, w, c).await
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run() {
    let kms = Arc::new(Distant(LocalKms::in_memory()));
    let registry = Arc::new(MemoryRegistry::new());
    let configs = Arc::new(MemoryConfigStore::new(OperatorKey::new(
        SecretKey::from_bytes([5; 32]),
    )));
    let instance = || {
        Cmk::builder()
            .kms(kms.clone())
            .registry(registry.clone())
            .configs(configs.clone())
            .sink(Arc::new(cmk_core::event::MemorySink::new()))
            .build()
            .unwrap()
    };
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let key = kms.0.create_key("acme").unwrap();
    let mut config = TenantConfig::new(ctx.tenant().clone(), key.clone());
    for policy in config.policies.values_mut() {
        policy.search = SearchMode::Deterministic;
    }
    let classes = ["private", "restricted", "secret"];
    let setup = instance();
    setup.configure_tenant(&ctx, &config).await.unwrap();
    setup.onboard(&ctx).await.unwrap();

    let mut round_trips = Vec::new();
    let mut cold = Vec::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        kms.wrap(&key, b"probe", &KmsContext::from_bytes(b""))
            .await
            .unwrap();
        round_trips.push(t.elapsed());
        // A fresh instance: no lease, no cached view (the registry and configuration
        // stores are in memory, so their reads cost nothing here).
        let fresh = instance();
        let t = Instant::now();
        fresh.keys_for(&ctx, &classes).await.unwrap();
        cold.push(t.elapsed());
    }
    let (rt, c) = (median(round_trips), median(cold));
    println!(
        "cold keys_for, 3 classes + 2 roots (5 unwraps), KMS latency {LATENCY:?}: median of {ROUNDS}: {c:.1?}; one round trip {rt:.1?}; ratio {:.2}",
        c.as_secs_f64() / rt.as_secs_f64()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` only builds it
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}
