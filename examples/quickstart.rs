//! cmk quickstart on the embedded default: SQLite through Diesel, the local KMS, security
//! events to a JSON Lines file, all kept in one directory that survives restarts.
//!
//! `cargo run --example quickstart` keeps it in `target/cmk-quickstart`. Run it twice:
//! the second run reads the first run's rows, with the same keyring, operator key and
//! registry. `cargo run --example tour` shows the rest (rotation, revocation, events).

#![allow(missing_docs)] // diesel::table! generates public modules

use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::{Actor, Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
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

/// The application's migration (cmk's own tables are created by `Embedded::open`).
const SCHEMA: &str = "PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS patients (
    id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL,
    name BLOB NOT NULL, email BLOB NOT NULL, email_bidx BLOB NOT NULL, ssn BLOB,
    public_keys BLOB, private_keys BLOB, restricted_keys BLOB);
    CREATE INDEX IF NOT EXISTS patients_email ON patients (tenant_id, email_bidx);";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The keyring, the operator key (made once, mode 0600), cmk's registry and the events.
    let embedded = Embedded::open("target/cmk-quickstart")?;
    let mut conn = SqliteConnection::establish(&embedded.database_path().to_string_lossy())?;
    conn.batch_execute(SCHEMA)?;

    // A tenant with its own master key: `private` searchable, `restricted` for doctors only.
    // Configured and onboarded on the first run; on later runs this finds it all in place.
    let acme = TenantId::new("acme")?;
    let key = embedded.tenant_key(&acme)?;
    let private = Policy::new(key.clone()).with_search(SearchMode::BlindIndex);
    let config = TenantConfig::new(acme.clone(), key.clone())
        .with_class("private", private)?
        .with_class("restricted", Policy::new(key).with_readers(["doctor"]))?;
    let admin = RequestContext::new(acme.clone());
    embedded.cmk().ensure_tenant(&admin, &config).await?;

    // A request: its keys (leased; the KMS is called only when cold), then seal and write.
    let ctx = RequestContext::new(acme)
        .with_actor(Actor::User("dr-who".into()))
        .with_role("doctor");
    let keys = embedded.cmk().keys_for(&ctx, Patient::CLASSES).await?;
    let id: i64 = patients::table.count().get_result::<i64>(&mut conn)? + 1;
    let patient = Patient {
        id,
        tenant_id: "acme".into(),
        name: format!("Patient {id}"),
        email: format!("Patient{id}@Example.com"),
        ssn: Some("123-45-6789".into()),
    };
    ops::insert(&mut conn, &keys, &patient)?;

    // Look the patient up by email: plaintext in, the HMAC computed and the tenant
    // constrained for you.
    let by_email = patients::table.filter(Patient::by_email(&keys, b"patient1@example.com")?);
    let first: Patient = ops::first(&mut conn, &keys, by_email)?;
    println!("the first run's patient, found by email: {first:?}");

    // Plain Diesel loads the plaintext model inside a key scope: every run's rows read back.
    let all: Vec<Patient> = keys.scope(|| patients::table.order(patients::id).load(&mut conn))?;
    println!("{} patients, all readable after {} runs", all.len(), id);

    // What the database holds: ciphertext, index values and wrapped DEKs.
    let raw: SealedPatient = patients::table.find(id).first(&mut conn)?;
    println!("stored email: {}", hex_prefix(raw.email.as_bytes()));
    println!(
        "stored ssn:   {}",
        hex_prefix(raw.ssn.as_ref().map_or(&[][..], |s| s.as_bytes()))
    );

    // Another actor with the same keys (no KMS call): a nurse may not read `restricted`.
    let nurse = keys.as_actor(Actor::User("nurse-1".into()), ["nurse"]);
    println!("a nurse sees: {:?}", Patient::unseal_partial(&raw, &nurse)?);
    println!("security events: {}", embedded.events_path().display());

    // The table's manifest, for `cmk verify` and `cmk rekey` (and readers in other languages).
    let written =
        cmk::model::write_manifests(&embedded.dir().join("manifests"), &[Patient::manifest()?])?;
    println!("manifest: {}", written[0].display());
    Ok(())
}

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: String = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("{shown}… ({} bytes)", bytes.len())
}
