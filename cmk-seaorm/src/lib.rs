//! cmk for SeaORM 2: the value types of sealed rows.
//!
//! A derived model forwarded to SeaORM (`#[sea_orm(table_name = ...)]`) stores its classified
//! columns as [`Ciphertext`], its blind indexes as [`BlindIndex`] and its key columns as
//! [`KeyColumn`], all binary. SeaORM has no typed columns: `Column::Ssn.eq("123")` still
//! compiles and silently matches nothing, which is why cmk's lookups take the plaintext and
//! compute the index themselves.
//!
//! The one-call async operations, the save guard, migrations and jobs are the rest of the
//! SeaORM issue.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

use sea_orm::DeriveValueType;

macro_rules! sealed_value {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, PartialEq, Eq, DeriveValueType)]
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
    };
}

sealed_value!(
    Ciphertext,
    "A field ciphertext (or deterministic value) as stored."
);
sealed_value!(BlindIndex, "A blind index value as stored.");
sealed_value!(
    KeyColumn,
    "A key column (the row's wrapped DEK of one class) as stored."
);

/// Turns a cmk error met while loading rows into SeaORM's error, keeping it as the source.
pub fn db_err(e: cmk_core::Error) -> sea_orm::DbErr {
    sea_orm::DbErr::TryIntoErr {
        from: "sealed row",
        into: "plaintext model",
        source: std::sync::Arc::new(e),
    }
}
