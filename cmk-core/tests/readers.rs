//! Reader roles: a class the actor may not read is refused with a distinct error, or withheld
//! by a partial unseal, and either way a DATA_DENY_ACCESS event is emitted.

mod common;

use cmk_core::Error;
use cmk_core::event::Outcome;
use cmk_core::format::aad::RowId;
use cmk_core::seal::Revealed;
use common::*;

#[tokio::test]
async fn strict_unseal_refuses_and_partial_unseal_withholds() {
    let fx = Fixture::new(&["acme"]).await;
    let writer = doctor("acme");
    let keys = fx.cmk.keys_for(&writer, &ALL).await.unwrap();
    let id = RowId::Uuid([7; 16]);
    let sealed = keys
        .seal(
            &patients(),
            Some(&id),
            &[Some(b"a@x"), Some(b"Ann"), Some(b"123"), Some(b"C")],
        )
        .unwrap();
    let row = Stored::from_sealed("acme", &sealed);
    fx.sink.take();

    // A nurse lacks the `doctor` role that `restricted` requires.
    let nurse = keys.with_context(ctx("acme").with_role("nurse")).unwrap();
    let err = row
        .with(Some(&id), |r| nurse.unseal(&patients(), r))
        .unwrap_err();
    assert!(
        matches!(&err, Error::AccessDenied { class } if class == "restricted"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "access denied: the actor may not read class `restricted`"
    );

    let partial = row
        .with(Some(&id), |r| nurse.unseal_partial(&patients(), r))
        .unwrap();
    assert_eq!(partial.values[0].value(), Some(&b"a@x"[..]));
    assert_eq!(partial.values[1].value(), Some(&b"Ann"[..]));
    assert_eq!(partial.values[2], Revealed::Withheld);
    assert_eq!(partial.values[3].value(), Some(&b"C"[..]));

    let events = fx.sink.take();
    let summary: Vec<(&str, bool)> = events
        .iter()
        .map(|e| (e.name.as_str(), e.outcome == Outcome::Success))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("DATA_DENY_ACCESS", false),
            ("DATA_DENY_ACCESS", false),
            ("DATA_DECRYPT", true)
        ]
    );
    assert_eq!(&*events[1].classes, ["restricted"]);
    assert_eq!(&*events[1].columns, ["ssn"]);
    assert_eq!(
        events[1].record_id.as_deref(),
        Some("07070707-0707-0707-0707-070707070707")
    );
    assert_eq!(&*events[2].columns, ["email", "name", "code"]);

    // The doctor reads everything.
    let all = row
        .with(Some(&id), |r| keys.unseal(&patients(), r))
        .unwrap();
    assert_eq!(all.values[2].value(), Some(&b"123"[..]));
}

/// Issue 15 §1.3: a tampered row read partially fails with `Tampered`, and its failure is an
/// event of its own (a failed DATA_DECRYPT naming the kind), beside the refusal; before, only
/// the DATA_DENY_ACCESS event was emitted.
#[tokio::test]
async fn a_tampered_row_read_partially_emits_its_failure() {
    let fx = Fixture::new(&["acme"]).await;
    let keys = fx.cmk.keys_for(&doctor("acme"), &ALL).await.unwrap();
    let id = RowId::Int(3);
    let sealed = keys
        .seal(
            &patients(),
            Some(&id),
            &[Some(b"a@x"), Some(b"Ann"), Some(b"123"), Some(b"C")],
        )
        .unwrap();
    let mut row = Stored::from_sealed("acme", &sealed);
    // The `name` field (readable by a nurse) is altered by a database writer.
    let last = row.fields[1].as_ref().unwrap().len() - 1;
    row.fields[1].as_mut().unwrap()[last] ^= 1;
    let nurse = keys.with_context(ctx("acme").with_role("nurse")).unwrap();
    fx.sink.take();
    let err = row
        .with(Some(&id), |r| nurse.unseal_partial(&patients(), r))
        .unwrap_err();
    assert!(matches!(err, Error::Tampered), "{err:?}");
    let events = fx.sink.take();
    let summary: Vec<(&str, String)> = events
        .iter()
        .map(|e| {
            let outcome = match &e.outcome {
                Outcome::Success => "success".to_string(),
                Outcome::Failure { error } => error.clone(),
                other => format!("{other:?}"),
            };
            (e.name.as_str(), outcome)
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("DATA_DENY_ACCESS", "access_denied".to_string()),
            ("DATA_DECRYPT", "tampered".to_string())
        ]
    );
    assert_eq!(events[1].record_id.as_deref(), Some("3"));
}

#[tokio::test]
async fn a_configuration_change_applies_to_the_next_key_fetch() {
    let fx = Fixture::new(&["acme"]).await;
    let nurse = ctx("acme").with_role("nurse");
    let keys = fx.cmk.keys_for(&nurse, &ALL).await.unwrap();
    let sealed = keys
        .seal(
            &patients(),
            None,
            &[Some(b"a@x"), Some(b"Ann"), Some(b"123"), Some(b"C")],
        )
        .unwrap();
    let row = Stored::from_sealed("acme", &sealed);
    assert!(row.with(None, |r| keys.unseal(&patients(), r)).is_err());
    // The tenant lets nurses read `restricted`.
    let mut cfg = config_for("acme", cmk_core::kms::KeyRef::new("local:acme").unwrap());
    cfg.revision = 2;
    cfg.policies.insert(
        class("restricted"),
        cmk_core::Policy::new(cmk_core::kms::KeyRef::new("local:acme").unwrap())
            .with_readers(["doctor", "nurse"]),
    );
    fx.cmk.configure_tenant(&ctx("acme"), &cfg).await.unwrap();
    let keys = fx.cmk.keys_for(&nurse, &ALL).await.unwrap();
    assert!(row.with(None, |r| keys.unseal(&patients(), r)).is_ok());
}
