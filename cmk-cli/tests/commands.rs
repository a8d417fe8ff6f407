//! The `cmk` binary against a deployment the quickstart's model made: every command, the
//! errors a person must be able to act on, with their exit codes.

mod common;

use common::*;

#[test]
fn every_command_has_help_with_an_example() {
    let commands: &[&[&str]] = &[
        &["keyring", "init"],
        &["keyring", "list"],
        &["keyring", "create"],
        &["keyring", "rotate"],
        &["keyring", "disable"],
        &["keyring", "enable"],
        &["keyring", "destroy"],
        &["keyring", "backup"],
        &["tenant", "onboard"],
        &["tenant", "show"],
        &["tenant", "list"],
        &["tenant", "set-policy"],
        &["kek", "roll-over"],
        &["kek", "retire"],
        &["kek", "destroy"],
        &["rotate-master"],
        &["rekey"],
        &["migrate"],
        &["verify"],
        &["shred"],
        &["audit", "tail"],
        &["config", "check"],
        &["kms", "list"],
        &["kms", "create-key"],
        &["config", "sign"],
    ];
    let dir = tempfile::tempdir().unwrap();
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = cmk_in(dir.path(), &args);
        assert_code(&out, 0);
        assert!(
            stdout(&out).contains("Example:\n  cmk "),
            "{command:?}: {}",
            text(&out)
        );
    }
    let top = cmk_in(dir.path(), &["--help"]);
    assert!(
        stdout(&top).contains("Exit codes: 0 success"),
        "{}",
        text(&top)
    );
}

