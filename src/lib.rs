#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub use cmk_core::model::Encrypted;
pub use cmk_core::*;
/// Derives [`model::Encrypted`] and the sealed companion row type (see `cmk-derive`).
pub use cmk_derive::Encrypted;

/// Paths the derive's generated code uses; not a stable API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "diesel")]
    pub use ::diesel;
    pub use cmk_core::crypto::normalize::Normalizer;
    pub use cmk_core::format::aad::RowId;
    pub use cmk_core::model::derive_support::*;
    pub use cmk_core::model::{Encrypted, IntoRowId, RawField, decode_json, encode_json};
    pub use cmk_core::schema::{FieldSpec, RowSchema};
    pub use cmk_core::seal::{Revealed, StoredRow};
    pub use cmk_core::{Class, RequestContext, Result, TenantKeys};
    #[cfg(feature = "diesel")]
    pub use cmk_diesel::{BlindIndex, Ciphertext, KeyColumn};
    pub use std::sync::OnceLock;
}

/// Diesel column types of sealed rows (`table!` uses `cmk::diesel::sql_types::*`).
#[cfg(feature = "diesel")]
pub use cmk_diesel as diesel;
