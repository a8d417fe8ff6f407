//! Tenant configurations in a TOML file (`--config-file`): written by the commands, read by
//! the library, refused with the file's line when edited or rolled back, signed after a hand
//! edit once reviewed.

mod common;

use cmk::tenant::{ConfigVerifier, FileConfigStore, OperatorKey, TenantConfigStore};
use common::*;

fn file_of(d: &Deployment) -> std::path::PathBuf {
    d.home().join("tenants.toml")
}

/// `cmk --config-file HOME/tenants.toml --json args...`, exiting with `code`.
fn with_file(d: &Deployment, args: &[&str], code: i32) -> serde_json::Value {
    let file = file_of(d);
    let mut all = vec!["--config-file", file.to_str().unwrap()];
    all.extend_from_slice(args);
    d.json(&all, code)
}

/// `cmk --config-file HOME/tenants.toml args...`, whatever its exit.
fn raw_with_file(d: &Deployment, args: &[&str]) -> std::process::Output {
    let file = file_of(d);
    let mut all = vec!["--config-file", file.to_str().unwrap()];
    all.extend_from_slice(args);
    d.cmk(&all)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn events(d: &Deployment, name: &str) -> usize {
    std::fs::read_to_string(d.home().join("cli-events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("\"{name}\"")))
        .count()
}

