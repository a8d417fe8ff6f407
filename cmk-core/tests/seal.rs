//! Sealing and unsealing rows: round trips, NULL handling, padding, search, batches, and
//! the properties the design promises of sealed output.

mod common;

use cmk_core::crypto::normalize::Normalizer;
use cmk_core::format::aad::RowId;
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::seal::{Revealed, RowValues, SealOut};
use cmk_core::{Error, Policy};
use common::*;

fn values<'a>(
    email: &'a [u8],
    name: Option<&'a [u8]>,
    ssn: &'a [u8],
    code: &'a [u8],
) -> [Option<&'a [u8]>; 4] {
    [Some(email), name, Some(ssn), Some(code)]
}

#[tokio::test]
async fn round_trip_of_empty_one_byte_64k_and_null_values() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let schema = patients();
    let big: Vec<u8> = (0..65536u32).map(|i| b'a' + (i * 7 % 26) as u8).collect();
    let cases: Vec<[Option<&[u8]>; 4]> = vec![
        [Some(b""), Some(b""), Some(b""), Some(b"")],
        [Some(b"a"), Some(b"b"), Some(b"c"), Some(b"d")],
        [Some(&big), Some(&big), Some(&big), Some(&big)],
        [None, None, None, None],
        [Some(b"x@y"), None, Some(b"1"), None],
    ];
    for (n, case) in cases.iter().enumerate() {
        let id = RowId::Int(n as i64);
        let sealed = keys.seal(&schema, Some(&id), case).unwrap();
        for (i, v) in case.iter().enumerate() {
            assert_eq!(
                sealed.fields[i].is_none(),
                v.is_none(),
                "NULL stays NULL by default"
            );
        }
        let row = Stored::from_sealed("acme", &sealed);
        let out = row.with(Some(&id), |r| keys.unseal(&schema, r)).unwrap();
        for (i, v) in case.iter().enumerate() {
            match v {
                Some(v) => assert_eq!(out.values[i].value(), Some(*v), "case {n} field {i}"),
                None => assert_eq!(out.values[i], Revealed::Null),
            }
        }
    }
}

/// Sealing into caller storage writes what `seal` returns, reads back the same, and refuses
/// storage of the wrong shape with an error (never a panic).
#[tokio::test]
async fn sealing_into_caller_storage_matches_seal_and_checks_its_shape() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let schema = patients();
    let case = values(b"ann@example.com", None, b"123-45-6789", b"A-1");
    let n = schema.fields().len();
    let (mut k, mut f, mut i) = (
        vec![Some(b"stale".to_vec()); schema.key_classes().len()],
        vec![Some(b"stale".to_vec()); n],
        vec![Some(b"stale".to_vec()); n],
    );
    let out = SealOut {
        key_columns: &mut k,
        fields: &mut f,
        indexes: &mut i,
    };
    keys.seal_into(&schema, None, &case, out).unwrap();
    let like = keys.seal(&schema, None, &case).unwrap();
    let shape = |v: &[Option<Vec<u8>>]| {
        v.iter()
            .map(|x| x.as_ref().map(Vec::len))
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&k), shape(&like.key_columns));
    assert_eq!(shape(&f), shape(&like.fields));
    assert_eq!(i, like.indexes, "blind index values are deterministic");
    assert!(
        f[1].is_none(),
        "stale contents are cleared: a NULL stays NULL"
    );
    let stored = Stored {
        tenant: "acme".into(),
        key_columns: k.clone(),
        fields: f.clone(),
        indexes: i.clone(),
    };
    let out = stored.with(None, |r| keys.unseal(&schema, r)).unwrap();
    assert_eq!(out.values[0].value(), Some(&b"ann@example.com"[..]));
    assert_eq!(out.values[1], Revealed::Null);

    let mut short = vec![None; n - 1];
    let err = keys
        .seal_into(
            &schema,
            None,
            &case,
            SealOut {
                key_columns: &mut k,
                fields: &mut short,
                indexes: &mut i,
            },
        )
        .unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err}");
}

