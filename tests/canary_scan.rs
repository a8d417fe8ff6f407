//! One canary scan over everything a workload writes (issue 15 §4): the database file, its
//! WAL and a dump of it, the events file and the spool, the `tracing` output, every error's
//! text and `Debug`, panic messages, and the `Debug` output of cmk's public types. Plaintext
//! canaries and key bytes (master keys, the operator key, KEKs, index and deterministic
//! roots) are searched raw, as hex and as base64 at every alignment; each channel first
//! proves, on a planted value, that the scan finds what is there.
//!
//! The keyring file and the operator key file are where those keys live by design (the
//! local KMS and the embedded preset's deployment secret); they are the one place not
//! scanned for key bytes.

#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::kms::Kms;
use cmk::registry::{KeyRegistry, KeyState, entry_context};
use cmk::{Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
use common::dump::find_bytes_in_dump;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    patients (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        diagnosis -> Nullable<CiphertextSql>,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = patients)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Patient {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    email: String,
    #[cmk(class = "restricted")]
    diagnosis: Option<String>,
}

const PLANTED: &str = "Planted-Control-Quokka-0917";

fn canary(kind: &str, i: usize) -> String {
    format!("Canary-{kind}-{i:02}-Narwhal")
}

/// A writer for the `tracing` output that keeps it in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Everything under `dir`, file by file (the keyring and operator key files apart).
fn files_under(dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("keyring") || name.starts_with(".keyring") || name == "operator.key" {
            continue;
        }
        out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
}

/// Every key a reader of the database could want: the tenant's master key (from the keyring
/// file), the operator key, and each KEK and root, unwrapped from the registry.
async fn key_bytes(embedded: &Embedded, tenant: &TenantId) -> Vec<(String, Vec<u8>)> {
    let mut keys = Vec::new();
    let keyring = std::fs::read_to_string(embedded.dir().join("keyring.json")).unwrap();
    for line in keyring.lines().filter(|l| l.starts_with("version ")) {
        let hex = line.split_whitespace().nth(3).unwrap();
        if hex != "destroyed" {
            keys.push((line[..line.len() - 64].to_string(), hex_decode(hex)));
        }
    }
    let operator = std::fs::read_to_string(embedded.dir().join("operator.key")).unwrap();
    keys.push(("operator key".into(), hex_decode(operator.trim())));
    let source = Arc::new(Mutex::new(connect(embedded)));
    let registry = cmk::diesel::DieselRegistry::new(source);
    for e in registry.entries(tenant).await.unwrap() {
        if e.state == KeyState::Destroyed || e.wrapped.is_empty() {
            continue;
        }
        let context = entry_context(
            e.purpose, tenant, &e.policy, e.kek_id, e.version, &e.cmk_ref,
        );
        let material = embedded
            .kms()
            .unwrap(&e.cmk_ref, &e.wrapped, &context)
            .await
            .unwrap();
        let label = format!("{} {} v{}", e.purpose.as_str(), e.policy, e.version);
        keys.push((label, material.expose_secret().to_vec()));
    }
    assert!(
        keys.len() >= 6,
        "master key, operator key, KEKs and roots: {}",
        keys.len()
    );
    keys
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn connect(embedded: &Embedded) -> SqliteConnection {
    let mut conn =
        SqliteConnection::establish(&embedded.database_path().to_string_lossy()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000;").unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_a_workload_writes_holds_plaintext_or_key_bytes() {
    let log = Captured::default();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(log.clone())
        .with_ansi(false)
        .init();
    let panics = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = panics.clone();
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("{info}");
        seen.lock().unwrap().push(info.to_string());
    }));

    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cmk");
    let embedded = Embedded::open(&home).unwrap();
    let acme = TenantId::new("acme").unwrap();
    let key = embedded.tenant_key(&acme).unwrap();
    let config = TenantConfig::new(acme.clone(), key.clone())
        .with_class(
            "private",
            Policy::new(key.clone()).with_search(SearchMode::BlindIndex),
        )
        .unwrap()
        .with_class("restricted", Policy::new(key).with_readers(["doctor"]))
        .unwrap();
    let doctor = RequestContext::new(acme.clone())
        .with_role("doctor")
        .with_request_id(PLANTED); // events name the request: the events' planted control
    embedded
        .cmk()
        .ensure_tenant(&doctor, &config)
        .await
        .unwrap();
    let mut conn = connect(&embedded);
    conn.batch_execute(
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, email BLOB NOT NULL, \
           email_bidx BLOB NOT NULL, diagnosis BLOB, private_keys BLOB, restricted_keys BLOB); \
         CREATE TABLE planted (note TEXT NOT NULL);",
    )
    .unwrap();
    diesel::sql_query(format!("INSERT INTO planted VALUES ('{PLANTED}')"))
        .execute(&mut conn)
        .unwrap();

    // The workload: inserts, reads, lookups, updates, a partial read, and failures.
    let mut errors: Vec<String> = Vec::new();
    let mut debug: Vec<String> = Vec::new();
    let keys = embedded
        .cmk()
        .keys_for(&doctor, Patient::CLASSES)
        .await
        .unwrap();
    let people: Vec<Patient> = (0..20)
        .map(|i| Patient {
            id: i as i64,
            tenant_id: "acme".into(),
            email: canary("email", i),
            diagnosis: (i % 3 != 0).then(|| canary("diagnosis", i)),
        })
        .collect();
    ops::insert_many(&mut conn, &keys, &people).unwrap();
    let all: Vec<Patient> =
        ops::load_all(&mut conn, &keys, patients::table.order(patients::id)).unwrap();
    assert_eq!(all, people);
    let found: Patient = ops::first(
        &mut conn,
        &keys,
        patients::table.filter(Patient::by_email(&keys, canary("email", 4).as_bytes()).unwrap()),
    )
    .unwrap();
    assert_eq!(found, people[4]);
    ops::update_with(
        &mut conn,
        &keys,
        patients::table.find(5),
        |p: &mut Patient| {
            p.diagnosis = Some(canary("updated", 5));
        },
    )
    .unwrap();
    let nurse = keys
        .with_context(RequestContext::new(acme.clone()).with_role("nurse"))
        .unwrap();
    let sealed: SealedPatient = patients::table.find(1).first(&mut conn).unwrap();
    let view = Patient::unseal_partial(&sealed, &nurse).unwrap();
    debug.push(format!("{view:?}"));
    // Failures, each kept as its text and Debug: refused class, tampered row, copied index,
    // an unknown tenant, a value too large.
    let refused = Patient::unseal(&sealed, &nurse).unwrap_err();
    errors.push(format!("{refused} {refused:?}"));
    diesel::sql_query("UPDATE patients SET email = substr(email, 1, 40) || x'00' WHERE id = 2")
        .execute(&mut conn)
        .unwrap();
    let tampered =
        ops::first::<Patient, _, _>(&mut conn, &keys, patients::table.find(2)).unwrap_err();
    errors.push(format!("{tampered} {tampered:?}"));
    diesel::sql_query(
        "UPDATE patients SET email_bidx = (SELECT email_bidx FROM patients WHERE id = 3) WHERE id = 6",
    )
    .execute(&mut conn)
    .unwrap();
    let mismatch =
        ops::first::<Patient, _, _>(&mut conn, &keys, patients::table.find(6)).unwrap_err();
    errors.push(format!("{mismatch} {mismatch:?}"));
    let globex = TenantId::new("globex").unwrap();
    let other = embedded
        .cmk()
        .keys_for(&RequestContext::new(globex), Patient::CLASSES)
        .await
        .unwrap_err();
    errors.push(format!("{other} {other:?}"));
    let mut huge = people[7].clone();
    huge.diagnosis = Some(format!("{}{}", canary("huge", 7), "x".repeat(17 << 20)));
    let too_large = ops::insert(&mut conn, &keys, &Patient { id: 99, ..huge }).unwrap_err();
    errors.push(
        format!("{too_large} {too_large:?}")
            .chars()
            .take(4096)
            .collect(),
    );
    errors.push(format!("{:?}", cmk::Error::InvalidInput(PLANTED.into())));

    // Debug of the public types a workload holds.
    let stored_keys = Patient::key_columns(&sealed);
    debug.push(format!(
        "{:?} {:?} {keys:?} {nurse:?} {sealed:?} {stored_keys:?} {:?} {:?}",
        embedded.cmk(),
        embedded.kms(),
        config,
        doctor,
    ));
    let value = canary("email", 0);
    let row_values = cmk::rows::RowValues {
        row_id: None,
        values: &[Some(value.as_bytes())],
    };
    debug.push(format!("{row_values:?}"));
    let secret = cmk::secret::SecretBytes::new(canary("secret", 0).into_bytes());
    debug.push(format!(
        "{secret:?} {:?}",
        cmk::rows::Revealed::Value(secret.clone())
    ));
    debug.push(format!("{PLANTED:?}"));
    // A panic, caught: its message is scanned like the rest.
    let _ = std::thread::spawn(|| std::panic::panic_any(PLANTED.to_string())).join();

    let secrets = key_bytes(&embedded, &acme).await;
    drop((keys, nurse));
    embedded.pipeline().flush(Duration::from_secs(10));
    // The files while the database is open (its WAL exists only then), and again after.
    let mut channels: Vec<(String, Vec<u8>)> = Vec::new();
    files_under(dir.path(), &mut channels);
    drop(conn);
    let dump = home.with_file_name("dump.sqlite3");
    connect(&embedded)
        .batch_execute(&format!("VACUUM INTO '{}'", dump.display()))
        .unwrap();
    embedded.pipeline().shutdown(Duration::from_secs(10));
    drop(embedded);

    files_under(dir.path(), &mut channels);
    assert!(
        channels.iter().any(|(n, _)| n.ends_with("cmk.sqlite3-wal")),
        "the WAL is scanned"
    );
    assert!(channels.iter().any(|(n, _)| n.ends_with("events.jsonl")));
    channels.push(("tracing output".into(), log.0.lock().unwrap().clone()));
    channels.push(("errors".into(), errors.join("\n").into_bytes()));
    channels.push((
        "panic messages".into(),
        panics.lock().unwrap().join("\n").into_bytes(),
    ));
    channels.push(("Debug output".into(), debug.join("\n").into_bytes()));

    // Positive controls: the planted value is found in each kind of channel.
    for must in [
        "dump.sqlite3",
        "events.jsonl",
        "errors",
        "panic messages",
        "Debug output",
    ] {
        let (name, bytes) = channels.iter().find(|(n, _)| n.ends_with(must)).unwrap();
        assert!(
            find_bytes_in_dump(bytes, PLANTED.as_bytes()).is_some(),
            "{name}: the planted value is not found"
        );
    }
    // The key scan finds a key where it is: the master key, as hex in the keyring file.
    let keyring = std::fs::read(home.join("keyring.json")).unwrap();
    assert_eq!(find_bytes_in_dump(&keyring, &secrets[0].1), Some("hex"));
    tracing::info!("{PLANTED}");
    let traced = log.0.lock().unwrap().clone();
    assert!(
        find_bytes_in_dump(&traced, PLANTED.as_bytes()).is_some(),
        "tracing"
    );

    let mut plaintexts: Vec<String> = people
        .iter()
        .flat_map(|p| [Some(p.email.clone()), p.diagnosis.clone()])
        .flatten()
        .collect();
    plaintexts.extend([canary("updated", 5), canary("huge", 7), canary("secret", 0)]);
    let mut found = Vec::new();
    for (name, bytes) in &channels {
        for p in &plaintexts {
            if let Some(how) = find_bytes_in_dump(bytes, p.as_bytes()) {
                found.push(format!("plaintext {p} in {name} ({how})"));
            }
        }
        for (label, k) in &secrets {
            if let Some(how) = find_bytes_in_dump(bytes, k) {
                found.push(format!("key bytes of {label} in {name} ({how})"));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
    println!(
        "{} channels scanned ({} bytes) for {} plaintexts and {} keys",
        channels.len(),
        channels.iter().map(|(_, b)| b.len()).sum::<usize>(),
        plaintexts.len(),
        secrets.len()
    );
}