#[tokio::test]
async fn configurations_in_a_file_are_written_checked_refused_and_signed() {
    let d = Deployment::new(2).await;
    // The database's configurations check out (no file named).
    let checked = d.json(&["config", "check"], 0);
    assert_eq!(
        (checked["checked"].as_u64(), checked["failed"].as_u64()),
        (Some(2), Some(0))
    );

    // A tenant onboarded into the file: nothing of it in the database's configuration table.
    let onboarded = with_file(&d, &["tenant", "onboard", "--tenant", "initech"], 0);
    assert_eq!(onboarded["configured"], true);
    let set = with_file(
        &d,
        &[
            "tenant",
            "set-policy",
            "--tenant",
            "initech",
            "--class",
            "payroll",
            "--readers",
            "hr",
            "--audit",
            "fail-closed",
            "--renewal-secs",
            "60",
            "--hard-expiry-secs",
            "600",
        ],
        0,
    );
    assert_eq!(
        (set["revision"].as_u64(), set["entries_written"].as_u64()),
        (Some(2), Some(1))
    );
    let text = std::fs::read_to_string(file_of(&d)).unwrap();
    assert!(
        text.contains("[tenants.initech.classes.payroll]\nreaders = [\"hr\"]"),
        "{text}"
    );
    let rows = cmk_core_rows(
        &d,
        "SELECT COUNT(*) FROM cmk_tenant_config WHERE tenant_id = 'initech'",
    );
    assert_eq!(rows, 0);
    assert_eq!(
        with_file(&d, &["tenant", "list"], 0)["tenants"],
        serde_json::json!(["initech"])
    );

    // The library reads what the command wrote, under the deployment's operator key.
    let store = FileConfigStore::new(
        file_of(&d),
        ConfigVerifier::new(OperatorKey::load(&d.home().join("operator.key")).unwrap()),
    );
    let loaded = store
        .load(&cmk::TenantId::new("initech").unwrap())
        .await
        .unwrap();
    let payroll = &loaded.policies[&cmk::Class::new("payroll").unwrap()];
    assert!(payroll.readers.contains("hr") && payroll.audit == cmk::AuditMode::FailClosed);

    // An edit without the operator key: refused by every command, with the table's line; an
    // integrity event each time.
    let edited = text.replacen("readers = [\"hr\"]", "readers = [\"hr\", \"mallory\"]", 1);
    std::fs::write(file_of(&d), &edited).unwrap();
    let before = events(&d, "ADMIN_INTEGRITY_FAILURE");
    let refused = with_file(&d, &["config", "check"], 7);
    let error = refused["tenants"][0]["error"].as_str().unwrap().to_string();
    let header = line_of(&edited, "[tenants.initech]");
    assert!(
        error.contains(&format!(
            "tenants.toml:{header}: tenant `initech`, field `mac`"
        )),
        "{error}"
    );
    assert_eq!(refused["tenants"][0]["kind"], "config_integrity");
    let shown = raw_with_file(&d, &["tenant", "show", "--tenant", "initech"]);
    assert_code(&shown, 7);
    assert!(
        stderr(&shown).contains("cmk config sign"),
        "{}",
        text_of(&shown)
    );
    assert_eq!(events(&d, "ADMIN_INTEGRITY_FAILURE"), before + 2);

    // Signing the edit needs a new revision; then the edit stands, comments kept.
    let unsigned = raw_with_file(&d, &["config", "sign", "--tenant", "initech"]);
    assert_code(&unsigned, 2);
    assert!(
        stderr(&unsigned).contains("raise the revision"),
        "{}",
        text_of(&unsigned)
    );
    let edited = edited.replacen("revision = 2", "revision = 3", 1).replacen(
        "[tenants.initech]",
        "# initech: mallory reviews payroll (ticket 7)\n[tenants.initech]",
        1,
    ) + "\n[tenants.initech.classes.finance]\nreaders = [\"cfo\"]\n";
    std::fs::write(file_of(&d), &edited).unwrap();
    let signed = with_file(&d, &["config", "sign", "--tenant", "initech"], 0);
    // The new class's KEK was provisioned before the signature made the class exist.
    assert_eq!(
        (
            signed["revision"].as_u64(),
            signed["entries_written"].as_u64()
        ),
        (Some(3), Some(1))
    );
    let after = std::fs::read_to_string(file_of(&d)).unwrap();
    assert!(
        after.contains("# initech: mallory reviews payroll (ticket 7)"),
        "{after}"
    );
    assert_eq!(with_file(&d, &["config", "check"], 0)["failed"], 0);
    let shown = with_file(&d, &["tenant", "show", "--tenant", "initech"], 0);
    assert_eq!(shown["config"]["revision"], 3);
    assert!(
        shown["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["class"] == "finance")
    );

    // The file from before the sign, put back: the floor file knows revision 3.
    std::fs::write(file_of(&d), &text).unwrap();
    let rolled = with_file(&d, &["config", "check"], 7);
    let error = rolled["tenants"][0]["error"].as_str().unwrap();
    let revision_line = line_of(&text, "revision = 2");
    assert!(
        error.contains(&format!(
            "tenants.toml:{revision_line}: tenant `initech`, field `revision`"
        )),
        "{error}"
    );
    assert_eq!(rolled["tenants"][0]["kind"], "config_rollback");

    // An invalid field: a malformed file, named with its line and field.
    let typo = after.replacen("readers = [\"cfo\"]", "reders = [\"cfo\"]", 1);
    std::fs::write(file_of(&d), &typo).unwrap();
    // cmk never signs an invalid table: this one changed after its signature, an alert too.
    let before = events(&d, "ADMIN_INTEGRITY_FAILURE");
    let invalid = with_file(&d, &["config", "check"], 6);
    assert_eq!(events(&d, "ADMIN_INTEGRITY_FAILURE"), before + 1);
    let error = invalid["tenants"][0]["error"].as_str().unwrap();
    let typo_line = line_of(&typo, "reders");
    assert!(
        error.contains(&format!(
            "tenants.toml:{typo_line}: tenant `initech`, field `classes.finance.reders`"
        )),
        "{error}"
    );

    // Signing is for the file only.
    let no_file = d.cmk(&["config", "sign", "--tenant", "acme"]);
    assert_code(&no_file, 2);
    assert!(
        stderr(&no_file).contains("--config-file"),
        "{}",
        text_of(&no_file)
    );
}

fn text_of(out: &std::process::Output) -> String {
    text(out)
}

fn cmk_core_rows(d: &Deployment, sql: &str) -> i64 {
    use diesel::prelude::*;
    #[derive(QueryableByName)]
    struct Count {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let sql = sql.replacen("COUNT(*)", "COUNT(*) AS n", 1);
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn(&d.database()))
        .unwrap()
        .n
}
