// Comparing raw bytes (Vec<u8>) with an encrypted column does not compile either: only cmk's
// Ciphertext type has the column's SQL type.
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    patients (id) {
        id -> BigInt,
        ssn -> CiphertextSql,
        note -> Nullable<CiphertextSql>,
    }
}

fn main() {
    let _query = patients::table.filter(patients::ssn.eq(b"123-45-6789".to_vec()));
}
