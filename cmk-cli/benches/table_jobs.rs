//! The `cmk` command's throughput (docs/BENCHMARKS.md, "The cmk command"):
//!
//! - `rotate-master --all-tenants` over CMK_BENCH_TENANTS tenants (default 1,000), local KMS;
//! - `rekey` and `verify` over CMK_BENCH_ROWS rows (default 1,000,000) of the quickstart's
//!   table on SQLite, and on PostgreSQL when CMK_TEST_POSTGRES_URL is set.
//!
//! Each command runs as its own process (the release binary), timed by wall clock; its CPU
//! time (user + system, from /proc/self/stat's children fields) says how busy the two cores
//! were. Run: `cargo bench -p cmk-cli --bench table_jobs` (CMK_BENCH_DIR=DIR keeps the
//! deployments in DIR).

#![allow(missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::{Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
use common::{Patient, SCHEMA, conn, patient};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement, Value};

const TENANTS_WITH_ROWS: i64 = 10;

fn env_or(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// User + system CPU time of the waited-for children of this process.
fn children_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3; cutime and cstime are fields 16 and 17.
    let ticks: u64 = [13, 14]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
        .sum();
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_secs_f64(ticks as f64 / hz as f64)
}

struct Timed {
    wall: Duration,
    cpu: Duration,
    json: serde_json::Value,
}

/// Runs the release `cmk` with `args` and times it.
fn cmk(home: &Path, args: &[&str]) -> Timed {
    let cpu_before = children_cpu();
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cmk"))
        .arg("--home")
        .arg(home)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let wall = start.elapsed();
    assert!(
        out.status.success(),
        "cmk {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Timed {
        wall,
        cpu: children_cpu().saturating_sub(cpu_before),
        json: serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
    }
}

fn report(what: &str, rows: u64, t: &Timed) {
    println!(
        "{what:<44} {:>9} rows  {:>8.2} s  {:>9.0} rows/s  CPU {:>6.2} s = {:.2} cores",
        rows,
        t.wall.as_secs_f64(),
        rows as f64 / t.wall.as_secs_f64(),
        t.cpu.as_secs_f64(),
        t.cpu.as_secs_f64() / t.wall.as_secs_f64()
    );
}

/// A home with `rows` patients spread over ten tenants, inserted 1,000 per transaction.
async fn table_home(home: &Path, rows: i64) {
    let embedded = Embedded::open(home).unwrap();
    let mut conn = conn(&embedded.database_path());
    conn.batch_execute(SCHEMA).unwrap();
    let mut keys = Vec::new();
    for t in 0..TENANTS_WITH_ROWS {
        let id = TenantId::new(format!("tenant{t}")).unwrap();
        let key = embedded.tenant_key(&id).unwrap();
        let config = TenantConfig::new(id.clone(), key.clone())
            .with_class(
                "private",
                Policy::new(key.clone()).with_search(SearchMode::BlindIndex),
            )
            .unwrap();
        let ctx = RequestContext::new(id).with_role("doctor");
        embedded.cmk().ensure_tenant(&ctx, &config).await.unwrap();
        keys.push(
            embedded
                .cmk()
                .keys_for(&ctx, Patient::CLASSES)
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let mut id = 1;
    while id <= rows {
        let batch: Vec<Patient> = (id..(id + 1000).min(rows + 1))
            .map(|i| patient(i, &format!("tenant{}", i % TENANTS_WITH_ROWS)))
            .collect();
        conn.transaction::<_, diesel::result::Error, _>(|c| {
            for p in &batch {
                ops::insert(c, &keys[(p.id % TENANTS_WITH_ROWS) as usize], p).unwrap();
            }
            Ok(())
        })
        .unwrap();
        id += batch.len() as i64;
    }
    cmk::model::write_manifests(&home.join("manifests"), &[Patient::manifest().unwrap()]).unwrap();
    eprintln!(
        "(setup: {rows} rows inserted in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
}

/// Runs `cmk [--database-url URL] args...`.
fn cmk_on(home: &Path, url: Option<&str>, args: &[&str]) -> Timed {
    let mut all: Vec<&str> = url.map_or(vec![], |u| vec!["--database-url", u]);
    all.extend_from_slice(args);
    cmk(home, &all)
}

fn rekey_and_verify(home: &Path, rows: u64, on: &str, url: Option<&str>) {
    let manifest = home.join("manifests/patients.manifest.json");
    let m = manifest.to_str().unwrap();
    for t in 0..TENANTS_WITH_ROWS {
        cmk_on(
            home,
            url,
            &["kek", "roll-over", "--tenant", &format!("tenant{t}")],
        );
    }
    let t = cmk_on(home, url, &["rekey", "--manifest", m, "--chunk", "1000"]);
    assert_eq!(t.json["rewrapped"].as_u64(), Some(rows), "{}", t.json);
    report(&format!("rekey, {on}"), rows, &t);
    let t = cmk_on(home, url, &["verify", "--manifest", m, "--chunk", "1000"]);
    assert_eq!(t.json["ok"].as_u64(), Some(rows), "{}", t.json);
    report(&format!("verify, {on}"), rows, &t);
}

/// Copies cmk's tables and the patients from the SQLite home into a fresh PostgreSQL database.
async fn copy_to_postgres(home: &Path, admin_url: &str) -> String {
    let admin = Database::connect(admin_url).await.unwrap();
    let name = format!("cmk_bench_{}", std::process::id());
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let pg = Database::connect(&url).await.unwrap();
    let sqlite = Database::connect(format!(
        "sqlite://{}?mode=ro",
        home.join("cmk.sqlite3").display()
    ))
    .await
    .unwrap();
    cmk_seaorm::migration::create_cmk_tables(&pg).await.unwrap();
    pg.execute_unprepared(
        "CREATE TABLE patients (id BIGINT PRIMARY KEY, tenant_id TEXT COLLATE \"C\" NOT NULL,
         name BYTEA NOT NULL, email BYTEA NOT NULL, email_bidx BYTEA NOT NULL, ssn BYTEA,
         public_keys BYTEA, private_keys BYTEA, restricted_keys BYTEA)",
    )
    .await
    .unwrap();
    let ints = ["kek_id", "version", "created_at", "revision", "id"];
    let texts = ["tenant_id", "purpose", "policy", "cmk_ref", "state"];
    for (table, columns, order) in [
        (
            "cmk_key_registry",
            "tenant_id, purpose, policy, kek_id, version, cmk_ref, state, wrapped, created_at",
            "seq",
        ),
        (
            "cmk_tenant_config",
            "tenant_id, revision, content, mac, created_at",
            "tenant_id, revision",
        ),
        (
            "patients",
            "id, tenant_id, name, email, email_bidx, ssn, public_keys, private_keys, restricted_keys",
            "id",
        ),
    ] {
        let names: Vec<&str> = columns.split(", ").collect();
        let mut offset = 0;
        loop {
            let rows = sqlite
                .query_all_raw(Statement::from_string(
                    DbBackend::Sqlite,
                    format!(
                        "SELECT {columns} FROM {table} ORDER BY {order} LIMIT 2000 OFFSET {offset}"
                    ),
                ))
                .await
                .unwrap();
            if rows.is_empty() {
                break;
            }
            offset += rows.len();
            let mut values: Vec<Value> = Vec::new();
            let mut tuples = Vec::new();
            for row in &rows {
                let mut marks = Vec::new();
                for (i, c) in names.iter().enumerate() {
                    values.push(if ints.contains(c) {
                        row.try_get_by_index::<i64>(i).unwrap().into()
                    } else if texts.contains(c) {
                        row.try_get_by_index::<String>(i).unwrap().into()
                    } else {
                        row.try_get_by_index::<Option<Vec<u8>>>(i).unwrap().into()
                    });
                    marks.push(format!("${}", values.len()));
                }
                tuples.push(format!("({})", marks.join(", ")));
            }
            pg.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                format!(
                    "INSERT INTO {table} ({columns}) VALUES {}",
                    tuples.join(", ")
                ),
                values,
            ))
            .await
            .unwrap();
        }
    }
    pg.execute_unprepared("ANALYZE").await.unwrap();
    url
}