#[tokio::test]
async fn hidden_null_and_padding_hide_nullness_and_lengths() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = ctx("acme");
    let keys = fx.cmk.keys_for(&ctx, &["private"]).await.unwrap();
    let schema = RowSchema::new(
        "notes",
        vec![
            FieldSpec::new("hidden", class("private")).hide_null(),
            FieldSpec::new("padded", class("private")).pad_to(32),
        ],
    )
    .unwrap();
    let a = keys.seal(&schema, None, &[None, Some(b"ab")]).unwrap();
    let b = keys
        .seal(
            &schema,
            None,
            &[Some(b""), Some(b"abcdefghijklmnopqrstuvwxyz")],
        )
        .unwrap();
    // A hidden NULL is stored as a ciphertext of the same length as an empty value.
    assert!(a.fields[0].is_some());
    assert_eq!(
        a.fields[0].as_ref().unwrap().len(),
        b.fields[0].as_ref().unwrap().len()
    );
    // 2 and 26 bytes both pad to one 32-byte block.
    assert_eq!(
        a.fields[1].as_ref().unwrap().len(),
        b.fields[1].as_ref().unwrap().len()
    );
    let out = Stored::from_sealed("acme", &a)
        .with(None, |r| keys.unseal(&schema, r))
        .unwrap();
    assert_eq!(
        out.values,
        vec![
            Revealed::Null,
            Revealed::Value(cmk_core::secret::SecretBytes::new(b"ab".to_vec()))
        ]
    );
    let out = Stored::from_sealed("acme", &b)
        .with(None, |r| keys.unseal(&schema, r))
        .unwrap();
    assert_eq!(out.values[0].value(), Some(&b""[..]));
    assert_eq!(
        out.values[1].value(),
        Some(&b"abcdefghijklmnopqrstuvwxyz"[..])
    );
}

#[tokio::test]
async fn two_seals_of_one_row_use_fresh_deks_and_nonces() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let v = values(b"ann@example.com", Some(b"Ann"), b"123-45-6789", b"A1");
    let a = keys.seal(&patients(), None, &v).unwrap();
    let b = keys.seal(&patients(), None, &v).unwrap();
    for k in 0..a.key_columns.len() {
        let (ka, kb) = (
            a.key_columns[k].as_ref().unwrap(),
            b.key_columns[k].as_ref().unwrap(),
        );
        assert_eq!(ka[..9], kb[..9], "same KEK prefix");
        assert_ne!(ka[9..69], kb[9..69], "different wrapped DEK");
    }
    for i in 0..3 {
        assert_ne!(a.fields[i], b.fields[i], "envelope field {i} must differ");
    }
    // Searchable values are equal by design: that is what makes them searchable.
    assert_eq!(a.fields[3], b.fields[3]);
    assert_eq!(a.indexes[0], b.indexes[0]);
}

#[tokio::test]
async fn canary_plaintexts_never_appear_in_sealed_output() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let canaries: [&[u8]; 4] = [
        b"CANARY-email-7f3a",
        b"CANARY-name-19bd",
        b"CANARY-ssn-c0de",
        b"CANARY-code-55aa",
    ];
    let sealed = keys.seal(&patients(), None, &canaries.map(Some)).unwrap();
    let mut blob: Vec<u8> = Vec::new();
    for part in sealed
        .key_columns
        .iter()
        .chain(&sealed.fields)
        .chain(&sealed.indexes)
        .flatten()
    {
        blob.extend_from_slice(part);
    }
    let found = |needle: &[u8]| blob.windows(needle.len()).any(|w| w == needle);
    // The scan can fail: a planted plaintext is found.
    let mut planted = blob.clone();
    planted.extend_from_slice(canaries[2]);
    assert!(planted.windows(canaries[2].len()).any(|w| w == canaries[2]));
    for c in canaries {
        assert!(!found(c), "plaintext leaked");
        assert!(!found(&c[7..]), "plaintext suffix leaked");
    }
    // Debug output of the sealed row, the keys and the unsealed row holds no canary either.
    let unsealed = Stored::from_sealed("acme", &sealed)
        .with(None, |r| keys.unseal(&patients(), r))
        .unwrap();
    let debug = format!("{sealed:?} {keys:?} {unsealed:?}");
    for c in canaries {
        assert!(!debug.contains(std::str::from_utf8(c).unwrap()));
    }
}

