//! KMS calls for 10,000 row reads across 10 tenants over three renewal intervals, with
//! leasing (the default policy: renewal every 20 min) and in classic mode (no lease).
//! Time runs on a controllable clock in one-minute steps with a renewal pass each minute.
//!
//! `cargo bench -p cmk-core --bench kms_calls`
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cmk_core::clock::ManualClock;
use cmk_core::kms::local::LocalKms;
use cmk_core::kms::{KeyRef, Kms, KmsContext, KmsError};
use cmk_core::registry::MemoryRegistry;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::seal::{SealedRow, StoredRow};
use cmk_core::secret::{SecretBytes, SecretKey};
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Class, Cmk, LeasePolicy, Policy, RequestContext, TenantConfig, TenantId};

#[derive(Debug)]
struct Counting {
    inner: LocalKms,
    unwraps: AtomicUsize,
}

#[async_trait::async_trait]
impl Kms for Counting {
    fn provider(&self) -> &str {
        "local"
    }
    async fn wrap(&self, k: &KeyRef, p: &[u8], aad: &KmsContext) -> Result<Vec<u8>, KmsError> {
        self.inner.wrap(k, p, aad).await
    }
    async fn unwrap(
        &self,
        k: &KeyRef,
        w: &[u8],
        aad: &KmsContext,
    ) -> Result<SecretBytes, KmsError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.inner.unwrap(k, w, aad).await
    }
}

const TENANTS: usize = 10;
const READS: usize = 10_000;
const MINUTES: usize = 60;

async fn run(classic: bool) -> (usize, usize) {
    let kms = Arc::new(Counting {
        inner: LocalKms::in_memory(),
        unwraps: AtomicUsize::new(0),
    });
    let clock = Arc::new(ManualClock::new());
    let cmk = Cmk::builder()
        .clock(clock.clone())
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([3; 32]),
        ))))
        .sink(Arc::new(cmk_core::event::MemorySink::new()))
        .build()
        .unwrap();
    let schema = RowSchema::new(
        "t",
        vec![FieldSpec::new("v", Class::new("private").unwrap())],
    )
    .unwrap();
    let mut rows: Vec<(RequestContext, SealedRow)> = Vec::new();
    for t in 0..TENANTS {
        let name = format!("tenant-{t}");
        let key = kms.inner.create_key(&name).unwrap();
        let ctx = RequestContext::new(TenantId::new(name).unwrap());
        let mut config = TenantConfig::new(ctx.tenant().clone(), key.clone());
        if classic {
            config.policies.insert(
                Class::new("private").unwrap(),
                Policy::new(key).with_lease(LeasePolicy::None),
            );
        }
        cmk.configure_tenant(&ctx, &config).await.unwrap();
        cmk.onboard(&ctx).await.unwrap();
        let sealed = if classic {
            cmk.seal_classic(&ctx, &schema, None, &[Some(b"value")])
                .await
                .unwrap()
        } else {
            cmk.keys_for(&ctx, &["private"])
                .await
                .unwrap()
                .seal(&ctx, &schema, None, &[Some(b"value")])
                .unwrap()
        };
        rows.push((ctx, sealed));
    }
    kms.unwraps.store(0, Ordering::SeqCst);
    let mut reads = 0;
    for minute in 0..MINUTES {
        let in_this_minute = READS / MINUTES + usize::from(minute < READS % MINUTES);
        for r in 0..in_this_minute {
            let (ctx, sealed) = &rows[(reads + r) % TENANTS];
            let k: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|c| c.as_deref()).collect();
            let f: Vec<Option<&[u8]>> = sealed.fields.iter().map(|c| c.as_deref()).collect();
            let row = StoredRow {
                tenant: ctx.tenant().as_str(),
                row_id: None,
                key_columns: &k,
                fields: &f,
            };
            let out = if classic {
                cmk.unseal_classic(ctx, &schema, &row).await.unwrap()
            } else {
                cmk.keys_for(ctx, &["private"])
                    .await
                    .unwrap()
                    .unseal(ctx, &schema, &row)
                    .unwrap()
            };
            assert_eq!(out.values[0].value(), Some(&b"value"[..]));
        }
        reads += in_this_minute;
        cmk.renew_due().await;
        clock.advance(Duration::from_secs(60));
    }
    (reads, kms.unwraps.load(Ordering::SeqCst))
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` only builds it
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for classic in [false, true] {
        let (reads, calls) = rt.block_on(run(classic));
        println!(
            "{}: {reads} reads across {TENANTS} tenants over {MINUTES} min (3 renewal intervals): {calls} KMS unwrap calls",
            if classic {
                "classic (no lease)"
            } else {
                "leased (renewal 20 min, hard expiry 60 min)"
            }
        );
    }
}
