//! A derived model forwarded to Diesel on SQLite: sealed rows insert through Diesel, and the
//! plaintext model loads through ordinary queries (a `Vec`, a blind-index filter, a join into
//! `(Visit, Patient)` tuples) inside a key scope, and fails clearly outside one.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use cmk::{Cmk, Encrypted, RequestContext, SearchMode};
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    patients (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        ssn -> Nullable<CiphertextSql>,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

diesel::table! {
    visits (id) {
        id -> BigInt,
        tenant_id -> Text,
        patient_id -> BigInt,
        reason -> Text,
    }
}

diesel::joinable!(visits -> patients (patient_id));
diesel::allow_tables_to_appear_in_same_query!(patients, visits);

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = patients, check_for_backend(diesel::sqlite::Sqlite))]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Patient {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    email: String,
    #[cmk(class = "restricted")]
    ssn: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = visits, check_for_backend(diesel::sqlite::Sqlite))]
struct Visit {
    id: i64,
    tenant_id: String,
    patient_id: i64,
    reason: String,
}

fn connection() -> SqliteConnection {
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    diesel::sql_query(
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, email BLOB NOT NULL, \
         email_bidx BLOB NOT NULL, ssn BLOB, private_keys BLOB, restricted_keys BLOB)",
    )
    .execute(&mut conn)
    .unwrap();
    diesel::sql_query(
        "CREATE TABLE visits (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, patient_id BIGINT NOT NULL, reason TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .unwrap();
    conn
}

async fn cmk_with_tenant() -> (Cmk, RequestContext) {
    common::onboarded(SearchMode::BlindIndex, &[], |_, _| {}).await
}

#[tokio::test]
async fn plaintext_models_load_through_diesel_queries_inside_a_key_scope() {
    let (cmk, ctx) = cmk_with_tenant().await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let mut conn = connection();
    let people = [
        Patient {
            id: 1,
            tenant_id: "acme".into(),
            email: "Ann@Example.com".into(),
            ssn: Some("123".into()),
        },
        Patient {
            id: 2,
            tenant_id: "acme".into(),
            email: "bob@example.com".into(),
            ssn: None,
        },
    ];
    let sealed: Vec<SealedPatient> = people.iter().map(|p| p.seal(&keys).unwrap()).collect();
    diesel::insert_into(patients::table)
        .values(&sealed)
        .execute(&mut conn)
        .unwrap();
    diesel::insert_into(visits::table)
        .values(&Visit {
            id: 10,
            tenant_id: "acme".into(),
            patient_id: 1,
            reason: "checkup".into(),
        })
        .execute(&mut conn)
        .unwrap();

    // What the database holds is ciphertext.
    let raw: Vec<SealedPatient> = patients::table
        .select(SealedPatient::as_select())
        .load(&mut conn)
        .unwrap();
    assert!(!raw[0].email.as_bytes().windows(3).any(|w| w == b"Ann"));

    // Outside a scope the plaintext model does not load, with a clear error.
    let err = patients::table.load::<Patient>(&mut conn).unwrap_err();
    assert!(err.to_string().contains("no key scope"), "{err}");

    keys.scope(|| {
        let all: Vec<Patient> = patients::table.order(patients::id).load(&mut conn).unwrap();
        assert_eq!(all, people);
        let one: Patient = patients::table
            .find(2)
            .select(Patient::as_select())
            .first(&mut conn)
            .unwrap();
        assert_eq!(one, people[1]);
        // By blind index: plaintext in, tenant constrained.
        let wanted = Patient::email_blind_index(&keys, b"ann@EXAMPLE.com").unwrap();
        let ann: Patient = patients::table
            .filter(patients::tenant_id.eq("acme"))
            .filter(patients::email_bidx.eq_any(wanted))
            .first(&mut conn)
            .unwrap();
        assert_eq!(ann, people[0]);
        // The generated filter does both: the key handle's tenant and the index.
        let ann: Patient = patients::table
            .filter(Patient::by_email(&keys, b" ANN@example.com").unwrap())
            .first(&mut conn)
            .unwrap();
        assert_eq!(ann, people[0]);
        // A row of another tenant with the same index value (copied, say) is not matched.
        diesel::sql_query(
            "INSERT INTO patients SELECT 3, 'globex', email, email_bidx, ssn, private_keys, restricted_keys FROM patients WHERE id = 1",
        )
        .execute(&mut conn)
        .unwrap();
        let matched = patients::table
            .filter(Patient::by_email(&keys, b"ann@example.com").unwrap())
            .select(patients::id)
            .load::<i64>(&mut conn)
            .unwrap();
        assert_eq!(matched, vec![1]);
        diesel::sql_query("DELETE FROM patients WHERE id = 3").execute(&mut conn).unwrap();
        let nobody = patients::table
            .filter(Patient::by_email(&keys, b"carol@example.com").unwrap())
            .load::<Patient>(&mut conn)
            .unwrap();
        assert!(nobody.is_empty());
        // A join into (Visit, Patient) tuples.
        let joined: Vec<(Visit, Patient)> = visits::table
            .inner_join(patients::table)
            .select((Visit::as_select(), Patient::as_select()))
            .load(&mut conn)
            .unwrap();
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].1, people[0]);
    });

    // A tampered row makes the load fail, never return wrong plaintext.
    diesel::sql_query("UPDATE patients SET email = email || x'00' WHERE id = 2")
        .execute(&mut conn)
        .unwrap();
    keys.scope(|| {
        let err = patients::table.load::<Patient>(&mut conn).unwrap_err();
        assert!(err.to_string().contains("failed authentication"), "{err}");
        // `Checked<Patient>` reports the bad row in place and returns the others.
        let rows: Vec<cmk::Checked<Patient>> = patients::table
            .order(patients::id)
            .select(cmk::Checked::<Patient>::as_select())
            .load(&mut conn)
            .unwrap();
        assert_eq!(rows[0].0.as_ref().unwrap(), &people[0]);
        assert!(matches!(rows[1].0, Err(cmk::Error::Tampered)));
    });
}

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    notes (id) {
        id -> Integer,
        tenant_id -> Text,
        body -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = notes, check_for_backend(diesel::sqlite::Sqlite))]
#[cmk(tenant = tenant_id, id = id, ids = "db")]
struct Note {
    id: i32,
    tenant_id: String,
    #[cmk(class = "private")]
    body: String,
}

#[tokio::test]
async fn database_assigned_ids_insert_without_the_id_column() {
    let (cmk, ctx) = cmk_with_tenant().await;
    let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    diesel::sql_query(
        "CREATE TABLE notes (id INTEGER PRIMARY KEY AUTOINCREMENT, tenant_id TEXT NOT NULL, body BLOB NOT NULL, private_keys BLOB)",
    )
    .execute(&mut conn)
    .unwrap();
    for body in ["first", "second"] {
        // The id is not known before the insert; it is not bound into the ciphertext.
        let draft = Note {
            id: 0,
            tenant_id: "acme".into(),
            body: body.into(),
        };
        let row = draft.seal(&keys).unwrap().without_id();
        diesel::insert_into(notes::table)
            .values(&row)
            .execute(&mut conn)
            .unwrap();
    }
    keys.scope(|| {
        let notes: Vec<Note> = notes::table.order(notes::id).load(&mut conn).unwrap();
        let got: Vec<(i32, &str)> = notes.iter().map(|n| (n.id, n.body.as_str())).collect();
        assert_eq!(got, vec![(1, "first"), (2, "second")]);
    });
}
