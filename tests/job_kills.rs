//! Crashes of the jobs (issue 15 §3): the rekey job (KEK retirement) and the plaintext
//! backfill (migration) run in a child process that is killed with SIGKILL at a random
//! point, 20 times each. After every kill every row decrypts (or, not yet migrated, keeps its
//! plaintext), and the job resumed from its last checkpoint completes, reading only the
//! chunks after it. The embedded preset keeps the keys, registry, configuration and tables
//! in one SQLite database that every process opens.

#![allow(missing_docs)] // diesel::table! generates public modules

use std::io::{BufRead, BufReader, Write};
use std::ops::ControlFlow;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use cmk::diesel::jobs::{self, Chunks};
use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::{Encrypted, Policy, RequestContext, TenantConfig, TenantId};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    accounts (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        ssn -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = accounts)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Account {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    email: String,
    #[cmk(class = "restricted")]
    ssn: String,
}

// Mid-migration: `email_plain` is the old plaintext column, `email` and `private_keys` the
// new ones (nullable in SQL until the contract step).
diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    members (id) {
        id -> BigInt,
        tenant_id -> Text,
        email_plain -> Nullable<Text>,
        email -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = members)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Member {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    email: String,
}

const ROWS: i64 = 3000;
const CHUNK: i64 = 10;
const KILLS: usize = 20;

fn acme() -> RequestContext {
    RequestContext::new(TenantId::new("acme").unwrap())
}

fn account(id: i64) -> Account {
    Account {
        id,
        tenant_id: "acme".into(),
        email: format!("user{id}@example.com"),
        ssn: format!("{id:09}"),
    }
}

fn member_email(id: i64) -> String {
    format!("member{id}@example.com")
}

fn connect(embedded: &Embedded) -> SqliteConnection {
    let mut conn =
        SqliteConnection::establish(&embedded.database_path().to_string_lossy()).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 10000;").unwrap();
    conn
}

fn checkpoint_path(home: &Path, kind: &str) -> PathBuf {
    home.with_file_name(format!("{kind}.checkpoint"))
}

