//! The local KMS shared by several processes: the keyring file is the single truth.
//!
//! Each test runs real child processes (this test binary again, running the ignored
//! `child_keyring` entry point with an operation in `CMK_CHILD_OP`) on one keyring file, and
//! where a database is needed, one SQLite file.

#![allow(missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use cmk::clock::ManualClock;
use cmk::diesel::{DieselConfigStore, DieselRegistry};
use cmk::kms::local::{LocalKms, VersionState};
use cmk::kms::{Kms, KmsContext, KmsErrorKind};
use cmk::registry::MemoryRegistry;
use cmk::rows::{FieldSpec, RowSchema, SealedRow, StoredRow};
use cmk::secret::SecretKey;
use cmk::tenant::{ConfigVerifier, MemoryConfigStore, OperatorKey};
use cmk::{Class, Cmk, Error, RequestContext, TenantConfig, TenantId};
use diesel::connection::SimpleConnection;

const MIN: Duration = Duration::from_secs(60);

fn ctx(tenant: &str) -> RequestContext {
    RequestContext::new(TenantId::new(tenant).unwrap())
}

fn schema() -> RowSchema {
    RowSchema::new(
        "notes",
        vec![FieldSpec::new("body", Class::new("private").unwrap())],
    )
    .unwrap()
}

fn operator_key() -> OperatorKey {
    OperatorKey::new(SecretKey::from_bytes([9; 32]))
}

/// Runs `op` in a child process on `keyring` (and `db`, where given) and returns its output;
/// the child must succeed.
fn child(op: &str, keyring: &Path, db: Option<&Path>) -> Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_keyring", "--nocapture"])
        .env("CMK_CHILD_OP", op)
        .env("CMK_CHILD_KEYRING", keyring);
    if let Some(db) = db {
        cmd.env("CMK_CHILD_DB", db);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "child `{op}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The line the child printed after `RESULT `.
fn result_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
        .expect("the child printed a result")
}

/// A sealed row saved to a file, so that another process can try to read it.
fn save_row(path: &Path, tenant: &str, sealed: &SealedRow) {
    let hex = |v: &Option<Vec<u8>>| v.as_deref().map(hex_encode).unwrap_or_default();
    let text = format!(
        "{tenant}\n{}\n{}\n",
        hex(&sealed.key_columns[0]),
        hex(&sealed.fields[0])
    );
    std::fs::write(path, text).unwrap();
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Reads a saved row with `keys`: `Ok(plaintext)` or the error's text.
fn read_row(cmk_keys: &cmk::TenantKeys, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let tenant = lines.next().unwrap().to_string();
    let key_column = hex_decode(lines.next().unwrap());
    let field = hex_decode(lines.next().unwrap());
    let key_columns = [Some(key_column.as_slice())];
    let fields = [Some(field.as_slice())];
    let row = StoredRow {
        tenant: &tenant,
        row_id: None,
        key_columns: &key_columns,
        fields: &fields,
        indexes: &[],
    };
    cmk_keys
        .unseal(&schema(), &row)
        .map_err(|e| e.to_string())
        .map(|r| String::from_utf8_lossy(r.values[0].value().unwrap_or_default()).into_owned())
}

/// A `Cmk` on the shared keyring and SQLite database (the application's registry and
/// configuration tables), as every process of a deployment builds it.
fn instance_on(keyring: &Path, db: &Path, clock: Option<Arc<ManualClock>>) -> (Cmk, Arc<LocalKms>) {
    let local = Arc::new(LocalKms::open(keyring).unwrap());
    let conn = {
        use diesel::Connection;
        let mut c = diesel::SqliteConnection::establish(db.to_str().unwrap()).unwrap();
        c.batch_execute("PRAGMA busy_timeout = 10000;").unwrap();
        Arc::new(std::sync::Mutex::new(c))
    };
    let mut builder = Cmk::builder()
        .kms(local.clone())
        .registry(Arc::new(DieselRegistry::new(conn.clone())))
        .configs(Arc::new(DieselConfigStore::new(
            conn,
            ConfigVerifier::new(operator_key()),
        )));
    if let Some(clock) = clock {
        builder = builder.clock(clock);
    }
    (builder.build().unwrap(), local)
}

#[test]
fn concurrent_create_key_from_four_processes_loses_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("shared.keyring");
    LocalKms::open(&keyring).unwrap();
    let children: Vec<_> = (0..4)
        .map(|i| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "child_keyring", "--nocapture"])
                .env("CMK_CHILD_OP", format!("create:p{i}:25"))
                .env("CMK_CHILD_KEYRING", &keyring)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let kms = LocalKms::open(&keyring).unwrap();
    let keys = kms.list().unwrap();
    assert_eq!(keys.len(), 100, "every process's keys are in the file");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for info in &keys {
        let key = cmk::kms::KeyRef::new(format!("local:{}", info.name)).unwrap();
        let context = KmsContext::from_bytes(b"aad");
        let blob = rt.block_on(kms.wrap(&key, b"material", &context)).unwrap();
        let back = rt.block_on(kms.unwrap(&key, &blob, &context)).unwrap();
        assert_eq!(back.expose_secret(), b"material");
    }
}

