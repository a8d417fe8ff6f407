use cmk::Encrypted;
use diesel::prelude::*;

diesel::table! {
    notes (id) {
        id -> BigInt,
        tenant_id -> Text,
        body -> Text,
    }
}

// The plaintext struct keeps its own Diesel mapping; the sealed type gets only what is listed.
#[derive(Debug, Clone, Queryable, Selectable, Encrypted)]
#[diesel(table_name = notes)]
#[cmk(table = "notes", tenant = tenant_id, sealed(derive(serde::Serialize), attr(serde(rename_all = "camelCase"))))]
pub struct Note {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {
    let sealed = SealedNote { id: 1, tenant_id: "acme".into(), body: vec![1], private_keys: None };
    let _ = serde_json::to_string(&sealed);
}
