// @generated automatically by Diesel CLI.

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;

    patients (id) {
        id -> BigInt,
        tenant_id -> Text,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        ssn -> Nullable<CiphertextSql>,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}