#[tokio::test]
async fn a_disable_in_another_process_stops_reads_here_within_one_renewal_interval() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("shared.keyring");
    let local = Arc::new(LocalKms::open(&keyring).unwrap());
    let clock = Arc::new(ManualClock::new());
    let cmk = Cmk::builder()
        .kms(local.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(operator_key())))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for tenant in ["acme", "globex"] {
        let key = local.create_key(tenant).unwrap();
        let c = ctx(tenant);
        cmk.configure_tenant(&c, &TenantConfig::new(c.tenant().clone(), key))
            .await
            .unwrap();
        cmk.onboard(&c).await.unwrap();
        let keys = cmk.keys_for(&c, &["private"]).await.unwrap();
        let sealed = keys.seal(&schema(), None, &[Some(b"x")]).unwrap();
        let path = dir.path().join(format!("{tenant}.row"));
        save_row(&path, tenant, &sealed);
        rows.push(path);
    }
    let (acme, globex) = (ctx("acme"), ctx("globex"));
    let held = cmk.keys_for(&acme, &["private"]).await.unwrap();

    child("disable:acme", &keyring, None); // the tenant's kill switch, in another process
    assert_eq!(
        read_row(&held, &rows[0]).as_deref(),
        Ok("x"),
        "the warm lease serves until its next renewal"
    );
    clock.advance(20 * MIN);
    let report = cmk.renew_due().await;
    assert!(report.revoked >= 1, "{report:?}");
    let err = read_row(&held, &rows[0]).unwrap_err();
    assert!(err.contains("revoked"), "{err}");
    match cmk.keys_for(&acme, &["private"]).await {
        Err(Error::Kms { source, .. }) => assert_eq!(source.kind, KmsErrorKind::Denied),
        other => panic!("expected a KMS refusal, got {other:?}"),
    }
    // The other tenant goes on.
    let keys = cmk.keys_for(&globex, &["private"]).await.unwrap();
    assert_eq!(read_row(&keys, &rows[1]).as_deref(), Ok("x"));

    // Enabled again in another process: this one recovers once the denial is forgotten.
    child("enable:acme", &keyring, None);
    clock.advance(Duration::from_secs(61));
    let keys = cmk.keys_for(&acme, &["private"]).await.unwrap();
    assert_eq!(read_row(&keys, &rows[0]).as_deref(), Ok("x"));
}

