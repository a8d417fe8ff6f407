use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "private", class = "secret")]
    pub body: String,
}

fn main() {}
