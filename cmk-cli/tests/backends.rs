//! The `cmk` binary on PostgreSQL and MariaDB/MySQL (features `postgres`, `mysql`): the
//! quickstart's deployment is copied byte for byte from SQLite into a fresh database (sealed
//! bytes do not depend on the database), then every table command runs through the URL.

#![cfg(any(feature = "postgres", feature = "mysql"))]

mod common;

use common::*;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
}

const REGISTRY: &[(&str, Kind)] = &[
    ("tenant_id", Kind::Text),
    ("purpose", Kind::Text),
    ("policy", Kind::Text),
    ("kek_id", Kind::Int),
    ("version", Kind::Int),
    ("cmk_ref", Kind::Text),
    ("state", Kind::Text),
    ("wrapped", Kind::Bytes),
    ("created_at", Kind::Int),
];
const CONFIG: &[(&str, Kind)] = &[
    ("tenant_id", Kind::Text),
    ("revision", Kind::Int),
    ("content", Kind::Bytes),
    ("mac", Kind::Bytes),
    ("created_at", Kind::Int),
];
const PATIENTS: &[(&str, Kind)] = &[
    ("id", Kind::Int),
    ("tenant_id", Kind::Text),
    ("name", Kind::Bytes),
    ("email", Kind::Bytes),
    ("email_bidx", Kind::Bytes),
    ("ssn", Kind::Bytes),
    ("public_keys", Kind::Bytes),
    ("private_keys", Kind::Bytes),
    ("restricted_keys", Kind::Bytes),
];

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this build enables the backend, so its tests must run (scripts/test-all sets it)")
    })
}

/// A fresh database on the server of `admin_url`; returns its URL.
async fn fresh_database(admin_url: &str) -> String {
    let admin = Database::connect(admin_url).await.unwrap();
    let name = format!(
        "cmk_cli_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000
    );
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').unwrap().0;
    format!("{base}/{name}")
}

fn patients_ddl(backend: DbBackend) -> &'static str {
    match backend {
        DbBackend::Postgres => {
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id TEXT COLLATE \"C\" NOT NULL,
             name BYTEA NOT NULL, email BYTEA NOT NULL, email_bidx BYTEA NOT NULL, ssn BYTEA,
             public_keys BYTEA, private_keys BYTEA, restricted_keys BYTEA)"
        }
        _ => {
            "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id VARBINARY(255) NOT NULL,
             name MEDIUMBLOB NOT NULL, email MEDIUMBLOB NOT NULL, email_bidx VARBINARY(64) NOT NULL,
             ssn MEDIUMBLOB, public_keys VARBINARY(255), private_keys VARBINARY(255),
             restricted_keys VARBINARY(255)) ENGINE = InnoDB"
        }
    }
}

/// Copies `table`'s `columns` from SQLite to `to`, in `order`.
async fn copy(
    from: &DatabaseConnection,
    to: &DatabaseConnection,
    table: &str,
    columns: &[(&str, Kind)],
    order: &str,
) {
    let names: Vec<&str> = columns.iter().map(|(c, _)| *c).collect();
    let rows = from
        .query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            format!("SELECT {} FROM {table} ORDER BY {order}", names.join(", ")),
        ))
        .await
        .unwrap();
    assert!(!rows.is_empty(), "{table} has rows to copy");
    let backend = to.get_database_backend();
    let marks: Vec<String> = (1..=columns.len())
        .map(|i| match backend {
            DbBackend::Postgres => format!("${i}"),
            _ => "?".into(),
        })
        .collect();
    let insert = format!(
        "INSERT INTO {table} ({}) VALUES ({})",
        names.join(", "),
        marks.join(", ")
    );
    for row in rows {
        let values: Vec<Value> = columns
            .iter()
            .enumerate()
            .map(|(i, (_, kind))| match kind {
                Kind::Int => row.try_get_by_index::<i64>(i).unwrap().into(),
                Kind::Text => row.try_get_by_index::<String>(i).unwrap().into(),
                Kind::Bytes => row.try_get_by_index::<Option<Vec<u8>>>(i).unwrap().into(),
            })
            .collect();
        to.execute_raw(Statement::from_sql_and_values(backend, &insert, values))
            .await
            .unwrap();
    }
}

