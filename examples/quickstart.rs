//! cmk quickstart on the embedded default: the local KMS (a keyring file) and in-memory
//! registry and configuration store. Until the Diesel adapter lands, "the database" here is
//! a Vec of sealed rows; everything else is what production runs.
//!
//! `cargo run --example quickstart`

use std::sync::Arc;

use cmk::crypto::normalize::Normalizer;
use cmk::event::MemorySink;
use cmk::format::aad::RowId;
use cmk::kms::local::LocalKms;
use cmk::registry::MemoryRegistry;
use cmk::schema::{FieldSpec, RowSchema};
use cmk::seal::{Revealed, SealedRow, StoredRow};
use cmk::secret::SecretKey;
use cmk::tenant::{MemoryConfigStore, OperatorKey};
use cmk::{
    Actor, Class, Cmk, LeasePolicy, Policy, RequestContext, SearchMode, TenantConfig, TenantId,
};

/// A stored row: plain columns, then what cmk sealed.
struct Row {
    id: i64,
    tenant: String,
    sealed: SealedRow,
}

fn show(v: &Revealed) -> String {
    match v {
        Revealed::Value(b) => String::from_utf8_lossy(b.expose_secret()).into_owned(),
        Revealed::Null => "NULL".into(),
        Revealed::Withheld => "<withheld>".into(),
    }
}

