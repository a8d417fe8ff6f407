use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    #[cmk(class = "private")]
    pub tenant_id: String,
    #[cmk(class = "private")]
    pub body: String,
}

fn main() {}
