//! cmk for Diesel: the column types of sealed rows.
//!
//! A sealed row's classified columns have SQL types of their own ([`CiphertextSql`],
//! [`BlindIndexSql`], [`KeyColumnSql`]), so Diesel refuses, at compile time, to compare or
//! assign a plaintext value to them: `patients::ssn.eq("123")` does not compile. In `table!`:
//!
//! ```text
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
//! Backends: SQLite (feature `sqlite`, default, bundled). PostgreSQL and MySQL, the one-call
//! operations, the registry and configuration tables and the jobs are the rest of the Diesel
//! issue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, ToSql};
use diesel::sql_types::{Binary, SqlType};

/// SQL types of sealed columns, for `table!`.
pub mod sql_types {
    pub use super::{BlindIndexSql, CiphertextSql, KeyColumnSql};
}

macro_rules! sealed_column {
    ($sql:ident, $name:ident, $sql_doc:literal, $doc:literal) => {
        #[doc = $sql_doc]
        #[derive(Debug, Clone, Copy, Default, SqlType, diesel::query_builder::QueryId)]
        #[diesel(sqlite_type(name = "Binary"))]
        pub struct $sql;

        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq, AsExpression, FromSqlRow)]
        #[diesel(sql_type = $sql)]
        pub struct $name(Vec<u8>);

        impl $name {
            /// Wraps bytes that cmk produced. Not for application code: a value built from
            /// arbitrary bytes is still checked when it is unsealed.
            #[doc(hidden)]
            pub fn __from_cmk(bytes: Vec<u8>) -> Self {
                $name(bytes)
            }

            /// The stored bytes.
            pub fn as_bytes(&self) -> &[u8] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, concat!(stringify!($name), "({} bytes)"), self.0.len())
            }
        }

        #[cfg(feature = "sqlite")]
        impl ToSql<$sql, diesel::sqlite::Sqlite> for $name {
            fn to_sql<'b>(
                &'b self,
                out: &mut serialize::Output<'b, '_, diesel::sqlite::Sqlite>,
            ) -> serialize::Result {
                <Vec<u8> as ToSql<Binary, diesel::sqlite::Sqlite>>::to_sql(&self.0, out)
            }
        }

        #[cfg(feature = "sqlite")]
        impl FromSql<$sql, diesel::sqlite::Sqlite> for $name {
            fn from_sql(
                bytes: diesel::sqlite::SqliteValue<'_, '_, '_>,
            ) -> deserialize::Result<Self> {
                <Vec<u8> as FromSql<Binary, diesel::sqlite::Sqlite>>::from_sql(bytes).map($name)
            }
        }
    };
}

sealed_column!(
    CiphertextSql,
    Ciphertext,
    "SQL type of a classified column (stored as a binary string).",
    "A field ciphertext (or deterministic value) as stored."
);
sealed_column!(
    BlindIndexSql,
    BlindIndex,
    "SQL type of a blind-index column (stored as a binary string).",
    "A blind index value as stored."
);
sealed_column!(
    KeyColumnSql,
    KeyColumn,
    "SQL type of a key column (stored as a binary string).",
    "A key column (the row's wrapped DEK of one class) as stored."
);
