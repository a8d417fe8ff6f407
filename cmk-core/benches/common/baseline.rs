//! The hand-written envelope that cmk's benchmarks compare against: one random DEK per
//! class, one AES-256-GCM encryption per field with associated data as long as cmk's, each
//! DEK wrapped under a KEK whose key schedule is expanded once, cmk's buffered OS randomness.
//! Shared by `cmk-core/benches/seal.rs` and the facade's `benches/orm_rows.rs`.
// Not every benchmark that includes this module uses all of it.
#![allow(dead_code)]

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};

use cmk_core::crypto::rng;
use cmk_core::format::aad::Aad;

/// The table the benchmarks' rows live in (its length is part of the associated data).
pub(crate) const TABLE: &str = "bench_rows";
/// Three 32-byte fields: the first two of class `private`, the third `restricted`.
pub(crate) const COLUMNS: [&str; 3] = ["alpha", "bravo", "charlie"];

/// The hand-written envelope.
pub(crate) struct Baseline {
    kek: Aes256Gcm,
    /// Associated data as long as cmk's for the same field / DEK wrap.
    field_aad: Vec<Vec<u8>>,
    dek_aad: [Vec<u8>; 2],
}

pub(crate) struct BaselineRow {
    /// nonce ‖ encrypted DEK ‖ tag, one owned buffer per class (it must be stored, as cmk's
    /// key column is).
    pub wrapped: [Vec<u8>; 2],
    /// nonce ‖ ciphertext ‖ tag per field.
    pub fields: [Vec<u8>; 3],
}

impl Baseline {
    pub(crate) fn new() -> Self {
        // Same lengths as cmk's associated data (built with cmk's encoder, then replaced by
        // filler: only the length matters to GHASH's cost).
        let field_aad_len = |col: &str, class: &str| {
            Aad::new("cmk/field")
                .u8(1)
                .u8(0)
                .text("acme")
                .text(TABLE)
                .text(col)
                .text(class)
                .row_id(None)
                .as_bytes()
                .len()
        };
        // cmk binds the row's class set (length-prefixed names) into each DEK wrap.
        let class_set = ["private", "restricted"]
            .iter()
            .map(|c| 1 + c.len())
            .sum::<usize>();
        let dek_aad_len = |class: &str, list: usize| {
            Aad::new("cmk/dek")
                .u8(1)
                .text("acme")
                .text(TABLE)
                .text(class)
                .u32(0)
                .u32(1)
                .row_id(None)
                .bytes(&vec![0; list])
                .bytes(&vec![0; class_set])
                .as_bytes()
                .len()
        };
        Baseline {
            kek: Aes256Gcm::new(&[7u8; 32].into()),
            field_aad: vec![
                vec![1; field_aad_len(COLUMNS[0], "private")],
                vec![2; field_aad_len(COLUMNS[1], "private")],
                vec![3; field_aad_len(COLUMNS[2], "restricted")],
            ],
            dek_aad: [
                vec![4; dek_aad_len("private", 12)],
                vec![5; dek_aad_len("restricted", 8)],
            ],
        }
    }

    pub(crate) fn seal(&self, values: &[&[u8]; 3]) -> BaselineRow {
        let mut row = BaselineRow {
            wrapped: Default::default(),
            fields: Default::default(),
        };
        let classes: [&[usize]; 2] = [&[0, 1], &[2]];
        for (k, members) in classes.iter().enumerate() {
            let dek: [u8; 32] = rng::array().unwrap();
            let cipher = Aes256Gcm::new(&dek.into());
            for &i in *members {
                let nonce: [u8; 12] = rng::array().unwrap();
                let mut out = Vec::with_capacity(12 + values[i].len() + 16);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(values[i]);
                let tag = cipher
                    .encrypt_inout_detached(
                        &Nonce::from(nonce),
                        &self.field_aad[i],
                        (&mut out[12..]).into(),
                    )
                    .unwrap();
                out.extend_from_slice(&tag);
                row.fields[i] = out;
            }
            let nonce: [u8; 12] = rng::array().unwrap();
            let mut w = Vec::with_capacity(60);
            w.extend_from_slice(&nonce);
            w.extend_from_slice(&dek);
            let tag = self
                .kek
                .encrypt_inout_detached(
                    &Nonce::from(nonce),
                    &self.dek_aad[k],
                    (&mut w[12..]).into(),
                )
                .unwrap();
            w.extend_from_slice(&tag);
            row.wrapped[k] = w;
        }
        row
    }

    pub(crate) fn unseal(&self, row: &BaselineRow) -> Vec<Vec<u8>> {
        let classes: [&[usize]; 2] = [&[0, 1], &[2]];
        let mut out = vec![Vec::new(), Vec::new(), Vec::new()];
        for (k, members) in classes.iter().enumerate() {
            let w = &row.wrapped[k];
            let mut dek = [0u8; 32];
            dek.copy_from_slice(&w[12..44]);
            self.kek
                .decrypt_inout_detached(
                    &Nonce::try_from(&w[..12]).unwrap(),
                    &self.dek_aad[k],
                    dek.as_mut_slice().into(),
                    &Tag::try_from(&w[44..]).unwrap(),
                )
                .unwrap();
            let cipher = Aes256Gcm::new(&dek.into());
            for &i in *members {
                let f = &row.fields[i];
                let mut buf = f[12..f.len() - 16].to_vec();
                cipher
                    .decrypt_inout_detached(
                        &Nonce::try_from(&f[..12]).unwrap(),
                        &self.field_aad[i],
                        buf.as_mut_slice().into(),
                        &Tag::try_from(&f[f.len() - 16..]).unwrap(),
                    )
                    .unwrap();
                out[i] = buf;
            }
        }
        out
    }
}