#[tokio::test]
async fn a_shred_in_another_process_survives_a_stale_write_here_and_a_deleted_tombstone() {
    let db = common::db::sqlite().with_cmk_tables();
    let db_path = PathBuf::from(db.url());
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("shared.keyring");
    let row_path = dir.path().join("acme.row");
    let clock = Arc::new(ManualClock::new());
    let (cmk, local) = instance_on(&keyring, &db_path, Some(clock.clone()));
    let c = ctx("acme");
    let key = local.create_key("acme").unwrap();
    cmk.configure_tenant(&c, &TenantConfig::new(c.tenant().clone(), key))
        .await
        .unwrap();
    cmk.onboard(&c).await.unwrap();
    let held = cmk.keys_for(&c, &["private"]).await.unwrap();
    let sealed = held.seal(&schema(), None, &[Some(b"before")]).unwrap();
    save_row(&row_path, "acme", &sealed);
    // The check below can tell a readable row: a fresh process reads it now.
    assert_eq!(
        result_line(&child("read:acme", &keyring, Some(&db_path))),
        "OK before"
    );

    child("shred:acme", &keyring, Some(&db_path));

    // This process still holds the master key's material from before the shred; its next,
    // unrelated keyring write must not bring it back.
    local.create_key("newcomer").unwrap();
    let text = std::fs::read_to_string(&keyring).unwrap();
    assert!(text.contains("version acme 1 destroyed"), "{text}");
    let acme = local
        .list()
        .unwrap()
        .into_iter()
        .find(|k| k.name == "acme")
        .unwrap();
    assert_eq!(acme.versions, vec![(1, VersionState::Destroyed)]);
    assert!(local.list().unwrap().iter().any(|k| k.name == "newcomer"));

    // A database writer deletes what the shred wrote (tombstone and destroyed states).
    db.execute(
        "DELETE FROM cmk_key_registry WHERE tenant_id = 'acme' \
         AND (purpose = 'tombstone' OR state = 'destroyed')",
    );

    // This process: the next renewal re-reads the registry and asks the KMS, which says no.
    clock.advance(20 * MIN);
    cmk.renew_due().await;
    assert!(read_row(&held, &row_path).is_err());
    match cmk.keys_for(&c, &["private"]).await {
        Err(Error::Kms { source, .. }) => assert_eq!(source.kind, KmsErrorKind::NotFound),
        other => panic!("expected the destroyed master key, got {other:?}"),
    }
    // A fresh process cannot read it either.
    let fresh = result_line(&child("read:acme", &keyring, Some(&db_path)));
    assert!(fresh.starts_with("ERR "), "{fresh}");
    assert!(fresh.contains("not_found"), "{fresh}");
}

#[test]
#[ignore = "the child process of the keyring tests; run by them"]
fn child_keyring() {
    let var = |k: &str| std::env::var(k).unwrap();
    let keyring = PathBuf::from(var("CMK_CHILD_KEYRING"));
    let op = var("CMK_CHILD_OP");
    let parts: Vec<&str> = op.split(':').collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match parts.as_slice() {
        ["create", prefix, n] => {
            let kms = LocalKms::open(&keyring).unwrap();
            for i in 0..n.parse::<usize>().unwrap() {
                kms.create_key(&format!("{prefix}-{i}")).unwrap();
            }
        }
        ["disable", name] => LocalKms::open(&keyring).unwrap().disable(name).unwrap(),
        ["enable", name] => LocalKms::open(&keyring).unwrap().enable(name).unwrap(),
        ["shred", tenant] => {
            let (cmk, _) = instance_on(&keyring, Path::new(&var("CMK_CHILD_DB")), None);
            let report = rt.block_on(cmk.shred_tenant(&ctx(tenant))).unwrap();
            assert!(!report.master_keys_destroyed.is_empty());
        }
        ["read", tenant] => {
            let (cmk, _) = instance_on(&keyring, Path::new(&var("CMK_CHILD_DB")), None);
            let c = ctx(tenant);
            let row = keyring.with_file_name(format!("{tenant}.row"));
            let result = match rt.block_on(cmk.keys_for(&c, &["private"])) {
                Ok(keys) => read_row(&keys, &row),
                Err(e) => Err(e.to_string()),
            };
            match result {
                Ok(text) => println!("RESULT OK {text}"),
                Err(e) => println!("RESULT ERR {e}"),
            }
        }
        _ => panic!("unknown child operation `{op}`"),
    }
}
