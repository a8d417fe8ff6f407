//! Column types of sealed rows: SQL types of their own, so Diesel refuses plaintext.

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::serialize::{self, ToSql};
use diesel::sql_types::{Binary, SqlType};

macro_rules! sealed_column {
    ($sql:ident, $name:ident, $sql_doc:literal, $doc:literal) => {
        #[doc = $sql_doc]
        #[derive(Debug, Clone, Copy, Default, SqlType, diesel::query_builder::QueryId)]
        #[diesel(sqlite_type(name = "Binary"))]
        #[diesel(postgres_type(name = "bytea"))]
        #[diesel(mysql_type(name = "Blob"))]
        // Exhaustive by design: a SQL type marker, named in `table!`.
        #[allow(clippy::exhaustive_structs)]
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

        // One impl per trait for every backend: the bytes are stored as the backend's binary
        // string (BLOB, bytea, MEDIUMBLOB/VARBINARY).
        impl<DB> ToSql<$sql, DB> for $name
        where
            DB: Backend,
            [u8]: ToSql<Binary, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut serialize::Output<'b, '_, DB>) -> serialize::Result {
                <[u8] as ToSql<Binary, DB>>::to_sql(self.0.as_slice(), out)
            }
        }

        impl<DB> FromSql<$sql, DB> for $name
        where
            DB: Backend,
            Vec<u8>: FromSql<Binary, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                <Vec<u8> as FromSql<Binary, DB>>::from_sql(bytes).map($name)
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
