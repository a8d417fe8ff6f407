//! The embedded preset: one directory that survives restarts, an operator key made once and
//! kept private, and events on disk.
#![allow(missing_docs)] // diesel::table! generates public modules

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cmk::embedded::Embedded;
use cmk::tenant::OperatorKey;
use cmk::{Encrypted, Error, Policy, RequestContext, TenantConfig, TenantId};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    notes (id) {
        id -> BigInt,
        tenant_id -> Text,
        body -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = notes)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Note {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    body: String,
}

const PLANTED: &str = "Planted-Embedded-Okapi";

/// Opens the preset in `dir`, makes sure `acme` is set up, and returns it with a request
/// context and the application's connection to the preset's database.
async fn start(dir: &Path) -> Result<(Embedded, RequestContext, SqliteConnection), Error> {
    let embedded = Embedded::open(dir)?;
    let acme = TenantId::new("acme")?;
    let key = embedded.tenant_key(&acme)?;
    let config =
        TenantConfig::new(acme.clone(), key.clone()).with_class("private", Policy::new(key))?;
    let ctx = RequestContext::new(acme);
    embedded.cmk().ensure_tenant(&ctx, &config).await?;
    let mut conn =
        SqliteConnection::establish(&embedded.database_path().to_string_lossy()).unwrap();
    conn.batch_execute(
        "PRAGMA busy_timeout = 5000; CREATE TABLE IF NOT EXISTS notes (id BIGINT PRIMARY KEY,
         tenant_id TEXT NOT NULL, body BLOB NOT NULL, private_keys BLOB)",
    )
    .unwrap();
    Ok((embedded, ctx, conn))
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_restart_reads_what_the_first_start_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cmk");
    {
        let (embedded, ctx, mut conn) = start(&home).await.unwrap();
        let keys = embedded.cmk().keys_for(&ctx, Note::CLASSES).await.unwrap();
        let note = Note {
            id: 1,
            tenant_id: "acme".into(),
            body: PLANTED.into(),
        };
        cmk::diesel::ops::insert(&mut conn, &keys, &note).unwrap();
    }
    // Private files: the operator key and the keyring are the owner's alone.
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&home.join("operator.key")), 0o600);
    assert_eq!(mode(&home.join("keyring.json")), 0o600);
    let operator_key = std::fs::read(home.join("operator.key")).unwrap();

    // A second start, as after a restart: same keys, same operator key, the row reads.
    let (embedded, ctx, mut conn) = start(&home).await.unwrap();
    assert_eq!(
        std::fs::read(home.join("operator.key")).unwrap(),
        operator_key
    );
    let keys = embedded.cmk().keys_for(&ctx, Note::CLASSES).await.unwrap();
    let read: Note = cmk::diesel::ops::first(&mut conn, &keys, notes::table.find(1)).unwrap();
    assert_eq!(read.body, PLANTED);
    drop(embedded); // flushes the events

    // The events reached the file; the plaintext reached neither it nor the database.
    let holds = |bytes: &[u8]| {
        bytes
            .windows(PLANTED.len())
            .any(|w| w == PLANTED.as_bytes())
    };
    assert!(holds(format!("{{\"body\":\"{PLANTED}\"}}").as_bytes())); // the scan can see it
    let events = std::fs::read(home.join("events.jsonl")).unwrap();
    let text = String::from_utf8_lossy(&events);
    assert!(text.contains("DATA_ENCRYPT") && text.contains("DATA_DECRYPT"));
    assert!(!holds(&events));
    for file in ["cmk.sqlite3", "cmk.sqlite3-wal"] {
        let bytes = std::fs::read(home.join(file)).unwrap_or_default();
        assert!(!holds(&bytes), "{file}");
    }
}

#[tokio::test]
async fn an_operator_key_others_may_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cmk");
    drop(start(&home).await.unwrap());
    let key = home.join("operator.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    match Embedded::open(&home) {
        Err(Error::InvalidConfig(m)) => assert!(m.contains("chmod 600"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Embedded::open(&home).is_ok());
}

#[tokio::test]
async fn another_operator_key_cannot_vouch_for_the_stored_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cmk");
    drop(start(&home).await.unwrap());
    // The stored configuration was signed with the first key: replacing the key (as a start
    // that made a random one would) makes it unverifiable, and cmk refuses to use it.
    let key = home.join("operator.key");
    std::fs::remove_file(&key).unwrap();
    let embedded = Embedded::open(&home).unwrap();
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    match embedded.cmk().keys_for(&ctx, Note::CLASSES).await {
        Err(Error::ConfigIntegrity { .. }) => {}
        other => panic!("expected a configuration integrity failure, got {other:?}"),
    }
}

/// Issue 15 §1.5: a database writer puts back an older, validly signed configuration (here
/// by deleting the newest revision). The restarted preset refuses it: its floor file keeps
/// the highest revision it verified. Without the file (the positive control) it is accepted.
#[tokio::test]
async fn a_restart_refuses_a_configuration_rolled_back_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cmk");
    let (embedded, ctx, mut conn) = start(&home).await.unwrap();
    let keys = embedded.cmk().keys_for(&ctx, Note::CLASSES).await.unwrap();
    let mut config = keys.config().clone();
    config.revision += 1;
    let newest = config.revision;
    embedded
        .cmk()
        .configure_tenant(&ctx, &config)
        .await
        .unwrap();
    embedded.cmk().keys_for(&ctx, Note::CLASSES).await.unwrap();
    drop((keys, embedded)); // the handle holds the event pipeline and its spool lock
    conn.batch_execute(&format!(
        "DELETE FROM cmk_tenant_config WHERE revision = {newest}"
    ))
    .unwrap();
    let restarted = Embedded::open(&home).unwrap();
    match restarted.cmk().keys_for(&ctx, Note::CLASSES).await {
        Err(Error::ConfigRollback { seen, offered, .. }) => {
            assert_eq!((seen, offered), (newest, newest - 1));
        }
        other => panic!("expected a rollback refusal, got {other:?}"),
    }
    drop(restarted);
    std::fs::remove_file(home.join("config-floors.json")).unwrap();
    let forgetful = Embedded::open(&home).unwrap();
    forgetful.cmk().keys_for(&ctx, Note::CLASSES).await.unwrap();
}

#[test]
fn processes_creating_the_operator_key_at_once_agree_on_one() {
    let config = TenantConfig::new(
        TenantId::new("acme").unwrap(),
        cmk::kms::KeyRef::new("local:acme").unwrap(),
    );
    // Many rounds: a reader that found no file while another created it must read that
    // key, not fail (a CI run once hit that window in one round of eight threads).
    for _ in 0..50 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("operator.key");
        let signatures: Vec<[u8; 32]> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| OperatorKey::load_or_create(&path).unwrap()))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().sign(&config).unwrap().mac)
                .collect()
        });
        assert!(signatures.windows(2).all(|w| w[0] == w[1]));
        // Nothing but the key is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
