//! Property tests over the parsers of stored bytes (issue 15 §2): key columns, fields, blind
//! indexes and deterministic values (in rows), registry rows, configuration rows and spool
//! segments. Arbitrary bytes never panic and never decrypt, unwrap or verify, a genuine row
//! with any byte changed never reads, and arbitrary rows round-trip. `PROPTEST_CASES=<n>` runs more cases (the default keeps CI short).
mod common;

use std::sync::OnceLock;

use cmk_core::crypto::search;
use cmk_core::format::{field, key_column};
use cmk_core::seal::Revealed;
use proptest::prelude::*;

use common::{ALL, Fixture, Stored, doctor, patients};

/// One fixture for every case: tenant `acme` onboarded, keys for every class, the schema.
struct World {
    rt: tokio::runtime::Runtime,
    keys: std::sync::Arc<cmk_core::TenantKeys>,
    /// The local KMS holding the tenant's master key.
    local: std::sync::Arc<cmk_core::kms::local::LocalKms>,
    schema: cmk_core::schema::RowSchema,
    /// A genuine sealed row of four fields (the patients schema).
    genuine: Stored,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (keys, local) = rt.block_on(async {
            let fx = Fixture::new(&["acme"]).await;
            (
                fx.cmk.keys_for(&doctor("acme"), &ALL).await.unwrap(),
                fx.local.clone(),
            )
        });
        let schema = patients();
        let sealed = keys
            .seal(
                &schema,
                None,
                &[
                    Some(b"ann@example.com"),
                    Some(b"Ann"),
                    Some(b"123-45-6789"),
                    Some(b"A7"),
                ],
            )
            .unwrap();
        World {
            rt,
            keys,
            local,
            schema,
            genuine: Stored::from_sealed("acme", &sealed),
        }
    })
}

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..200)
}

fn any_column() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(any_bytes())
}

/// The positive control of the checks below: the genuine row reads, with its values.
#[test]
fn the_genuine_row_reads() {
    let w = world();
    let back = w
        .genuine
        .with(None, |r| w.keys.unseal(&w.schema, r))
        .unwrap();
    assert!(matches!(&back.values[2], Revealed::Value(v) if v.expose_secret() == b"123-45-6789"));
}

