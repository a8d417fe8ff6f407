//! The benchmarks' common set-up: tenant `acme` onboarded on the local KMS, keys for the
//! row of three 32-byte fields in two classes, the hand-written envelope beside it.
#![allow(dead_code)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cmk_core::event::{EventSink, SecurityEvent, SinkError};
use cmk_core::kms::local::LocalKms;
use cmk_core::registry::MemoryRegistry;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::secret::SecretKey;
use cmk_core::tenant::{MemoryConfigStore, OperatorKey};
use cmk_core::{Class, Cmk, RequestContext, TenantConfig, TenantId};

use crate::baseline::{Baseline, COLUMNS, TABLE};

/// Counts events; delivers nothing (event construction is measured, delivery not).
#[derive(Debug, Default)]
pub(crate) struct CountingSink(pub AtomicU64);
impl EventSink for CountingSink {
    fn emit(&self, e: SecurityEvent) -> Result<(), SinkError> {
        black_box(&e);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// What a benchmark needs: the request, the keys, the schema, the envelope, the values.
pub(crate) struct Setup {
    pub ctx: RequestContext,
    pub keys: Arc<cmk_core::TenantKeys>,
    pub schema: RowSchema,
    pub base: Baseline,
    pub v: [[u8; 32]; 3],
}

/// Tenant `acme` onboarded on the local KMS, events to `sink`; keys for both classes.
pub(crate) fn setup_with(sink: Arc<dyn EventSink>) -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let kms = Arc::new(LocalKms::in_memory());
    let key = kms.create_key("acme").unwrap();
    let cmk = Cmk::builder()
        .kms(kms)
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::from_bytes([1; 32]),
        ))))
        .sink(sink)
        .build()
        .unwrap();
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let keys = rt.block_on(async {
        cmk.configure_tenant(&ctx, &TenantConfig::new(ctx.tenant().clone(), key))
            .await
            .unwrap();
        cmk.onboard(&ctx).await.unwrap();
        cmk.keys_for(&ctx, &["private", "restricted"])
            .await
            .unwrap()
    });
    let class = |s: &str| Class::new(s).unwrap();
    let schema = RowSchema::new(
        TABLE,
        vec![
            FieldSpec::new(COLUMNS[0], class("private")),
            FieldSpec::new(COLUMNS[1], class("private")),
            FieldSpec::new(COLUMNS[2], class("restricted")),
        ],
    )
    .unwrap();
    Setup {
        ctx,
        keys,
        schema,
        base: Baseline::new(),
        v: [[0x41u8; 32], [0x42; 32], [0x43; 32]],
    }
}
