//! The worked example of docs/FORMAT.md §7, reproduced two ways:
//! 1. an independent implementation written from the spec (raw AES-GCM, HMAC, HKDF, AES-SIV;
//!    no cmk code) produces exactly the hex printed in the document;
//! 2. cmk itself opens those documented bytes and finds the plaintext.
//!
//! Run with `CMK_PRINT_EXAMPLE=1 cargo test -p cmk-core --test format_example -- --nocapture`
//! to print the values.

mod common;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use aes_siv::KeyInit as _;
use aes_siv::siv::Aes256Siv;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use cmk_core::format::aad::RowId;
use cmk_core::kms::Kms;
use cmk_core::registry::{KeyState, Purpose, RegistryEntry, entry_aad, kek_id};
use cmk_core::schema::{FieldSpec, RowSchema};
use cmk_core::{TenantConfig, TenantId};
use common::*;

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

/// The associated-data encoding of FORMAT.md §2, written again from the text.
struct Parts(Vec<u8>);
impl Parts {
    fn new(label: &str) -> Self {
        let mut p = Parts(Vec::new());
        p.put(0x01, label.as_bytes());
        p
    }
    fn put(&mut self, tag: u8, b: &[u8]) -> &mut Self {
        self.0.push(tag);
        self.0.extend_from_slice(&(b.len() as u32).to_be_bytes());
        self.0.extend_from_slice(b);
        self
    }
    fn text(&mut self, s: &str) -> &mut Self {
        self.put(0x02, s.as_bytes())
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.put(0x04, &[v])
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.put(0x05, &v.to_be_bytes())
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.put(0x06, &v.to_be_bytes())
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.put(0x03, b)
    }
}

fn gcm(key: &[u8], nonce: &[u8], aad: &[u8], plain: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let c = Aes256Gcm::new_from_slice(key).unwrap();
    let mut buf = plain.to_vec();
    let tag = c
        .encrypt_inout_detached(
            &Nonce::try_from(nonce).unwrap(),
            aad,
            buf.as_mut_slice().into(),
        )
        .unwrap();
    (buf, tag.to_vec())
}

struct Example {
    kek_id: u32,
    key_column: Vec<u8>,
    key_column_v1: Vec<u8>,
    field: Vec<u8>,
    blind_index: Vec<u8>,
    deterministic: Vec<u8>,
}

fn independent_example() -> Example {
    let (tenant, table, class) = ("acme", "patients", "private");
    let kek = seq(0x00, 32);
    let dek = seq(0x20, 32);
    let wrap_nonce = seq(0x40, 12);
    let field_nonce = seq(0x50, 12);
    let index_root = seq(0x60, 32);
    let det_root = seq(0x80, 32);

    let digest = Sha256::new()
        .chain_update(b"cmk/kek-id")
        .chain_update(class)
        .finalize();
    let kek_id = u32::from_be_bytes(digest[..4].try_into().unwrap());

    // Field: 0x01, flags 0x00, nonce, AES-256-GCM(DEK, nonce, inner, AAD).
    let field_aad = Parts::new("cmk/field")
        .u8(1)
        .text(table)
        .text("email")
        .text(class)
        .text(tenant)
        .u8(0)
        .i64(42)
        .0
        .clone();
    let (ct, tag) = gcm(&dek, &field_nonce, &field_aad, b"ann@example.com");
    let field = [&[1u8, 0][..], &field_nonce, &ct, &tag].concat();

    // Key column: prefix, nonce, AES-256-GCM(KEK, nonce, DEK, AAD), column list.
    let list = [&[5u8][..], b"email"].concat();
    let dek_aad = Parts::new("cmk/dek")
        .u8(1)
        .text(table)
        .text(class)
        .text(tenant)
        .u32(kek_id)
        .u32(1)
        .i64(42)
        .bytes(&list)
        .bytes(&[&[7u8][..], b"private"].concat())
        .0
        .clone();
    let (wrapped, wtag) = gcm(&kek, &wrap_nonce, &dek_aad, &dek);
    let key_column_v1 = [
        &[1u8][..],
        &kek_id.to_be_bytes(),
        &1u32.to_be_bytes(),
        &wrap_nonce,
        &wrapped,
        &wtag,
        &list,
    ]
    .concat();
    // The bound key column cmk writes: version 0x03, the write id after the tag, and the
    // write id appended to the associated data as bytes.
    let write_id = seq(0xa0, 16);
    let bound_aad = Parts(dek_aad.clone()).bytes(&write_id).0.clone();
    let (wrapped, wtag) = gcm(&kek, &wrap_nonce, &bound_aad, &dek);
    let key_column = [
        &[3u8][..],
        &kek_id.to_be_bytes(),
        &1u32.to_be_bytes(),
        &wrap_nonce,
        &wrapped,
        &wtag,
        &write_id,
        &list,
    ]
    .concat();

    // Blind index: HKDF per-field key, HMAC of the normalised value, truncated to 16.
    let info = Parts::new("cmk/index-key")
        .text(table)
        .text("email")
        .u8(1)
        .0
        .clone();
    let mut index_key = [0u8; 32];
    Hkdf::<Sha256>::new(None, &index_root)
        .expand(&info, &mut index_key)
        .unwrap();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&index_key).unwrap();
    mac.update(b"ann@example.com");
    let blind_index = [&[1u8][..], &mac.finalize().into_bytes()[..16]].concat();

    // Deterministic: HKDF 64-byte key, AES-SIV with one header.
    let info = Parts::new("cmk/det-key")
        .text(table)
        .text("code")
        .u8(1)
        .0
        .clone();
    let mut det_key = [0u8; 64];
    Hkdf::<Sha256>::new(None, &det_root)
        .expand(&info, &mut det_key)
        .unwrap();
    let header = Parts::new("cmk/det")
        .u8(2)
        .u8(1)
        .text(tenant)
        .text(table)
        .text("code")
        .0
        .clone();
    let siv = Aes256Siv::new((&det_key).into())
        .encrypt([&header], b"A-1")
        .unwrap();
    let deterministic = [&[2u8, 1][..], &siv].concat();

    Example {
        kek_id,
        key_column,
        key_column_v1,
        field,
        blind_index,
        deterministic,
    }
}