proptest! {
    // No regression files are written into the source tree; a failure prints its input.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(256)
    })]

    /// Each parser of stored bytes takes any input without panicking.
    #[test]
    fn parsers_take_any_bytes(bytes in any_bytes(), flags in any::<u8>()) {
        let _ = key_column::parse(&bytes);
        let _ = key_column::parse_classic(&bytes);
        let _ = key_column::listing(&bytes, "email");
        let _ = field::parse(&bytes);
        let mut inner = bytes.clone();
        let _ = field::strip_inner(&mut inner, flags);
        let _ = search::deterministic_version(&bytes);
        let _ = search::deterministic_decrypt(&[7; 64], "acme", "patients", "code", &bytes);
        let _ = cmk_core::audit::format::parse_json_line(&bytes);
    }

    /// A row of the schema's shape whose stored columns are arbitrary bytes never unseals.
    #[test]
    fn arbitrary_rows_never_unseal(
        keys in prop::collection::vec(any_column(), 2),
        fields in prop::collection::vec(any_column(), 4),
        indexes in prop::collection::vec(any_column(), 4),
    ) {
        let w = world();
        prop_assert_eq!(w.genuine.key_columns.len(), 2);
        let row = Stored { tenant: "acme".into(), key_columns: keys, fields, indexes };
        let all_null = row.key_columns.iter().all(Option::is_none)
            && row.fields.iter().all(Option::is_none)
            && row.indexes.iter().all(Option::is_none);
        let result = row.with(None, |r| w.keys.unseal(&w.schema, r));
        // All NULL with no key column is the one row of arbitrary bytes that reads: as NULLs.
        if let Ok(unsealed) = result {
            prop_assert!(all_null, "arbitrary bytes unsealed");
            prop_assert!(unsealed.values.iter().all(|v| matches!(v, Revealed::Null)));
        }
    }

    /// A genuine row with one byte of one column changed never reads.
    #[test]
    fn a_changed_byte_never_reads(column in 0usize..7, at in any::<prop::sample::Index>(), xor in 1u8..=255) {
        let w = world();
        let mut row = w.genuine.clone();
        // Two key columns (private, restricted), the four fields, then email's blind index.
        let target = match column {
            0 | 1 => &mut row.key_columns[column],
            6 => &mut row.indexes[0],
            _ => &mut row.fields[column - 2],
        };
        let bytes = target.as_mut().expect("every column of the genuine row is stored");
        let i = at.index(bytes.len());
        bytes[i] ^= xor;
        let result = row.with(None, |r| w.keys.unseal(&w.schema, r));
        prop_assert!(result.is_err(), "column {column}, byte {i} changed and the row read");
    }

    /// Arbitrary values (and NULLs) seal and unseal to themselves.
    #[test]
    fn arbitrary_rows_round_trip(
        // The blind-indexed field is casefolded: it takes text only.
        email in prop::option::of(".{0,60}"),
        rest in prop::collection::vec(prop::option::of(prop::collection::vec(any::<u8>(), 0..300)), 3),
    ) {
        let w = world();
        let mut values = vec![email.map(String::into_bytes)];
        values.extend(rest);
        let refs: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
        let sealed = w.keys.seal(&w.schema, None, &refs).unwrap();
        let row = Stored::from_sealed("acme", &sealed);
        let back = row.with(None, |r| w.keys.unseal(&w.schema, r)).unwrap();
        for (got, want) in back.values.iter().zip(&values) {
            match (got, want) {
                (Revealed::Value(v), Some(w)) => prop_assert_eq!(v.expose_secret(), &w[..]),
                (Revealed::Null, None) => {}
                _ => prop_assert!(false, "a value did not round-trip"),
            }
        }
        let _ = &w.rt;
    }

    /// A registry row of arbitrary columns parses or is refused, never panics; its
    /// `wrapped` bytes never unwrap under the tenant's key.
    #[test]
    fn arbitrary_registry_rows_never_unwrap(
        purpose in prop::sample::select(vec!["kek", "index-root", "det-root", "tombstone", "state", "x"]),
        state in ".{0,12}",
        policy in ".{0,20}",
        kek_id in any::<i64>(),
        version in any::<i64>(),
        wrapped in any_bytes(),
    ) {
        use cmk_core::kms::Kms;
        let w = world();
        let record = cmk_core::sql::RegistryRecord {
            tenant_id: "acme".into(),
            purpose: purpose.into(),
            policy,
            kek_id,
            version,
            cmk_ref: "local:acme".into(),
            state,
            wrapped,
            created_at: 0,
        };
        if let Ok(entry) = cmk_core::registry::RegistryEntry::try_from(record) {
            let context = cmk_core::registry::entry_context(
                entry.purpose, &entry.tenant, &entry.policy, entry.kek_id, entry.version, &entry.cmk_ref,
            );
            let unwrapped = w.rt.block_on(w.local.unwrap(&entry.cmk_ref, &entry.wrapped, &context));
            prop_assert!(unwrapped.is_err(), "arbitrary bytes unwrapped");
        }
    }

    /// A configuration row of arbitrary content and MAC never verifies; arbitrary JSON never
    /// panics the configuration's parser or its validation.
    #[test]
    fn arbitrary_configuration_rows_never_verify(
        content in any_bytes(),
        mac in any_bytes(),
        revision in any::<i64>(),
        json in "\\{.{0,120}\\}",
    ) {
        use cmk_core::tenant::{ConfigVerifier, OperatorKey};
        let _ = serde_json::from_str::<cmk_core::TenantConfig>(&json).map(|c| c.validate());
        let _ = serde_json::from_slice::<cmk_core::TenantConfig>(&content);
        let record = cmk_core::sql::ConfigRecord { tenant_id: "acme".into(), revision, content, mac, created_at: 0 };
        let tenant = cmk_core::TenantId::new("acme").unwrap();
        if let Ok(signed) = record.into_signed(&tenant) {
            let verifier = ConfigVerifier::new(OperatorKey::new(cmk_core::secret::SecretKey::from_bytes([42; 32])));
            prop_assert!(verifier.verify_loaded(&tenant, &signed).is_err(), "an arbitrary record verified");
        }
    }

    /// A spool whose segment and cursor hold arbitrary bytes opens and reads without
    /// panicking (a torn or damaged segment is the next process's to open).
    #[test]
    fn arbitrary_spool_segments_never_panic(segment in any_bytes(), cursor in any_bytes()) {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir_all(&spool_dir).unwrap();
        std::fs::write(spool_dir.join("seg-1.jsonl"), &segment).unwrap();
        std::fs::write(spool_dir.join("cursor"), &cursor).unwrap();
        if let Ok(spool) = cmk_core::audit::spool::Spool::open(&spool_dir, 1 << 20) {
            let _ = spool.peek(8);
        }
    }
}