#[test]
fn keyring_commands_manage_the_local_kms() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |args: &[&str], code: i32| {
        let out = cmk_in(&home, args);
        assert_code(&out, code);
        out
    };
    // Before `init`, no command makes a keyring behind the operator's back.
    assert!(stderr(&run(&["keyring", "list"], 6)).contains("keyring init"));
    assert!(stdout(&run(&["keyring", "init"], 0)).contains("created"));
    assert!(stdout(&run(&["keyring", "init"], 0)).contains("exists"));
    run(&["keyring", "create", "acme"], 0);
    run(&["keyring", "create", "acme"], 1);
    assert!(stdout(&run(&["keyring", "rotate", "acme"], 0)).contains("version 2"));
    run(&["keyring", "disable", "acme"], 0);
    let listed: serde_json::Value =
        serde_json::from_slice(&run(&["--json", "keyring", "list"], 0).stdout).unwrap();
    let acme = &listed["keys"][0];
    assert_eq!(acme["name"], "acme");
    assert_eq!(acme["enabled"], false);
    assert_eq!(acme["primary"], 2);
    assert_eq!(acme["versions"].as_array().unwrap().len(), 2);
    run(&["keyring", "enable", "acme"], 0);

    // A backup is the keyring, readable by its owner only, and never overwrites a file.
    let backup = dir.path().join("keyring-backup.json");
    run(&["keyring", "backup", "--to", backup.to_str().unwrap()], 0);
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        std::fs::read(home.join("keyring.json")).unwrap()
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    run(&["keyring", "backup", "--to", backup.to_str().unwrap()], 1);

    // Destroying needs the name twice; then the key is gone for good.
    assert!(stderr(&run(&["keyring", "destroy", "acme"], 2)).contains("--confirm acme"));
    run(&["keyring", "destroy", "acme", "--confirm", "acme"], 0);
    let listed: serde_json::Value =
        serde_json::from_slice(&run(&["--json", "keyring", "list"], 0).stdout).unwrap();
    assert!(
        listed["keys"][0]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] == "destroyed"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tenants_are_onboarded_shown_listed_and_their_policies_set() {
    let d = Deployment::new(3).await;
    let listed = d.json(&["tenant", "list"], 0);
    assert_eq!(listed["tenants"], serde_json::json!(["acme", "globex"]));

    // Onboarding a new tenant proves its (new local) key and provisions its keys; again: nothing.
    let onboarded = d.json(&["tenant", "onboard", "--tenant", "initech"], 0);
    assert_eq!(onboarded["configured"], true);
    assert_eq!(
        onboarded["proven_keys"],
        serde_json::json!(["local:initech"])
    );
    assert!(
        onboarded["entries_written"].as_u64().unwrap() >= 4,
        "{onboarded}"
    );
    let again = d.json(&["tenant", "onboard", "--tenant", "initech"], 0);
    assert_eq!(again["configured"], false);
    assert_eq!(again["entries_written"], 0);
    assert_eq!(
        d.json(&["tenant", "list"], 0)["tenants"],
        serde_json::json!(["acme", "globex", "initech"])
    );

    // A policy change is a new revision; a new class gets its KEK.
    let set = d.json(
        &[
            "tenant",
            "set-policy",
            "--tenant",
            "initech",
            "--class",
            "hr",
            "--readers",
            "hr-admin,auditor",
            "--audit",
            "fail-closed",
            "--renewal-secs",
            "600",
        ],
        0,
    );
    assert_eq!(set["revision"], 2);
    assert_eq!(set["entries_written"], 1);
    let shown = d.json(&["tenant", "show", "--tenant", "initech"], 0);
    let hr = &shown["config"]["policies"]["hr"];
    assert_eq!(hr["readers"], serde_json::json!(["auditor", "hr-admin"]));
    assert_eq!(hr["audit"], "fail_closed");
    assert_eq!(hr["lease"]["renewal_secs"], 600);
    assert!(
        shown["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["class"] == "hr" && k["state"] == "active"),
        "{shown}"
    );
    // An invalid policy is refused before anything is saved.
    let out = d.cmk(&[
        "tenant",
        "set-policy",
        "--tenant",
        "initech",
        "--class",
        "hr",
        "--renewal-secs",
        "7200",
    ]);
    assert_code(&out, 2);
    assert_eq!(
        d.json(&["tenant", "show", "--tenant", "initech"], 0)["config"]["revision"],
        2
    );

    // `show` prints key ids and states, never key material: no byte of the keyring's keys.
    let keyring = std::fs::read_to_string(d.home().join("keyring.json")).unwrap();
    let materials = hex_strings(&keyring);
    assert!(
        !materials.is_empty(),
        "the scan must see the keyring's material"
    );
    for out in [
        d.cmk(&["tenant", "show", "--tenant", "acme"]),
        d.cmk(&["--json", "tenant", "show", "--tenant", "acme"]),
    ] {
        let all = text(&out);
        assert!(all.contains("local:acme"), "{all}");
        for m in &materials {
            assert!(!all.contains(m.as_str()), "key material in the output");
        }
    }
    // The admin events went to the tool's own event file.
    let tail = d.cmk(&["--json", "audit", "tail", "-n", "50", "--tenant", "initech"]);
    assert_code(&tail, 0);
    let names: Vec<String> = stdout(&tail)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["name"].to_string())
        .collect();
    assert!(
        names.iter().any(|n| n.contains("ADMIN_TENANT_ONBOARDED")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.contains("ADMIN_TENANT_CONFIG_CHANGED")),
        "{names:?}"
    );
}

