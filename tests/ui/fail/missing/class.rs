use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(column = "note_body")]
    pub body: String,
}

fn main() {}
