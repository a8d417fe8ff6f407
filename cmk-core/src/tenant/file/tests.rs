use super::*;
use crate::crypto::secret::SecretKey;
use crate::kms::KeyRef;
use crate::tenant::config::OperatorKey;
use crate::tenant::policy::{AuditMode, LeasePolicy, Policy, SearchMode};

fn verifier() -> ConfigVerifier {
    ConfigVerifier::new(OperatorKey::new(SecretKey::from_bytes([7; 32])))
}

fn acme() -> TenantConfig {
    let key = KeyRef::new("local:acme").unwrap();
    let lease = LeasePolicy::Leased {
        renewal_secs: 300,
        hard_expiry_secs: 3600,
        max_uses: None,
    };
    TenantConfig::new(TenantId::new("acme").unwrap(), key.clone())
        .with_lease(lease)
        .with_class(
            "secret",
            Policy::new(KeyRef::new("local:acme-secret").unwrap())
                .with_search(SearchMode::BlindIndex)
                .with_readers(["support", "billing"])
                .with_audit(AuditMode::FailClosed)
                .with_padding(32)
                .with_hidden_nulls()
                .with_lease(LeasePolicy::Leased {
                    renewal_secs: 60,
                    hard_expiry_secs: 600,
                    max_uses: Some(1000),
                }),
        )
        .unwrap()
        .with_class("payroll", Policy::new(key).with_lease(LeasePolicy::None))
        .unwrap()
}

fn store(dir: &tempfile::TempDir) -> FileConfigStore {
    FileConfigStore::new(dir.path().join("tenants.toml"), verifier())
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// The field, line and problem of a file error.
fn located(e: Error) -> (String, usize, Error) {
    match e {
        Error::ConfigFile {
            field,
            line,
            problem,
            ..
        } => (field, line, *problem),
        e => panic!("not a file error: {e:?}"),
    }
}

#[tokio::test]
async fn a_configuration_reads_back_as_saved_in_a_short_table() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let config = acme();
    s.save(&config).await.unwrap();
    let text = std::fs::read_to_string(s.path()).unwrap();
    assert!(text.starts_with("# Tenant configurations of cmk"), "{text}");
    // The lease most classes share is written once, for the tenant.
    assert_eq!(text.matches("renewal_secs = 300").count(), 1, "{text}");
    assert!(text.contains("[tenants.acme.classes.secret]"), "{text}");
    assert!(text.contains("lease = \"none\""), "{text}");
    assert!(!text.contains("[tenants.acme.classes]\n"), "{text}");
    // A fresh store (another process) reads the same configuration.
    let fresh = store(&dir);
    assert_eq!(fresh.load(&config.tenant).await.unwrap(), config);
    assert_eq!(fresh.tenants().unwrap(), vec!["acme".to_string()]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn an_edit_without_the_operator_key_is_refused_at_the_tenants_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.save(&acme()).await.unwrap();
    let globex = TenantConfig::new(
        TenantId::new("globex").unwrap(),
        KeyRef::new("local:globex").unwrap(),
    );
    s.save(&globex).await.unwrap();
    let text = std::fs::read_to_string(s.path()).unwrap();
    // An attacker adds a reader to acme's secret class.
    let edited = text.replacen(
        "readers = [\"billing\", \"support\"]",
        "readers = [\"billing\", \"support\", \"mallory\"]",
        1,
    );
    assert_ne!(edited, text);
    std::fs::write(s.path(), &edited).unwrap();
    let acme_id = TenantId::new("acme").unwrap();
    let e = store(&dir).load(&acme_id).await.unwrap_err();
    let message = e.to_string();
    let (field, line, problem) = located(e);
    assert!(
        matches!(problem, Error::ConfigIntegrity { .. }),
        "{problem:?}"
    );
    assert_eq!(
        (field.as_str(), line),
        ("mac", line_of(&edited, "[tenants.acme]"))
    );
    assert!(
        message.contains("tenants.toml:") && message.contains("`acme`"),
        "{message}"
    );
    // The error kind is the integrity failure's, so the service alerts on it.
    assert_eq!(
        Error::ConfigFile {
            path: String::new(),
            line,
            tenant: "acme".into(),
            field,
            problem: Box::new(problem)
        }
        .kind(),
        "config_integrity"
    );
    // The other tenant's table is untouched and still reads.
    assert_eq!(store(&dir).load(&globex.tenant).await.unwrap(), globex);
    // A comment or a layout change is not an edit of the configuration.
    let relaid = text.replacen("[tenants.acme]", "# the acme account\n[tenants.acme]", 1);
    std::fs::write(s.path(), relaid).unwrap();
    assert_eq!(store(&dir).load(&acme_id).await.unwrap(), acme());
}

#[tokio::test]
async fn a_table_never_signed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    std::fs::write(
        &path,
        "[tenants.acme]\nrevision = 1\nkey = \"local:acme\"\n[tenants.acme.classes.public]\n",
    )
    .unwrap();
    let e = store(&dir)
        .load(&TenantId::new("acme").unwrap())
        .await
        .unwrap_err();
    let (field, line, problem) = located(e);
    assert_eq!((field.as_str(), line), ("mac", 1));
    assert!(matches!(problem, Error::ConfigIntegrity { .. }));
}