/// The quickstart's manifest for another table of the same columns, written beside it.
fn manifest_of(d: &Deployment, table: &str) -> std::path::PathBuf {
    let path = d.dir.path().join(format!("{table}.json"));
    let text = std::fs::read_to_string(d.manifest()).unwrap().replace(
        "\"table\": \"patients\"",
        &format!("\"table\": \"{table}\""),
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn run_on(admin_url: &str) {
    let d = Deployment::new(30).await;
    let url = fresh_database(admin_url).await;
    let db = Database::connect(&url).await.unwrap();
    let sqlite = Database::connect(format!("sqlite://{}?mode=ro", d.database().display()))
        .await
        .unwrap();
    cmk_seaorm::migration::create_cmk_tables(&db).await.unwrap();
    db.execute_unprepared(patients_ddl(db.get_database_backend()))
        .await
        .unwrap();
    copy(&sqlite, &db, "cmk_key_registry", REGISTRY, "seq").await;
    copy(
        &sqlite,
        &db,
        "cmk_tenant_config",
        CONFIG,
        "tenant_id, revision",
    )
    .await;
    copy(&sqlite, &db, "patients", PATIENTS, "id").await;
    // The SQLite file goes away: every command below must use the URL.
    drop(sqlite);
    std::fs::remove_file(d.database()).unwrap();

    let m = d.manifest();
    let m = m.to_str().unwrap();
    let cmd = |args: &[&str], code: i32| {
        let mut all = vec!["--database-url", url.as_str(), "--json"];
        all.extend_from_slice(args);
        let out = d.cmk(&all);
        assert_code(&out, code);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    assert_eq!(
        cmd(&["tenant", "list"], 0)["tenants"],
        serde_json::json!(["acme", "globex"])
    );
    assert_eq!(
        cmd(&["verify", "--manifest", m, "--chunk", "8"], 0)["ok"],
        35
    );

    // A flipped byte in the database is found, by row id and kind.
    let backend = db.get_database_backend();
    let row = db
        .query_one_raw(Statement::from_string(
            backend,
            "SELECT email FROM patients WHERE id = 12",
        ))
        .await
        .unwrap()
        .unwrap();
    let mut email: Vec<u8> = row.try_get_by_index(0).unwrap();
    email[30] ^= 0x40;
    let set = match backend {
        DbBackend::Postgres => "UPDATE patients SET email = $1 WHERE id = 12",
        _ => "UPDATE patients SET email = ? WHERE id = 12",
    };
    db.execute_raw(Statement::from_sql_and_values(backend, set, [email.into()]))
        .await
        .unwrap();
    let report = cmd(&["verify", "--manifest", m], 1);
    assert_eq!(report["failed"], 1, "{report}");
    assert_eq!(report["failures"][0]["id"], 12);
    assert_eq!(report["failures"][0]["kind"], "tampered");

    // KEK roll-over and rekey (row 12 cannot be re-wrapped: its key column still
    // authenticates, so it is; its field stays tampered), master-key rotation, shred.
    cmd(&["kek", "roll-over", "--tenant", "acme"], 0);
    let rekeyed = cmd(&["rekey", "--manifest", m, "--chunk", "7"], 0);
    assert_eq!(rekeyed["rewrapped"], 30, "{rekeyed}");
    assert_eq!(cmd(&["rekey", "--manifest", m], 0)["rewrapped"], 0);
    assert_eq!(cmd(&["verify", "--manifest", m], 1)["ok"], 34);
    let keyring = d.cmk(&["keyring", "create", "acme-2"]);
    assert_code(&keyring, 0);
    cmd(
        &["rotate-master", "--tenant", "acme", "--key", "local:acme-2"],
        0,
    );
    assert_eq!(cmd(&["verify", "--manifest", m], 1)["ok"], 34);
    // The plaintext backfill, from text columns (PostgreSQL's TEXT, MySQL's VARCHAR).
    let legacy = match backend {
        DbBackend::Postgres => {
            "CREATE TABLE patients_legacy (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL,
             name_plain TEXT, email_plain TEXT, ssn_plain TEXT, name BYTEA, email BYTEA,
             email_bidx BYTEA, ssn BYTEA, public_keys BYTEA, private_keys BYTEA,
             restricted_keys BYTEA)"
        }
        _ => {
            "CREATE TABLE patients_legacy (id BIGINT PRIMARY KEY, tenant_id VARBINARY(255) NOT NULL,
             name_plain VARCHAR(200), email_plain VARCHAR(200), ssn_plain VARCHAR(200),
             name MEDIUMBLOB, email MEDIUMBLOB, email_bidx VARBINARY(64), ssn MEDIUMBLOB,
             public_keys VARBINARY(255), private_keys VARBINARY(255),
             restricted_keys VARBINARY(255)) ENGINE = InnoDB"
        }
    };
    db.execute_unprepared(legacy).await.unwrap();
    db.execute_unprepared(
        "INSERT INTO patients_legacy (id, tenant_id, name_plain, email_plain, ssn_plain) VALUES
         (1, 'acme', 'Ann', 'Ann@Example.com', NULL), (2, 'acme', 'Bob', 'bob@example.com', '1')",
    )
    .await
    .unwrap();
    let legacy_manifest = manifest_of(&d, "patients_legacy");
    let lm = legacy_manifest.to_str().unwrap();
    let from = [
        "--from",
        "name=name_plain",
        "--from",
        "email=email_plain",
        "--from",
        "ssn=ssn_plain",
    ];
    let mut args = vec!["migrate", "--manifest", lm];
    args.extend_from_slice(&from);
    assert_eq!(cmd(&args, 0)["migrated"], 2);
    assert_eq!(cmd(&args, 0)["rows"], 0);
    assert_eq!(cmd(&["verify", "--manifest", lm], 0)["ok"], 2);

    if backend == DbBackend::Postgres {
        // PostgreSQL's `uuid` ids (UUIDv7, as applications use them): sealed by migrate,
        // paged by id two at a time, read, rolled over and re-wrapped.
        db.execute_unprepared(
            "CREATE TABLE patients_uuid (id UUID PRIMARY KEY, tenant_id TEXT NOT NULL,
             name_plain TEXT, email_plain TEXT, ssn_plain TEXT, name BYTEA, email BYTEA,
             email_bidx BYTEA, ssn BYTEA, public_keys BYTEA, private_keys BYTEA,
             restricted_keys BYTEA)",
        )
        .await
        .unwrap();
        db.execute_unprepared(
            "INSERT INTO patients_uuid (id, tenant_id, name_plain, email_plain, ssn_plain) VALUES
             ('018f3a6e-7c10-7000-8000-000000000001', 'acme', 'Ann', 'ann@example.com', NULL),
             ('018f3a6e-7c10-7000-8000-000000000002', 'acme', 'Bob', 'bob@example.com', '2'),
             ('018f3a6e-7c10-7000-8000-000000000003', 'acme', 'Cy', 'cy@example.com', '3')",
        )
        .await
        .unwrap();
        let uuid_manifest = manifest_of(&d, "patients_uuid");
        let um = uuid_manifest.to_str().unwrap();
        let mut args = vec!["migrate", "--manifest", um, "--chunk", "2"];
        args.extend_from_slice(&from);
        assert_eq!(cmd(&args, 0)["migrated"], 3);
        assert_eq!(
            cmd(&["verify", "--manifest", um, "--chunk", "2"], 0)["ok"],
            3
        );
        cmd(&["kek", "roll-over", "--tenant", "acme"], 0);
        let rekeyed = cmd(&["rekey", "--manifest", um, "--chunk", "2"], 0);
        assert_eq!(rekeyed["rewrapped"], 3, "{rekeyed}");
        assert_eq!(cmd(&["verify", "--manifest", um], 0)["ok"], 3);
        // A flipped byte is reported by the row's UUID.
        db.execute_unprepared(
            "UPDATE patients_uuid SET name = set_byte(name, 30, get_byte(name, 30) # 64)
             WHERE id = '018f3a6e-7c10-7000-8000-000000000002'",
        )
        .await
        .unwrap();
        let report = cmd(&["verify", "--manifest", um], 1);
        assert_eq!(
            report["failures"][0]["id"],
            serde_json::json!({ "uuid": "018f3a6e-7c10-7000-8000-000000000002" }),
            "{report}"
        );
    }

    cmd(&["shred", "--tenant", "globex", "--confirm", "globex"], 0);
    let after = cmd(&["verify", "--manifest", m], 1);
    assert_eq!(after["ok"], 29, "{after}");
    assert_eq!(after["failed"], 6, "{after}");
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread")]
async fn every_table_command_works_on_postgres() {
    run_on(&required("CMK_TEST_POSTGRES_URL")).await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread")]
async fn every_table_command_works_on_mysql() {
    run_on(&required("CMK_TEST_MYSQL_URL")).await;
}
