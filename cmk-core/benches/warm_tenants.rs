//! Scale: 10,000 tenants kept warm in one process. Reports the resident memory each warm
//! tenant adds (its leases, view and plans, measured as the process's resident set before and
//! after warming) and the latency of a warm `keys_for` (no KMS call) with all of them cached,
//! against the same with one tenant warm.
//!
//! `cargo bench -p cmk-core --bench warm_tenants` (`CMK_BENCH_TENANTS=<n>` changes the count)
#![allow(missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cmk_core::kms::local::LocalKms;
use cmk_core::registry::MemoryRegistry;
use cmk_core::secret::SecretKey;
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Cmk, RequestContext, TenantConfig, TenantId};

/// Resident set size of this process, in bytes (Linux `/proc/self/statm`).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median latency of a warm `keys_for` over `samples` tenants taken round-robin.
async fn warm_latency(cmk: &Cmk, contexts: &[RequestContext], samples: usize) -> Duration {
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples {
        let ctx = &contexts[(i * 7919) % contexts.len()];
        let start = Instant::now();
        let keys = cmk.keys_for(ctx, &["private", "restricted"]).await.unwrap();
        times.push(start.elapsed());
        std::hint::black_box(keys);
    }
    median(times)
}

async fn run(tenants: usize) {
    let kms = Arc::new(LocalKms::in_memory());
    let cmk = Cmk::builder()
        .kms(kms.clone() as _)
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([3; 32]),
        ))))
        // Events are dropped: memory measures the key cache, not an event log.
        .sink(Arc::new(Dropping))
        .build()
        .unwrap();
    let mut contexts = Vec::with_capacity(tenants);
    let onboarding = Instant::now();
    for i in 0..tenants {
        let name = format!("tenant-{i:05}");
        let master = kms.create_key(&name).unwrap();
        let ctx = RequestContext::new(TenantId::new(&name).unwrap());
        let config = TenantConfig::new(ctx.tenant().clone(), master);
        cmk.configure_tenant(&ctx, &config).await.unwrap();
        cmk.onboard(&ctx).await.unwrap();
        contexts.push(ctx);
    }
    let onboarded = onboarding.elapsed();

    // One tenant warm: the latency of a warm handle in a small cache.
    cmk.keys_for(&contexts[0], &["private", "restricted"])
        .await
        .unwrap();
    let one_warm = warm_latency(&cmk, &contexts[..1], 2_000).await;

    let before = resident_bytes();
    let warming = Instant::now();
    for ctx in &contexts {
        cmk.keys_for(ctx, &["private", "restricted"]).await.unwrap();
    }
    let warmed = warming.elapsed();
    let after = resident_bytes();
    let all_warm = warm_latency(&cmk, &contexts, 20_000).await;

    println!("warm tenants: {tenants} (each: 2 classes leased, no search roots)");
    println!(
        "onboarding all: {:.1} s; warming all (cold keys_for): {:.2} s",
        onboarded.as_secs_f64(),
        warmed.as_secs_f64()
    );
    println!(
        "resident memory added by warming: {:.1} MiB, {:.1} KiB per warm tenant",
        (after.saturating_sub(before)) as f64 / (1024.0 * 1024.0),
        (after.saturating_sub(before)) as f64 / 1024.0 / tenants as f64
    );
    println!(
        "warm keys_for, median: {:.2} us with 1 tenant warm, {:.2} us with {tenants} warm ({:.2}x)",
        one_warm.as_secs_f64() * 1e6,
        all_warm.as_secs_f64() * 1e6,
        all_warm.as_secs_f64() / one_warm.as_secs_f64()
    );
}

/// Drops every event: the benchmark measures the key cache, not event delivery.
#[derive(Debug)]
struct Dropping;
impl cmk_core::event::EventSink for Dropping {
    fn emit(&self, e: cmk_core::event::SecurityEvent) -> Result<(), cmk_core::event::SinkError> {
        std::hint::black_box(e);
        Ok(())
    }
}

fn main() {
    let tenants = std::env::var("CMK_BENCH_TENANTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(tenants));
}
