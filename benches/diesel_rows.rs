//! 100,000 rows through Diesel, plaintext against cmk, in one run: insert in batches of
//! 1,000, then select and unseal in batches of 1,000 (unsealing on one thread, and on two
//! worker threads fed by the loading thread). SQLite always; PostgreSQL when built with
//! `--features postgres` and `CMK_TEST_POSTGRES_URL` is set (the run says which ran).
//!
//! The model: three 32-byte fields in two classes (`alpha`, `bravo`: private; `charlie`:
//! restricted), database-assigned ids (no row binding, as the hand-written envelope). CPU
//! time is this process's (all threads, user + system): the database server's CPU is not
//! in it. KMS calls are counted during the timed phases: with a warm lease there are
//! none.
//!
//! `cargo bench --bench diesel_rows` (SQLite), or with PostgreSQL:
//! `eval "$(bash scripts/services)"; cargo bench --bench diesel_rows --features postgres`
//! `CMK_BENCH_ROWS=<n>` changes the row count.

#![allow(missing_docs)] // diesel::table! generates public modules

extern crate cmk as cmk_core; // the shared baseline names the core crate `cmk_core`

#[path = "../cmk-core/benches/common/baseline.rs"]
mod baseline;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cmk::diesel::ops;
use cmk::kms::local::LocalKms;
use cmk::kms::{KeyRef, Kms, KmsError};
use cmk::registry::MemoryRegistry;
use cmk::secret::{SecretBytes, SecretKey};
use cmk::tenant::{MemoryConfigStore, OperatorKey};
use cmk::{Cmk, Encrypted, RequestContext, TenantConfig, TenantId, TenantKeys};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

const BATCH: usize = 1_000;

diesel::table! {
    plain_rows (id) {
        id -> BigInt,
        tenant_id -> Text,
        alpha -> Text,
        bravo -> Text,
        charlie -> Text,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    bench_rows (id) {
        id -> BigInt,
        tenant_id -> Text,
        alpha -> CiphertextSql,
        bravo -> CiphertextSql,
        charlie -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = plain_rows)]
struct Plain {
    id: i64,
    tenant_id: String,
    alpha: String,
    bravo: String,
    charlie: String,
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = bench_rows)]
#[cmk(tenant = tenant_id, id = id, ids = "db")]
struct Row {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    alpha: String,
    #[cmk(class = "private")]
    bravo: String,
    #[cmk(class = "restricted")]
    charlie: String,
}

/// Counts unwraps on their way to the local KMS.
#[derive(Debug)]
struct CountingKms {
    inner: LocalKms,
    unwraps: AtomicUsize,
}

#[async_trait::async_trait]
impl Kms for CountingKms {
    fn provider(&self) -> &str {
        self.inner.provider()
    }
    async fn wrap(&self, key: &KeyRef, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.inner.wrap(key, plaintext, aad).await
    }
    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        aad: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        self.inner.unwrap(key, wrapped, aad).await
    }
}

/// This process's CPU time, all threads, user + system.
fn cpu_time() -> Duration {
    cpu_time::ProcessTime::now().as_duration()
}

#[derive(Clone, Copy)]
struct Measure {
    wall: Duration,
    cpu: Duration,
}

fn measure(f: impl FnOnce()) -> Measure {
    let (c0, w0) = (cpu_time(), Instant::now());
    f();
    Measure {
        wall: w0.elapsed(),
        cpu: cpu_time().saturating_sub(c0),
    }
}

fn value(i: usize, field: u8) -> String {
    // 32 bytes, distinct per row and field.
    format!("{field}{i:0>31}")
}

struct Fixture {
    cmk_kms: Arc<CountingKms>,
    ctx: RequestContext,
    keys: Arc<TenantKeys>,
    plain: Vec<Plain>,
    rows: Vec<Row>,
}

async fn fixture(n: usize) -> Fixture {
    let kms = Arc::new(CountingKms {
        inner: LocalKms::in_memory(),
        unwraps: AtomicUsize::new(0),
    });
    let cmk = Cmk::builder()
        .kms(kms.clone())
        .registry(Arc::new(MemoryRegistry::new()))
        .configs(Arc::new(MemoryConfigStore::new(OperatorKey::new(
            SecretKey::random().unwrap(),
        ))))
        .build()
        .unwrap();
    let ctx = RequestContext::new(TenantId::new("acme").unwrap());
    let key = kms.inner.create_key("acme").unwrap();
    cmk.configure_tenant(&ctx, &TenantConfig::new(ctx.tenant().clone(), key))
        .await
        .unwrap();
    cmk.onboard(&ctx).await.unwrap();
    let keys = cmk.keys_for(&ctx, Row::CLASSES).await.unwrap();
    let plain: Vec<Plain> = (0..n)
        .map(|i| Plain {
            id: i as i64 + 1,
            tenant_id: "acme".into(),
            alpha: value(i, 1),
            bravo: value(i, 2),
            charlie: value(i, 3),
        })
        .collect();
    let rows = plain
        .iter()
        .map(|p| Row {
            id: p.id,
            tenant_id: p.tenant_id.clone(),
            alpha: p.alpha.clone(),
            bravo: p.bravo.clone(),
            charlie: p.charlie.clone(),
        })
        .collect();
    Fixture {
        cmk_kms: kms,
        ctx,
        keys,
        plain,
        rows,
    }
}

