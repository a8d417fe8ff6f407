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
use cmk_core::registry::{KeyState, Purpose, RegistryEntry, entry_aad};
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
