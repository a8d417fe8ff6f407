//! cmk for SeaORM 2: value types, async one-call operations, a save guard, cmk's own tables
//! and the jobs over a table.
//!
//! A derived model forwarded to SeaORM (`#[sea_orm(table_name = ...)]`) generates the
//! entity's `Model` as its sealed type: classified columns are [`Ciphertext`], blind indexes
//! [`BlindIndex`] and key columns [`KeyColumn`], all binary. SeaORM has no typed columns:
//! `Column::Ssn.eq("123")` still compiles and silently matches nothing, which is why cmk's
//! lookups take the plaintext and compute the index themselves (`Patient::by_email(&keys,
//! b"...")`), and why the [`guard()`] exists.
//!
//! - [`ops`]: insert, load, update (guarded read-modify-write), delete, async.
//! - Transparent reads: `Entity::find().into_model::<Patient>()` inside `keys.scope_async`.
//! - [`guard()`]: refuses to save anything but cmk's output into a sealed table.
//! - [`SeaOrmRegistry`], [`SeaOrmConfigStore`] and [`migration`]: cmk's tables.
//! - [`jobs`]: KEK retirement and the plaintext backfill, with the Diesel adapter's logic
//!   (`cmk_core::jobs`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// As rustls sets them: a public type is #[non_exhaustive] unless it says why it is not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

pub mod config_store;
mod error;
pub mod guard;
pub mod jobs;
pub mod migration;
pub mod ops;
pub mod registry;
mod tables;
mod value;

pub use config_store::SeaOrmConfigStore;
pub use error::{Error, Result, cmk_error};
pub use guard::guard;
pub use registry::SeaOrmRegistry;
pub use value::{BlindIndex, Ciphertext, KeyColumn, db_err};