fn stored<'a>(
    row: &'a Row,
    k: &'a [Option<&'a [u8]>],
    f: &'a [Option<&'a [u8]>],
    id: &'a RowId,
) -> StoredRow<'a> {
    StoredRow {
        tenant: &row.tenant,
        row_id: Some(id),
        key_columns: k,
        fields: f,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Deployment: a keyring file for the local KMS, an operator key from deployment secrets.
    let dir = tempfile::tempdir()?;
    let kms = Arc::new(LocalKms::open(dir.path().join("cmk.keyring"))?);
    let sink = Arc::new(MemorySink::new());
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::random()?,
        ))))
        .sink(sink.clone())
        .build()?;

    // 2. Two tenants, each with its own master key, onboarded explicitly.
    for tenant in ["acme", "globex"] {
        let master = kms.create_key(tenant)?;
        let admin = RequestContext::new(TenantId::new(tenant)?)
            .with_actor(Actor::Service("onboarding".into()));
        let mut config = TenantConfig::new(admin.tenant().clone(), master.clone());
        // Leases of 1 s (renewal) and 2 s (hard expiry) so that revocation shows up quickly
        // here; the defaults are 20 min and 1 h.
        let lease = LeasePolicy::Leased {
            hard_expiry_secs: 2,
            renewal_secs: 1,
            max_uses: None,
        };
        for policy in config.policies.values_mut() {
            policy.lease = lease;
        }
        let private = Policy::new(master.clone())
            .with_search(SearchMode::BlindIndex)
            .with_lease(lease);
        config.policies.insert(Class::new("private")?, private);
        let restricted = Policy::new(master.clone())
            .with_readers(["doctor"])
            .with_lease(lease);
        config
            .policies
            .insert(Class::new("restricted")?, restricted);
        cmk.configure_tenant(&admin, &config).await?;
        let report = cmk.onboard(&admin).await?;
        println!(
            "onboarded {tenant}: proved {:?}, wrote {} registry entries",
            report.proven_keys, report.entries_written
        );
    }

    // 3. The model: email (private, blind index), name (public), ssn (restricted).
    let schema = RowSchema::new(
        "patients",
        vec![
            FieldSpec::new("email", Class::new("private")?).blind_index(Normalizer::Casefold),
            FieldSpec::new("name", Class::new("public")?),
            FieldSpec::new("ssn", Class::new("restricted")?),
        ],
    )?;
    let classes = ["private", "public", "restricted"];

    // 4. Insert: fetch keys (async, the KMS), then seal (sync CPU work).
    let ctx = RequestContext::new(TenantId::new("acme")?)
        .with_actor(Actor::User("dr-who".into()))
        .with_role("doctor");
    let keys = cmk.keys_for(&ctx, &classes).await?;
    let mut table: Vec<Row> = Vec::new();
    for (id, email, name, ssn) in [
        (1, "Ann@Example.com", "Ann", "123-45-6789"),
        (2, "bob@example.com", "Bob", "987-65-4321"),
    ] {
        let sealed = keys.seal(
            &ctx,
            &schema,
            Some(&RowId::Int(id)),
            &[
                Some(email.as_bytes()),
                Some(name.as_bytes()),
                Some(ssn.as_bytes()),
            ],
        )?;
        table.push(Row {
            id,
            tenant: "acme".into(),
            sealed,
        });
    }

    // 5. Query by blind index: the plaintext goes in, the HMAC is computed for you.
    let wanted = keys.blind_index_query(&schema, "email", b"ann@EXAMPLE.com")?;
    let hit = table
        .iter()
        .find(|r| {
            r.tenant == "acme"
                && r.sealed.indexes[0]
                    .as_ref()
                    .is_some_and(|i| wanted.contains(i))
        })
        .ok_or("no match")?;
    let row_id = RowId::Int(hit.id);
    let (k, f): (Vec<_>, Vec<_>) = (
        hit.sealed
            .key_columns
            .iter()
            .map(|c| c.as_deref())
            .collect(),
        hit.sealed.fields.iter().map(|c| c.as_deref()).collect(),
    );
    let plain = keys.unseal(&ctx, &schema, &stored(hit, &k, &f, &row_id))?;
    println!(
        "found row {}: {}",
        hit.id,
        plain.values.iter().map(show).collect::<Vec<_>>().join(", ")
    );

    // 6. What the database holds: ciphertext only.
    println!("raw row {}:", hit.id);
    for (class, kc) in schema.key_classes().iter().zip(&hit.sealed.key_columns) {
        println!(
            "  {class}_keys = {}",
            cmk::hexfmt::encode(kc.as_deref().unwrap_or_default())
        );
    }
    for (spec, v) in schema.fields().iter().zip(&hit.sealed.fields) {
        println!(
            "  {} = {}",
            spec.column,
            cmk::hexfmt::encode(v.as_deref().unwrap_or_default())
        );
    }

    // 7. Update: re-seal with fresh DEKs (every write of a class rotates its DEK).
    let updated = keys.seal(
        &ctx,
        &schema,
        Some(&row_id),
        &[Some(b"ann@example.org"), Some(b"Ann"), Some(b"123-45-6789")],
    )?;
    println!(
        "update rotated the DEKs: {}",
        updated.key_columns[0] != hit.sealed.key_columns[0]
    );

    // 8. A nurse may not read `restricted`: partial read withholds it.
    let nurse =
        RequestContext::new(TenantId::new("acme")?).with_actor(Actor::User("nurse-1".into()));
    let partial = keys.unseal_partial(&nurse, &schema, &stored(hit, &k, &f, &row_id))?;
    println!(
        "nurse sees: {}",
        partial
            .values
            .iter()
            .map(show)
            .collect::<Vec<_>>()
            .join(", ")
    );

    // 9. globex cannot read acme's row, even with its own valid keys.
    let globex = RequestContext::new(TenantId::new("globex")?);
    let globex_keys = cmk.keys_for(&globex, &classes).await?;
    let err = globex_keys
        .unseal(&globex, &schema, &stored(hit, &k, &f, &row_id))
        .unwrap_err();
    println!("globex reading acme's row: {err}");

    // 10. acme disables its master key: within one renewal interval the leases are revoked,
    //     the handle in hand stops, and new key fetches fail.
    kms.disable("acme")?;
    let still = keys
        .unseal(&ctx, &schema, &stored(hit, &k, &f, &row_id))
        .is_ok();
    println!("acme disabled its key; reads continue until the next renewal: {still}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = cmk.renew_due().await; // what the background renewer (Cmk::spawn_renewer) runs
    println!("renewal pass: {report:?}");
    match keys.unseal(&ctx, &schema, &stored(hit, &k, &f, &row_id)) {
        Err(e) => println!("the handle in hand now fails: {e}"),
        Ok(_) => return Err("a revoked lease must stop reads".into()),
    }
    match cmk.keys_for(&ctx, &classes).await {
        Err(e) => println!("fetching keys again fails: {e}"),
        Ok(_) => return Err("a disabled key must stop key fetches".into()),
    }

    // 11. The security events all of this caused.
    println!("security events:");
    for e in sink.events() {
        println!(
            "  {} {:<28} tenant={:<7} table={:<9} record={:<2} outcome={:?}",
            e.id,
            e.name.as_str(),
            e.tenant,
            e.table.as_deref().unwrap_or("-"),
            e.record_id.as_deref().unwrap_or("-"),
            e.outcome
        );
    }
    Ok(())
}