fn read_checkpoint(home: &Path, kind: &str) -> Option<i64> {
    std::fs::read_to_string(checkpoint_path(home, kind))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Rows under v1 of both KEKs, then both classes rolled over to v2; legacy plaintext members.
async fn set_up(home: &Path) {
    let embedded = Embedded::open(home).unwrap();
    let ctx = acme();
    let key = embedded.tenant_key(ctx.tenant()).unwrap();
    let config = TenantConfig::new(ctx.tenant().clone(), key.clone())
        .with_class("private", Policy::new(key.clone()))
        .unwrap()
        .with_class("restricted", Policy::new(key))
        .unwrap();
    embedded.cmk().ensure_tenant(&ctx, &config).await.unwrap();
    let mut conn = connect(&embedded);
    conn.batch_execute(
        "CREATE TABLE accounts (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, email BLOB NOT NULL, \
           ssn BLOB NOT NULL, private_keys BLOB, restricted_keys BLOB); \
         CREATE TABLE members (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, email_plain TEXT, \
           email BLOB, private_keys BLOB);",
    )
    .unwrap();
    let keys = embedded
        .cmk()
        .keys_for(&ctx, Account::CLASSES)
        .await
        .unwrap();
    let rows: Vec<Account> = (1..=ROWS).map(account).collect();
    for chunk in rows.chunks(500) {
        ops::insert_many(&mut conn, &keys, chunk).unwrap();
    }
    conn.transaction(|conn| {
        for id in 1..=ROWS {
            diesel::insert_into(members::table)
                .values((
                    members::id.eq(id),
                    members::tenant_id.eq("acme"),
                    members::email_plain.eq(member_email(id)),
                ))
                .execute(conn)?;
        }
        diesel::QueryResult::Ok(())
    })
    .unwrap();
    for class in ["private", "restricted"] {
        assert_eq!(embedded.cmk().roll_over_kek(&ctx, class).await.unwrap(), 2);
    }
}

/// The KEK version of a stored key column (bytes 5..9, docs/FORMAT.md §4).
fn kek_version(key_column: &[u8]) -> u32 {
    u32::from_be_bytes(key_column[5..9].try_into().unwrap())
}

/// Every row reads; returns how many are done (rekeyed to v2, or sealed by the backfill).
async fn check(home: &Path, kind: &str) -> usize {
    let embedded = Embedded::open(home).unwrap();
    let mut conn = connect(&embedded);
    let ctx = acme();
    if kind == "rekey" {
        let keys = embedded
            .cmk()
            .keys_for(&ctx, Account::CLASSES)
            .await
            .unwrap();
        let all: Vec<Account> =
            ops::load_all(&mut conn, &keys, accounts::table.order(accounts::id)).unwrap();
        assert_eq!(all, (1..=ROWS).map(account).collect::<Vec<_>>());
        let stored: Vec<SealedAccount> = accounts::table
            .select(SealedAccount::as_select())
            .load(&mut conn)
            .unwrap();
        stored
            .iter()
            .filter(|r| {
                [&r.private_keys, &r.restricted_keys]
                    .iter()
                    .all(|k| kek_version(k.as_ref().unwrap().as_bytes()) == 2)
            })
            .count()
    } else {
        let keys = embedded
            .cmk()
            .keys_for(&ctx, Member::CLASSES)
            .await
            .unwrap();
        let sealed: Vec<Member> = ops::load_all(
            &mut conn,
            &keys,
            members::table
                .filter(members::private_keys.is_not_null())
                .order(members::id),
        )
        .unwrap();
        for m in &sealed {
            assert_eq!(m.email, member_email(m.id), "sealed member {}", m.id);
        }
        let legacy: Vec<(i64, Option<String>)> = members::table
            .filter(members::private_keys.is_null())
            .select((members::id, members::email_plain))
            .load(&mut conn)
            .unwrap();
        for (id, plain) in &legacy {
            assert_eq!(plain.as_deref(), Some(member_email(*id).as_str()));
        }
        assert_eq!(sealed.len() + legacy.len(), ROWS as usize);
        sealed.len()
    }
}

/// Starts the job in a child; it prints `STARTED <checkpoint>` once its keys are fetched.
fn spawn(home: &Path, kind: &str) -> (std::process::Child, impl Iterator<Item = String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_runs_a_job", "--nocapture"])
        .env("CMK_JOB_HOME", home)
        .env("CMK_JOB_KIND", kind)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    (child, lines)
}

#[tokio::test]
async fn jobs_killed_anywhere_leave_every_row_readable_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("cmk");
    set_up(&home).await;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for kind in ["rekey", "migrate"] {
        let mut killed_mid_job = 0;
        for kill in 0..KILLS {
            let (mut child, mut lines) = spawn(&home, kind);
            let started = lines.find(|l| l.starts_with("STARTED"));
            assert!(started.is_some(), "{kind}: the child started");
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            tokio::time::sleep(Duration::from_millis(rng % 40)).await;
            child.kill().unwrap(); // SIGKILL, wherever the job is
            let status = child.wait().unwrap();
            if status.signal() == Some(9) {
                killed_mid_job += 1;
            }
            let done = check(&home, kind).await;
            println!(
                "{kind} kill {kill}: {done} of {ROWS} rows done, checkpoint {:?}",
                read_checkpoint(&home, kind)
            );
        }
        assert!(
            killed_mid_job >= KILLS - 2,
            "{kind}: only {killed_mid_job} kills landed during the job"
        );
        // Resumed once more, to the end: it starts after the last checkpoint.
        let resume_from = read_checkpoint(&home, kind).expect("the kills left a checkpoint");
        let (mut child, lines) = spawn(&home, kind);
        let report: Vec<String> = lines.collect();
        assert!(child.wait().unwrap().success(), "{report:?}");
        let done_line = report
            .iter()
            .find(|l| l.starts_with("DONE"))
            .expect("the resumed job completes");
        let numbers: Vec<i64> = done_line
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        let (started_after, scanned) = (numbers[0], numbers[1]);
        assert_eq!(started_after, resume_from);
        // Finished chunks are not read again: only rows after the checkpoint (the backfill
        // reads legacy rows only, so it may read fewer).
        if kind == "rekey" {
            assert_eq!(scanned, ROWS - resume_from);
        } else {
            assert!(scanned <= ROWS - resume_from);
        }
        assert!(resume_from > 0, "{kind}: the killed runs made progress");
        assert_eq!(
            check(&home, kind).await,
            ROWS as usize,
            "{kind}: every row done"
        );
    }
}

