// Comparing a plaintext value with an encrypted column does not compile: the column's SQL type
// is cmk's ciphertext, which no &str turns into.
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    patients (id) {
        id -> BigInt,
        ssn -> CiphertextSql,
    }
}

fn main() {
    let _query = patients::table.filter(patients::ssn.eq("123-45-6789"));
}
