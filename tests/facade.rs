//! The facade re-exports the core API: a user depends on `cmk` alone.

use std::sync::Arc;

use cmk::clock::ManualClock;
use cmk::kms::local::LocalKms;
use cmk::registry::MemoryRegistry;
use cmk::rows::{FieldSpec, RowSchema, StoredRow};
use cmk::secret::SecretKey;
use cmk::tenant::{MemoryConfigStore, OperatorKey};
use cmk::{Class, Cmk, Error, RequestContext, TenantConfig, TenantId};

#[tokio::test]
async fn a_row_round_trips_through_the_facade_and_a_keyring_file() {
    let dir = tempfile::tempdir().unwrap();
    let kms = Arc::new(LocalKms::open(dir.path().join("k.keyring")).unwrap());
    let clock = Arc::new(ManualClock::new());
    let cmk = Cmk::builder()
        .clock(clock.clone())
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::random().unwrap(),
        ))))
        .build()
        .unwrap();
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let config = TenantConfig::new(ctx.tenant().clone(), kms.create_key("acme").unwrap());
    cmk.configure_tenant(&ctx, &config).await.unwrap();
    cmk.onboard(&ctx).await.unwrap();
    let schema = RowSchema::new(
        "t",
        vec![FieldSpec::new("v", Class::new("secret").unwrap())],
    )
    .unwrap();
    let keys = cmk.keys_for(&ctx, &["secret"]).await.unwrap();
    let sealed = keys.seal(&schema, None, &[Some(b"hello")]).unwrap();
    let k: Vec<Option<&[u8]>> = sealed.key_columns.iter().map(|c| c.as_deref()).collect();
    let f: Vec<Option<&[u8]>> = sealed.fields.iter().map(|c| c.as_deref()).collect();
    let row = StoredRow {
        tenant: "acme",
        row_id: None,
        key_columns: &k,
        fields: &f,
        indexes: &[],
    };
    assert_eq!(
        keys.unseal(&schema, &row).unwrap().values[0].value(),
        Some(&b"hello"[..])
    );

    // The tenant revokes its key: within one renewal interval (20 min by default) the lease is
    // revoked, the handle in hand stops, and fetching keys fails with a KMS error.
    kms.disable("acme").unwrap();
    assert!(
        keys.unseal(&schema, &row).is_ok(),
        "served from the lease until renewal"
    );
    clock.advance(std::time::Duration::from_secs(20 * 60));
    assert_eq!(cmk.renew_due().await.revoked, 1);
    assert!(matches!(
        keys.unseal(&schema, &row),
        Err(Error::LeaseEnded { .. })
    ));
    let err = cmk.keys_for(&ctx, &["secret"]).await.unwrap_err();
    assert!(
        matches!(&err, Error::Kms { tenant, .. } if tenant == "acme"),
        "{err}"
    );
}

#[test]
fn builder_names_what_is_missing() {
    let err = Cmk::builder().build().unwrap_err();
    assert!(err.to_string().contains("needs a KMS"), "{err}");
}
