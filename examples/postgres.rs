//! The quickstart on PostgreSQL through Diesel: the application's table and cmk's key registry
//! and tenant configurations in the application's own database; the keyring, the operator key
//! and the security events in a directory beside it.
//!
//! `DATABASE_URL=postgres://user@host/db cargo run --example postgres --no-default-features \
//!  --features diesel,postgres` builds neither SeaORM nor SQLite. Run it twice: the second run
//! reads the first run's rows.

#![allow(missing_docs)] // diesel::table! generates public modules

use std::sync::{Arc, Mutex};

use cmk::diesel::{StoreConnection, ops};
use cmk::embedded::Embedded;
use cmk::{Actor, Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    example_patients (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        ssn -> Nullable<CiphertextSql>,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = example_patients)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Patient {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    pub email: String,
    #[cmk(class = "restricted")]
    pub ssn: Option<String>,
}

/// The application's migration, in PostgreSQL's types (`cmk::diesel::ddl` documents them);
/// the tenant column compares bytes (`COLLATE "C"`), so `ACME` never matches `acme`.
const SCHEMA: &str = r#"CREATE TABLE IF NOT EXISTS example_patients (
    id BIGINT PRIMARY KEY, tenant_id TEXT COLLATE "C" NOT NULL,
    email BYTEA NOT NULL, email_bidx BYTEA NOT NULL, ssn BYTEA,
    private_keys BYTEA, restricted_keys BYTEA);
    CREATE UNIQUE INDEX IF NOT EXISTS example_patients_email
        ON example_patients (tenant_id, email_bidx);"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL to a PostgreSQL URL")?;
    let mut conn = PgConnection::establish(&url)?;
    conn.create_cmk_tables_if_missing()?; // an application puts cmk::diesel::ddl in its migrations
    conn.batch_execute(SCHEMA)?;
    // cmk's own connection (a pool in production), never the one the application holds.
    let cmk_db = Arc::new(Mutex::new(PgConnection::establish(&url)?));
    let embedded = Embedded::open_with("target/cmk-postgres", cmk_db)?;

    let acme = TenantId::new("acme")?;
    let key = embedded.tenant_key(&acme)?;
    let private = Policy::new(key.clone()).with_search(SearchMode::BlindIndex);
    let config = TenantConfig::new(acme.clone(), key.clone())
        .with_class("private", private)?
        .with_class("restricted", Policy::new(key).with_readers(["doctor"]))?;
    let admin = RequestContext::new(acme.clone());
    embedded.cmk().ensure_tenant(&admin, &config).await?;

    let ctx = RequestContext::new(acme)
        .with_actor(Actor::User("dr-who".into()))
        .with_role("doctor");
    let keys = embedded.cmk().keys_for(&ctx, Patient::CLASSES).await?;
    let id: i64 = example_patients::table
        .count()
        .get_result::<i64>(&mut conn)?
        + 1;
    let patient = Patient {
        id,
        tenant_id: "acme".into(),
        email: format!("Patient{id}@Example.com"),
        ssn: Some("123-45-6789".into()),
    };
    ops::insert(&mut conn, &keys, &patient)?;

    let by_email =
        example_patients::table.filter(Patient::by_email(&keys, b"patient1@example.com")?);
    let first: Patient = ops::first(&mut conn, &keys, by_email)?;
    println!("the first run's patient, found by email: {first:?}");
    let all: Vec<Patient> = keys.scope(|| {
        example_patients::table
            .order(example_patients::id)
            .load(&mut conn)
    })?;
    println!("{} patients, all readable after {} runs", all.len(), id);
    // A second insert of the same email is a unique violation that names no index value.
    let twin = Patient {
        id: id + 1000,
        ..patient
    };
    match ops::insert(&mut conn, &keys, &twin).map_err(cmk::Error::from) {
        Err(e @ cmk::Error::UniqueViolation { .. }) => {
            println!("a duplicate email: {e} (HTTP {})", e.http_status())
        }
        other => return Err(format!("expected a unique violation, got {other:?}").into()),
    }
    Ok(())
}
