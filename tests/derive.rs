//! `#[derive(Encrypted)]`: generated sealed types round-trip every field type, with and
//! without `Option`, NULL and hidden NULL; renamed structs and fields keep reading old rows.

mod common;

use cmk::{Cmk, Encrypted, Error, RequestContext, SearchMode, TenantId};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Diagnosis {
    code: String,
    severity: u8,
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "patients", tenant = tenant_id, id = id, ids = "app")]
struct Patient {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    email: String,
    #[cmk(class = "private", column = "display_name")]
    name: Option<String>,
    #[cmk(class = "restricted")]
    ssn: String,
    #[cmk(class = "restricted", hide_null)]
    diagnosis: Option<Diagnosis>,
    #[cmk(class = "secret", pad = 64)]
    photo: Vec<u8>,
    #[cmk(class = "secret")]
    scores: Option<Vec<u32>>,
    #[cmk(class = "private", deterministic)]
    member_code: Option<String>,
    created_at: i64,
}

async fn setup() -> (Cmk, RequestContext) {
    common::onboarded(SearchMode::Deterministic, &["doctor"], |_, _| {}).await
}

fn ann() -> Patient {
    Patient {
        id: 7,
        tenant_id: "acme".into(),
        email: "Ann@Example.com".into(),
        name: Some("Ann".into()),
        ssn: "123-45-6789".into(),
        diagnosis: Some(Diagnosis {
            code: "J45".into(),
            severity: 2,
        }),
        photo: vec![0xff; 10],
        scores: Some(vec![1, 2, 3]),
        member_code: Some("M-1".into()),
        created_at: 1_700_000_000,
    }
}

#[tokio::test]
async fn every_field_type_round_trips_with_and_without_values() {
    let (cmk, ctx) = setup().await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    for p in [
        ann(),
        Patient {
            name: None,
            diagnosis: None,
            scores: None,
            member_code: None,
            photo: vec![],
            ..ann()
        },
    ] {
        let sealed = p.seal(&keys).unwrap();
        // Unclassified fields are copied; classified ones are ciphertext.
        assert_eq!(
            (sealed.id, sealed.created_at, sealed.tenant_id.as_str()),
            (7, 1_700_000_000, "acme")
        );
        assert!(!sealed.ssn.windows(11).any(|w| w == b"123-45-6789"));
        assert!(
            sealed.private_keys.is_some()
                && sealed.restricted_keys.is_some()
                && sealed.secret_keys.is_some()
        );
        // NULL stays NULL by default; a hidden NULL is stored as ciphertext.
        assert_eq!(sealed.name.is_none(), p.name.is_none());
        assert_eq!(sealed.scores.is_none(), p.scores.is_none());
        assert!(!sealed.diagnosis.is_empty());
        // Padding hides the photo's exact length.
        assert_eq!((sealed.photo.len() - 30) % 64, 0);
        assert_eq!(Patient::unseal(&sealed, &keys).unwrap(), p);
        // The owned form moves the unclassified fields and gives the same model.
        assert_eq!(Patient::unseal_owned(sealed, &keys).unwrap(), p);
    }
}

#[tokio::test]
async fn blind_index_lookups_take_plaintext() {
    let (cmk, ctx) = setup().await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let sealed = ann().seal(&keys).unwrap();
    let wanted = Patient::email_blind_index(&keys, b" ann@example.COM ").unwrap();
    assert!(wanted.contains(&sealed.email_bidx));
}

