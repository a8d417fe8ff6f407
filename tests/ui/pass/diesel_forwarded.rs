use cmk::Encrypted;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    accounts (id) {
        id -> BigInt,
        org -> Text,
        iban -> Nullable<CiphertextSql>,
        holder_name -> CiphertextSql,
        secret_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, Encrypted)]
#[diesel(table_name = accounts, check_for_backend(diesel::sqlite::Sqlite))]
#[cmk(tenant = org, id = id, ids = "db")]
pub struct Account {
    pub id: i64,
    pub org: String,
    #[cmk(class = "secret")]
    pub iban: Option<String>,
    #[cmk(class = "secret", column = "holder_name")]
    pub holder: String,
}

fn main() {
    let _ = <Account as diesel::Selectable<diesel::sqlite::Sqlite>>::construct_selection();
}
