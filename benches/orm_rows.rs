//! 100,000 rows through Diesel and through SeaORM 2, plaintext against cmk, in one run:
//! insert in batches of 1,000, then select and unseal in batches of 1,000 (with Diesel also
//! on two worker threads fed by the loading thread). SQLite always; PostgreSQL when built
//! with `--features postgres` and `CMK_TEST_POSTGRES_URL` is set (the run says which ran).
//!
//! The model: three 32-byte fields in two classes (`alpha`, `bravo`: private; `charlie`:
//! restricted), database-assigned ids (no row binding, as the hand-written envelope). CPU
//! time is this process's (all threads, user + system): the database server's CPU is not
//! in it. KMS calls are counted during the timed phases: with a warm lease there are
//! none.
//!
//! `cargo bench --bench orm_rows` (SQLite), or with PostgreSQL:
//! `eval "$(bash scripts/services)"; cargo bench --bench orm_rows --features postgres`
//! Every ORM and backend runs `CMK_BENCH_ROUNDS` rounds (default 7), each on emptied tables,
//! interleaving the three variants batch by batch (the order rotating), so that a slow spell
//! of a shared machine hits all three alike (SQLite inserts excepted: see `insert_steps`);
//! the report gives medians over rounds, and the like-for-like ratio as the median of the
//! per-round ratios with its range.
//! `CMK_BENCH_ROWS=<n>` changes the row count. `CMK_BENCH_ONLY=unseal_derived
//! CMK_BENCH_N=<n>` only unseals through the derived model (one row n times, then every row
//! once, then `unseal_many`), for callgrind and for telling instructions from cache misses.

#![allow(missing_docs)] // diesel::table! generates public modules

#[path = "../cmk-core/benches/common/baseline.rs"]
mod baseline;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cmk::diesel::ops;
use cmk::kms::local::LocalKms;
use cmk::kms::{KeyRef, Kms, KmsContext, KmsError};
use cmk::registry::MemoryRegistry;
use cmk::secret::{SecretBytes, SecretKey};
use cmk::tenant::{MemoryConfigStore, OperatorKey};
use cmk::{Cmk, Encrypted, RequestContext, TenantConfig, TenantId, TenantKeys};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use sea_orm::{
    ActiveValue, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, QueryFilter, TransactionTrait,
};

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

// The hand-written envelope through the same ORM: the same columns as cmk's table.
diesel::table! {
    envelope_rows (id) {
        id -> BigInt,
        tenant_id -> Text,
        alpha -> Binary,
        bravo -> Binary,
        charlie -> Binary,
        private_keys -> Nullable<Binary>,
        restricted_keys -> Nullable<Binary>,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = envelope_rows)]
struct EnvelopeRow {
    id: i64,
    tenant_id: String,
    alpha: Vec<u8>,
    bravo: Vec<u8>,
    charlie: Vec<u8>,
    private_keys: Option<Vec<u8>>,
    restricted_keys: Option<Vec<u8>>,
}

/// Seals a plaintext row with the hand-written envelope into its stored form.
fn envelope_seal(b: &baseline::Baseline, p: &Plain) -> EnvelopeRow {
    let baseline::BaselineRow { wrapped, fields } =
        b.seal(&[p.alpha.as_bytes(), p.bravo.as_bytes(), p.charlie.as_bytes()]);
    let [private_keys, restricted_keys] = wrapped;
    let [alpha, bravo, charlie] = fields;
    EnvelopeRow {
        id: p.id,
        tenant_id: p.tenant_id.clone(),
        alpha,
        bravo,
        charlie,
        private_keys: Some(private_keys),
        restricted_keys: Some(restricted_keys),
    }
}

