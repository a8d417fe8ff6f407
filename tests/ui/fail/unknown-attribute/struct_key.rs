use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(tabel = "notes", tenant = tenant_id)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
