//! The long-running commands as an operator meets them: `rekey` interrupted and resumed,
//! `shred` against a warm process and a restored dump, `audit tail --follow`, and the
//! progress bar on a terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

fn spawn_cmk(home: &Path, args: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("cmk"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("CMK_HOME")
        .env_remove("CMK_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until `path` exists (the job wrote its first checkpoint).
fn wait_for(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_rekey_resumes_where_it_stopped_and_rewraps_each_row_once() {
    const ACME: u64 = 2000;
    let d = Deployment::new(ACME as i64).await;
    let m = d.manifest();
    let m = m.to_str().unwrap();
    assert_code(&d.cmk(&["kek", "roll-over", "--tenant", "acme"]), 0);
    let checkpoint = d.home().join("jobs/rekey-patients.json");

    // Ctrl-C after the first chunk: the job stops between rows and keeps its checkpoint.
    let job = spawn_cmk(
        &d.home(),
        &["--json", "rekey", "--manifest", m, "--chunk", "5"],
    );
    wait_for(&checkpoint);
    signal(&job, "-INT");
    let out = job.wait_with_output().unwrap();
    assert_code(&out, 130);
    assert!(
        stderr(&out).contains("run the same command again to resume"),
        "{}",
        text(&out)
    );
    let first = json_of(&out);
    assert_eq!(first["interrupted"], true);
    let stopped_after = first["rows"].as_u64().unwrap();
    assert!(
        stopped_after < ACME,
        "the job ended before the interruption: {first}"
    );
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
    assert_eq!(saved["after"].as_u64(), Some(stopped_after), "ids are 1..");

    // Killed outright mid-run: the next run starts from the last chunk's checkpoint and
    // finds the rows after it that were already done under the active KEK.
    let job = spawn_cmk(
        &d.home(),
        &["--json", "rekey", "--manifest", m, "--chunk", "5"],
    );
    let before = std::fs::read_to_string(&checkpoint).unwrap();
    let start = Instant::now();
    while std::fs::read_to_string(&checkpoint).unwrap() == before {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&job, "-KILL");
    let killed = job.wait_with_output().unwrap();
    assert_eq!(killed.status.code(), None, "killed by a signal");

    let out = d.cmk(&["--json", "rekey", "--manifest", m, "--chunk", "50"]);
    assert_code(&out, 0);
    let last = json_of(&out);
    let resumed_after = last["resumed_after"].as_u64().unwrap();
    assert!(resumed_after > stopped_after, "{last}");
    assert_eq!(
        last["rows"].as_u64().unwrap(),
        ACME + 5 - resumed_after,
        "only rows after it"
    );
    assert!(!checkpoint.exists(), "a finished job leaves no checkpoint");

    // Every acme row was re-wrapped exactly once across the runs: a fresh pass finds none
    // left, and no row was half written.
    let again = d.json(&["rekey", "--manifest", m], 0);
    assert_eq!(again["rows"], ACME + 5);
    assert_eq!(again["rewrapped"], 0);
    assert_eq!(again["failed"], 0);
    let verified = d.json(&["verify", "--manifest", m], 0);
    assert_eq!(verified["ok"], ACME + 5);
    let rewrapped_first = first["rewrapped"].as_u64().unwrap();
    assert_eq!(
        rewrapped_first, stopped_after,
        "each row before the stop was re-wrapped"
    );
}

/// The other process of the shred test: an application instance with a warm lease that reads
/// row 1 every 50 ms and prints `ok` or the error kind (run by its parent only).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a child process of the shred test"]
async fn warm_reader() {
    use cmk::Encrypted;
    use diesel::prelude::*;
    let home = std::env::var("CMK_WARM_HOME").unwrap();
    let embedded = cmk::embedded::Embedded::open(&home).unwrap();
    let _renewer = embedded.cmk().spawn_renewer(Duration::from_millis(100));
    let ctx = cmk::RequestContext::new(cmk::TenantId::new("acme").unwrap()).with_role("doctor");
    let keys = embedded
        .cmk()
        .keys_for(&ctx, Patient::CLASSES)
        .await
        .unwrap();
    let mut conn = conn(&embedded.database_path());
    let row: SealedPatient = patients::table.find(1).first(&mut conn).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        match Patient::unseal(&row, &keys) {
            Ok(p) => {
                assert_eq!(p, patient(1, "acme"));
                println!("ok");
            }
            Err(e) => {
                println!("err {}", e.kind());
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn after_shred_a_warm_process_stops_within_one_renewal_and_a_restored_dump_stays_unreadable()
{
    const RENEWAL: Duration = Duration::from_secs(2);
    let d = Deployment::with_renewal(20, Some(RENEWAL.as_secs())).await;
    let m = d.manifest();
    let m = m.to_str().unwrap();

    // The warm process.
    let mut reader = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "warm_reader",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("CMK_WARM_HOME", d.home())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel::<(Instant, String)>();
    let out = reader.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line == "ok" || line.starts_with("err ") {
                let _ = tx.send((Instant::now(), line));
            }
        }
    });
    let (_, first) = lines.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(first, "ok", "the reader is warm");

    // A dump taken before the shred (and before a master-key rotation), restored beside the
    // live keyring: readable now (the control).
    let restored = d.dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    conn(&d.database()).batch_execute_vacuum_into(&restored.join("cmk.sqlite3"));
    std::fs::copy(d.home().join("operator.key"), restored.join("operator.key")).unwrap();
    let sync_keyring = || {
        std::fs::copy(d.home().join("keyring.json"), restored.join("keyring.json")).unwrap();
    };
    sync_keyring();
    let control = json_of(&cmk_in(&restored, &["--json", "verify", "--manifest", m]));
    assert_eq!(
        control["ok"], 25,
        "the dump reads before the shred: {control}"
    );
    assert_code(&d.cmk(&["keyring", "create", "acme-2"]), 0);
    assert_code(
        &d.cmk(&["rotate-master", "--tenant", "acme", "--key", "local:acme-2"]),
        0,
    );

    let shred = d.json(&["shred", "--tenant", "acme", "--confirm", "acme"], 0);
    let shredded_at = Instant::now();
    assert_eq!(shred["holds_against_backups"], true, "{shred}");
    assert_eq!(
        shred["master_keys_destroyed"],
        serde_json::json!(["local:acme", "local:acme-2"])
    );
    let stopped = loop {
        let (at, line) = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        if line != "ok" {
            // The handle it holds: its leases were revoked at the renewal that saw the shred.
            assert_eq!(line, "err lease_ended");
            break at;
        }
    };
    let waited = stopped.saturating_duration_since(shredded_at);
    assert!(
        waited <= RENEWAL + Duration::from_millis(500),
        "the warm process decrypted for {waited:?} after the shred (renewal interval {RENEWAL:?})"
    );
    let _ = reader.wait();

    // The dump restored after the shred: acme's rows never read again; globex's still do.
    sync_keyring();
    let out = cmk_in(&restored, &["--json", "verify", "--manifest", m]);
    assert_code(&out, 1);
    let after = json_of(&out);
    assert_eq!(after["failed"], 20, "{after}");
    assert_eq!(after["ok"], 5, "{after}");
    assert!(
        after["failures"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["tenant"] == "acme" && f["kind"] == "kms_not_found"),
        "{after}"
    );
}

trait VacuumInto {
    fn batch_execute_vacuum_into(self, to: &Path);
}

impl VacuumInto for diesel::SqliteConnection {
    fn batch_execute_vacuum_into(mut self, to: &Path) {
        use diesel::connection::SimpleConnection;
        self.batch_execute(&format!("VACUUM INTO '{}'", to.display()))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_tail_follows_new_events_until_ctrl_c() {
    let d = Deployment::new(1).await;
    let mut tail = spawn_cmk(
        &d.home(),
        &["--json", "audit", "tail", "-n", "0", "--follow"],
    );
    let out = tail.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_code(&d.cmk(&["tenant", "onboard", "--tenant", "newco"]), 0);
    let start = Instant::now();
    loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["name"] == "ADMIN_TENANT_ONBOARDED" && event["tenant"] == "newco" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30));
    }
    signal(&tail, "-INT");
    assert_code(&tail.wait_with_output().unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn rekey_draws_a_progress_bar_on_a_terminal_and_lines_elsewhere() {
    let d = Deployment::new(300).await;
    let m = d.manifest();
    assert_code(&d.cmk(&["kek", "roll-over", "--tenant", "acme"]), 0);
    // A pseudo-terminal through util-linux `script`.
    let command = format!(
        "{} --home {} rekey --manifest {} --chunk 20",
        assert_cmd::cargo::cargo_bin("cmk").display(),
        d.home().display(),
        m.display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    assert_code(&out, 0);
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("rekey patients [===="), "{screen}");
    assert!(screen.contains("305/305 rows"), "{screen}");
    assert!(screen.contains("300 re-wrapped"), "{screen}");
    // Off a terminal: plain lines, no bar or escape codes.
    let out = d.cmk(&["rekey", "--manifest", m.to_str().unwrap()]);
    assert_code(&out, 0);
    let log = stderr(&out);
    assert!(log.contains("rekey patients: 305/305 rows"), "{log}");
    assert!(!log.contains('\u{1b}') && !log.contains("[="), "{log}");
}

mod people {
    #![allow(missing_docs, unreachable_pub)]
    use cmk::Encrypted;

    diesel::table! {
        use diesel::sql_types::*;
        use cmk::diesel::sql_types::*;
        people (id) {
            id -> BigInt,
            tenant_id -> Text,
            name -> CiphertextSql,
            email -> CiphertextSql,
            email_bidx -> BlindIndexSql,
            ssn -> Nullable<CiphertextSql>,
            public_keys -> Nullable<KeyColumnSql>,
            private_keys -> Nullable<KeyColumnSql>,
            restricted_keys -> Nullable<KeyColumnSql>,
        }
    }

    /// The quickstart's model on a table that is being migrated from plaintext columns.
    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[diesel(table_name = people)]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub struct Person {
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "public")]
        pub name: String,
        #[cmk(class = "private", blind_index(normalize = "casefold"))]
        pub email: String,
        #[cmk(class = "restricted")]
        pub ssn: Option<String>,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_seals_plaintext_rows_once_and_leaves_their_plaintext_columns() {
    use cmk::Encrypted;
    use diesel::prelude::*;
    use people::{Person, people as t};
    let d = Deployment::new(1).await;
    // The expand step: sealed columns added (nullable) beside the plaintext ones.
    d.sql(
        "CREATE TABLE people (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, name BLOB,
         email BLOB, email_bidx BLOB, ssn BLOB, public_keys BLOB, private_keys BLOB,
         restricted_keys BLOB, name_plain TEXT, email_plain TEXT, ssn_plain TEXT);",
    );
    let expected = |i: i64| Person {
        id: i,
        tenant_id: if i <= 25 { "acme" } else { "globex" }.into(),
        name: format!("Person {i}"),
        email: format!("Person{i}@Example.com"),
        ssn: (i % 3 != 0).then(|| format!("987-65-{i:04}")),
    };
    for i in 1..=31 {
        let p = expected(i);
        let ssn = p.ssn.map_or("NULL".into(), |s| format!("'{s}'"));
        // Row 31 lacks its (non-nullable) name: it cannot be sealed yet.
        let name = if i == 31 {
            "NULL".into()
        } else {
            format!("'{}'", p.name)
        };
        d.sql(&format!(
            "INSERT INTO people (id, tenant_id, name_plain, email_plain, ssn_plain)
             VALUES ({i}, '{}', {name}, '{}', {ssn});",
            p.tenant_id, p.email
        ));
    }
    cmk::model::write_manifests(&d.home().join("manifests"), &[Person::manifest().unwrap()])
        .unwrap();

    // Every classified column needs its plaintext column.
    let out = d.cmk(&["migrate", "--table", "people", "--from", "name=name_plain"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("email, ssn"), "{}", text(&out));
    let from = [
        "--from",
        "name=name_plain",
        "--from",
        "email=email_plain",
        "--from",
        "ssn=ssn_plain",
    ];
    let migrate = |extra: &[&str], code: i32| {
        let mut args = vec!["migrate", "--table", "people"];
        args.extend_from_slice(&from);
        args.extend_from_slice(extra);
        d.json(&args, code)
    };
    let first = migrate(&["--chunk", "7"], 1);
    assert_eq!(first["migrated"], 30, "{first}");
    assert_eq!(first["failures"][0]["id"], 31);
    assert_eq!(first["failures"][0]["kind"], "null_in_non_nullable_column");
    // Sealed rows are not selected again; the fixed row is sealed by the next run.
    d.sql("UPDATE people SET name_plain = 'Person 31' WHERE id = 31;");
    let second = migrate(&[], 0);
    assert_eq!(
        (second["rows"].as_u64(), second["migrated"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(migrate(&[], 0)["rows"], 0);
    assert_eq!(d.json(&["verify", "--table", "people"], 0)["ok"], 31);

    // The application reads every row as it was, through its model.
    let embedded = cmk::embedded::Embedded::open(d.home()).unwrap();
    let mut conn = conn(&embedded.database_path());
    for tenant in ["acme", "globex"] {
        let ctx = cmk::RequestContext::new(cmk::TenantId::new(tenant).unwrap()).with_role("doctor");
        let keys = embedded
            .cmk()
            .keys_for(&ctx, Person::CLASSES)
            .await
            .unwrap();
        let read: Vec<Person> = keys
            .scope(|| {
                t::table
                    .filter(t::tenant_id.eq(tenant))
                    .order(t::id)
                    .load(&mut conn)
            })
            .unwrap();
        let want: Vec<Person> = (1..=31)
            .map(expected)
            .filter(|p| p.tenant_id == tenant)
            .collect();
        assert_eq!(read, want);
    }
    // The plaintext columns stay for the contract step to drop; the events say DATA_MIGRATE.
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let kept: Count = diesel::sql_query(
        "SELECT COUNT(*) AS n FROM people WHERE name_plain IS NOT NULL AND email_plain IS NOT NULL",
    )
    .get_result(&mut conn)
    .unwrap();
    assert_eq!(kept.n, 31);
    drop(embedded);
    let tail = stdout(&d.cmk(&["--json", "audit", "tail", "-n", "200"]));
    assert_eq!(tail.matches("\"DATA_MIGRATE\"").count(), 31, "{tail}");
}

/// `audit tail` shows the events still waiting in a spool (the issue: "over the JSON Lines
/// sink and the spool"), while the application holds the spool's lock, each event once even
/// when its delivery has been written and the spool's cursor not moved yet.
#[tokio::test]
async fn audit_tail_shows_events_waiting_in_a_spool_once() {
    use cmk::event::{EventName, Outcome, SecurityEvent};
    let d = Deployment::new(1).await;
    // The application, running: its spool open (locked), two events not delivered.
    let spool = cmk::audit::spool::Spool::open(d.home().join("spool"), 1 << 20).unwrap();
    let ctx = cmk::RequestContext::new(cmk::TenantId::new("acme").unwrap())
        .with_request_id("waiting-in-the-spool");
    let waiting = [
        SecurityEvent::new(&ctx, EventName::DataDecrypt, Outcome::Success),
        SecurityEvent::new(&ctx, EventName::DataEncrypt, Outcome::Success),
    ];
    spool.append(&waiting, true).unwrap();
    let ids: Vec<String> = waiting.iter().map(|e| e.id.to_string()).collect();
    let tail = |d: &Deployment| -> Vec<serde_json::Value> {
        let out = d.cmk(&["--json", "audit", "tail", "-n", "1000"]);
        assert_code(&out, 0);
        stdout(&out)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| ids.iter().any(|id| e["id"] == id.as_str()))
            .collect()
    };
    let shown = tail(&d);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(
        shown.iter().all(|e| e["delivery"] == "spooled"),
        "{shown:?}"
    );
    // The first is delivered (written to the file) but the cursor has not moved yet: it is
    // shown once, as delivered.
    let mut line = Vec::new();
    cmk::audit::format::json_line(&waiting[0], &mut line);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(d.home().join("events.jsonl"))
        .unwrap();
    std::io::Write::write_all(&mut file, &line).unwrap();
    let shown = tail(&d);
    assert_eq!(shown.len(), 2, "{shown:?}");
    let first = shown.iter().find(|e| e["id"] == ids[0].as_str()).unwrap();
    assert!(first.get("delivery").is_none(), "{first}");
    // The text form says which are waiting.
    let text = stdout(&d.cmk(&["audit", "tail", "-n", "1000"]));
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("(spooled: not delivered yet)"))
            .count(),
        1,
        "{text}"
    );
    drop(spool);
}

/// KEK retirement end to end through the command: roll over, rekey, retire, destroy, in that
/// order only; afterwards every row still reads (none was left under the destroyed version)
/// and the version is gone from the tenant's keys.
#[tokio::test]
async fn a_kek_is_retired_and_destroyed_only_after_its_rows_moved() {
    let d = Deployment::with_renewal(20, Some(3)).await;
    let kek = |verb: &str| {
        d.cmk(&[
            "--json",
            "kek",
            verb,
            "--tenant",
            "acme",
            "--class",
            "public",
            "--version",
            "1",
        ])
    };
    let rolled = d.json(
        &["kek", "roll-over", "--tenant", "acme", "--class", "public"],
        0,
    );
    assert_eq!(rolled["rolled_over"][0]["version"], 2, "{rolled}");
    // Too early: version 2 has not been active for one renewal interval (3 s) yet.
    let early = kek("retire");
    assert_code(&early, 1);
    assert!(stderr(&early).contains("renewal"), "{}", text(&early));
    // Destroying an active version is refused: it must be retired first.
    let active = kek("destroy");
    assert_code(&active, 1);
    std::thread::sleep(std::time::Duration::from_millis(3_200));
    let rekeyed = d.json(&["rekey", "--table", "patients", "--tenant", "acme"], 0);
    assert_eq!(rekeyed["rewrapped"], 20, "{rekeyed}");
    let retired = kek("retire");
    assert_code(&retired, 0);
    let destroyed = kek("destroy");
    assert_code(&destroyed, 0);
    let verified = d.json(&["verify", "--table", "patients"], 0);
    assert_eq!(verified["ok"], 25, "{verified}");
    let shown = d.json(&["tenant", "show", "--tenant", "acme"], 0);
    // The registry is append-only: version 1's states follow each other, the last destroyed.
    let states: Vec<&str> = shown["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["class"] == "public" && k["version"] == 1)
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["active", "decrypt-only", "destroyed"], "{shown}");
}
