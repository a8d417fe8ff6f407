use cmk::Encrypted;

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Address {
    pub street: String,
}

#[derive(Encrypted)]
#[cmk(table = "people", tenant = org, id = uid, ids = "app", sealed = PersonRow, key_columns = "{class}_dek")]
pub struct Person {
    pub uid: String,
    pub org: String,
    #[cmk(class = "private", blind_index)]
    pub phone: Vec<u8>,
    #[cmk(class = "private", blind_index(normalize = "trimmed"), column = "mail")]
    pub email: Option<String>,
    #[cmk(class = "restricted", hide_null, pad = 32)]
    pub address: Option<Address>,
    #[cmk(class = "payroll-eu", deterministic)]
    pub iban: String,
}

fn main() {
    let _: Option<PersonRow> = None;
    let _ = |r: PersonRow| (r.private_dek, r.restricted_dek);
    let _ = <Person as cmk::model::Encrypted>::CLASSES;
}