#[tokio::test]
async fn blind_index_and_deterministic_queries_match() {
    let fx = Fixture::new(&["acme", "globex"]).await;
    let ctx = ctx("acme").with_role("doctor");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let schema = patients();
    let sealed = keys
        .seal(
            &schema,
            None,
            &values(b"Ann@Example.com", None, b"1", b"X-1"),
        )
        .unwrap();
    let q = keys
        .blind_index_query(&schema, "email", b"  ann@EXAMPLE.com ")
        .unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(Some(&q[0]), sealed.indexes[0].as_ref());
    assert_ne!(
        keys.blind_index_query(&schema, "email", b"bob@example.com")
            .unwrap()[0],
        q[0]
    );
    assert_eq!(
        Some(keys.deterministic_query(&schema, "code", b"X-1").unwrap()),
        sealed.fields[3]
    );
    // Another tenant's index of the same value differs (per-tenant roots).
    let g = doctor("globex");
    let gkeys = fx.cmk.keys_for(&g, &ALL).await.unwrap();
    assert_ne!(
        gkeys
            .blind_index_query(&schema, "email", b"ann@example.com")
            .unwrap()[0],
        q[0]
    );
    assert!(keys.blind_index_query(&schema, "name", b"x").is_err());
    assert!(keys.deterministic_query(&schema, "email", b"x").is_err());
}

#[tokio::test]
async fn a_class_policy_can_forbid_search() {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let mut cfg = config_for("acme", key.clone());
    cfg.policies.insert(class("private"), Policy::new(key));
    let c = ctx("acme");
    fx.cmk.configure_tenant(&c, &cfg).await.unwrap();
    fx.cmk.onboard(&c).await.unwrap();
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let schema = RowSchema::new(
        "t",
        vec![FieldSpec::new("email", class("private")).blind_index(Normalizer::Exact)],
    )
    .unwrap();
    let err = keys.seal(&schema, None, &[Some(b"x")]).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
}

#[tokio::test]
async fn a_reclassified_field_still_reads_old_rows_and_the_next_write_reseals_it() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let before = RowSchema::new(
        "people",
        vec![
            FieldSpec::new("name", class("private")),
            FieldSpec::new("phone", class("private")),
        ],
    )
    .unwrap();
    let old = keys
        .seal(&before, None, &[Some(b"Ann"), Some(b"555-0100")])
        .unwrap();
    // `phone` moves to restricted; the old private key column is still read.
    let after = RowSchema::new(
        "people",
        vec![
            FieldSpec::new("name", class("private")),
            FieldSpec::new("phone", class("restricted")),
        ],
    )
    .unwrap();
    assert_eq!(
        after.key_classes(),
        &[class("private"), class("restricted")]
    );
    let stored = Stored {
        tenant: "acme".into(),
        key_columns: vec![old.key_columns[0].clone(), None],
        fields: old.fields.clone(),
        indexes: old.indexes.clone(),
    };
    let out = stored.with(None, |r| keys.unseal(&after, r)).unwrap();
    assert_eq!(out.values[1].value(), Some(&b"555-0100"[..]));
    // Moving the field to a stricter class restricts old rows at once: restricted needs a doctor.
    let nurse = keys
        .with_context(common::ctx("acme").with_role("nurse"))
        .unwrap();
    let err = stored.with(None, |r| nurse.unseal(&after, r)).unwrap_err();
    assert!(
        matches!(&err, Error::AccessDenied { class } if class == "restricted"),
        "{err:?}"
    );
    let partial = stored
        .with(None, |r| nurse.unseal_partial(&after, r))
        .unwrap();
    assert_eq!(partial.values[0].value(), Some(&b"Ann"[..]));
    assert_eq!(partial.values[1], Revealed::Withheld);
    // The next write seals phone under restricted.
    let new = keys
        .seal(&after, None, &[Some(b"Ann"), Some(b"555-0101")])
        .unwrap();
    let restricted_kc = new.key_columns[1].as_ref().unwrap();
    assert!(restricted_kc.ends_with(b"\x05phone"));
    let out = Stored::from_sealed("acme", &new)
        .with(None, |r| keys.unseal(&after, r))
        .unwrap();
    assert_eq!(out.values[1].value(), Some(&b"555-0101"[..]));
}

