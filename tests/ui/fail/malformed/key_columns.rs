use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id, key_columns = "dek")]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
