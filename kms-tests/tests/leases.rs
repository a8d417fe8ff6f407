//! The lease promises end to end on real servers, in two processes: a derived model stored
//! through Diesel (SQLite file shared with a child process), `Cmk` with a 2-second renewal
//! interval and a 6-second hard expiry, and the background renewer running in each process.
//!
//! - SoftHSM2: the HSM owner clears the key's decrypt permission: both processes stop reading
//!   that tenant at the next renewal while another tenant goes on; permission restored, both
//!   recover without a restart.
//! - PyKMIP: the tenant revokes its key (KMIP `Revoke`): both processes stop reading it; then
//!   the server becomes unreachable (a proxy in front of it stops): both ride the outage out
//!   until the hard expiry, then fail with an error naming the tenant and the provider.
//!
//! Each process samples both tenants every 100 ms on a shared wall-clock schedule; the
//! assertions read the samples of both.
#![cfg(any(feature = "pkcs11", feature = "kmip"))]
#![allow(missing_docs)] // diesel::table! generates public items

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cmk::diesel::{DieselConfigStore, DieselRegistry, StoreConnection};
use cmk::kms::{KeyRef, Kms, KmsRouter};
use cmk::secret::SecretKey;
use cmk::tenant::{ConfigVerifier, OperatorKey};
use cmk::{Cmk, CmkSettings, Encrypted, LeasePolicy, RequestContext, TenantConfig, TenantId};
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
#[diesel(table_name = notes, check_for_backend(diesel::sqlite::Sqlite))]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Note {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    body: String,
}

const RENEWAL: Duration = Duration::from_secs(2);
const HARD: Duration = Duration::from_secs(6);
const TENANTS: [&str; 2] = ["acme", "globex"];

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn connect(db: &Path) -> Arc<std::sync::Mutex<SqliteConnection>> {
    let mut c = SqliteConnection::establish(db.to_str().unwrap()).unwrap();
    diesel::sql_query("PRAGMA busy_timeout = 10000")
        .execute(&mut c)
        .unwrap();
    Arc::new(std::sync::Mutex::new(c))
}

/// A `Cmk` as every process of the deployment builds it: the shared database, the provider,
/// short leases, and a denial remembered for 2 s.
fn instance(db: &Path, kms: Arc<dyn Kms>) -> Cmk {
    let conn = connect(db);
    let verifier = ConfigVerifier::new(OperatorKey::new(SecretKey::from_bytes([11; 32])));
    Cmk::builder()
        .kms(Arc::new(KmsRouter::new().with(kms)))
        .registry(Arc::new(DieselRegistry::new(conn.clone())))
        .configs(Arc::new(DieselConfigStore::new(conn, verifier)))
        .settings(CmkSettings::default().with_denial_ttl(Duration::from_secs(2)))
        .build()
        .unwrap()
}

/// Creates the tables, onboards both tenants under their keys and stores one note each.
async fn set_up(db: &Path, kms: Arc<dyn Kms>, keys: [KeyRef; 2]) {
    connect(db).lock().unwrap().create_cmk_tables().unwrap();
    diesel::sql_query(
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, body BLOB NOT NULL, \
         private_keys BLOB)",
    )
    .execute(&mut *connect(db).lock().unwrap())
    .unwrap();
    let cmk = instance(db, kms);
    for (i, (tenant, key)) in TENANTS.iter().zip(keys).enumerate() {
        let ctx = RequestContext::new(TenantId::new(*tenant).unwrap());
        let mut config = TenantConfig::new(ctx.tenant().clone(), key);
        for policy in config.policies.values_mut() {
            policy.lease = LeasePolicy::Leased {
                hard_expiry_secs: HARD.as_secs(),
                renewal_secs: RENEWAL.as_secs(),
                max_uses: None,
            };
        }
        cmk.configure_tenant(&ctx, &config).await.unwrap();
        cmk.onboard(&ctx).await.unwrap();
        let keys = cmk.keys_for(&ctx, Note::CLASSES).await.unwrap();
        let note = Note {
            id: i as i64 + 1,
            tenant_id: (*tenant).into(),
            body: format!("{tenant}'s note"),
        };
        let conn = connect(db);
        let mut conn = conn.lock().unwrap();
        cmk::diesel::ops::insert(&mut *conn, &keys, &note).unwrap();
    }
}

