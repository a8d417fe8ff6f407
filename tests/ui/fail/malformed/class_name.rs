use cmk::Encrypted;

#[derive(Encrypted)]
#[cmk(table = "notes", tenant = tenant_id)]
pub struct Note {
    pub tenant_id: String,
    #[cmk(class = "Top Secret")]
    pub body: String,
}

fn main() {}