/// Writes the checkpoint atomically (a kill never leaves half a number).
fn save_checkpoint(home: &Path, kind: &str, after: i64) {
    let path = checkpoint_path(home, kind);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).unwrap();
    writeln!(f, "{after}").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

#[test]
#[ignore = "the child process of the SIGKILL job test; run by it"]
fn child_runs_a_job() {
    let home = PathBuf::from(std::env::var("CMK_JOB_HOME").unwrap());
    let kind = std::env::var("CMK_JOB_KIND").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let embedded = Embedded::open(&home).unwrap();
    let mut conn = connect(&embedded);
    let ctx = acme();
    let resume_after = read_checkpoint(&home, &kind);
    let chunks = Chunks {
        size: CHUNK,
        resume_after,
    };
    // A paced job, as production ones are: the kill lands between and inside chunks.
    let pace = |p: &jobs::Progress<i64>| {
        if let Some(after) = p.after {
            save_checkpoint(&home, &kind, after);
        }
        std::thread::sleep(Duration::from_millis(2));
        ControlFlow::Continue(())
    };
    let started = resume_after.unwrap_or(0);
    let (scanned, failed) = if kind == "rekey" {
        let keys = rt
            .block_on(embedded.cmk().keys_for(&ctx, Account::CLASSES))
            .unwrap();
        println!("STARTED {started}");
        let p = jobs::rekey_table::<Account, _, _, _, _>(
            &mut conn,
            &keys,
            chunks,
            |after: Option<&i64>, limit| {
                accounts::table
                    .filter(accounts::tenant_id.eq("acme"))
                    .filter(accounts::id.gt(after.copied().unwrap_or(i64::MIN)))
                    .order(accounts::id)
                    .limit(limit)
                    .select(SealedAccount::as_select())
            },
            |r| r.id,
            |id| accounts::table.find(*id),
            pace,
        )
        .unwrap();
        (p.scanned, p.failed.len())
    } else {
        let keys = rt
            .block_on(embedded.cmk().keys_for(&ctx, Member::CLASSES))
            .unwrap();
        println!("STARTED {started}");
        let p = jobs::encrypt_plaintext::<Member, _, _, _, _, _>(
            &mut conn,
            &keys,
            chunks,
            |after: Option<&i64>, limit| {
                members::table
                    .filter(members::tenant_id.eq("acme"))
                    .filter(members::private_keys.is_null())
                    .filter(members::id.gt(after.copied().unwrap_or(i64::MIN)))
                    .order(members::id)
                    .limit(limit)
                    .select((members::id, members::tenant_id, members::email_plain))
            },
            |(id, tenant_id, email): (i64, String, Option<String>)| {
                (
                    id,
                    Member {
                        id,
                        tenant_id,
                        email: email.unwrap_or_default(),
                    },
                )
            },
            |id| members::table.find(*id),
            pace,
        )
        .unwrap();
        (p.scanned, p.failed.len())
    };
    assert_eq!(failed, 0);
    println!("DONE {started} {scanned}");
}