#[tokio::test]
async fn tampering_another_tenant_and_row_ids_are_caught() {
    let (cmk, ctx) = setup().await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let sealed = ann().seal(&keys).unwrap();
    let mut moved = sealed.clone();
    moved.id = 8; // application-assigned ids are bound
    assert!(matches!(
        Patient::unseal(&moved, &keys),
        Err(Error::Tampered)
    ));
    let mut flipped = sealed.clone();
    flipped.ssn[20] ^= 1;
    assert!(matches!(
        Patient::unseal(&flipped, &keys),
        Err(Error::Tampered)
    ));
    let other = Patient {
        tenant_id: "globex".into(),
        ..ann()
    };
    assert!(matches!(
        other.seal(&keys),
        Err(Error::TenantMismatch { .. })
    ));
    let nurse = keys
        .with_context(RequestContext::new(TenantId::new("acme").unwrap()))
        .unwrap();
    let mut changed = sealed.clone();
    changed.created_at += 1; // unclassified fields are not bound: allowed
    assert!(Patient::unseal(&changed, &nurse).is_ok());
}

/// The same table after a refactor: struct and field renamed, the field kept on its column.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "patients", tenant = tenant_id, id = id, ids = "app")]
struct PatientV2 {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    email: String,
    #[cmk(class = "private", column = "display_name")]
    full_name: Option<String>,
    #[cmk(class = "restricted")]
    ssn: String,
    #[cmk(class = "restricted", hide_null)]
    diagnosis: Option<Diagnosis>,
    #[cmk(class = "secret", pad = 64)]
    photo: Vec<u8>,
    #[cmk(class = "secret")]
    scores: Option<Vec<u32>>,
    #[cmk(class = "private", deterministic)]
    member_code: Option<String>,
    created_at: i64,
}

#[tokio::test]
async fn a_renamed_struct_and_field_read_rows_sealed_before_the_rename() {
    let (cmk, ctx) = setup().await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();
    let old = ann().seal(&keys).unwrap();
    let as_v2 = SealedPatientV2 {
        id: old.id,
        tenant_id: old.tenant_id.clone(),
        email: old.email.clone(),
        email_bidx: old.email_bidx.clone(),
        full_name: old.name.clone(),
        ssn: old.ssn.clone(),
        diagnosis: old.diagnosis.clone(),
        photo: old.photo.clone(),
        scores: old.scores.clone(),
        member_code: old.member_code.clone(),
        created_at: old.created_at,
        private_keys: old.private_keys.clone(),
        restricted_keys: old.restricted_keys.clone(),
        secret_keys: old.secret_keys.clone(),
    };
    let v2 = PatientV2::unseal(&as_v2, &keys).unwrap();
    assert_eq!(v2.full_name.as_deref(), Some("Ann"));
}

