//! KMS calls for 10,000 row reads across 10 tenants over three renewal intervals, with
//! leasing (the default policy: renewal every 20 min) and in classic mode (no lease), on the
//! local keyring and on every provider whose stand-in runs (`eval "$(bash
//! scripts/kms-services start)"` first). Lease time runs on a controllable clock in
//! one-minute steps with a renewal pass each minute; the KMS calls are real.
//!
//! `cargo bench -p cmk-kms-tests --features aws,pkcs11,kmip --bench kms_calls`
#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cmk_core::clock::ManualClock;
use cmk_core::kms::{KeyRef, Kms, KmsContext, KmsError};
use cmk_core::registry::MemoryRegistry;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::seal::{SealedRow, StoredRow};
use cmk_core::secret::{SecretBytes, SecretKey};
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Class, Cmk, LeasePolicy, Policy, RequestContext, TenantConfig, TenantId};
use cmk_kms_tests::stand_ins::{self, StandIn};

/// Counts unwraps on their way to the real provider.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Kms>,
    unwraps: AtomicUsize,
}

#[async_trait::async_trait]
impl Kms for Counting {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    async fn wrap(&self, k: &KeyRef, p: &[u8], c: &KmsContext) -> Result<Vec<u8>, KmsError> {
        self.inner.wrap(k, p, c).await
    }
    async fn unwrap(&self, k: &KeyRef, w: &[u8], c: &KmsContext) -> Result<SecretBytes, KmsError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.inner.unwrap(k, w, c).await
    }
}

const TENANTS: usize = 10;
const READS: usize = 10_000;
const MINUTES: usize = 60;

/// Returns the reads done, the unwraps they caused and the wall time of the read phase.
async fn run(stand_in: &StandIn, classic: bool) -> (usize, usize, Duration) {
    let kms = Arc::new(Counting {
        inner: stand_in.kms.clone(),
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
        let key = (stand_in.new_key)().await;
        let ctx = RequestContext::new(TenantId::new(format!("tenant-{t}")).unwrap());
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
                .seal(&schema, None, &[Some(b"value")])
                .unwrap()
        };
        rows.push((ctx, sealed));
    }
    kms.unwraps.store(0, Ordering::SeqCst);
    let started = Instant::now();
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
                indexes: &[],
            };
            let out = if classic {
                cmk.unseal_classic(ctx, &schema, &row).await.unwrap()
            } else {
                cmk.keys_for(ctx, &["private"])
                    .await
                    .unwrap()
                    .unseal(&schema, &row)
                    .unwrap()
            };
            assert_eq!(out.values[0].value(), Some(&b"value"[..]));
        }
        reads += in_this_minute;
        cmk.renew_due().await;
        clock.advance(Duration::from_secs(60));
    }
    (reads, kms.unwraps.load(Ordering::SeqCst), started.elapsed())
}

async fn all() {
    let (have, missing, _dir) = stand_ins::all().await;
    for stand_in in &have {
        for classic in [false, true] {
            let (reads, calls, took) = run(stand_in, classic).await;
            println!(
                "{:<18} {}: {reads} reads across {TENANTS} tenants over {MINUTES} min (3 renewal intervals): {calls} KMS unwraps; read phase {took:.2?}",
                stand_in.name,
                if classic {
                    "classic (no lease)"
                } else {
                    "leased (renewal 20 min, hard expiry 60 min)"
                }
            );
        }
    }
    for m in missing {
        println!("not run: {m}");
    }
}

fn main() {
    cmk_kms_tests::bench_main(all);
}
