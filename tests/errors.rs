//! Typed errors where callers branch, and their HTTP statuses: an invalid name (400, cut to 64
//! bytes), a value too large (413), a value that does not decode as its type (500), a class
//! the handle was not fetched for, an I/O failure with its source.

mod common;

use cmk::{Class, Encrypted, Error, SearchMode, TenantId};

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "readings", tenant = tenant_id, id = id, ids = "app")]
struct Reading {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    value: String,
    #[cmk(class = "public")]
    label: String,
}

/// The same table after the application changed `value`'s type.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "readings", tenant = tenant_id, id = id, ids = "app")]
struct ReadingV2 {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    value: u32,
    #[cmk(class = "public")]
    label: String,
}

fn reading(value: String) -> Reading {
    Reading {
        id: 1,
        tenant_id: "acme".into(),
        value,
        label: "bp".into(),
    }
}

#[test]
fn an_invalid_name_is_a_400_and_never_echoed_whole() {
    let long = "x".repeat(300);
    match TenantId::new(long.as_str()) {
        Err(e @ Error::InvalidName { .. }) => {
            assert_eq!(e.http_status(), 400);
            let Error::InvalidName { what, name, .. } = &e else {
                unreachable!()
            };
            assert_eq!((*what, name.len()), ("tenant id", 64));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Class::new("Not A Class"),
        Err(Error::InvalidName {
            what: "class name",
            ..
        })
    ));
    // A name is escaped: no line break from a request reaches a log line.
    let err = Class::new("forged\nlog line").unwrap_err();
    assert!(
        !err.to_string().contains('\n') && err.to_string().contains("forged\\nlog"),
        "{err}"
    );
}

#[tokio::test]
async fn sealing_and_reading_errors_are_typed() {
    let (cmk, ctx) = common::onboarded(SearchMode::None, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, Reading::CLASSES).await.unwrap();
    // Too large: 413.
    let big = "x".repeat(cmk::rows::MAX_VALUE_LEN + 1);
    match reading(big).seal(&keys) {
        Err(e @ Error::ValueTooLarge { .. }) => assert_eq!(e.http_status(), 413),
        other => panic!("{:?}", other.map(|_| ())),
    }
    // A value that no longer decodes as the field's type: authentic, but the model does not
    // fit it (500, and the message names the column, not the value).
    let sealed = reading("not a number".into()).seal(&keys).unwrap();
    let as_v2 = SealedReadingV2 {
        id: sealed.id,
        tenant_id: sealed.tenant_id.clone(),
        value: sealed.value.clone(),
        label: sealed.label.clone(),
        private_keys: sealed.private_keys.clone(),
        public_keys: sealed.public_keys.clone(),
    };
    match ReadingV2::unseal(&as_v2, &keys) {
        Err(e @ Error::Decode { .. }) => {
            assert_eq!(e.http_status(), 500);
            assert!(e.to_string().contains("`value`") && !e.to_string().contains("not a number"));
        }
        other => panic!("{other:?}"),
    }
    // A class the handle was not fetched for.
    let public_only = cmk.keys_for(&ctx, &["public"]).await.unwrap();
    assert!(matches!(
        reading("1".into()).seal(&public_only),
        Err(Error::ClassNotRequested { class }) if class == "private"
    ));
}

#[test]
fn an_io_failure_keeps_the_operating_systems_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("operator.key");
    match cmk::tenant::OperatorKey::load_or_create(&missing) {
        Err(e @ Error::Io { .. }) => {
            let source = std::error::Error::source(&e).expect("the OS error is the source");
            let io = source
                .downcast_ref::<std::sync::Arc<std::io::Error>>()
                .expect("an io::Error");
            assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
}
