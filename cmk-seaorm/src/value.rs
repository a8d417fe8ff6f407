//! The value types of sealed rows: binary, with a constructor only cmk uses.

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

/// Turns a cmk error met while loading rows into SeaORM's error, keeping it as the source
/// (`std::error::Error::source` of the `DbErr` is the cmk error).
pub fn db_err(e: cmk_core::Error) -> sea_orm::DbErr {
    crate::error::Error::Cmk(e).into()
}