/// Hex blocks of FORMAT.md, by the name in their `example: NAME` marker line.
fn documented(name: &str) -> Vec<u8> {
    let doc = include_str!("../../docs/FORMAT.md");
    let marker = format!("<!-- example: {name} -->");
    let start = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("FORMAT.md lacks {marker}"));
    let block = &doc[start..];
    let open = block.find("```text\n").unwrap() + 8;
    let close = open + block[open..].find("```").unwrap();
    let hex: String = block[open..close].split_whitespace().collect();
    cmk_core::hexfmt::decode(&hex).unwrap_or_else(|| panic!("bad hex in {name}"))
}

fn wrap_hex(b: &[u8]) -> String {
    cmk_core::hexfmt::encode(b)
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_documented_bytes_follow_from_the_spec() {
    let ex = independent_example();
    if std::env::var_os("CMK_PRINT_EXAMPLE").is_some() {
        println!("kek_id {:08x}", ex.kek_id);
        for (n, b) in [
            ("key_column", &ex.key_column),
            ("key_column_v1", &ex.key_column_v1),
            ("field", &ex.field),
            ("blind_index", &ex.blind_index),
            ("deterministic", &ex.deterministic),
        ] {
            println!("{n} ({} bytes):\n{}\n", b.len(), wrap_hex(b));
        }
    }
    assert_eq!(ex.key_column, documented("key_column"));
    assert_eq!(ex.key_column_v1, documented("key_column_v1"));
    assert_eq!(ex.field, documented("field"));
    assert_eq!(ex.blind_index, documented("blind_index"));
    assert_eq!(ex.deterministic, documented("deterministic"));
    assert_eq!(ex.kek_id, cmk_core::registry::kek_id("private"));
}

#[tokio::test]
async fn cmk_opens_the_documented_row() {
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let tenant = TenantId::new("acme").unwrap();
    let c = ctx("acme");
    fx.cmk
        .configure_tenant(&c, &config_for("acme", key.clone()))
        .await
        .unwrap();
    // Provision the example's fixed keys the way onboarding would, wrapped by the KMS.
    let ex = independent_example();
    for (purpose, policy, id, material) in [
        (Purpose::Kek, "private", ex.kek_id, seq(0x00, 32)),
        (Purpose::IndexRoot, "", 0, seq(0x60, 32)),
        (Purpose::DeterministicRoot, "", 0, seq(0x80, 32)),
    ] {
        let aad = entry_aad(purpose, &tenant, policy, id, 1, &key);
        let wrapped = fx
            .local
            .wrap(&key, &material, &cmk_core::kms::KmsContext::new(aad))
            .await
            .unwrap();
        let entry = RegistryEntry {
            tenant: tenant.clone(),
            purpose,
            policy: policy.into(),
            kek_id: id,
            version: 1,
            cmk_ref: key.clone(),
            state: KeyState::Active,
            wrapped,
            created_at: 0,
        };
        fx.registry.insert_raw(entry).unwrap();
    }
    let keys = fx.cmk.keys_for(&c, &["private"]).await.unwrap();
    let schema = RowSchema::new(
        "patients",
        vec![
            FieldSpec::new("email", class("private"))
                .blind_index(cmk_core::crypto::normalize::Normalizer::Casefold),
            FieldSpec::new("code", class("private")).deterministic(),
        ],
    )
    .unwrap();
    let field = documented("field");
    let det = documented("deterministic");
    let index = documented("blind_index");
    // The bound key column cmk writes, and the one written before write ids.
    for name in ["key_column", "key_column_v1"] {
        let key_column = documented(name);
        let row = cmk_core::seal::StoredRow {
            tenant: "acme",
            row_id: Some(&RowId::Int(42)),
            key_columns: &[Some(&key_column)],
            fields: &[Some(&field), Some(&det)],
            indexes: &[Some(&index), None],
        };
        let out = keys.unseal(&schema, &row).unwrap();
        assert_eq!(
            out.values[0].value(),
            Some(&b"ann@example.com"[..]),
            "{name}"
        );
        assert_eq!(out.values[1].value(), Some(&b"A-1"[..]), "{name}");
    }
    assert_eq!(
        keys.blind_index_query(&schema, "email", b" Ann@Example.COM")
            .unwrap(),
        vec![documented("blind_index")]
    );
    assert_eq!(
        keys.deterministic_query(&schema, "code", b"A-1").unwrap(),
        det
    );
    let _: &TenantConfig = keys.config();
}

/// The further vectors of FORMAT.md §10a–§10d, computed from the spec with raw primitives.
struct Further {
    /// §10a: a KEK wrapped by the local KMS as a registry entry.
    registry_wrap: Vec<u8>,
    /// §10c: a two-class row with a padded field and a hidden NULL, UUID row id.
    row_private_keys: Vec<u8>,
    row_restricted_keys: Vec<u8>,
    row_email: Vec<u8>,
    row_ssn: Vec<u8>,
    /// §10d: the row-id part of associated data, per kind.
    row_ids: Vec<(&'static str, Vec<u8>)>,
}

const UUID: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff,
];

fn further() -> Further {
    let (tenant, table) = ("acme", "patients");
    let kek_id = |class: &str| {
        let d = Sha256::new()
            .chain_update(b"cmk/kek-id")
            .chain_update(class)
            .finalize();
        u32::from_be_bytes(d[..4].try_into().unwrap())
    };

    // §10a: the registry entry of KEK `private` v1 under local key `acme` v1.
    let registry_aad = Parts::new("cmk/registry")
        .u8(1)
        .text("kek")
        .text(tenant)
        .text("private")
        .u32(kek_id("private"))
        .u32(1)
        .text("local:acme")
        .0
        .clone();
    let local_aad = Parts::new("cmk/local-kms")
        .text("acme") // the key's name: the reference after `local:`
        .u32(1)
        .bytes(&registry_aad)
        .0
        .clone();
    let nonce = seq(0xe0, 12);
    let (ct, tag) = gcm(&seq(0xc0, 32), &nonce, &local_aad, &seq(0x00, 32));
    let registry_wrap = [&[1u8][..], &1u32.to_be_bytes(), &nonce, &ct, &tag].concat();

    // §10c: row id UUID, write id b0..bf; `email` (private, padded to 16), `ssn`
    // (restricted, hidden NULL).
    let write_id = seq(0xb0, 16);
    let class_set = [&[7u8][..], b"private", &[10u8], b"restricted"].concat();
    let field = |column: &str, class: &str, flags: u8, dek: &[u8], nonce: &[u8], inner: &[u8]| {
        let aad = Parts::new("cmk/field")
            .u8(1)
            .text(table)
            .text(column)
            .text(class)
            .text(tenant)
            .u8(flags)
            .put(0x08, &UUID)
            .0
            .clone();
        let (ct, tag) = gcm(dek, nonce, &aad, inner);
        [&[1u8, flags][..], nonce, &ct, &tag].concat()
    };
    let key_column = |class: &str, kek: &[u8], dek: &[u8], nonce: &[u8], list: &[u8]| {
        let aad = Parts::new("cmk/dek")
            .u8(1)
            .text(table)
            .text(class)
            .text(tenant)
            .u32(kek_id(class))
            .u32(1)
            .put(0x08, &UUID)
            .bytes(list)
            .bytes(&class_set)
            .bytes(&write_id)
            .0
            .clone();
        let (wrapped, tag) = gcm(kek, nonce, &aad, dek);
        [
            &[3u8][..],
            &kek_id(class).to_be_bytes(),
            &1u32.to_be_bytes(),
            nonce,
            &wrapped,
            &tag,
            &write_id,
            list,
        ]
        .concat()
    };
    // `bob@example.com` is 15 bytes: padded with 0x80 and 0x00 to 16 (flag bit 0).
    let padded = [&b"bob@example.com"[..], &[0x80]].concat();
    let row_email = field(
        "email",
        "private",
        0x01,
        &seq(0x20, 32),
        &seq(0x50, 12),
        &padded,
    );
    // NULL, hidden (flag bit 1): the presence byte 0x00 and nothing else.
    let row_ssn = field(
        "ssn",
        "restricted",
        0x02,
        &seq(0x80, 32),
        &seq(0x58, 12),
        &[0x00],
    );
    let row_private_keys = key_column(
        "private",
        &seq(0x00, 32),
        &seq(0x20, 32),
        &seq(0x40, 12),
        &[&[5u8][..], b"email"].concat(),
    );
    let row_restricted_keys = key_column(
        "restricted",
        &seq(0x60, 32),
        &seq(0x80, 32),
        &seq(0x48, 12),
        &[&[3u8][..], b"ssn"].concat(),
    );

    // §10d: the row-id part, per kind.
    let part = |tag: u8, b: &[u8]| Parts(Vec::new()).put(tag, b).0.clone();
    let row_ids = vec![
        ("row_id_i64", part(0x06, &42i64.to_be_bytes())),
        ("row_id_uuid", part(0x08, &UUID)),
        ("row_id_text", part(0x02, b"ann-1")),
        ("row_id_absent", part(0x07, &[])),
    ];
    Further {
        registry_wrap,
        row_private_keys,
        row_restricted_keys,
        row_email,
        row_ssn,
        row_ids,
    }
}

/// The configuration of §10b: tenant `acme`, revision 1, roots under `local:acme`, one class
/// `private` under `local:acme-private`.
fn example_config() -> TenantConfig {
    let mut config = TenantConfig::new(
        TenantId::new("acme").unwrap(),
        cmk_core::kms::KeyRef::new("local:acme").unwrap(),
    );
    config.policies = std::collections::BTreeMap::from([(
        class("private"),
        cmk_core::Policy::new(cmk_core::kms::KeyRef::new("local:acme-private").unwrap()),
    )]);
    config
}

/// The text of a FORMAT.md block, by its marker.
fn documented_text(name: &str) -> String {
    let doc = include_str!("../../docs/FORMAT.md");
    let marker = format!("<!-- example: {name} -->");
    let block = &doc[doc
        .find(&marker)
        .unwrap_or_else(|| panic!("FORMAT.md lacks {marker}"))..];
    let open = block.find("```text\n").unwrap() + 8;
    let close = open + block[open..].find("\n```").unwrap();
    block[open..close].to_string()
}

#[test]
fn the_further_vectors_follow_from_the_spec() {
    let f = further();
    let operator =
        cmk_core::tenant::OperatorKey::new(cmk_core::secret::SecretKey::from_bytes([0x2a; 32]));
    let signed = operator.sign(&example_config()).unwrap();
    if std::env::var_os("CMK_PRINT_EXAMPLE").is_some() {
        for (n, b) in [
            ("registry_wrap", &f.registry_wrap),
            ("row_private_keys", &f.row_private_keys),
            ("row_restricted_keys", &f.row_restricted_keys),
            ("row_email", &f.row_email),
            ("row_ssn", &f.row_ssn),
            ("config_mac", &signed.mac.to_vec()),
        ] {
            println!("{n} ({} bytes):\n{}\n", b.len(), wrap_hex(b));
        }
        println!(
            "config_content:\n{}\n",
            String::from_utf8_lossy(&signed.content)
        );
        for (n, b) in &f.row_ids {
            println!("{n}: {}", wrap_hex(b));
        }
    }
    assert_eq!(f.registry_wrap, documented("registry_wrap"));
    assert_eq!(f.row_private_keys, documented("row_private_keys"));
    assert_eq!(f.row_restricted_keys, documented("row_restricted_keys"));
    assert_eq!(f.row_email, documented("row_email"));
    assert_eq!(f.row_ssn, documented("row_ssn"));
    for (n, b) in &f.row_ids {
        assert_eq!(b, &documented(n), "{n}");
    }
    // §10b: the MAC, computed from the spec over the documented content.
    let content = documented_text("config_content");
    let mac_input = Parts::new("cmk/tenant-config")
        .u8(1)
        .text("acme")
        .bytes(&1u64.to_be_bytes())
        .bytes(content.as_bytes())
        .0
        .clone();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[0x2a; 32]).unwrap();
    mac.update(&mac_input);
    assert_eq!(
        mac.finalize().into_bytes().to_vec(),
        documented("config_mac")
    );
    // cmk writes exactly the documented record.
    assert_eq!(String::from_utf8(signed.content).unwrap(), content);
    assert_eq!(signed.mac.to_vec(), documented("config_mac"));
}