/// Unseals a stored hand-written envelope into the plaintext row.
fn envelope_unseal(b: &baseline::Baseline, r: EnvelopeRow) -> Plain {
    let row = baseline::BaselineRow {
        wrapped: [
            r.private_keys.unwrap_or_default(),
            r.restricted_keys.unwrap_or_default(),
        ],
        fields: [r.alpha, r.bravo, r.charlie],
    };
    let mut values = b
        .unseal(&row)
        .into_iter()
        .map(|v| String::from_utf8(v).unwrap());
    let mut next = || values.next().unwrap();
    Plain {
        id: r.id,
        tenant_id: r.tenant_id,
        alpha: next(),
        bravo: next(),
        charlie: next(),
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

/// The same two tables as SeaORM entities.
mod sea_plain {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "plain_rows")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        pub alpha: String,
        pub bravo: String,
        pub charlie: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod sea_envelope {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "envelope_rows")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        pub alpha: Vec<u8>,
        pub bravo: Vec<u8>,
        pub charlie: Vec<u8>,
        pub private_keys: Option<Vec<u8>>,
        pub restricted_keys: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod sea_row {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "bench_rows")]
    #[cmk(tenant = tenant_id, id = id, ids = "db")]
    pub(crate) struct SeaRow {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "private")]
        pub alpha: String,
        #[cmk(class = "private")]
        pub bravo: String,
        #[cmk(class = "restricted")]
        pub charlie: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
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
    async fn wrap(
        &self,
        key: &KeyRef,
        plaintext: &[u8],
        aad: &KmsContext,
    ) -> Result<Vec<u8>, KmsError> {
        self.inner.wrap(key, plaintext, aad).await
    }
    async fn unwrap(
        &self,
        key: &KeyRef,
        wrapped: &[u8],
        aad: &KmsContext,
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

impl Measure {
    const ZERO: Measure = Measure {
        wall: Duration::ZERO,
        cpu: Duration::ZERO,
    };
}

impl std::ops::AddAssign for Measure {
    fn add_assign(&mut self, other: Measure) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

fn measure(f: impl FnOnce()) -> Measure {
    let (c0, w0) = (cpu_time(), Instant::now());
    f();
    Measure {
        wall: w0.elapsed(),
        cpu: cpu_time().saturating_sub(c0),
    }
}

async fn measure_async(f: impl std::future::Future<Output = ()>) -> Measure {
    let (c0, w0) = (cpu_time(), Instant::now());
    f.await;
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
    keys: Arc<TenantKeys>,
    plain: Vec<Plain>,
    rows: Vec<Row>,
    sea_rows: Vec<sea_row::SeaRow>,
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
    let sea_rows = plain
        .iter()
        .map(|p| sea_row::SeaRow {
            id: p.id,
            tenant_id: p.tenant_id.clone(),
            alpha: p.alpha.clone(),
            bravo: p.bravo.clone(),
            charlie: p.charlie.clone(),
        })
        .collect();
    Fixture {
        cmk_kms: kms,
        keys,
        plain,
        rows,
        sea_rows,
    }
}

/// One round's measurement of every phase.
#[derive(Clone, Copy)]
struct Round {
    plain_insert: Measure,
    cmk_insert: Measure,
    envelope_insert: Measure,
    plain_select: Measure,
    cmk_select_1: Measure,
    envelope_select: Measure,
    /// Diesel only: unsealing on two workers fed by the loading thread.
    cmk_select_2: Option<Measure>,
}

impl Round {
    /// From the inserts and selects of the three variants (plaintext, envelope, cmk).
    fn of(inserts: [Measure; 3], selects: [Measure; 3], cmk_select_2: Option<Measure>) -> Round {
        let [plain_insert, envelope_insert, cmk_insert] = inserts;
        let [plain_select, envelope_select, cmk_select_1] = selects;
        Round {
            plain_insert,
            cmk_insert,
            envelope_insert,
            plain_select,
            cmk_select_1,
            envelope_select,
            cmk_select_2,
        }
    }
}

struct Results {
    rounds: Vec<Round>,
    kms_calls: usize,
}

/// Rounds per ORM and backend (`CMK_BENCH_ROUNDS`, default 7): each round empties the tables
/// and runs every phase once; the report gives medians over rounds.
fn rounds() -> usize {
    std::env::var("CMK_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(1)
}

/// How a round empties a table: `TRUNCATE` on PostgreSQL (`DELETE` would leave dead rows
/// for autovacuum to clean up during the next round's timing); on SQLite an unqualified
/// `DELETE` truncates.
fn empty_table(blob: &str) -> &'static str {
    if blob == "BYTEA" {
        "TRUNCATE"
    } else {
        "DELETE FROM"
    }
}

/// The (batch, variant) steps of round `r`'s inserts. On PostgreSQL batch by batch, the
/// three variants back to back. On SQLite variant by variant (the order rotating by round):
/// a WAL checkpoint (every 1,000 pages) is paid by whichever commit crosses the mark, so
/// interleaving would charge one variant for another's pages.
fn insert_steps(r: usize, batches: usize, blob: &str) -> Vec<(usize, usize)> {
    if blob == "BYTEA" {
        (0..batches)
            .flat_map(|b| order(r + b).map(|v| (b, v)))
            .collect()
    } else {
        order(r)
            .into_iter()
            .flat_map(|v| (0..batches).map(move |b| (b, v)))
            .collect()
    }
}

/// The order of the three variants (0 plaintext, 1 envelope, 2 cmk) for batch `i`: rotated,
/// so that none always runs first (or right after a checkpoint of the database's log).
fn order(i: usize) -> [usize; 3] {
    let mut o = [0, 1, 2];
    o.rotate_left(i % 3);
    o
}

fn batch_ranges(n: usize) -> Vec<(i64, i64)> {
    (0..n)
        .step_by(BATCH)
        .map(|lo| (lo as i64 + 1, (lo + BATCH).min(n) as i64))
        .collect()
}

/// The SeaORM half: the same tables, batches and phases, through SeaORM's async API.
async fn run_sea(db: &DatabaseConnection, fx: &Fixture, blob: &str) -> Results {
    db.execute_unprepared(
        "CREATE TABLE plain_rows (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha TEXT NOT NULL, bravo TEXT NOT NULL, charlie TEXT NOT NULL)",
    )
    .await
    .unwrap();
    for table in ["bench_rows", "envelope_rows"] {
        db.execute_unprepared(&format!(
            "CREATE TABLE {table} (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha {blob} NOT NULL, bravo {blob} NOT NULL, charlie {blob} NOT NULL, private_keys {blob}, restricted_keys {blob})"
        ))
        .await
        .unwrap();
    }
    let envelope = baseline::Baseline::new();
    let keys = &fx.keys;
    let calls_before = fx.cmk_kms.unwraps.load(Ordering::Relaxed);
    let ranges = batch_ranges(fx.plain.len());
    let mut rounds_done = Vec::new();
    for r in 0..rounds() {
        for table in ["plain_rows", "bench_rows", "envelope_rows"] {
            db.execute_unprepared(&format!("{} {table}", empty_table(blob)))
                .await
                .unwrap();
        }
        // The steps as with Diesel (see `insert_steps`); selects batch by batch.
        let (mut inserts, mut selects) = ([Measure::ZERO; 3], [Measure::ZERO; 3]);
        let batches: Vec<_> = fx
            .plain
            .chunks(BATCH)
            .zip(fx.sea_rows.chunks(BATCH))
            .collect();
        for (b, v) in insert_steps(r, batches.len(), blob) {
            let (plain, rows) = batches[b];
            inserts[v] += match v {
                0 => {
                    measure_async(async {
                        let txn = db.begin().await.unwrap();
                        let models = plain.iter().map(|p| sea_plain::ActiveModel {
                            id: ActiveValue::Set(p.id),
                            tenant_id: ActiveValue::Set(p.tenant_id.clone()),
                            alpha: ActiveValue::Set(p.alpha.clone()),
                            bravo: ActiveValue::Set(p.bravo.clone()),
                            charlie: ActiveValue::Set(p.charlie.clone()),
                        });
                        sea_plain::Entity::insert_many(models)
                            .exec_without_returning(&txn)
                            .await
                            .unwrap();
                        txn.commit().await.unwrap();
                    })
                    .await
                }
                1 => {
                    measure_async(async {
                        let txn = db.begin().await.unwrap();
                        let models = plain.iter().map(|p| {
                            let r = envelope_seal(&envelope, p);
                            sea_envelope::ActiveModel {
                                id: ActiveValue::Set(r.id),
                                tenant_id: ActiveValue::Set(r.tenant_id),
                                alpha: ActiveValue::Set(r.alpha),
                                bravo: ActiveValue::Set(r.bravo),
                                charlie: ActiveValue::Set(r.charlie),
                                private_keys: ActiveValue::Set(r.private_keys),
                                restricted_keys: ActiveValue::Set(r.restricted_keys),
                            }
                        });
                        sea_envelope::Entity::insert_many(models)
                            .exec_without_returning(&txn)
                            .await
                            .unwrap();
                        txn.commit().await.unwrap();
                    })
                    .await
                }
                _ => {
                    measure_async(async {
                        let txn = db.begin().await.unwrap();
                        cmk::seaorm::ops::insert_many(&txn, keys, rows)
                            .await
                            .unwrap();
                        txn.commit().await.unwrap();
                    })
                    .await
                }
            };
        }
        for (b, &(lo, hi)) in ranges.iter().enumerate() {
            for v in order(r + b) {
                selects[v] += match v {
                    0 => {
                        measure_async(async {
                            let rows = sea_plain::Entity::find()
                                .filter(sea_plain::Column::Id.between(lo, hi))
                                .all(db)
                                .await
                                .unwrap();
                            black_box(rows);
                        })
                        .await
                    }
                    1 => {
                        measure_async(async {
                            let rows = sea_envelope::Entity::find()
                                .filter(sea_envelope::Column::Id.between(lo, hi))
                                .all(db)
                                .await
                                .unwrap();
                            let rows: Vec<Plain> = rows
                                .into_iter()
                                .map(|m| {
                                    let r = EnvelopeRow {
                                        id: m.id,
                                        tenant_id: m.tenant_id,
                                        alpha: m.alpha,
                                        bravo: m.bravo,
                                        charlie: m.charlie,
                                        private_keys: m.private_keys,
                                        restricted_keys: m.restricted_keys,
                                    };
                                    envelope_unseal(&envelope, r)
                                })
                                .collect();
                            black_box(rows);
                        })
                        .await
                    }
                    _ => {
                        measure_async(async {
                            let rows: Vec<sea_row::SeaRow> = cmk::seaorm::ops::load_all(
                                db,
                                keys,
                                sea_row::Entity::find().filter(sea_row::Column::Id.between(lo, hi)),
                            )
                            .await
                            .unwrap();
                            black_box(rows);
                        })
                        .await
                    }
                };
            }
        }
        rounds_done.push(Round::of(inserts, selects, None));
    }
    Results {
        rounds: rounds_done,
        kms_calls: fx.cmk_kms.unwraps.load(Ordering::Relaxed) - calls_before,
    }
}

macro_rules! define_run {
    ($name:ident, $conn:ty) => {
        fn $name(conn: &mut $conn, fx: &Fixture, blob: &str) -> Results {
    conn.batch_execute(&format!(
        "CREATE TABLE plain_rows (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha TEXT NOT NULL, bravo TEXT NOT NULL, charlie TEXT NOT NULL);
         CREATE TABLE bench_rows (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha {blob} NOT NULL, bravo {blob} NOT NULL, charlie {blob} NOT NULL, private_keys {blob}, restricted_keys {blob});
         CREATE TABLE envelope_rows (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, alpha {blob} NOT NULL, bravo {blob} NOT NULL, charlie {blob} NOT NULL, private_keys {blob}, restricted_keys {blob});"
    ))
    .unwrap();
    let envelope = baseline::Baseline::new();
    let n = fx.plain.len();
    let keys = &fx.keys;
    let calls_before = fx.cmk_kms.unwraps.load(Ordering::Relaxed);
    let ranges = batch_ranges(n);
    let mut rounds_done = Vec::new();
    for r in 0..rounds() {
        let empty = empty_table(blob);
        conn.batch_execute(&format!("{empty} plain_rows; {empty} bench_rows; {empty} envelope_rows;"))
            .unwrap();
        // Selects batch by batch, the three variants back to back (order rotating): a slow
        // spell of this shared VM then hits all three alike. Inserts: see `insert_steps`.
        let (mut inserts, mut selects) = ([Measure::ZERO; 3], [Measure::ZERO; 3]);
        let batches: Vec<_> = fx.plain.chunks(BATCH).zip(fx.rows.chunks(BATCH)).collect();
        for (b, v) in insert_steps(r, batches.len(), blob) {
            let (plain, rows) = batches[b];
            inserts[v] += match v {
                0 => measure(|| {
                    conn.transaction(|c| diesel::insert_into(plain_rows::table).values(plain).execute(c))
                        .unwrap();
                }),
                1 => measure(|| {
                    let sealed: Vec<EnvelopeRow> = plain.iter().map(|p| envelope_seal(&envelope, p)).collect();
                    conn.transaction(|c| diesel::insert_into(envelope_rows::table).values(&sealed).execute(c))
                        .unwrap();
                }),
                _ => measure(|| {
                    conn.transaction::<_, cmk::diesel::Error, _>(|c| {
                        ops::insert_many(c, keys, rows)
                    })
                    .unwrap();
                }),
            };
        }
        for (b, &(lo, hi)) in ranges.iter().enumerate() {
            for v in order(r + b) {
                selects[v] += match v {
                    0 => measure(|| {
                        let rows: Vec<Plain> = plain_rows::table
                            .filter(plain_rows::id.between(lo, hi))
                            .load(conn)
                            .unwrap();
                        black_box(rows);
                    }),
                    1 => measure(|| {
                        let rows: Vec<EnvelopeRow> = envelope_rows::table
                            .filter(envelope_rows::id.between(lo, hi))
                            .load(conn)
                            .unwrap();
                        let rows: Vec<Plain> = rows.into_iter().map(|r| envelope_unseal(&envelope, r)).collect();
                        black_box(rows);
                    }),
                    _ => measure(|| {
                        let rows: Vec<Row> =
                            ops::load_all(conn, keys, bench_rows::table.filter(bench_rows::id.between(lo, hi)))
                                .unwrap();
                        black_box(rows);
                    }),
                };
            }
        }
        // The loading thread feeds sealed batches to two unsealing workers.
        let cmk_select_2 = measure(|| {
            let (tx, rx) = mpsc::sync_channel::<Vec<SealedRow>>(4);
            let rx = Arc::new(Mutex::new(rx));
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let rx = Arc::clone(&rx);
                    s.spawn(move || loop {
                        let Ok(batch) = rx.lock().unwrap().recv() else { break };
                        for r in Row::unseal_many_owned(batch, keys) {
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
        rounds_done.push(Round::of(inserts, selects, Some(cmk_select_2)));
    }
    Results {
        rounds: rounds_done,
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

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// The median wall time and the median CPU time of one phase over the rounds.
fn median_of(rounds: &[Round], phase: impl Fn(&Round) -> Measure) -> Measure {
    let of = |f: &dyn Fn(Measure) -> Duration| {
        Duration::from_secs_f64(median(
            rounds.iter().map(|r| f(phase(r)).as_secs_f64()).collect(),
        ))
    };
    Measure {
        wall: of(&|m| m.wall),
        cpu: of(&|m| m.cpu),
    }
}

fn report(orm: &str, backend: &str, results: &Results, n: usize, envelope: (f64, f64)) {
    let rounds = &results.rounds;
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "\n== {orm} on {backend}: {n} rows, batches of {BATCH}, medians over {} rounds ==",
        rounds.len()
    );
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
    let r = Round {
        plain_insert: median_of(rounds, |r| r.plain_insert),
        cmk_insert: median_of(rounds, |r| r.cmk_insert),
        envelope_insert: median_of(rounds, |r| r.envelope_insert),
        plain_select: median_of(rounds, |r| r.plain_select),
        cmk_select_1: median_of(rounds, |r| r.cmk_select_1),
        envelope_select: median_of(rounds, |r| r.envelope_select),
        cmk_select_2: rounds[0]
            .cmk_select_2
            .map(|_| median_of(rounds, |r| r.cmk_select_2.unwrap_or(r.cmk_select_1))),
    };
    line(&format!("insert, plaintext {orm}"), r.plain_insert, None);
    line(
        "insert, hand-written envelope",
        r.envelope_insert,
        Some(r.plain_insert),
    );
    line("insert, cmk", r.cmk_insert, Some(r.plain_insert));
    line(&format!("select, plaintext {orm}"), r.plain_select, None);
    line(
        "select+unseal, hand-written env.",
        r.envelope_select,
        Some(r.plain_select),
    );
    line(
        "select+unseal, cmk, 1 thread",
        r.cmk_select_1,
        Some(r.plain_select),
    );
    if let Some(two) = r.cmk_select_2 {
        line("select+unseal, cmk, 2 workers", two, Some(r.plain_select));
    }
    let added = |cmk: Measure, plain: Measure| per_row(cmk.cpu.saturating_sub(plain.cpu), n);
    let added_seal = added(r.cmk_insert, r.plain_insert);
    let added_unseal = added(r.cmk_select_1, r.plain_select);
    println!(
        "CPU cmk adds per row: insert {added_seal:.0} ns ({:.2}x the hand-written envelope's {:.0} ns), select {added_unseal:.0} ns ({:.2}x its {:.0} ns)",
        added_seal / envelope.0,
        envelope.0,
        added_unseal / envelope.1,
        envelope.1
    );
    // The like-for-like form: what each adds over plaintext through the same ORM, with the
    // same stored columns; the ratio is taken in each round (the phases ran back to back),
    // then the median over rounds, with the range.
    let like_for_like =
        |cmk: fn(&Round) -> Measure, env: fn(&Round) -> Measure, plain: fn(&Round) -> Measure| {
            let per_round: Vec<f64> = rounds
                .iter()
                .map(|r| added(cmk(r), plain(r)) / added(env(r), plain(r)))
                .collect();
            let lo = per_round.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = per_round.iter().copied().fold(0.0, f64::max);
            (median(per_round), lo, hi)
        };
    let (seal, seal_lo, seal_hi) =
        like_for_like(|r| r.cmk_insert, |r| r.envelope_insert, |r| r.plain_insert);
    let (unseal, unseal_lo, unseal_hi) = like_for_like(
        |r| r.cmk_select_1,
        |r| r.envelope_select,
        |r| r.plain_select,
    );
    println!(
        "CPU added per row through {orm}, cmk against the hand-written envelope stored in the same columns (median of per-round ratios, range): insert {seal:.2}x ({seal_lo:.2}-{seal_hi:.2}), select {unseal:.2}x ({unseal_lo:.2}-{unseal_hi:.2})"
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
    let ops = n * rounds.len() * 2;
    println!(
        "KMS calls during the timed phases: {} in {ops} row operations ({} per row)",
        results.kms_calls,
        results.kms_calls as f64 / ops as f64
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
    let cmk_seal = measure(|| cmk_sealed = Row::seal_many(&fx.rows, &fx.keys));
    let cmk_sealed: Vec<SealedRow> = cmk_sealed.into_iter().map(Result::unwrap).collect();
    let cmk_unseal = measure(|| {
        for r in Row::unseal_many(&cmk_sealed, &fx.keys) {
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
        .enable_all()
        .build()
        .unwrap();
    let fx = runtime.block_on(fixture(n));
    // `CMK_BENCH_ONLY=unseal_derived CMK_BENCH_N=<n>`: the derived model's unseal only (see
    // the header); then exit.
    if std::env::var("CMK_BENCH_ONLY").as_deref() == Ok("unseal_derived") {
        let times: usize = std::env::var("CMK_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let sealed = fx.rows[0].seal(&fx.keys).unwrap();
        let t = Instant::now();
        for _ in 0..times {
            black_box(Row::unseal(black_box(&sealed), &fx.keys).unwrap());
        }
        let one = t.elapsed().as_nanos() as f64 / times as f64;
        let all: Vec<SealedRow> = Row::seal_many(&fx.rows, &fx.keys)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let t = Instant::now();
        for r in &all {
            black_box(Row::unseal(black_box(r), &fx.keys).unwrap());
        }
        let each = t.elapsed().as_nanos() as f64 / all.len() as f64;
        let t = Instant::now();
        for r in Row::unseal_many(&all, &fx.keys) {
            black_box(r.unwrap());
        }
        let many = t.elapsed().as_nanos() as f64 / all.len() as f64;
        eprintln!(
            "derived unseal: one row repeated {one:.0} ns; distinct rows one by one {each:.0} ns; unseal_many {many:.0} ns"
        );
        return;
    }
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
    let sqlite = "SQLite (file, WAL, synchronous=NORMAL)";
    report("Diesel", sqlite, &r, n, envelope);

    let sea_path = dir.path().join("bench-sea.db");
    let r = runtime.block_on(async {
        // One connection, as Diesel's side has; the pragmas are per connection.
        let db = Database::connect(
            ConnectOptions::new(format!("sqlite://{}?mode=rwc", sea_path.display()))
                .max_connections(1)
                .to_owned(),
        )
        .await
        .unwrap();
        db.execute_unprepared("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .await
            .unwrap();
        run_sea(&db, &fx, "BLOB").await
    });
    report("SeaORM", sqlite, &r, n, envelope);

    postgres(&runtime, &fx, n, envelope);
}

#[cfg(feature = "postgres")]
fn postgres(runtime: &tokio::runtime::Runtime, fx: &Fixture, n: usize, envelope: (f64, f64)) {
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
    report("Diesel", "PostgreSQL (loopback)", &r, n, envelope);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let r = runtime.block_on(async {
        let db = Database::connect(&url).await.unwrap();
        run_sea(&db, fx, "BYTEA").await
    });
    report("SeaORM", "PostgreSQL (loopback)", &r, n, envelope);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
}

#[cfg(not(feature = "postgres"))]
fn postgres(_: &tokio::runtime::Runtime, _: &Fixture, _: usize, _: (f64, f64)) {
    println!(
        "\nPostgreSQL: not run (build with --features postgres and set CMK_TEST_POSTGRES_URL)"
    );
}