#[tokio::test]
async fn an_older_file_put_back_is_refused_at_the_revision_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    let mut config = acme();
    s.save(&config).await.unwrap();
    let old = std::fs::read_to_string(s.path()).unwrap();
    config.revision = 2;
    config.audit_sink = Some("acme-siem".into());
    s.save(&config).await.unwrap();
    assert_eq!(s.load(&config.tenant).await.unwrap(), config);
    std::fs::write(s.path(), &old).unwrap();
    let (field, line, problem) = located(s.load(&config.tenant).await.unwrap_err());
    assert_eq!(
        (field.as_str(), line),
        ("revision", line_of(&old, "revision = 1"))
    );
    assert!(matches!(
        problem,
        Error::ConfigRollback {
            seen: 2,
            offered: 1,
            ..
        }
    ));
    // A store that never saw revision 2 believes the old file: what the floor file is for.
    assert_eq!(store(&dir).load(&config.tenant).await.unwrap().revision, 1);
}

#[tokio::test]
async fn a_save_never_overwrites_a_newer_table_of_another_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (store(&dir), store(&dir));
    let mut config = acme();
    a.save(&config).await.unwrap();
    config.revision = 2;
    a.save(&config).await.unwrap();
    let mut theirs = config.clone();
    theirs.audit_sink = Some("other".into());
    let e = b.save(&theirs).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::ConfigRollback {
                seen: 2,
                offered: 2,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(b.load(&config.tenant).await.unwrap(), config);
}

