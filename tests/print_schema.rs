//! The schema `diesel print-schema` generates with cmk's recipe (cmk-diesel/print-schema/,
//! checked against the real CLI by scripts/check-print-schema) works with the derive: rows
//! seal, insert, filter by blind index and load as plaintext.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

mod schema {
    include!("../cmk-diesel/print-schema/schema.rs");
}

use cmk::diesel::ops;
use cmk::{Encrypted, SearchMode};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use schema::patients;

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = patients)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Patient {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    email: String,
    #[cmk(class = "restricted")]
    ssn: Option<String>,
}

#[tokio::test]
async fn the_generated_schema_carries_cmk_column_types() {
    let (cmk, ctx) = common::onboarded(SearchMode::BlindIndex, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(include_str!("../cmk-diesel/print-schema/up.sql"))
        .unwrap();
    let ann = Patient {
        id: 1,
        tenant_id: "acme".into(),
        email: "ann@example.com".into(),
        ssn: Some("123".into()),
    };
    ops::insert(&mut conn, &keys, &ann).unwrap();
    let found: Patient = ops::first(
        &mut conn,
        &keys,
        patients::table.filter(Patient::by_email(&keys, b"ANN@example.com").unwrap()),
    )
    .unwrap();
    assert_eq!(found, ann);
}
