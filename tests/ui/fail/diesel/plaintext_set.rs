// Assigning a plaintext Option<&str> to a nullable encrypted column in an UPDATE does not compile.
// (Diesel builds `Option<T>` into a nullable expression without checking `T`; the check comes
// where the statement is bound for a backend, so the case executes it.)
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
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    let _ = diesel::update(patients::table)
        .set(patients::note.eq(Some("diabetic")))
        .execute(&mut conn);
}