#[tokio::test]
async fn a_batch_makes_one_kms_call_per_distinct_key_and_reports_failures_by_position() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let schema = patients();
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    // 3 KEKs + index root + deterministic root.
    assert_eq!(fx.kms.calls(), 5);
    let ids: Vec<RowId> = (0..200).map(RowId::Int).collect();
    let vals: Vec<[Option<&[u8]>; 4]> = (0..200)
        .map(|_| values(b"e", Some(b"n"), b"s", b"c"))
        .collect();
    let rows: Vec<RowValues<'_>> = ids
        .iter()
        .zip(&vals)
        .map(|(id, v)| RowValues {
            row_id: Some(id),
            values: v,
        })
        .collect();
    let sealed: Vec<_> = keys
        .seal_many(&schema, &rows)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut stored: Vec<Stored> = sealed
        .iter()
        .map(|s| Stored::from_sealed("acme", s))
        .collect();
    // Row 17 is tampered with, row 42 belongs to another row id.
    stored[17].fields[2].as_mut().unwrap()[20] ^= 1;
    stored.swap(42, 43);
    let key_cols: Vec<Vec<Option<&[u8]>>> = stored
        .iter()
        .map(|s| s.key_columns.iter().map(|k| k.as_deref()).collect())
        .collect();
    let fields: Vec<Vec<Option<&[u8]>>> = stored
        .iter()
        .map(|s| s.fields.iter().map(|k| k.as_deref()).collect())
        .collect();
    let indexes: Vec<Vec<Option<&[u8]>>> = stored
        .iter()
        .map(|s| s.indexes.iter().map(|k| k.as_deref()).collect())
        .collect();
    let views: Vec<cmk_core::seal::StoredRow<'_>> = (0..200)
        .map(|i| cmk_core::seal::StoredRow {
            tenant: "acme",
            row_id: Some(&ids[i]),
            key_columns: &key_cols[i],
            fields: &fields[i],
            indexes: &indexes[i],
        })
        .collect();
    let results = keys.unseal_many(&schema, &views);
    let failed: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, vec![17, 42, 43]);
    assert!(results[17].as_ref().unwrap_err().is_tampered());
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 197);
    assert_eq!(fx.kms.calls(), 5, "no KMS call per row");
}

#[tokio::test]
async fn sizes_meet_the_format_budget() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme");
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let schema = RowSchema::new(
        "bench",
        vec![
            FieldSpec::new("a", class("private")),
            FieldSpec::new("b", class("private")),
            FieldSpec::new("c", class("restricted")),
        ],
    )
    .unwrap();
    let v = [0u8; 32];
    let s = keys
        .seal(&schema, None, &[Some(&v), Some(&v), Some(&v)])
        .unwrap();
    for f in s.fields.iter().flatten() {
        assert_eq!(f.len(), 32 + 30, "30 bytes added per field");
    }
    // 69 bytes of wrap, 16 of write id, then the column list.
    assert_eq!(s.key_columns[0].as_ref().unwrap().len(), 69 + 16 + 2 + 2);
    assert_eq!(cmk_core::seal::key_column_len(["a", "b"]), 89);
    assert_eq!(cmk_core::seal::field_len(32), 62);
}