#[tokio::test]
async fn an_operators_edit_is_signed_in_place_once_its_revision_is_raised() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.save(&acme()).await.unwrap();
    let acme_id = TenantId::new("acme").unwrap();
    s.load(&acme_id).await.unwrap();
    let text = std::fs::read_to_string(s.path()).unwrap();
    let edited = text
        .replacen("pad_to = 32", "pad_to = 64 # wider padding, ticket 42", 1)
        .replacen(
            "[tenants.acme]",
            "# acme: reviewed 2026-12-07\n[tenants.acme]",
            1,
        );
    std::fs::write(s.path(), &edited).unwrap();
    // Without a new revision the edit is refused, at the revision's line.
    let reviewed = s.read_edited(&acme_id).unwrap();
    let (field, line, problem) = located(s.sign_edited(&reviewed).unwrap_err());
    assert_eq!(
        (field.as_str(), line),
        ("revision", line_of(&edited, "revision = 1"))
    );
    assert!(
        matches!(problem, Error::ConfigRollback { .. }),
        "{problem:?}"
    );
    let edited = edited.replacen("revision = 1", "revision = 2", 1);
    std::fs::write(s.path(), &edited).unwrap();
    let reviewed = s.read_edited(&acme_id).unwrap();
    assert_eq!(reviewed.revision, 2);
    // A table changed after its review is not signed.
    let mut stale = reviewed.clone();
    stale.audit_sink = Some("elsewhere".into());
    assert!(matches!(s.sign_edited(&stale), Err(Error::Conflict)));
    s.sign_edited(&reviewed).unwrap();
    let after = std::fs::read_to_string(s.path()).unwrap();
    // Only the MAC changed: the operator's comments and layout are kept.
    let without_mac = |t: &str| {
        t.lines()
            .filter(|l| !l.starts_with("mac = "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(without_mac(&after), without_mac(&edited));
    assert_ne!(after, edited);
    let loaded = store(&dir).load(&acme_id).await.unwrap();
    assert_eq!(
        loaded.policies[&crate::Class::new("secret").unwrap()].pad_to,
        64
    );
}

/// Writes acme's table with `class_body` as its secret class and returns the load error.
async fn refused(class_body: &str) -> (String, usize, Error, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[tenants.acme]\nrevision = 1\nkey = \"local:acme\"\nmac = \"{}\"\n\n[tenants.acme.classes.secret]\n{class_body}\n",
        "00".repeat(32)
    );
    std::fs::write(dir.path().join("tenants.toml"), &text).unwrap();
    let e = store(&dir)
        .load(&TenantId::new("acme").unwrap())
        .await
        .unwrap_err();
    let message = e.to_string();
    let (field, line, problem) = located(e);
    (field, line, problem, message)
}

#[tokio::test]
async fn invalid_fields_are_named_with_their_line_and_no_value() {
    let planted = "Pl4nted-S3cret";
    let cases: &[(&str, &str, usize)] = &[
        ("reders = [\"support\"]", "classes.secret.reders", 7),
        ("search = \"fuzzy\"", "classes.secret.search", 7),
        ("\npad_to = \"Pl4nted-S3cret\"", "classes.secret.pad_to", 8),
        (
            "readers = [\"Pl4nted-S3cret\", 7]",
            "classes.secret.readers",
            7,
        ),
        ("key = \"Pl4nted-S3cret\"", "classes.secret.key", 7),
        ("audit = true", "classes.secret.audit", 7),
        (
            "hide_nulls = \"Pl4nted-S3cret\"",
            "classes.secret.hide_nulls",
            7,
        ),
        (
            "lease = { renewal_secs = 600, hard_expiry_secs = 60 }",
            "classes.secret.lease",
            7,
        ),
        (
            "lease = { renewal_secs = -1 }",
            "classes.secret.lease.renewal_secs",
            7,
        ),
        ("lease = \"forever\"", "classes.secret.lease", 7),
    ];
    for (body, want_field, want_line) in cases {
        let (field, line, problem, message) = refused(body).await;
        assert_eq!(
            (field.as_str(), line),
            (*want_field, *want_line),
            "{body}: {message}"
        );
        assert!(
            matches!(problem, Error::InvalidConfig(_) | Error::InvalidName { .. }),
            "{body}: {problem:?}"
        );
        assert!(
            message.contains("tenants.toml:") && message.contains("`acme`"),
            "{message}"
        );
        // The scan finds the planted value where it is (the file), never in the error; a key
        // reference is no secret, yet it is not repeated either.
        assert!(!message.contains(planted), "{body}: {message}");
    }
    assert!(
        refused("pad_to = \"Pl4nted-S3cret\"")
            .await
            .3
            .contains("pad_to")
    );
    // TOML syntax: the parser's line, without the line's text.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tenants.toml"),
        "[tenants.acme]\nrevision = 1\nkey = \"local:acme\nPl4nted-S3cret = 1\n",
    )
    .unwrap();
    let e = store(&dir)
        .load(&TenantId::new("acme").unwrap())
        .await
        .unwrap_err();
    let message = e.to_string();
    let (field, line, _) = located(e);
    assert_eq!((field.as_str(), line), ("(syntax)", 3), "{message}");
    assert!(!message.contains(planted), "{message}");
    // A planted value would be found: it is in the file the scan reads.
    assert!(
        std::fs::read_to_string(dir.path().join("tenants.toml"))
            .unwrap()
            .contains(planted)
    );
}

#[tokio::test]
async fn a_tenant_without_a_table_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(&dir);
    s.save(&acme()).await.unwrap();
    let e = s
        .load(&TenantId::new("initech").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UnknownTenant { .. }), "{e:?}");
}

/// Hostile bytes: a valid file cut or with bytes changed anywhere, or arbitrary text, never
/// makes a load panic and never reads as the signed configuration unless unchanged.
#[test]
fn damaged_files_never_panic_nor_read_as_signed() {
    use proptest::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let s = store(&dir);
    rt.block_on(s.save(&acme())).unwrap();
    let valid = std::fs::read(s.path()).unwrap();
    let acme_id = TenantId::new("acme").unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: 256,
        ..Default::default()
    });
    let strategy = (
        0..valid.len(),
        any::<u8>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..64),
    );
    runner
        .run(&strategy, |(at, byte, cut, junk)| {
            let mut bytes = valid.clone();
            if cut {
                bytes.truncate(at);
            } else {
                bytes[at] = byte;
            }
            if junk.len() > 48 {
                bytes = junk;
            }
            std::fs::write(s.path(), &bytes).unwrap();
            let loaded = rt.block_on(store(&dir).load(&acme_id));
            if let Ok(config) = loaded {
                // Only a change the MAC does not cover (layout, a comment) may still read,
                // and then as exactly the signed configuration.
                prop_assert_eq!(config, acme());
            }
            Ok(())
        })
        .unwrap();
}