/// The 64-hex-digit strings of a keyring file (its keys' material).
fn hex_strings(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|s| s.len() >= 64)
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_reads_every_row_and_lists_a_planted_tampered_row() {
    let d = Deployment::new(40).await;
    let manifest = d.manifest();
    let m = manifest.to_str().unwrap();
    let clean = d.json(&["verify", "--manifest", m, "--chunk", "7"], 0);
    assert_eq!(clean["rows"], 45);
    assert_eq!(clean["failed"], 0);
    let acme = d.json(&["verify", "--manifest", m, "--tenant", "acme"], 0);
    assert_eq!(acme["rows"], 40);
    // By table name: its manifest in HOME/manifests; one of the two is required.
    assert_eq!(d.json(&["verify", "--table", "patients"], 0)["rows"], 45);
    let out = d.cmk(&["verify", "--table", "nosuch"]);
    assert_code(&out, 6);
    assert!(
        stderr(&out).contains("nosuch.manifest.json"),
        "{}",
        text(&out)
    );
    assert_code(&d.cmk(&["verify"]), 2);

    // Row 7's email flipped in one byte; row 9's ssn moved onto row 8.
    flip_byte(&d, 7, 20);
    d.sql("UPDATE patients SET ssn = (SELECT ssn FROM patients WHERE id = 9) WHERE id = 8;");
    let out = d.cmk(&["verify", "--manifest", m]);
    assert_code(&out, 1);
    assert!(
        stdout(&out).contains("row 7 (tenant acme): tampered"),
        "{}",
        text(&out)
    );
    let report = d.json(&["verify", "--manifest", m], 1);
    assert_eq!(report["failed"], 2, "{report}");
    let failures = report["failures"].as_array().unwrap();
    assert_eq!(failures[0]["id"], 7);
    assert_eq!(failures[0]["kind"], "tampered");
    assert_eq!(failures[1]["id"], 8);
    assert_eq!(failures[1]["kind"], "tampered");
    assert_eq!(report["ok"], 43);
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_name_what_to_fix_with_their_exit_codes() {
    let d = Deployment::new(2).await;
    let m = d.manifest();
    let m = m.to_str().unwrap();

    // 3: an unknown tenant.
    let out = d.cmk(&["tenant", "show", "--tenant", "nobody"]);
    assert_code(&out, 3);
    assert!(
        stderr(&out).contains("`nobody` is unknown"),
        "{}",
        text(&out)
    );

    // 4: an unreachable database (nothing listens on port 9); the URL's password is not shown.
    let out = d.cmk(&[
        "--database-url",
        "postgres://cmk:hunter2@127.0.0.1:9/test",
        "tenant",
        "list",
    ]);
    assert_code(&out, 4);
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    // ... and a missing database file is not created by a reading command.
    let other = tempfile::tempdir().unwrap();
    std::fs::copy(
        d.home().join("operator.key"),
        other.path().join("operator.key"),
    )
    .unwrap();
    assert_code(&cmk_in(other.path(), &["tenant", "list"]), 4);
    assert!(!other.path().join("cmk.sqlite3").exists());

    // 5: the KMS refuses: the tenant disabled its key.
    assert_code(&d.cmk(&["keyring", "disable", "acme"]), 0);
    let out = d.cmk(&["tenant", "onboard", "--tenant", "acme"]);
    assert_code(&out, 5);
    assert_code(&d.cmk(&["keyring", "enable", "acme"]), 0);

    // 6: a malformed manifest, a manifest of another schema, a damaged checkpoint.
    let bad = d.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"schema\": \"cmk.manifest/1\", \"table\": ").unwrap();
    let out = d.cmk(&["verify", "--manifest", bad.to_str().unwrap()]);
    assert_code(&out, 6);
    assert!(stderr(&out).contains("bad.json"), "{}", text(&out));
    let injected = std::fs::read_to_string(m).unwrap().replace(
        "\"table\": \"patients\"",
        "\"table\": \"patients; DROP TABLE x\"",
    );
    std::fs::write(&bad, injected).unwrap();
    assert_code(&d.cmk(&["verify", "--manifest", bad.to_str().unwrap()]), 6);
    let jobs = d.home().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("rekey-patients.json"), "{}").unwrap();
    assert_code(&d.cmk(&["rekey", "--manifest", m]), 6);
    assert_code(&d.cmk(&["rekey", "--manifest", m, "--from-start"]), 0);

    // 8: a table without the key columns its manifest names.
    d.sql("CREATE TABLE plain_patients AS SELECT id, tenant_id, name, email, email_bidx, ssn FROM patients;");
    let plain = d.dir.path().join("plain.json");
    std::fs::write(
        &plain,
        std::fs::read_to_string(m)
            .unwrap()
            .replace("\"table\": \"patients\"", "\"table\": \"plain_patients\""),
    )
    .unwrap();
    let out = d.cmk(&["verify", "--manifest", plain.to_str().unwrap()]);
    assert_code(&out, 8);
    assert!(stderr(&out).contains("key columns"), "{}", text(&out));

    // 7: a configuration row edited in the database (its MAC no longer matches).
    d.sql("UPDATE cmk_tenant_config SET content = replace(content, 'doctor', 'anyone') WHERE tenant_id = 'acme';");
    let out = d.cmk(&["tenant", "show", "--tenant", "acme"]);
    assert_code(&out, 7);
    assert!(stderr(&out).contains("acme"), "{}", text(&out));

    // 9: a shredded tenant; 2: a shred without its confirmation.
    assert_code(&d.cmk(&["shred", "--tenant", "globex"]), 2);
    assert_code(
        &d.cmk(&["shred", "--tenant", "globex", "--confirm", "globex"]),
        0,
    );
    assert_code(&d.cmk(&["tenant", "onboard", "--tenant", "globex"]), 9);

    // A wrong home makes nothing: no operator key appears under which configurations would
    // look forged.
    let empty = tempfile::tempdir().unwrap();
    let out = cmk_in(empty.path(), &["tenant", "list"]);
    assert_code(&out, 6);
    assert!(!empty.path().join("operator.key").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn rotate_master_rewraps_the_registry_and_touches_no_row() {
    let d = Deployment::new(5).await;
    let before = rows_bytes(&d);
    // The new key must exist first: the round trip that proves it fails, and nothing moves.
    assert_code(
        &d.cmk(&["rotate-master", "--tenant", "acme", "--key", "local:acme-2"]),
        5,
    );
    assert_code(&d.cmk(&["keyring", "create", "acme-2"]), 0);
    let rotated = d.json(
        &["rotate-master", "--tenant", "acme", "--key", "local:acme-2"],
        0,
    );
    assert!(rotated["rewrapped"].as_u64().unwrap() >= 4, "{rotated}");
    assert_eq!(rows_bytes(&d), before, "no row touched");
    let shown = d.json(&["tenant", "show", "--tenant", "acme"], 0);
    assert_eq!(shown["config"]["root_key"], "local:acme-2");
    // Every row still reads, now through keys wrapped under the new master key.
    let m = d.manifest();
    assert_eq!(
        d.json(&["verify", "--manifest", m.to_str().unwrap()], 0)["failed"],
        0
    );

    // Every tenant at once, each to a new key of its own; still no row touched.
    let all = d.json(&["rotate-master", "--all-tenants"], 0);
    assert_eq!(all["tenants"], 2);
    assert_eq!(rows_bytes(&d), before, "no row touched");
    let acme = d.json(&["tenant", "show", "--tenant", "acme"], 0);
    let globex = d.json(&["tenant", "show", "--tenant", "globex"], 0);
    assert!(
        acme["config"]["root_key"]
            .as_str()
            .unwrap()
            .starts_with("local:acme-17"),
        "{acme}"
    );
    assert!(
        globex["config"]["root_key"]
            .as_str()
            .unwrap()
            .starts_with("local:globex-17")
    );
    assert_eq!(
        d.json(&["verify", "--manifest", m.to_str().unwrap()], 0)["ok"],
        10
    );
    assert_code(
        &d.cmk(&["rotate-master", "--all-tenants", "--tenant", "acme"]),
        2,
    );
}

fn rows_bytes(d: &Deployment) -> Vec<u8> {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Hexed {
        #[diesel(sql_type = diesel::sql_types::Text)]
        all: String,
    }
    let mut conn = conn(&d.database());
    let rows: Vec<Hexed> = diesel::sql_query(
        "SELECT group_concat(hex(name) || hex(email) || hex(email_bidx) || hex(coalesce(ssn, '')) || hex(coalesce(public_keys, '')) || hex(coalesce(private_keys, '')) || hex(coalesce(restricted_keys, '')), ',') AS \"all\" FROM (SELECT * FROM patients ORDER BY id)",
    )
    .load(&mut conn)
    .unwrap();
    rows.into_iter()
        .map(|r| r.all)
        .collect::<String>()
        .into_bytes()
}

/// Flips one bit of byte `at` of row `id`'s stored email.
fn flip_byte(d: &Deployment, id: i64, at: usize) {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Email {
        #[diesel(sql_type = diesel::sql_types::Binary)]
        email: Vec<u8>,
    }
    let mut conn = conn(&d.database());
    let mut row: Email = diesel::sql_query("SELECT email FROM patients WHERE id = ?")
        .bind::<diesel::sql_types::BigInt, _>(id)
        .get_result(&mut conn)
        .unwrap();
    row.email[at] ^= 1;
    diesel::sql_query("UPDATE patients SET email = ? WHERE id = ?")
        .bind::<diesel::sql_types::Binary, _>(row.email)
        .bind::<diesel::sql_types::BigInt, _>(id)
        .execute(&mut conn)
        .unwrap();
}