#[tokio::test]
async fn events_name_the_operation_and_never_a_value() {
    let fx = Fixture::new(&["acme"]).await;
    let ctx = doctor("acme")
        .with_request_id("req-1")
        .with_actor(cmk_core::Actor::User("u7".into()));
    let keys = fx.cmk.keys_for(&ctx, &ALL).await.unwrap();
    let id = RowId::Int(7);
    let sealed = keys
        .seal(
            &patients(),
            Some(&id),
            &values(b"CANARY-1", None, b"CANARY-2", b"CANARY-3"),
        )
        .unwrap();
    Stored::from_sealed("acme", &sealed)
        .with(Some(&id), |r| keys.unseal(&patients(), r))
        .unwrap();
    let events = fx.sink.take();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["KMS_UNWRAP"; 5]
            .into_iter()
            .chain(["DATA_ENCRYPT", "DATA_DECRYPT"])
            .collect::<Vec<_>>()
    );
    let decrypt = &events[6];
    assert_eq!(decrypt.table.as_deref(), Some("patients"));
    assert_eq!(decrypt.record_id.as_deref(), Some("7"));
    assert_eq!(decrypt.request_id.as_deref(), Some("req-1"));
    assert_eq!(decrypt.actor.as_deref(), Some("user:u7"));
    assert_eq!(&*decrypt.columns, ["email", "name", "ssn", "code"]);
    let json = serde_json::to_string(&events).unwrap();
    assert!(json.contains("patients"), "the scan can find what is there");
    assert!(!json.contains("CANARY"));
}

#[tokio::test]
async fn fail_closed_audit_refuses_plaintext_when_the_event_is_lost() {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let mut cfg = config_for("acme", key.clone());
    cfg.policies.insert(
        class("secret"),
        Policy::new(key).with_audit(cmk_core::AuditMode::FailClosed),
    );
    let c = ctx("acme");
    fx.cmk.configure_tenant(&c, &cfg).await.unwrap();
    fx.cmk.onboard(&c).await.unwrap();
    let keys = fx.cmk.keys_for(&c, &["secret", "private"]).await.unwrap();
    let secret = RowSchema::new("t", vec![FieldSpec::new("s", class("secret"))]).unwrap();
    let private = RowSchema::new("t", vec![FieldSpec::new("p", class("private"))]).unwrap();
    let s = keys.seal(&secret, None, &[Some(b"x")]).unwrap();
    let p = keys.seal(&private, None, &[Some(b"y")]).unwrap();
    fx.sink.set_failing(true);
    let err = Stored::from_sealed("acme", &s)
        .with(None, |r| keys.unseal(&secret, r))
        .unwrap_err();
    assert!(matches!(err, Error::AuditFailClosed(_)));
    assert!(keys.seal(&secret, None, &[Some(b"x")]).is_err());
    // Sealing into caller storage leaves nothing behind when the event is lost.
    let (mut k, mut f, mut i) = (vec![None], vec![None], vec![]);
    let out = SealOut {
        key_columns: &mut k,
        fields: &mut f,
        indexes: &mut i,
    };
    let err = keys
        .seal_into(&secret, None, &[Some(b"x")], out)
        .unwrap_err();
    assert!(matches!(err, Error::AuditFailClosed(_)), "{err}");
    assert_eq!((k, f), (vec![None], vec![None]), "no sealed row goes out");
    // Best-effort classes keep working.
    assert!(
        Stored::from_sealed("acme", &p)
            .with(None, |r| keys.unseal(&private, r))
            .is_ok()
    );
}
