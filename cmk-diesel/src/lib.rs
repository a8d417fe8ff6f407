//! cmk for Diesel: the column types of sealed rows.
//!
//! A sealed row's classified columns have SQL types of their own ([`CiphertextSql`],
//! [`BlindIndexSql`], [`KeyColumnSql`]), so Diesel refuses, at compile time, to compare or
//! assign a plaintext value to them: `patients::ssn.eq("123")` does not compile. In `table!`:
//!
//! ```rust
//! diesel::table! {
//!     use diesel::sql_types::*;
//!     use cmk_diesel::sql_types::*;
//!     patients (id) {
//!         id -> BigInt,
//!         tenant_id -> Text,
//!         email -> CiphertextSql,
//!         email_bidx -> BlindIndexSql,
//!         private_keys -> Nullable<KeyColumnSql>,
//!     }
//! }
//! ```
//!
//! Backends: SQLite (feature `sqlite`, default, bundled), PostgreSQL (feature `postgres`,
//! needs libpq) and MySQL/MariaDB (feature `mysql`, needs libmysqlclient). The column SQL
//! for each is in [`ddl`].
//!
//! Besides the column types: the tables the library needs ([`ddl`], [`registry`],
//! [`config_store`]) over a [`ConnectionSource`] (a single connection behind a mutex, or an
//! r2d2 pool with the feature `r2d2`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// As rustls sets them: a public type is #[non_exhaustive] unless it says why it is not.
#![warn(clippy::exhaustive_structs, clippy::exhaustive_enums)]

mod column;
pub mod config_store;
pub mod ddl;
pub mod embedded;
mod error;
pub mod jobs;
pub mod ops;
pub mod registry;
mod schema;
mod source;
mod store;
mod unchanged;

pub use column::{BlindIndex, BlindIndexSql, Ciphertext, CiphertextSql, KeyColumn, KeyColumnSql};
pub use config_store::DieselConfigStore;
pub use error::{Error, Result, cmk_error};
pub use registry::DieselRegistry;
pub use source::ConnectionSource;
pub use store::StoreConnection;
pub use unchanged::KeyColumnsUnchanged;

/// SQL types of sealed columns, for `table!`.
pub mod sql_types {
    pub use super::column::{BlindIndexSql, CiphertextSql, KeyColumnSql};
}