/// One sample: milliseconds since the epoch, then per tenant `None` (read) or the error.
type Sample = (u64, [Option<String>; 2]);

/// Reads both tenants' notes every 100 ms until `end_ms`, with the renewer running.
async fn observe(db: &Path, kms: Arc<dyn Kms>, end_ms: u64, mut each: impl FnMut(&Sample)) {
    let cmk = instance(db, kms);
    let renewer = cmk.spawn_renewer(Duration::from_millis(250));
    let conn = connect(db);
    while now_ms() < end_ms {
        let mut outcome: [Option<String>; 2] = [None, None];
        for (i, tenant) in TENANTS.iter().enumerate() {
            let ctx = RequestContext::new(TenantId::new(*tenant).unwrap());
            let read = match cmk.keys_for(&ctx, Note::CLASSES).await {
                Ok(keys) => {
                    let mut conn = conn.lock().unwrap();
                    cmk::diesel::ops::first::<Note, _, _>(
                        &mut *conn,
                        &keys,
                        notes::table.filter(notes::id.eq(i as i64 + 1)),
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|n| {
                        (n.body == format!("{tenant}'s note"))
                            .then_some(())
                            .ok_or_else(|| "wrong plaintext".to_string())
                    })
                }
                Err(e) => Err(e.to_string()),
            };
            outcome[i] = read.err();
        }
        each(&(now_ms(), outcome));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    renewer.abort();
}

/// Starts the child reader (this binary's ignored `child_reader`); [`child_samples`] reads
/// what it printed.
fn spawn_child(
    provider: &str,
    db: &Path,
    end_ms: u64,
    extra: &[(&str, String)],
) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--ignored", "--exact", "child_reader", "--nocapture"])
        .env("CMK_CHILD_PROVIDER", provider)
        .env("CMK_CHILD_DB", db)
        .env("CMK_CHILD_END_MS", end_ms.to_string())
        .stdout(Stdio::piped());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

fn child_samples(child: std::process::Child) -> Vec<Sample> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the child reader failed");
    BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.strip_prefix("SAMPLE ").map(str::to_string))
        .map(|l| {
            let mut parts = l.splitn(3, '\t');
            let t = parts.next().unwrap().parse().unwrap();
            let mut outcome: [Option<String>; 2] = [None, None];
            for slot in &mut outcome {
                let v = parts.next().unwrap_or("");
                *slot = (v != "ok").then(|| v.to_string());
            }
            (t, outcome)
        })
        .collect()
}

/// The samples of `tenant` (0 or 1) between `from` and `to` (ms), as (time, error).
fn window(samples: &[Sample], tenant: usize, from: u64, to: u64) -> Vec<(u64, Option<&str>)> {
    samples
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(t, o)| (*t, o[tenant].as_deref()))
        .collect()
}

fn all_read(samples: &[Sample], tenant: usize, from: u64, to: u64, what: &str) {
    let w = window(samples, tenant, from, to);
    assert!(w.len() >= 5, "{what}: only {} samples", w.len());
    if let Some((t, Some(e))) = w.iter().find(|(_, e)| e.is_some()) {
        panic!(
            "{what}: {} failed at +{} ms: {e}",
            TENANTS[tenant],
            t - from
        );
    }
}

/// Checks that `tenant` first fails within `bound` after `from` and that every sample after
/// that until `to` fails too; returns the last error (the first may be a handle's "lease
/// revoked", later ones are the key fetch's own error).
fn stops_by(
    samples: &[Sample],
    tenant: usize,
    from: u64,
    to: u64,
    bound: Duration,
    what: &str,
) -> String {
    let w = window(samples, tenant, from, to);
    let first = w
        .iter()
        .position(|(_, e)| e.is_some())
        .unwrap_or_else(|| panic!("{what}: {} never stopped", TENANTS[tenant]));
    let delay = Duration::from_millis(w[first].0 - from);
    eprintln!(
        "{what}: {} stopped after {delay:?} (bound {bound:?})",
        TENANTS[tenant]
    );
    assert!(
        delay <= bound,
        "{what}: stopped after {delay:?}, bound {bound:?}"
    );
    assert!(
        w[first..].iter().all(|(_, e)| e.is_some()),
        "{what}: {} read again after stopping",
        TENANTS[tenant]
    );
    w.last()
        .and_then(|(_, e)| *e)
        .unwrap_or_default()
        .to_string()
}

