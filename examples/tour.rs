//! A tour of cmk on SQLite through Diesel, every part assembled by hand (what
//! `cmk::embedded::Embedded` does for the quickstart): the local KMS, cmk's key registry and
//! tenant configuration as tables in the same file, two tenants, a blind-index lookup, key
//! scopes, an update with fresh DEKs, a partial view, another tenant refused, a master-key
//! rotation, and a tenant revoking its key. Everything lives in a temporary directory.
//!
//! `cargo run --example tour`

#![allow(missing_docs)] // diesel::table! generates public modules

use std::sync::{Arc, Mutex};

use cmk::diesel::{DieselConfigStore, DieselRegistry, StoreConnection, ops};
use cmk::event::MemorySink;
use cmk::kms::local::LocalKms;
use cmk::secret::SecretKey;
use cmk::tenant::{ConfigVerifier, OperatorKey};
use cmk::{
    Actor, Class, Cmk, Encrypted, LeasePolicy, Policy, RequestContext, SearchMode, TenantConfig,
    TenantId,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    patients (id) {
        id -> BigInt,
        tenant_id -> Text,
        name -> CiphertextSql,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        ssn -> Nullable<CiphertextSql>,
        public_keys -> Nullable<KeyColumnSql>,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

/// The application's model: three classes, a blind index on `email`.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = patients)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Patient {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "public")]
    pub name: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    pub email: String,
    #[cmk(class = "restricted")]
    pub ssn: Option<String>,
}

const SCHEMA: &str = "CREATE TABLE patients (
    id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL,
    name BLOB NOT NULL, email BLOB NOT NULL, email_bidx BLOB NOT NULL, ssn BLOB,
    public_keys BLOB, private_keys BLOB, restricted_keys BLOB);
    CREATE INDEX patients_email ON patients (tenant_id, email_bidx);";

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("{shown}… ({} bytes)", bytes.len())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Deployment: a SQLite file, a keyring file for the local KMS, an operator key from
    //    deployment secrets (it authenticates tenant configurations stored in the database).
    let dir = tempfile::tempdir()?;
    let db_path = dir.path().join("quickstart.db");
    let url = db_path.to_str().ok_or("path")?;
    let open = || -> Result<SqliteConnection, Box<dyn std::error::Error>> {
        let mut conn = SqliteConnection::establish(url)?;
        conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")?;
        Ok(conn)
    };
    let mut conn = open()?; // the application's connection (in production: a pool)
    conn.create_cmk_tables()?; // in an application: the SQL of cmk::diesel::ddl in its migrations
    conn.batch_execute(SCHEMA)?;
    // cmk's own connection for its registry and configuration queries, which run on tokio's
    // blocking pool: never the connection the application holds while awaiting cmk.
    let db = Arc::new(Mutex::new(open()?));
    let kms = Arc::new(LocalKms::open(dir.path().join("cmk.keyring"))?);
    let sink = Arc::new(MemorySink::new());
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(DieselRegistry::new(db.clone())))
        .configs(Arc::new(DieselConfigStore::new(
            db.clone(),
            ConfigVerifier::new(OperatorKey::new(SecretKey::random()?)),
        )))
        .sink(sink.clone())
        .build()?;
    println!("database: {}", db_path.display());

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

    // 3. Insert: fetch keys (async: leases, the KMS when cold), then seal and write (sync).
    let ctx = RequestContext::new(TenantId::new("acme")?)
        .with_actor(Actor::User("dr-who".into()))
        .with_role("doctor");
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await?;
    let people = [
        Patient {
            id: 1,
            tenant_id: "acme".into(),
            name: "Ann".into(),
            email: "Ann@Example.com".into(),
            ssn: Some("123-45-6789".into()),
        },
        Patient {
            id: 2,
            tenant_id: "acme".into(),
            name: "Bob".into(),
            email: "bob@example.com".into(),
            ssn: None,
        },
    ];
    let conn = &mut conn;
    ops::insert_many(conn, &keys, &people)?;

    // 4. Query by blind index: plaintext in, the tenant constrained, the HMAC computed for you.
    let ann: Patient = ops::first(
        conn,
        &keys,
        patients::table.filter(Patient::by_email(&keys, b"ann@EXAMPLE.com")?),
    )?;
    println!("found by email: {ann:?}");

    // 5. Ordinary Diesel queries load the plaintext model inside a key scope.
    let everyone: Vec<Patient> =
        keys.scope(|| patients::table.order(patients::id).load(&mut *conn))?;
    println!(
        "in a key scope, patients::table.load() gives {} patients",
        everyone.len()
    );

    // 6. What the database holds: ciphertext, index values and wrapped DEKs.
    let raw: SealedPatient = patients::table.find(1).first(conn)?;
    println!("raw row 1:");
    println!("  tenant_id       = {}", raw.tenant_id);
    println!("  name            = {}", hex_prefix(raw.name.as_bytes()));
    println!("  email           = {}", hex_prefix(raw.email.as_bytes()));
    println!(
        "  email_bidx      = {}",
        hex_prefix(raw.email_bidx.as_bytes())
    );
    if let Some(ssn) = &raw.ssn {
        println!("  ssn             = {}", hex_prefix(ssn.as_bytes()));
    }
    for (name, column) in [
        ("public_keys", &raw.public_keys),
        ("private_keys", &raw.private_keys),
        ("restricted_keys", &raw.restricted_keys),
    ] {
        if let Some(column) = column {
            println!("  {name:<15} = {}", hex_prefix(column.as_bytes()));
        }
    }

    // 7. Update: every write re-seals with fresh DEKs, in one UPDATE.
    let mut moved = ann.clone();
    moved.email = "ann@example.org".into();
    ops::update(conn, &keys, patients::table.find(1), &moved)?;
    let after: SealedPatient = patients::table.find(1).first(conn)?;
    println!(
        "update rotated the DEKs: {}",
        after.private_keys != raw.private_keys
    );

    // 8. A nurse may not read `restricted`: a partial read withholds it.
    // The same keys acting for her: no KMS call, her roles (none).
    let nurse = keys.as_actor(Actor::User("nurse-1".into()), [] as [&str; 0]);
    println!("nurse sees: {:?}", Patient::unseal_partial(&after, &nurse)?);

    // 9. globex cannot read acme's row, even with its own valid keys.
    let globex = RequestContext::new(TenantId::new("globex")?);
    let globex_keys = cmk.keys_for(&globex, Patient::CLASSES).await?;
    match Patient::unseal(&after, &globex_keys) {
        Err(e) => println!("globex reading acme's row: {e}"),
        Ok(_) => return Err("another tenant must not read acme's rows".into()),
    }

    // 10. acme's master key rotates: the registry entries are re-wrapped, rows are untouched.
    let admin =
        RequestContext::new(TenantId::new("acme")?).with_actor(Actor::Service("key-admin".into()));
    let new_master = kms.create_key("acme-2027")?;
    let rotated = cmk.rotate_master_key(&admin, &new_master).await?;
    println!("rotated acme's master key: {rotated:?}");
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await?;
    let reread: Patient = ops::first(conn, &keys, patients::table.find(1))?;
    println!("row 1 still reads after the rotation: {}", reread == moved);

    // 11. acme disables its master key: within one renewal interval the leases are revoked,
    //     the handle in hand stops, and new key fetches fail.
    kms.disable("acme-2027")?;
    println!(
        "acme disabled its key; reads continue until the next renewal: {}",
        Patient::unseal(&after, &keys).is_ok()
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let report = cmk.renew_due().await; // what the background renewer (Cmk::spawn_renewer) runs
    println!("renewal pass: {report:?}");
    match ops::first::<Patient, _, _>(conn, &keys, patients::table.find(1)) {
        Err(e) => println!("the handle in hand now fails: {e}"),
        Ok(_) => return Err("a revoked lease must stop reads".into()),
    }
    match cmk.keys_for(&ctx, Patient::CLASSES).await {
        Err(e) => println!("fetching keys again fails: {e}"),
        Ok(_) => return Err("a disabled key must stop key fetches".into()),
    }

    // 12. The security events all of this caused.
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