// The expected compiler output lists the types that *do* implement a trait, and that list
// grows with each enabled database backend; so the cases are pinned to the default features,
// which `cargo test --workspace` (pass 1 of scripts/test-all) runs.
#[cfg(not(any(feature = "postgres", feature = "mysql")))]
#[test]
fn compile_errors_point_at_the_mistake() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*/*.rs");
}

#[tokio::test]
async fn partial_views_withhold_classes_the_actor_may_not_read() {
    let (cmk, doctor) = common::onboarded(SearchMode::Deterministic, &["doctor"], |cfg, key| {
        cfg.policies.insert(
            cmk::Class::new("restricted").unwrap(),
            cmk::Policy::new(key.clone()).with_readers(["doctor"]),
        );
    })
    .await;
    let keys = cmk.keys_for(&doctor, Patient::CLASSES).await.unwrap();
    let sealed = ann().seal(&keys).unwrap();

    // The same leases acting for a nurse: no KMS call, the nurse's roles.
    let nurse = keys.as_actor(cmk::Actor::User("n-1".into()), ["nurse"]);
    assert!(matches!(
        Patient::unseal(&sealed, &nurse),
        Err(Error::AccessDenied { .. })
    ));
    let view = Patient::unseal_partial(&sealed, &nurse).unwrap();
    assert_eq!(
        view.email.revealed().map(String::as_str),
        Some("Ann@Example.com")
    );
    assert_eq!(view.ssn, cmk::model::Partial::Withheld);
    assert_eq!(view.diagnosis, cmk::model::Partial::Withheld);
    assert_eq!(
        view.name,
        cmk::model::Partial::Revealed(Some("Ann".to_string()))
    );
    assert_eq!(view.created_at, 1_700_000_000);
    // Debug of a view never shows values.
    assert!(!format!("{view:?}").contains("Ann"));

    // Batches report per row, by position.
    let mut rows = Patient::seal_many(&[ann(), Patient { id: 8, ..ann() }], &keys)
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    rows[1].ssn[25] ^= 1;
    let out = Patient::unseal_many(&rows, &keys);
    assert!(out[0].is_ok() && matches!(out[1], Err(Error::Tampered)));
    let owned = Patient::unseal_many_owned(rows, &keys);
    assert!(matches!(&owned[0], Ok(p) if p.id == 7) && matches!(owned[1], Err(Error::Tampered)));
}

/// A model whose tenant and id columns the ORM's attributes rename.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "notes", tenant = tenant_id, id = id, ids = "app")]
struct Note {
    #[diesel(column_name = note_id)]
    id: i64,
    #[sea_orm(column_name = "org")]
    tenant_id: String,
    #[cmk(class = "private")]
    body: String,
}

/// The manifest names the tenant and id columns as stored, not the fields: a reader told
/// `tenant_id` and `id` (the manifest before this change) would find no such columns.
#[test]
fn the_manifest_names_the_columns_the_orm_renamed() {
    let manifest = Note::manifest().unwrap();
    assert_eq!(
        manifest.tenant,
        cmk::model::TenantColumn::Column("org".into())
    );
    let id = manifest.row_id.unwrap();
    assert_eq!((id.column.as_str(), id.bound), ("note_id", true));
    let note = Note {
        id: 1,
        tenant_id: "acme".into(),
        body: "b".into(),
    };
    assert_eq!(note.body, "b");
}

/// The manifest of a model (issue 16, schema manifests): every classified column with its
/// class, encoding, nullability, search and index column, the key columns with their KEK ids,
/// the tenant and id columns. It is the example of docs/FORMAT.md §12, byte for byte.
#[test]
fn the_manifest_describes_every_column_as_format_md_shows() {
    let manifest = Patient::manifest().unwrap();
    if std::env::var_os("CMK_PRINT_EXAMPLE").is_some() {
        println!("{}", manifest.to_json());
    }
    let doc = include_str!("../docs/FORMAT.md");
    let marker = "<!-- example: manifest -->";
    let block = &doc[doc.find(marker).expect("FORMAT.md shows a manifest")..];
    let open = block.find("```json\n").unwrap() + 8;
    let close = open + block[open..].find("\n```").unwrap();
    assert_eq!(manifest.to_json(), &block[open..close]);
    assert_eq!(
        cmk::model::Manifest::from_json(&block[open..close]).unwrap(),
        manifest
    );
    let secret = manifest
        .key_columns
        .iter()
        .find(|k| k.class == "secret")
        .unwrap();
    assert_eq!(secret.kek_id, cmk::registry::kek_id("secret"));

    // All of an application's manifests, to a folder; read back as written.
    let dir = tempfile::tempdir().unwrap();
    let written = cmk::model::write_manifests(dir.path(), std::slice::from_ref(&manifest)).unwrap();
    assert_eq!(written, vec![dir.path().join("patients.manifest.json")]);
    let back = std::fs::read_to_string(&written[0]).unwrap();
    assert_eq!(cmk::model::Manifest::from_json(&back).unwrap(), manifest);
    // Two manifests of one table, or a table that is no file name, are refused.
    let twice = cmk::model::write_manifests(dir.path(), &[manifest.clone(), manifest.clone()]);
    assert!(matches!(twice, Err(Error::InvalidInput(_))), "{twice:?}");
    let mut other = manifest.clone();
    other.table = "../escape".into();
    let escape = cmk::model::write_manifests(dir.path(), &[other]);
    assert!(matches!(escape, Err(Error::InvalidInput(_))), "{escape:?}");
    let wrong = back.replace("cmk.manifest/1", "cmk.manifest/9");
    assert!(cmk::model::Manifest::from_json(&wrong).is_err());
}