/// Sampling by the parent (in this process) and the child, side by side.
async fn run_both(
    provider: &str,
    db: &Path,
    kms: Arc<dyn Kms>,
    end_ms: u64,
    extra: &[(&str, String)],
    script: impl FnOnce() -> tokio::task::JoinHandle<()>,
) -> [Vec<Sample>; 2] {
    let child = spawn_child(provider, db, end_ms, extra);
    let actions = script();
    let mut mine = Vec::new();
    observe(db, kms, end_ms, |s| mine.push(s.clone())).await;
    actions.await.unwrap();
    let theirs = tokio::task::spawn_blocking(move || child_samples(child))
        .await
        .unwrap();
    [mine, theirs]
}

async fn sleep_until(ms: u64) {
    let now = now_ms();
    if ms > now {
        tokio::time::sleep(Duration::from_millis(ms - now)).await;
    }
}

#[cfg(feature = "pkcs11")]
fn softhsm() -> Arc<cmk::kms::pkcs11::Pkcs11Kms> {
    let required = cmk_kms_tests::required;
    Arc::new(
        cmk::kms::pkcs11::Pkcs11Kms::new(required("CMK_TEST_PKCS11_MODULE"))
            .unwrap()
            .with_token(
                required("CMK_TEST_PKCS11_TOKEN"),
                required("CMK_TEST_PKCS11_PIN"),
            ),
    )
}

#[cfg(feature = "pkcs11")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_revocation_stops_both_processes_at_the_next_renewal_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let hsm = softhsm();
    let token = cmk_kms_tests::required("CMK_TEST_PKCS11_TOKEN");
    let run = now_ms();
    let mut keys = Vec::new();
    for t in TENANTS {
        keys.push(
            hsm.create_key(&token, &format!("lease-{t}-{run}"))
                .await
                .unwrap(),
        );
    }
    let keys: [KeyRef; 2] = keys.try_into().unwrap();
    set_up(&db, hsm.clone(), keys.clone()).await;

    let start = now_ms() + 3_000; // the child is reading by then
    let (revoke, restore, end) = (start + 2_000, start + 8_000, start + 14_000);
    let acme = keys[0].clone();
    let owner = hsm.clone();
    let [mine, theirs] = run_both("pkcs11", &db, hsm.clone(), end, &[], move || {
        tokio::spawn(async move {
            sleep_until(revoke).await;
            owner.set_permitted(&acme, false).await.unwrap();
            sleep_until(restore).await;
            owner.set_permitted(&acme, true).await.unwrap();
        })
    })
    .await;
    for (who, s) in [("this process", &mine), ("the child process", &theirs)] {
        all_read(
            s,
            0,
            start,
            revoke,
            &format!("{who}, before the revocation"),
        );
        let bound = RENEWAL + Duration::from_millis(1_500);
        let err = stops_by(s, 0, revoke, restore, bound, &format!("{who}, revoked"));
        assert!(err.contains("acme") && err.contains("pkcs11"), "{err}");
        all_read(s, 1, start, end, &format!("{who}, the other tenant"));
        // Restored: the denial is forgotten after 2 s, the next fetch succeeds.
        let recovered = restore + 2_000 + RENEWAL.as_millis() as u64 + 1_000;
        all_read(s, 0, recovered, end, &format!("{who}, after the restore"));
    }
}

/// A TCP proxy on loopback in front of `upstream`; clearing `up` stops it (new connections
/// are closed at once, as a stopped server's would be refused).
#[cfg(feature = "kmip")]
struct Proxy {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
}