struct Results {
    plain_insert: Measure,
    cmk_insert: Measure,
    plain_select: Measure,
    cmk_select_1: Measure,
    cmk_select_2: Measure,
    kms_calls: usize,
}

macro_rules! define_run {
    ($name:ident, $conn:ty) => {
        fn $name(conn: &mut $conn, fx: &Fixture, blob: &str) -> Results {
    conn.batch_execute(&format!(
        "CREATE TABLE plain_rows (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha TEXT NOT NULL, bravo TEXT NOT NULL, charlie TEXT NOT NULL);
         CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha {blob} NOT NULL, bravo {blob} NOT NULL, charlie {blob} NOT NULL, private_keys {blob}, restricted_keys {blob});"
    ))
    .unwrap();
    let n = fx.plain.len();
    let (ctx, keys) = (&fx.ctx, &fx.keys);
    let calls_before = fx.cmk_kms.unwraps.load(Ordering::Relaxed);

    let plain_insert = measure(|| {
        for batch in fx.plain.chunks(BATCH) {
            conn.transaction(|c| diesel::insert_into(plain_rows::table).values(batch).execute(c))
                .unwrap();
        }
    });
    let cmk_insert = measure(|| {
        for batch in fx.rows.chunks(BATCH) {
            conn.transaction::<_, cmk::diesel::Error, _>(|c| {
                ops::insert_many(c, ctx, keys, bench_rows::table, batch)
            })
            .unwrap();
        }
    });
    let ranges: Vec<(i64, i64)> = (0..n)
        .step_by(BATCH)
        .map(|lo| (lo as i64 + 1, (lo + BATCH).min(n) as i64))
        .collect();
    let plain_select = measure(|| {
        for &(lo, hi) in &ranges {
            let rows: Vec<Plain> = plain_rows::table
                .filter(plain_rows::id.between(lo, hi))
                .load(conn)
                .unwrap();
            black_box(rows);
        }
    });
    let cmk_select_1 = measure(|| {
        for &(lo, hi) in &ranges {
            let rows: Vec<Row> =
                ops::load_all(conn, ctx, keys, bench_rows::table.filter(bench_rows::id.between(lo, hi)))
                    .unwrap();
            black_box(rows);
        }
    });
    // The loading thread feeds sealed batches to two unsealing workers.
    let cmk_select_2 = measure(|| {
        let (tx, rx) = mpsc::sync_channel::<Vec<SealedRow>>(4);
        let rx = Arc::new(Mutex::new(rx));
        std::thread::scope(|s| {
            for _ in 0..2 {
                let rx = Arc::clone(&rx);
                s.spawn(move || loop {
                    let Ok(batch) = rx.lock().unwrap().recv() else { break };
                    for r in Row::unseal_many(&batch, ctx, keys) {
                        black_box(r.unwrap());
                    }
                });
            }
            for &(lo, hi) in &ranges {
                let sealed: Vec<SealedRow> = bench_rows::table
                    .filter(bench_rows::id.between(lo, hi))
                    .load(conn)
                    .unwrap();
                tx.send(sealed).unwrap();
            }
            drop(tx);
        });
    });
    Results {
        plain_insert,
        cmk_insert,
        plain_select,
        cmk_select_1,
        cmk_select_2,
        kms_calls: fx.cmk_kms.unwraps.load(Ordering::Relaxed) - calls_before,
    }
}
    };
}

define_run!(run_sqlite, SqliteConnection);
#[cfg(feature = "postgres")]
define_run!(run_postgres, PgConnection);

fn per_row(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n as f64
}

