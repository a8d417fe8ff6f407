// Inserting a plaintext String into an encrypted column does not compile.
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
    let _insert = diesel::insert_into(patients::table).values(patients::ssn.eq(String::from("123-45-6789")));
}
