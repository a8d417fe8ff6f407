use cmk::Encrypted;

diesel::table! {
    notes (id) {
        id -> BigInt,
        tenant_id -> Text,
        body -> Text,
    }
}

#[derive(Encrypted)]
#[diesel(table_name = notes)]
#[cmk(tenant = tenant_id)]
pub struct Note {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private")]
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub body: String,
}

fn main() {}