#[cfg(feature = "kmip")]
impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let serving = up.clone();
        std::thread::spawn(move || {
            // Bounded: the test makes a few hundred connections at most.
            for client in listener.incoming().take(5_000) {
                let Ok(client) = client else { break };
                if !serving.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, up }
    }
}

#[cfg(feature = "kmip")]
fn kmip_via(addr: &str) -> Arc<cmk::kms::kmip::KmipKms> {
    let pki = std::path::PathBuf::from(cmk_kms_tests::required("CMK_TEST_KMIP_PKI"));
    let settings = cmk::kms::kmip::KmipSettings::new(
        addr,
        "127.0.0.1",
        pki.join("ca.crt"),
        pki.join("client.crt"),
        pki.join("client.key"),
    )
    .with_timeouts(Duration::from_millis(500), Duration::from_secs(1));
    Arc::new(cmk::kms::kmip::KmipKms::new(settings).unwrap())
}

#[cfg(feature = "kmip")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kmip_revocation_stops_both_processes_and_an_outage_is_ridden_out_until_hard_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let proxy = Proxy::start(cmk_kms_tests::required("CMK_TEST_KMIP_ADDR"));
    let kmip = kmip_via(&proxy.addr.to_string());
    let keys: [KeyRef; 2] = [
        kmip.create_key().await.unwrap(),
        kmip.create_key().await.unwrap(),
    ];
    set_up(&db, kmip.clone(), keys.clone()).await;

    let start = now_ms() + 3_000;
    let (revoke, cut, end) = (start + 2_000, start + 8_000, start + 18_000);
    let acme = keys[0].clone();
    let (tenant_side, up) = (kmip.clone(), proxy.up.clone());
    let extra = [("CMK_CHILD_KMIP_ADDR", proxy.addr.to_string())];
    let [mine, theirs] = run_both("kmip", &db, kmip.clone(), end, &extra, move || {
        tokio::spawn(async move {
            sleep_until(revoke).await;
            tenant_side.revoke(&acme, false).await.unwrap();
            sleep_until(cut).await;
            up.store(false, Ordering::SeqCst);
        })
    })
    .await;
    for (who, s) in [("this process", &mine), ("the child process", &theirs)] {
        all_read(
            s,
            0,
            start,
            revoke,
            &format!("{who}, before the revocation"),
        );
        let bound = RENEWAL + Duration::from_millis(1_500);
        stops_by(s, 0, revoke, end, bound, &format!("{who}, revoked"));
        // The outage: globex reads on from its lease (renewed at most one interval and a
        // renewer period before the cut) and stops by the hard expiry.
        let ridden = cut + (HARD - RENEWAL - Duration::from_millis(500)).as_millis() as u64;
        all_read(
            s,
            1,
            start,
            ridden,
            &format!("{who}, riding the outage out"),
        );
        let bound = HARD + Duration::from_millis(1_500);
        let err = stops_by(s, 1, cut, end, bound, &format!("{who}, at hard expiry"));
        assert!(err.contains("globex") && err.contains("kmip"), "{err}");
    }
}

#[test]
#[ignore = "the child process of the lease tests; run by them"]
fn child_reader() {
    let var = |k: &str| std::env::var(k).unwrap();
    let db = std::path::PathBuf::from(var("CMK_CHILD_DB"));
    let end: u64 = var("CMK_CHILD_END_MS").parse().unwrap();
    let kms: Arc<dyn Kms> = match var("CMK_CHILD_PROVIDER").as_str() {
        #[cfg(feature = "pkcs11")]
        "pkcs11" => softhsm(),
        #[cfg(feature = "kmip")]
        "kmip" => kmip_via(&var("CMK_CHILD_KMIP_ADDR")),
        other => panic!("no provider `{other}` in this build"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(observe(&db, kms, end, |(t, outcome)| {
        let show = |o: &Option<String>| {
            o.clone()
                .unwrap_or_else(|| "ok".into())
                .replace(['\t', '\n'], " ")
        };
        println!("SAMPLE {t}\t{}\t{}", show(&outcome[0]), show(&outcome[1]));
    }));
}
