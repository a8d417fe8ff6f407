//! Tampering: every single-bit flip, truncation, extension, swap or NULL-out of stored data is
//! an error, never wrong plaintext, never a panic; tamper failures all look the same.

mod common;

use cmk_core::Error;
use cmk_core::format::aad::RowId;
use cmk_core::schema::{FieldSpec, RowSchema};
use common::*;

const TAMPER_MSG: &str = "stored ciphertext failed authentication";

async fn setup() -> (
    Fixture,
    std::sync::Arc<cmk_core::TenantKeys>,
    cmk_core::RequestContext,
) {
    let fx = Fixture::new(&["acme", "globex"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    (fx, keys, ctx)
}

fn small_row(keys: &cmk_core::TenantKeys, id: &RowId, tag: &str) -> Stored {
    let email = format!("{tag}@x");
    let sealed = keys
        .seal(
            &patients(),
            Some(id),
            &[Some(email.as_bytes()), Some(b"N"), Some(b"S"), Some(b"C")],
        )
        .unwrap();
    Stored::from_sealed("acme", &sealed)
}

fn assert_tampered(r: cmk_core::Result<cmk_core::seal::UnsealedRow>, what: &str) {
    match r {
        Err(e @ Error::Tampered) => assert_eq!(e.to_string(), TAMPER_MSG, "{what}"),
        other => panic!("{what}: expected Tampered, got {other:?}"),
    }
}

#[tokio::test]
async fn every_single_bit_flip_of_every_stored_byte_is_tampered() {
    let (_fx, keys, _ctx) = setup().await;
    let id = RowId::Int(1);
    let row = small_row(&keys, &id, "a");
    let schema = patients();
    assert!(row.with(Some(&id), |r| keys.unseal(&schema, r)).is_ok());
    let mut flips = 0;
    for k in 0..row.key_columns.len() {
        let len = row.key_columns[k].as_ref().unwrap().len();
        for byte in 0..len {
            for bit in 0..8 {
                let mut t = row.clone();
                t.key_columns[k].as_mut().unwrap()[byte] ^= 1 << bit;
                assert_tampered(
                    t.with(Some(&id), |r| keys.unseal(&schema, r)),
                    &format!("key column {k} byte {byte} bit {bit}"),
                );
                flips += 1;
            }
        }
    }
    for f in 0..row.fields.len() {
        let len = row.fields[f].as_ref().unwrap().len();
        for byte in 0..len {
            for bit in 0..8 {
                let mut t = row.clone();
                t.fields[f].as_mut().unwrap()[byte] ^= 1 << bit;
                assert_tampered(
                    t.with(Some(&id), |r| keys.unseal(&schema, r)),
                    &format!("field {f} byte {byte} bit {bit}"),
                );
                flips += 1;
            }
        }
    }
    assert!(flips > 2000, "{flips} flips");
}

#[tokio::test]
async fn truncated_and_over_long_values_are_errors_never_panics() {
    let (_fx, keys, _ctx) = setup().await;
    let id = RowId::Int(1);
    let row = small_row(&keys, &id, "a");
    let schema = patients();
    for k in 0..row.key_columns.len() {
        let full = row.key_columns[k].clone().unwrap();
        for len in 0..full.len() {
            let mut t = row.clone();
            t.key_columns[k] = Some(full[..len].to_vec());
            assert_tampered(
                t.with(Some(&id), |r| keys.unseal(&schema, r)),
                "truncated key column",
            );
        }
        for extra in [&[0u8][..], &[1, b'x'], &[0x7f], &[0xff; 40]] {
            let mut t = row.clone();
            t.key_columns[k].as_mut().unwrap().extend_from_slice(extra);
            assert_tampered(
                t.with(Some(&id), |r| keys.unseal(&schema, r)),
                "extended key column",
            );
        }
    }
    for f in 0..row.fields.len() {
        let full = row.fields[f].clone().unwrap();
        for len in 0..full.len() {
            let mut t = row.clone();
            t.fields[f] = Some(full[..len].to_vec());
            assert_tampered(
                t.with(Some(&id), |r| keys.unseal(&schema, r)),
                "truncated field",
            );
        }
        let mut t = row.clone();
        t.fields[f].as_mut().unwrap().push(0);
        assert_tampered(
            t.with(Some(&id), |r| keys.unseal(&schema, r)),
            "extended field",
        );
    }
    // Wrong shapes from the caller are clear errors too.
    let mut t = row.clone();
    t.fields.pop();
    assert!(matches!(
        t.with(Some(&id), |r| keys.unseal(&schema, r)),
        Err(Error::InvalidInput(_))
    ));
}

#[tokio::test]
async fn swapping_ciphertexts_between_fields_rows_and_classes_is_tampered() {
    let (_fx, keys, _ctx) = setup().await;
    let schema = patients();
    let (id1, id2) = (RowId::Int(1), RowId::Int(2));
    let r1 = small_row(&keys, &id1, "one");
    let r2 = small_row(&keys, &id2, "two");

    // Two fields of one class (email <-> name, both private).
    let mut t = r1.clone();
    t.fields.swap(0, 1);
    assert_tampered(
        t.with(Some(&id1), |r| keys.unseal(&schema, r)),
        "fields swapped",
    );

    // Two classes: a private field into a restricted column, and the key columns swapped.
    let mut t = r1.clone();
    t.fields.swap(1, 2);
    assert_tampered(
        t.with(Some(&id1), |r| keys.unseal(&schema, r)),
        "field across classes",
    );
    let mut t = r1.clone();
    t.key_columns.swap(0, 1);
    assert_tampered(
        t.with(Some(&id1), |r| keys.unseal(&schema, r)),
        "key columns swapped",
    );

    // Two rows with application-assigned ids: one field, one key column, or the whole row.
    let mut t = r1.clone();
    t.fields[2] = r2.fields[2].clone();
    assert_tampered(
        t.with(Some(&id1), |r| keys.unseal(&schema, r)),
        "field from another row",
    );
    let mut t = r1.clone();
    t.key_columns[1] = r2.key_columns[1].clone();
    assert_tampered(
        t.with(Some(&id1), |r| keys.unseal(&schema, r)),
        "key column from another row",
    );
    let mut t = r1.clone();
    t.key_columns = r2.key_columns.clone();
    t.fields[..3].clone_from_slice(&r2.fields[..3]);
    assert_tampered(
        t.with(Some(&id1), |r| keys.unseal(&schema, r)),
        "whole row under another id",
    );
}

#[tokio::test]
async fn without_row_ids_a_whole_row_copy_is_not_detected_as_documented() {
    // With database-assigned ids nothing binds a row to its id (docs/SECURITY.md): copying
    // all classified columns of one row onto another reads back the copied values.
    let (_fx, keys, _ctx) = setup().await;
    let schema = patients();
    let s = keys
        .seal(
            &schema,
            None,
            &[Some(b"a@x"), Some(b"N"), Some(b"S"), Some(b"C")],
        )
        .unwrap();
    let out = Stored::from_sealed("acme", &s)
        .with(None, |r| keys.unseal(&schema, r))
        .unwrap();
    assert_eq!(out.values[1].value(), Some(&b"N"[..]));
    // Single fields still cannot move between rows: each row has its own DEK.
    let other = keys
        .seal(
            &schema,
            None,
            &[Some(b"b@x"), Some(b"M"), Some(b"T"), Some(b"D")],
        )
        .unwrap();
    let mut t = Stored::from_sealed("acme", &s);
    t.fields[1] = other.fields[1].clone();
    assert_tampered(
        t.with(None, |r| keys.unseal(&schema, r)),
        "field from another row without ids",
    );
}

#[tokio::test]
async fn another_tenants_row_is_refused_before_any_kms_call_and_relabelled_rows_are_tampered() {
    let (fx, keys, _ctx) = setup().await;
    let schema = patients();
    let id = RowId::Int(1);
    let acme_row = small_row(&keys, &id, "a");

    // globex's context on acme's handle: refused (a handle acts for its own tenant only).
    let globex = doctor("globex");
    let err = keys.with_context(globex.clone()).unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
    // acme's row given to globex's handle: distinct error, and no KMS call is made for it.
    let gkeys = fx.cmk.keys_for(&globex, &ALL).await.unwrap();
    fx.kms.reset();
    let err = acme_row
        .with(Some(&id), |r| gkeys.unseal(&schema, r))
        .unwrap_err();
    assert!(matches!(err, Error::TenantMismatch { .. }), "{err:?}");
    assert_eq!(fx.kms.calls(), 0);
    // An attacker rewrites the tenant column: globex's keys cannot open acme's ciphertext.
    let mut relabelled = acme_row.clone();
    relabelled.tenant = "globex".into();
    assert_tampered(
        relabelled.with(Some(&id), |r| gkeys.unseal(&schema, r)),
        "tenant relabelled",
    );
}

#[tokio::test]
async fn nulling_out_a_field_or_a_key_column_is_detected() {
    let (_fx, keys, _ctx) = setup().await;
    let schema = patients();
    let id = RowId::Int(1);
    let row = small_row(&keys, &id, "a");
    for f in 0..3 {
        let mut t = row.clone();
        t.fields[f] = None;
        assert_tampered(
            t.with(Some(&id), |r| keys.unseal(&schema, r)),
            "field nulled",
        );
    }
    // A value where NULL was sealed.
    let with_null = keys
        .seal(&schema, Some(&id), &[Some(b"e"), None, Some(b"s"), None])
        .unwrap();
    let mut t = Stored::from_sealed("acme", &with_null);
    t.fields[1] = row.fields[1].clone();
    assert_tampered(
        t.with(Some(&id), |r| keys.unseal(&schema, r)),
        "value where NULL was",
    );
    // One key column removed while the other remains.
    let mut t = row.clone();
    t.key_columns[1] = None;
    assert_tampered(
        t.with(Some(&id), |r| keys.unseal(&schema, r)),
        "key column nulled",
    );
    // A whole class removed: its key column and its field NULL. The other key column binds the
    // row's class set, so it fails.
    let mut t = row.clone();
    t.key_columns[1] = None;
    t.fields[2] = None;
    assert_tampered(
        t.with(Some(&id), |r| keys.unseal(&schema, r)),
        "class nulled",
    );
    // Every key column and every envelope field NULL: a legacy row, refused by name.
    let mut t = row.clone();
    t.key_columns = vec![None, None];
    t.fields[..3].fill(None);
    let err = t.with(Some(&id), |r| keys.unseal(&schema, r)).unwrap_err();
    assert!(matches!(err, Error::MissingKeyColumn { .. }), "{err:?}");
    // Every key column removed: the row looks legacy, which strict mode refuses by name.
    let mut t = row.clone();
    t.key_columns = vec![None, None];
    let err = t.with(Some(&id), |r| keys.unseal(&schema, r)).unwrap_err();
    assert!(matches!(err, Error::MissingKeyColumn { .. }), "{err:?}");
}

#[tokio::test]
async fn values_under_an_unrequested_class_name_the_key_not_tampering() {
    let (fx, keys, ctx) = setup().await;
    let schema = RowSchema::new("t", vec![FieldSpec::new("p", class("private"))]).unwrap();
    let s = keys.seal(&schema, None, &[Some(b"x")]).unwrap();
    // A handle without the private class knows its KEK but does not hold it.
    let narrow = fx.cmk.keys_for(&ctx, &["secret"]).await.unwrap();
    let err = Stored::from_sealed("acme", &s)
        .with(None, |r| narrow.unseal(&schema, r))
        .unwrap_err();
    assert!(matches!(err, Error::KeyUnavailable { .. }), "{err:?}");
}

/// Issue 15 §1.1: every key column of a row comes from one write. A class restored from
/// another write of the row (its key column with its fields, as a writer with old backups
/// would) never reads, whether the later write sealed every class afresh or carried the
/// unchanged classes over (a per-class update); each whole write still reads.
#[tokio::test]
async fn every_mix_of_classes_from_two_writes_is_tampered() {
    let (_fx, keys, _ctx) = setup().await;
    let schema = RowSchema::new(
        "accounts",
        vec![
            FieldSpec::new("email", class("private")),
            FieldSpec::new("salary", class("restricted")),
            FieldSpec::new("pin", class("secret")),
        ],
    )
    .unwrap();
    // One field per class, in the order of the key columns: class k holds field k.
    let names: Vec<&str> = schema.key_classes().iter().map(|c| c.as_str()).collect();
    assert_eq!(names, ["private", "restricted", "secret"]);
    let id = RowId::Int(5);
    let seal = |v: [&[u8]; 3]| {
        let values = v.map(Some);
        Stored::from_sealed("acme", &keys.seal(&schema, Some(&id), &values).unwrap())
    };
    let first = seal([b"old@x", b"100", b"1111"]);
    let second = seal([b"new@x", b"200", b"2222"]);
    // A per-class update of `second`: the email changes, the other classes are carried over.
    let mut third = seal([b"newest@x", b"200", b"2222"]);
    for k in 1..3 {
        let fresh: Vec<Option<&[u8]>> = third.key_columns.iter().map(|c| c.as_deref()).collect();
        let carried = second
            .with(Some(&id), |old| {
                keys.carry_key_column(&schema, k, old, &fresh)
            })
            .unwrap();
        third.key_columns[k] = Some(carried);
        third.fields[k] = second.fields[k].clone();
    }
    let read = |row: &Stored| {
        row.with(Some(&id), |r| keys.unseal(&schema, r)).map(|u| {
            u.values
                .iter()
                .map(|v| v.value().unwrap().to_vec())
                .collect::<Vec<_>>()
        })
    };
    // Positive controls: each write reads whole, the carried classes with their old values.
    let want = |v: [&[u8]; 3]| v.map(<[u8]>::to_vec).to_vec();
    assert_eq!(read(&first).unwrap(), want([b"old@x", b"100", b"1111"]));
    assert_eq!(read(&second).unwrap(), want([b"new@x", b"200", b"2222"]));
    assert_eq!(read(&third).unwrap(), want([b"newest@x", b"200", b"2222"]));
    let writes = [("first", &first), ("second", &second), ("third", &third)];
    let mut mixes = 0;
    for (a, b) in [(0, 1), (1, 2), (0, 2)] {
        // Bit k of `mask` takes class k (its key column and fields) from write `a`.
        for mask in 1..7u32 {
            let mut mixed = writes[b].1.clone();
            for k in (0..3).filter(|k| mask & (1 << k) != 0) {
                mixed.key_columns[k] = writes[a].1.key_columns[k].clone();
                mixed.fields[k] = writes[a].1.fields[k].clone();
            }
            let what = format!("classes {mask:03b} of the {} write", writes[a].0);
            assert_tampered(mixed.with(Some(&id), |r| keys.unseal(&schema, r)), &what);
            // A reader of some classes only is refused the same way.
            let partial = mixed.with(Some(&id), |r| keys.unseal_partial(&schema, r));
            assert!(
                matches!(partial, Err(Error::Tampered)),
                "{what}: {partial:?}"
            );
            mixes += 1;
        }
    }
    assert_eq!(mixes, 18);
}