fn report(backend: &str, r: &Results, n: usize, envelope: (f64, f64)) {
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!("\n== {backend}: {n} rows, batches of {BATCH} ==");
    println!(
        "{:<32} {:>9} {:>9} {:>12}",
        "phase", "wall s", "cpu s", "wall ratio"
    );
    let line = |name: &str, m: Measure, base: Option<Measure>| {
        let r = base
            .map(|b| format!("{:.2}x", ratio(m.wall, b.wall)))
            .unwrap_or_default();
        println!(
            "{name:<32} {:>9.3} {:>9.2} {r:>12}",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64()
        );
    };
    line("insert, plaintext Diesel", r.plain_insert, None);
    line("insert, cmk", r.cmk_insert, Some(r.plain_insert));
    line("select, plaintext Diesel", r.plain_select, None);
    line(
        "select+unseal, cmk, 1 thread",
        r.cmk_select_1,
        Some(r.plain_select),
    );
    line(
        "select+unseal, cmk, 2 workers",
        r.cmk_select_2,
        Some(r.plain_select),
    );
    let added_seal = per_row(r.cmk_insert.cpu.saturating_sub(r.plain_insert.cpu), n);
    let added_unseal = per_row(r.cmk_select_1.cpu.saturating_sub(r.plain_select.cpu), n);
    println!(
        "CPU cmk adds per row: insert {added_seal:.0} ns ({:.2}x the hand-written envelope's {:.0} ns), select {added_unseal:.0} ns ({:.2}x its {:.0} ns)",
        added_seal / envelope.0,
        envelope.0,
        added_unseal / envelope.1,
        envelope.1
    );
    // What the hand-written envelope alone would cost on one thread, added to plaintext.
    let floor = |plain: Measure, env_ns: f64| {
        (plain.wall.as_secs_f64() + env_ns * n as f64 / 1e9) / plain.wall.as_secs_f64()
    };
    println!(
        "one-thread floor of any envelope (plaintext wall + hand-written envelope CPU): insert {:.2}x, select {:.2}x",
        floor(r.plain_insert, envelope.0),
        floor(r.plain_select, envelope.1)
    );
    println!(
        "KMS calls during the timed phases: {} ({} per row)",
        r.kms_calls,
        r.kms_calls as f64 / n as f64
    );
}

/// The hand-written envelope's CPU per row, sealing and unsealing the same values.
fn envelope_cost(fx: &Fixture) -> (f64, f64) {
    let b = baseline::Baseline::new();
    let values: Vec<[Vec<u8>; 3]> = fx
        .plain
        .iter()
        .map(|p| {
            [
                p.alpha.clone().into_bytes(),
                p.bravo.clone().into_bytes(),
                p.charlie.clone().into_bytes(),
            ]
        })
        .collect();
    let mut sealed = Vec::with_capacity(values.len());
    let seal = measure(|| {
        for v in &values {
            sealed.push(b.seal(&[&v[0], &v[1], &v[2]]));
        }
    });
    let unseal = measure(|| {
        for row in &sealed {
            black_box(b.unseal(row));
        }
    });
    let n = values.len();
    // cmk's own sealing and unsealing of the same rows, without a database.
    let mut cmk_sealed = Vec::with_capacity(n);
    let cmk_seal = measure(|| cmk_sealed = Row::seal_many(&fx.rows, &fx.ctx, &fx.keys));
    let cmk_sealed: Vec<SealedRow> = cmk_sealed.into_iter().map(Result::unwrap).collect();
    let cmk_unseal = measure(|| {
        for r in Row::unseal_many(&cmk_sealed, &fx.ctx, &fx.keys) {
            black_box(r.unwrap());
        }
    });
    println!(
        "cmk without a database: seal {:.0} ns/row ({:.2}x the envelope), unseal {:.0} ns/row ({:.2}x)",
        per_row(cmk_seal.cpu, n),
        per_row(cmk_seal.cpu, n) / per_row(seal.cpu, n),
        per_row(cmk_unseal.cpu, n),
        per_row(cmk_unseal.cpu, n) / per_row(unseal.cpu, n)
    );
    (per_row(seal.cpu, n), per_row(unseal.cpu, n))
}

fn main() {
    let n: usize = std::env::var("CMK_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fx = runtime.block_on(fixture(n));
    let envelope = envelope_cost(&fx);
    println!(
        "hand-written envelope (raw AES-256-GCM, same model): seal {:.0} ns/row, unseal {:.0} ns/row (CPU)",
        envelope.0, envelope.1
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let url = path.to_str().unwrap().to_string();
    let mut conn = SqliteConnection::establish(&url).unwrap();
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    let r = run_sqlite(&mut conn, &fx, "BLOB");
    report("SQLite (file, WAL, synchronous=NORMAL)", &r, n, envelope);

    postgres(&fx, n, envelope);
}

#[cfg(feature = "postgres")]
fn postgres(fx: &Fixture, n: usize, envelope: (f64, f64)) {
    let Ok(admin_url) = std::env::var("CMK_TEST_POSTGRES_URL") else {
        println!("\nPostgreSQL: not run (CMK_TEST_POSTGRES_URL is not set)");
        return;
    };
    let name = format!("cmk_bench_{}", std::process::id());
    let mut admin = PgConnection::establish(&admin_url).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&admin_url);
    let url = format!("{base}/{name}");
    let mut conn = PgConnection::establish(&url).unwrap();
    let r = run_postgres(&mut conn, fx, "BYTEA");
    drop(conn);
    report("PostgreSQL (loopback)", &r, n, envelope);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &Fixture, _: usize, _: (f64, f64)) {
    println!(
        "\nPostgreSQL: not run (build with --features postgres and set CMK_TEST_POSTGRES_URL)"
    );
}