#[tokio::test]
async fn cmk_reads_the_further_vectors() {
    use cmk_core::registry::{KeyRegistry, entry_context};
    // §10a: a keyring holding local key `acme` v1 = c0..df unwraps the documented entry.
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring");
    std::fs::write(
        &keyring,
        format!(
            "cmk-local-keyring 1\nkey acme enabled\nversion acme 1 {}\n",
            cmk_core::hexfmt::encode(&seq(0xc0, 32))
        ),
    )
    .unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(
        &keyring,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let local = cmk_core::kms::local::LocalKms::open(&keyring).unwrap();
    let acme = TenantId::new("acme").unwrap();
    let key = cmk_core::kms::KeyRef::new("local:acme").unwrap();
    let context = entry_context(Purpose::Kek, &acme, "private", kek_id("private"), 1, &key);
    let kek = local
        .unwrap(&key, &documented("registry_wrap"), &context)
        .await
        .unwrap();
    assert_eq!(kek.expose_secret(), &seq(0x00, 32)[..]);

    // §10b: the documented record verifies and names the keys a reader needs.
    let verifier = cmk_core::tenant::ConfigVerifier::new(cmk_core::tenant::OperatorKey::new(
        cmk_core::secret::SecretKey::from_bytes([0x2a; 32]),
    ));
    let record: cmk_core::tenant::SignedTenantConfig = cmk_core::sql::ConfigRecord {
        tenant_id: "acme".into(),
        revision: 1,
        content: documented_text("config_content").into_bytes(),
        mac: documented("config_mac"),
        created_at: 0,
    }
    .into_signed(&acme)
    .unwrap();
    let config = verifier.verify_loaded(&acme, &record).unwrap();
    assert_eq!(config, example_config());

    // §10c: cmk opens the two-class row, with the KEKs provisioned as onboarding would.
    let fx = Fixture::new(&[]).await;
    let key = fx.local.create_key("acme").unwrap();
    let c = doctor("acme");
    fx.cmk
        .configure_tenant(&c, &config_for("acme", key.clone()))
        .await
        .unwrap();
    for (class_name, material) in [("private", seq(0x00, 32)), ("restricted", seq(0x60, 32))] {
        let id = kek_id(class_name);
        let aad = entry_aad(Purpose::Kek, &acme, class_name, id, 1, &key);
        let wrapped = fx
            .local
            .wrap(&key, &material, &cmk_core::kms::KmsContext::new(aad))
            .await
            .unwrap();
        fx.registry
            .insert_if_absent(RegistryEntry {
                tenant: acme.clone(),
                purpose: Purpose::Kek,
                policy: class_name.into(),
                kek_id: id,
                version: 1,
                cmk_ref: key.clone(),
                state: KeyState::Active,
                wrapped,
                created_at: 0,
            })
            .await
            .unwrap();
    }
    let keys = fx
        .cmk
        .keys_for(&c, &["private", "restricted"])
        .await
        .unwrap();
    let schema = RowSchema::new(
        "patients",
        vec![
            FieldSpec::new("email", class("private")).pad_to(16),
            FieldSpec::new("ssn", class("restricted")).hide_null(),
        ],
    )
    .unwrap();
    let (pk, rk) = (
        documented("row_private_keys"),
        documented("row_restricted_keys"),
    );
    let (email, ssn) = (documented("row_email"), documented("row_ssn"));
    let row = cmk_core::seal::StoredRow {
        tenant: "acme",
        row_id: Some(&RowId::Uuid(UUID)),
        key_columns: &[Some(&pk), Some(&rk)],
        fields: &[Some(&email), Some(&ssn)],
        indexes: &[],
    };
    let out = keys.unseal(&schema, &row).unwrap();
    assert_eq!(out.values[0].value(), Some(&b"bob@example.com"[..]));
    assert_eq!(out.values[1], cmk_core::seal::Revealed::Null);
}