async fn drop_database(admin_url: &str, url: &str) {
    let admin: DatabaseConnection = Database::connect(admin_url).await.unwrap();
    let name = url.rsplit_once('/').unwrap().1;
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await;
}

/// A home with `tenants` onboarded tenants (each its own local key).
async fn tenants_home(home: &Path, tenants: u64) {
    let embedded = Embedded::open(home).unwrap();
    for t in 0..tenants {
        let id = TenantId::new(format!("t{t:04}")).unwrap();
        let key = embedded.tenant_key(&id).unwrap();
        let ctx = RequestContext::new(id.clone());
        embedded
            .cmk()
            .ensure_tenant(&ctx, &TenantConfig::new(id, key))
            .await
            .unwrap();
    }
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not: then a smoke run.
    let bench = std::env::args().any(|a| a == "--bench");
    let rows = env_or("CMK_BENCH_ROWS", if bench { 1_000_000 } else { 2_000 });
    let tenants = env_or("CMK_BENCH_TENANTS", if bench { 1_000 } else { 20 });
    // CMK_BENCH_DIR keeps the homes (to profile a command on them afterwards).
    let kept = std::env::var("CMK_BENCH_DIR").ok();
    let temp = tempfile::tempdir().unwrap();
    let dir = kept.as_deref().map_or(temp.path(), Path::new);

    let home = dir.join("tenants");
    tenants_home(&home, tenants).await;
    let t = cmk(&home, &["rotate-master", "--all-tenants"]);
    assert_eq!(t.json["tenants"].as_u64(), Some(tenants));
    println!(
        "rotate-master --all-tenants: {tenants} tenants, {} entries re-wrapped, {:.2} s ({:.1} ms per tenant), CPU {:.2} s",
        t.json["rewrapped"],
        t.wall.as_secs_f64(),
        t.wall.as_secs_f64() * 1000.0 / tenants as f64,
        t.cpu.as_secs_f64()
    );

    let home = dir.join("rows");
    table_home(&home, rows as i64).await;
    rekey_and_verify(&home, rows, "SQLite", None);
    match std::env::var("CMK_TEST_POSTGRES_URL") {
        Ok(admin) => {
            let url = copy_to_postgres(&home, &admin).await;
            rekey_and_verify(&home, rows, "PostgreSQL", Some(&url));
            drop_database(&admin, &url).await;
        }
        Err(_) => println!("PostgreSQL: not run (CMK_TEST_POSTGRES_URL is not set)"),
    }
}
